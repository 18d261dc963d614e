"""Training data from a dataset version: shards read by manifest, packed into fixed-length blocks.

Streaming: shards are read one record batch at a time (memory does not grow with the corpus), tokenized in
chunks, and their tokens concatenated into blocks of `seq_len` with no padding (a block may span documents;
document boundaries are marked with a separator token). Only the final block of a finite pass is padded.

Determinism and resume: the shard order of each epoch is a shuffle seeded by (seed, epoch); a few shards
are read at once with their documents interleaved, rows within a shard in order. The stream's position
(epoch, open shards and their rows, tokens not yet emitted) is a small plain state that a checkpoint
stores, so a resumed run continues with exactly the blocks it would have seen.

Whole-word masking: every token carries a word key (same key = same word). For Chinese the words are the
jieba words of the `words` column, mapped onto tokens through the tokenizer's character offsets, so all
characters of a word are masked together (Chinese-BERT-wwm); English uses the same column's word tokens,
so all subwords of a word share a key. Special tokens have key -1 and are never masked.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import torch
from tokenizers import Encoding, Tokenizer

from pipeline import storage
from pipeline.schema import Manifest
from pipeline.versions import version_dir

NOT_A_WORD = -1


class ShardRef(NamedTuple):
    url: str
    sha256: str  # from the manifest: the bytes are checked against it as they are read


def shard_urls(manifest_path: str, manifest: Manifest, split: str) -> list[ShardRef]:
    """The split's usable shards; quarantined shards are never returned."""
    base = version_dir(str(manifest_path))
    return [ShardRef(storage.join(base, shard.path), shard.sha256) for shard in manifest.usable_shards(split)]


def iter_record_batches(shard: ShardRef, start_row: int = 0) -> Iterator[pa.RecordBatch]:
    """Record batches of one shard from `start_row` on (earlier ones are read for the checksum, not yielded).

    A shard whose bytes differ from its manifest's sha256 raises `storage.IntegrityError` when it ends.
    """
    with storage.open_arrow(shard.url, shard.sha256) as (_, batches):
        seen = 0
        for batch in batches:
            if seen + batch.num_rows > start_row:
                yield batch.slice(max(0, start_row - seen))
            seen += batch.num_rows


def iter_texts(manifest_path: str, manifest: Manifest, split: str) -> Iterator[str]:
    for url in shard_urls(manifest_path, manifest, split):
        for batch in iter_record_batches(url):
            yield from batch.column("text").to_pylist()


def word_char_spans(text: str, words: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Character [start, end) of each word, found left to right in the text.

    A word the text does not contain (the segmenter saw a different form) is skipped: its tokens are then
    masked one by one, which is harmless, while a wrong span would merge unrelated tokens.
    """
    starts, ends = [], []
    cursor = 0
    for word in words:
        word = word.strip()
        at = text.find(word, cursor) if word else -1
        if at < 0:
            continue
        starts.append(at)
        ends.append(at + len(word))
        cursor = at + len(word)
    return np.asarray(starts, dtype=np.int64), np.asarray(ends, dtype=np.int64)


def token_word_keys(encoding: Encoding, text: str, words: Sequence[str] | None, first_key: int) -> np.ndarray:
    """A key per token: tokens of the same word share one; keys start at `first_key` and are unique per doc."""
    n_tokens = len(encoding.ids)
    if not n_tokens:
        return np.zeros(0, dtype=np.int64)
    if words is None:
        # No segmentation stored: fall back to the pre-tokenizer's words (one per CJK character for wordpiece).
        word_ids = np.asarray([NOT_A_WORD if w is None else w for w in encoding.word_ids], dtype=np.int64)
        return np.where(word_ids >= 0, first_key + word_ids, first_key + n_tokens + np.arange(n_tokens))
    starts, ends = word_char_spans(text, words)
    own_keys = first_key + len(starts) + np.arange(n_tokens)  # for tokens outside every word
    if not len(starts):
        return own_keys
    # A token belongs to the word holding its last character (a byte-level token may start on a space).
    last_chars = np.asarray([end - 1 for _, end in encoding.offsets], dtype=np.int64)
    index = np.searchsorted(starts, last_chars, side="right") - 1
    inside = (index >= 0) & (last_chars < ends[np.clip(index, 0, None)])
    return np.where(inside, first_key + index, own_keys)


@dataclass(frozen=True)
class PackingLayout:
    """Token ids that frame the packed text: `start_id` opens every block (BERT's [CLS]; None for a
    decoder), `doc_end_id` closes every document, `pad_id` fills the last block of a finite pass."""

    doc_end_id: int
    pad_id: int
    start_id: int | None = None


@dataclass
class StreamState:
    epoch: int = 0
    next_shard: int = 0  # position in the epoch's shard order of the next shard to open
    open_shards: list[list[int]] = field(default_factory=list)  # [position in the order, next row] per open shard
    next_key: int = 0  # next unused word key
    pending_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    pending_keys: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def to_dict(self) -> dict:
        """Plain values and tensors only: loadable with torch.load(weights_only=True)."""
        return {
            "epoch": self.epoch,
            "next_shard": self.next_shard,
            "open_shards": [list(s) for s in self.open_shards],
            "next_key": self.next_key,
            "pending_ids": torch.from_numpy(self.pending_ids.copy()),
            "pending_keys": torch.from_numpy(self.pending_keys.copy()),
        }

    @classmethod
    def from_dict(cls, state: dict) -> StreamState:
        return cls(
            epoch=state["epoch"],
            next_shard=state["next_shard"],
            open_shards=[list(s) for s in state["open_shards"]],
            next_key=state["next_key"],
            pending_ids=state["pending_ids"].numpy().astype(np.int64),
            pending_keys=state["pending_keys"].numpy().astype(np.int64),
        )


class PackedStream:
    """Blocks of `seq_len` tokens from the shards, endlessly (`loop=True`) or for one pass.

    Shards hold one source and language each, so reading them one after another would give batches of a
    single source for thousands of steps. Instead `mix_shards` shards are open at once and their
    documents interleaved one by one; when a shard ends, the next one in the epoch's order takes its place.
    """

    def __init__(
        self,
        urls: list[ShardRef],
        tokenizer: Tokenizer,
        layout: PackingLayout,
        seq_len: int,
        seed: int,
        loop: bool = True,
        with_word_keys: bool = True,
        mix_shards: int = 8,
        chunk_rows: int = 64,
    ) -> None:
        if not urls:
            raise ValueError("no usable shards to read: the split is empty or every shard is quarantined")
        self.urls = urls
        self.tokenizer = tokenizer
        self.layout = layout
        self.seq_len = seq_len
        self.seed = seed
        self.loop = loop
        self.with_word_keys = with_word_keys
        self.mix_shards = mix_shards
        self.chunk_rows = chunk_rows
        self.state = StreamState()
        self._readers: dict[int, Iterator[pa.RecordBatch]] = {}  # by position in the order; rebuilt on resume
        self._exhausted = False
        self._epoch_tokens = 0  # tokens read since the epoch began at its first row; 0 after a full epoch = empty data

    @property
    def body_len(self) -> int:
        return self.seq_len - (self.layout.start_id is not None)

    def shard_order(self, epoch: int) -> list[int]:
        order = list(range(len(self.urls)))
        random.Random(self.seed * 1_000_003 + epoch).shuffle(order)
        return order

    def load_state(self, state: StreamState) -> None:
        self.state = state
        self._readers = {}
        self._epoch_tokens = -1  # resumed mid-epoch: the emptiness check starts with the next epoch

    def _reader(self, position: int, row: int) -> Iterator[pa.RecordBatch]:
        if position not in self._readers:
            self._readers[position] = self._chunks(self.urls[self.shard_order(self.state.epoch)[position]], row)
        return self._readers[position]

    def _chunks(self, url: ShardRef, row: int) -> Iterator[pa.RecordBatch]:
        for batch in iter_record_batches(url, row):
            for offset in range(0, batch.num_rows, self.chunk_rows):
                yield batch.slice(offset, self.chunk_rows)

    def _next_epoch(self) -> bool:
        """Start the next epoch; False when a single pass is over."""
        if not self.loop:
            return False
        if self._epoch_tokens == 0:
            raise ValueError("the usable shards hold no tokens")
        state = self.state
        state.epoch, state.next_shard, self._epoch_tokens = state.epoch + 1, 0, 0
        return True

    def _fill(self) -> bool:
        """Tokenize a chunk of rows from every open shard into the pending buffer, documents interleaved.

        Returns False when a single pass is over. The state stays consistent after every call: rows
        are counted as read exactly when their tokens enter the pending buffer."""
        state = self.state
        while len(state.open_shards) < self.mix_shards and state.next_shard < len(self.urls):
            state.open_shards.append([state.next_shard, 0])
            state.next_shard += 1
        if not state.open_shards:
            return self._next_epoch()
        documents: list[list[tuple[np.ndarray, np.ndarray]]] = []
        still_open = []
        for position, row in state.open_shards:
            chunk = next(self._reader(position, row), None)
            if chunk is None:
                del self._readers[position]
                continue
            documents.append(self._tokenize(chunk))
            still_open.append([position, row + chunk.num_rows])
        state.open_shards = still_open
        interleaved = [doc for group in itertools.zip_longest(*documents) for doc in group if doc is not None]
        if interleaved:
            state.pending_ids = np.concatenate([state.pending_ids, *(ids for ids, _ in interleaved)])
            state.pending_keys = np.concatenate([state.pending_keys, *(keys for _, keys in interleaved)])
            if self._epoch_tokens >= 0:
                self._epoch_tokens += sum(len(ids) for ids, _ in interleaved)
        return True

    def _tokenize(self, chunk: pa.RecordBatch) -> list[tuple[np.ndarray, np.ndarray]]:
        """(ids, word keys) per document, each closed by the document separator."""
        texts = chunk.column("text").to_pylist()
        words = chunk.column("words").to_pylist() if "words" in chunk.schema.names else [None] * len(texts)
        documents = []
        for text, doc_words, encoding in zip(texts, words, self.tokenizer.encode_batch(texts, add_special_tokens=False)):
            if self.with_word_keys:
                keys = token_word_keys(encoding, text, doc_words, self.state.next_key)
                if len(keys):
                    self.state.next_key = int(keys.max()) + 1
            else:
                # every token is a word of its own: still eligible for masking, one token at a time
                keys = self.state.next_key + np.arange(len(encoding.ids), dtype=np.int64)
                self.state.next_key += len(encoding.ids)
            ids = np.append(np.asarray(encoding.ids, dtype=np.int64), self.layout.doc_end_id)
            documents.append((ids, np.append(keys, NOT_A_WORD)))
        return documents

    def next_block(self) -> tuple[np.ndarray, np.ndarray, int] | None:
        """(ids, word keys, real length) of the next block; None after the last block of a single pass."""
        body = self.body_len
        while len(self.state.pending_ids) < body and not self._exhausted:
            self._exhausted = not self._fill()
        if not len(self.state.pending_ids):
            return None
        state = self.state
        ids, keys = state.pending_ids[:body], state.pending_keys[:body]
        state.pending_ids, state.pending_keys = state.pending_ids[body:], state.pending_keys[body:]
        if self.layout.start_id is not None:
            ids = np.concatenate([[self.layout.start_id], ids])
            keys = np.concatenate([[NOT_A_WORD], keys])
        length = len(ids)
        padding = self.seq_len - length  # only ever > 0 for the last block of a single pass
        if padding:
            ids = np.concatenate([ids, np.full(padding, self.layout.pad_id)])
            keys = np.concatenate([keys, np.full(padding, NOT_A_WORD)])
        return ids, keys, length

    def next_batch(self, batch_size: int) -> dict[str, torch.Tensor] | None:
        """A batch of blocks as tensors (input_ids, attention_mask, word_keys); None when a pass is over."""
        blocks = []
        for _ in range(batch_size):
            block = self.next_block()
            if block is None:
                break
            blocks.append(block)
        if not blocks:
            return None
        attention = np.zeros((len(blocks), self.seq_len), dtype=np.int64)
        for row, (_, _, length) in enumerate(blocks):
            attention[row, :length] = 1
        return {
            "input_ids": torch.from_numpy(np.stack([b[0] for b in blocks])),
            "attention_mask": torch.from_numpy(attention),
            "word_keys": torch.from_numpy(np.stack([b[1] for b in blocks])),
        }


def mask_for_mlm(
    batch: dict[str, torch.Tensor],
    *,
    mask_prob: float,
    mask_id: int,
    first_ordinary_id: int,
    vocab_size: int,
    whole_word: bool,
    generator: torch.Generator,
) -> dict[str, torch.Tensor]:
    """Masked-LM inputs and labels: words are chosen with probability `mask_prob` (all their tokens
    together when `whole_word`), then each chosen token becomes [MASK] 80%, a random token 10%, itself 10%."""
    input_ids, keys = batch["input_ids"], batch["word_keys"]
    eligible = keys != NOT_A_WORD
    if not whole_word:
        keys = torch.where(eligible, torch.arange(keys.numel()).view_as(keys), NOT_A_WORD)
    groups, group_of_token = torch.unique(keys, return_inverse=True)
    chosen = (torch.rand(len(groups), generator=generator) < mask_prob)[group_of_token] & eligible
    if not chosen.any() and eligible.any():
        # A batch with no label would give a NaN loss; mask one word instead.
        chosen = eligible & (keys == keys[eligible][0])
    labels = torch.where(chosen, input_ids, -100)
    action = torch.rand(input_ids.shape, generator=generator)
    random_ids = torch.randint(first_ordinary_id, vocab_size, input_ids.shape, generator=generator)
    masked_ids = torch.where(chosen & (action < 0.8), mask_id, input_ids)
    masked_ids = torch.where(chosen & (action >= 0.8) & (action < 0.9), random_ids, masked_ids)
    return {"input_ids": masked_ids, "attention_mask": batch["attention_mask"], "labels": labels}


def causal_lm_labels(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The model shifts labels itself; padding is excluded from the loss."""
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"], "labels": labels}

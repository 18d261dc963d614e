"""Training data from a dataset version: shards read by manifest, packed into fixed-length blocks.

Streaming: shards are read one record batch at a time (memory does not grow with the corpus), tokenized in
chunks, and their tokens concatenated into blocks of `seq_len` with no padding (a block may span documents;
document boundaries are marked with a separator token). Only the final block of a finite pass is padded.

Determinism and resume: the shard order of each epoch is a shuffle seeded by (seed, epoch); rows within a
shard keep their order. The stream's position (epoch, shard, row, tokens not yet emitted) is a small plain
state that a checkpoint stores, so a resumed run continues with exactly the blocks it would have seen.

Whole-word masking: every token carries a word key (same key = same word). For Chinese the words are the
jieba words of the `words` column, mapped onto tokens through the tokenizer's character offsets, so all
characters of a word are masked together (Chinese-BERT-wwm); English uses the same column's word tokens,
so all subwords of a word share a key. Special tokens have key -1 and are never masked.
"""

from __future__ import annotations

import posixpath
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import fsspec
import numpy as np
import pyarrow as pa
import torch
from tokenizers import Encoding, Tokenizer

from pipeline.schema import Manifest

NOT_A_WORD = -1


def load_manifest(manifest_path: str) -> Manifest:
    with fsspec.open(manifest_path, "r", encoding="utf-8") as handle:
        return Manifest.model_validate_json(handle.read())


def shard_urls(manifest_path: str, manifest: Manifest, split: str) -> list[str]:
    """URLs of the split's usable shards; quarantined shards are never returned."""
    base = posixpath.dirname(str(manifest_path))
    return [posixpath.join(base, shard.path) if base else shard.path for shard in manifest.usable_shards(split)]


def iter_record_batches(url: str, start_row: int = 0) -> Iterator[pa.RecordBatch]:
    """Record batches of one Arrow IPC stream shard, starting at `start_row` (earlier batches are skipped)."""
    with fsspec.open(url, "rb") as handle:
        seen = 0
        for batch in pa.ipc.open_stream(handle):
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
    shard: int = 0  # index into the epoch's shard order
    row: int = 0  # next row of that shard to tokenize
    next_key: int = 0  # next unused word key
    pending_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    pending_keys: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def to_dict(self) -> dict:
        """Plain values and tensors only: loadable with torch.load(weights_only=True)."""
        return {
            "epoch": self.epoch,
            "shard": self.shard,
            "row": self.row,
            "next_key": self.next_key,
            "pending_ids": torch.from_numpy(self.pending_ids.copy()),
            "pending_keys": torch.from_numpy(self.pending_keys.copy()),
        }

    @classmethod
    def from_dict(cls, state: dict) -> StreamState:
        return cls(
            epoch=state["epoch"],
            shard=state["shard"],
            row=state["row"],
            next_key=state["next_key"],
            pending_ids=state["pending_ids"].numpy().astype(np.int64),
            pending_keys=state["pending_keys"].numpy().astype(np.int64),
        )


class PackedStream:
    """Blocks of `seq_len` tokens from the shards, endlessly (`loop=True`) or for one pass."""

    def __init__(
        self,
        urls: list[str],
        tokenizer: Tokenizer,
        layout: PackingLayout,
        seq_len: int,
        seed: int,
        loop: bool = True,
        with_word_keys: bool = True,
        chunk_rows: int = 256,
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
        self.chunk_rows = chunk_rows
        self.state = StreamState()
        self._chunks: Iterator[pa.RecordBatch] | None = None
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
        self._chunks = None
        self._epoch_tokens = -1  # resumed mid-epoch: the emptiness check starts with the next epoch

    def _open_chunks(self) -> Iterator[pa.RecordBatch]:
        url = self.urls[self.shard_order(self.state.epoch)[self.state.shard]]
        for batch in iter_record_batches(url, self.state.row):
            for offset in range(0, batch.num_rows, self.chunk_rows):
                yield batch.slice(offset, self.chunk_rows)

    def _next_shard(self) -> bool:
        """Move to the next shard (and epoch); False when a single pass is over."""
        state = self.state
        state.shard, state.row, self._chunks = state.shard + 1, 0, None
        if state.shard < len(self.urls):
            return True
        if not self.loop:
            return False
        if self._epoch_tokens == 0:
            raise ValueError("the usable shards hold no tokens")
        state.epoch, state.shard, self._epoch_tokens = state.epoch + 1, 0, 0
        return True

    def _fill(self) -> bool:
        """Tokenize the next chunk of rows into the pending buffer; False when a single pass is over."""
        if self._chunks is None:
            self._chunks = self._open_chunks()
        chunk = next(self._chunks, None)
        if chunk is None:
            return self._next_shard()
        ids, keys = self._tokenize(chunk)
        self.state.pending_ids = np.concatenate([self.state.pending_ids, ids])
        self.state.pending_keys = np.concatenate([self.state.pending_keys, keys])
        self.state.row += chunk.num_rows
        if self._epoch_tokens >= 0:
            self._epoch_tokens += len(ids)
        return True

    def _tokenize(self, chunk: pa.RecordBatch) -> tuple[np.ndarray, np.ndarray]:
        texts = chunk.column("text").to_pylist()
        words = chunk.column("words").to_pylist() if "words" in chunk.schema.names else [None] * len(texts)
        encodings = self.tokenizer.encode_batch(texts, add_special_tokens=False)
        ids, keys = [], []
        for text, doc_words, encoding in zip(texts, words, encodings):
            ids += [np.asarray(encoding.ids, dtype=np.int64), np.asarray([self.layout.doc_end_id])]
            if self.with_word_keys:
                doc_keys = token_word_keys(encoding, text, doc_words, self.state.next_key)
                if len(doc_keys):
                    self.state.next_key = int(doc_keys.max()) + 1
            else:
                doc_keys = np.full(len(encoding.ids), NOT_A_WORD, dtype=np.int64)
            keys += [doc_keys, np.asarray([NOT_A_WORD])]
        return np.concatenate(ids), np.concatenate(keys)

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

"""Training data from a dataset version: shards read by manifest, packed into fixed-length blocks.

Streaming: shards are read one record batch at a time (memory does not grow with the corpus), tokenized in
chunks, and their tokens concatenated into blocks of `seq_len` with no padding (a block may span documents;
document boundaries are marked with a separator token). Only the final block of a finite pass is padded.

The mix: training sees the sources in steady shares, block by block, whatever the sizes of their shards.
A source's share is its share of the split's tokens (counted once per run with the run's tokenizer), so
every source is used up at the same pace; or the share `train.mix` gives its source, kind or language,
optionally flattened by a temperature (`plan_mix`). Each block comes from the source furthest below its
share, which holds every logging window to the target within a block per source.

Determinism and resume: a source reads its shards in an order shuffled per pass, seeded by (seed, source,
pass), rows in order. The stream's position (per source: pass, shard, row, tokens emitted and not yet
emitted) is a small plain state that a checkpoint stores, so a resumed run continues with exactly the
blocks it would have seen.

Whole-word masking: every token carries a word key (same key = same word). For Chinese the words are the
jieba words of the `words` column, mapped onto tokens through the tokenizer's character offsets, so all
characters of a word are masked together (Chinese-BERT-wwm); English uses the same column's word tokens,
so all subwords of a word share a key. Special tokens have key -1 and are never masked.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from tokenizers import Encoding, Tokenizer

from pipeline import storage
from pipeline.schema import Manifest
from pipeline.versions import version_dir

NOT_A_WORD = -1


class ShardRef(NamedTuple):
    url: str
    sha256: str  # from the manifest: the bytes are checked against it as they are read
    source: str = ""
    lang: str = ""


def shard_urls(manifest_path: str, manifest: Manifest, split: str) -> list[ShardRef]:
    """The split's usable shards; quarantined shards are never returned."""
    base = version_dir(str(manifest_path))
    return [ShardRef(storage.join(base, shard.path), shard.sha256, shard.source, shard.lang)
            for shard in manifest.usable_shards(split)]


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


# ---------------------------------------------------------------- the mix


MIX_LEVELS = ("source", "kind", "lang")
# A continued run's strands: `<source>/new` reads the documents its parent never saw, `<source>/replay` the rest
NEW_SUFFIX, REPLAY_SUFFIX = "/new", "/replay"


@dataclass(frozen=True)
class SourceTokens:
    """A source of the train split as the mix sees it: its kind and language, and how many tokens it holds
    (each document's separator included) under the tokenizer that trains on it."""

    source: str
    kind: str
    lang: str
    tokens: int


@dataclass(frozen=True)
class Strand:
    """A line of documents the stream draws blocks from: one source's shards, with all their documents or,
    for a continued run, only the new ones (`only_ids`) or only the old ones (`except_ids`). `share` is its
    target share of the stream's tokens; `tokens` what one pass over it holds."""

    name: str
    shards: tuple[ShardRef, ...]
    share: float
    tokens: int
    only_ids: frozenset[str] | None = None
    except_ids: frozenset[str] | None = None


def count_source_tokens(
    shards: Sequence[ShardRef], tokenizer: Tokenizer, only_ids: frozenset[str] | None = None,
    except_ids: frozenset[str] | None = None,
) -> dict[str, SourceTokens]:
    """Tokens per source of the shards (of the documents the id filter keeps): one tokenizing pass."""
    counts: dict[str, list] = {}
    id_set = id_array(only_ids, except_ids)
    for shard in shards:
        for batch in iter_record_batches(shard):
            batch = keep_documents(batch, id_set, keep_listed=only_ids is not None)
            if not batch.num_rows:
                continue
            entry = counts.setdefault(shard.source, [batch.column("kind")[0].as_py() or "", shard.lang, 0])
            texts = batch.column("text").to_pylist()
            entry[2] += sum(len(e.ids) + 1 for e in tokenizer.encode_batch_fast(texts, add_special_tokens=False))
    return {source: SourceTokens(source, kind, lang, tokens) for source, (kind, lang, tokens) in counts.items() if tokens}


def mix_shares(sources: dict[str, SourceTokens], weights: Mapping[str, float] | None = None,
               temperature: float = 1.0) -> dict[str, float]:
    """Target token share of each source; sources left out of `weights` get none.

    Without weights every source weighs its tokens, so all are used up at the same pace (the corpus as it
    is, spread evenly over training). With weights, their keys all name sources, kinds or languages; a key's
    weight is shared by its sources in proportion to their tokens. The temperature flattens the weights as
    in multilingual pretraining: share of a key ~ (weight / total) ** (1 / temperature).
    """
    if weights:
        level = _mix_level(sources, weights)
        group_of = {name: getattr(source, level) for name, source in sources.items()}
        group_weight = dict(weights)
    else:
        group_of = {name: name for name in sources}
        group_weight = {name: float(source.tokens) for name, source in sources.items()}
    group_tokens: dict[str, int] = {}
    for name, source in sources.items():
        group_tokens[group_of[name]] = group_tokens.get(group_of[name], 0) + source.tokens
    weighed = {group: weight for group, weight in group_weight.items() if weight > 0 and group_tokens.get(group)}
    total = sum(weighed.values())
    if not total:
        raise ValueError("the mix gives no weight to any source that holds tokens")
    tempered = {group: (weight / total) ** (1 / temperature) for group, weight in weighed.items()}
    norm = sum(tempered.values())
    return {name: tempered[group_of[name]] / norm * source.tokens / group_tokens[group_of[name]]
            for name, source in sources.items() if group_of[name] in tempered}


def _mix_level(sources: dict[str, SourceTokens], weights: Mapping[str, float]) -> str:
    named = {level: {getattr(source, level) for source in sources.values()} for level in MIX_LEVELS}
    for level in MIX_LEVELS:
        if set(weights) <= named[level]:
            return level
    raise ValueError(
        f"train.mix keys {sorted(weights)} must all name sources {sorted(named['source'])}, all kinds "
        f"{sorted(named['kind'])} or all languages {sorted(named['lang'])} of the train split's usable shards"
    )


def plan_mix(
    shards: Sequence[ShardRef],
    tokenizer: Tokenizer,
    weights: Mapping[str, float] | None = None,
    temperature: float = 1.0,
    new_ids: frozenset[str] | None = None,
    replay_share: float = 0.0,
) -> list[Strand]:
    """The strands of a training stream and their target shares.

    A fresh run has one strand per source, shared by `mix_shares`. A continued run (`new_ids`: the documents
    the parent never saw) has a `<source>/new` strand per source of new text, together `1 - replay_share`
    of the tokens in proportion to their tokens, and a `<source>/replay` strand per source of old text,
    together `replay_share`, shared by the configured mix.
    """
    def strands(sources: dict[str, SourceTokens], shares: dict[str, float], suffix: str, scale: float,
                **id_filter: frozenset[str]) -> list[Strand]:
        return [Strand(name + suffix, tuple(s for s in shards if s.source == name), scale * share,
                       sources[name].tokens, **id_filter) for name, share in shares.items()]

    if new_ids is None:
        sources = count_source_tokens(shards, tokenizer)
        if not sources:
            raise ValueError("the usable shards hold no tokens")
        return strands(sources, mix_shares(sources, weights, temperature), "", 1.0)
    new = count_source_tokens(shards, tokenizer, only_ids=new_ids)
    old = count_source_tokens(shards, tokenizer, except_ids=new_ids)
    if not new:
        raise ValueError("no new or changed document holds tokens: there is nothing to continue on")
    planned = strands(new, mix_shares(new), NEW_SUFFIX, 1.0 if not old else 1 - replay_share, only_ids=new_ids)
    if old and replay_share > 0:
        planned += strands(old, mix_shares(old, weights, temperature), REPLAY_SUFFIX, replay_share, except_ids=new_ids)
    return planned


def with_replay_share(strands: Sequence[Strand], replay_share: float) -> list[Strand]:
    """A continued run's strands with their replay strands together at `replay_share` of the tokens and their
    new-text strands at the rest, each group keeping its inner shares (all new text when nothing is old)."""
    replay = [s for s in strands if s.except_ids is not None]
    totals = {True: sum(s.share for s in replay), False: sum(s.share for s in strands if s.except_ids is None)}
    targets = {True: replay_share, False: 1 - replay_share} if replay else {True: 0.0, False: 1.0}
    return [replace(s, share=s.share * targets[s.except_ids is not None] / totals[s.except_ids is not None])
            for s in strands]


def id_array(only_ids: frozenset[str] | None, except_ids: frozenset[str] | None) -> pa.Array | None:
    """The ids of a document filter as one Arrow array, built once for the many batches it filters."""
    ids = only_ids if only_ids is not None else except_ids
    return None if ids is None else pa.array(sorted(ids), pa.string())


def keep_documents(batch: pa.RecordBatch, id_set: pa.Array | None, keep_listed: bool) -> pa.RecordBatch:
    """The rows whose id is in `id_set` (`keep_listed`) or not in it; every row when there is no set."""
    if id_set is None:
        return batch
    listed = pc.is_in(batch.column("id"), value_set=id_set)
    return batch.filter(listed if keep_listed else pc.invert(listed))


# ---------------------------------------------------------------- the stream


@dataclass
class StrandState:
    epoch: int = 0  # passes over the strand completed
    next_shard: int = 0  # position in the epoch's shard order of the shard being read
    row: int = 0  # next row of that shard
    emitted: int = 0  # tokens the strand has put into blocks
    pending_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    pending_keys: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))


@dataclass
class StreamState:
    names: list[str]  # of the strands, so a state cannot be loaded into a stream of other strands
    strands: list[StrandState]
    next_key: int = 0  # next unused word key

    def to_dict(self) -> dict:
        """Plain values and tensors only: loadable with torch.load(weights_only=True)."""
        return {
            "names": list(self.names),
            "next_key": self.next_key,
            "strands": [{"epoch": s.epoch, "next_shard": s.next_shard, "row": s.row, "emitted": s.emitted,
                         "pending_ids": torch.from_numpy(s.pending_ids.copy()),
                         "pending_keys": torch.from_numpy(s.pending_keys.copy())} for s in self.strands],
        }

    @classmethod
    def from_dict(cls, state: dict) -> StreamState:
        return cls(
            names=list(state["names"]),
            next_key=state["next_key"],
            strands=[StrandState(epoch=s["epoch"], next_shard=s["next_shard"], row=s["row"], emitted=s["emitted"],
                                 pending_ids=s["pending_ids"].numpy().astype(np.int64),
                                 pending_keys=s["pending_keys"].numpy().astype(np.int64)) for s in state["strands"]],
        )


class PackedStream:
    """Blocks of `seq_len` tokens drawn from the strands in their target shares, endlessly (`loop=True`) or
    for one pass.

    Each block is filled from the strand furthest below its share of the tokens emitted so far (the block
    included), so every window of blocks holds the mix to within a block per strand, with no randomness to
    store. A strand reads its shards one after another in an order shuffled per pass, documents in order,
    and its own pass restarts when it ends: a strand with a large share repeats its text rather than
    stretching the others'. In a single pass a strand that ends hands the rest of its block to the next one.
    """

    def __init__(
        self,
        strands: Sequence[Strand],
        tokenizer: Tokenizer,
        layout: PackingLayout,
        seq_len: int,
        seed: int,
        loop: bool = True,
        with_word_keys: bool = True,
        chunk_rows: int = 64,
    ) -> None:
        self.strands = [s for s in strands if s.share > 0 and s.shards]
        if not self.strands:
            raise ValueError("no usable shards to read: the split is empty, every shard is quarantined or the mix weighs none")
        total_share = sum(s.share for s in self.strands)
        self.shares = np.asarray([s.share / total_share for s in self.strands])
        self.tokenizer = tokenizer
        self.layout = layout
        self.seq_len = seq_len
        self.seed = seed
        self.loop = loop
        self.with_word_keys = with_word_keys
        self.chunk_rows = chunk_rows
        self._id_sets = [id_array(s.only_ids, s.except_ids) for s in self.strands]
        self.state = StreamState([s.name for s in self.strands], [StrandState() for _ in self.strands])
        self._readers: dict[int, Iterator[pa.RecordBatch]] = {}  # by strand; rebuilt on resume
        self._ended: set[int] = set()  # strands whose single pass is over

    @property
    def body_len(self) -> int:
        return self.seq_len - (self.layout.start_id is not None)

    @property
    def target_shares(self) -> dict[str, float]:
        return {s.name: float(share) for s, share in zip(self.strands, self.shares)}

    def emitted_tokens(self) -> dict[str, int]:
        return {s.name: state.emitted for s, state in zip(self.strands, self.state.strands)}

    def shard_order(self, strand: int, epoch: int) -> list[int]:
        order = list(range(len(self.strands[strand].shards)))
        random.Random(f"{self.seed}/{self.strands[strand].name}/{epoch}").shuffle(order)
        return order

    def load_state(self, state: StreamState) -> None:
        if state.names != self.state.names:
            raise ValueError(f"the stream state is of strands {state.names}, this stream reads {self.state.names}")
        self.state = state
        self._readers = {}
        self._ended = set()

    def _reader(self, index: int) -> Iterator[pa.RecordBatch]:
        if index not in self._readers:
            state = self.state.strands[index]
            shard = self.strands[index].shards[self.shard_order(index, state.epoch)[state.next_shard]]
            self._readers[index] = self._chunks(shard, state.row)
        return self._readers[index]

    def _chunks(self, url: ShardRef, row: int) -> Iterator[pa.RecordBatch]:
        for batch in iter_record_batches(url, row):
            for offset in range(0, batch.num_rows, self.chunk_rows):
                yield batch.slice(offset, self.chunk_rows)

    def _fill(self, index: int) -> bool:
        """Tokenize the strand's next chunk of kept rows into its pending buffer; False when its single pass
        is over. Rows count as read exactly when their tokens enter the buffer, so the state is always whole."""
        strand, state = self.strands[index], self.state.strands[index]
        passes_without_tokens = 0
        while True:
            if state.next_shard == len(strand.shards):
                if not self.loop:
                    return False
                passes_without_tokens += 1
                if passes_without_tokens > 1:
                    raise ValueError(f"strand {strand.name}: its shards hold no tokens")
                state.epoch, state.next_shard, state.row = state.epoch + 1, 0, 0
            chunk = next(self._reader(index), None)
            if chunk is None:
                del self._readers[index]
                state.next_shard, state.row = state.next_shard + 1, 0
                continue
            state.row += chunk.num_rows
            kept = keep_documents(chunk, self._id_sets[index], keep_listed=strand.only_ids is not None)
            documents = self._tokenize(kept)
            if documents:
                state.pending_ids = np.concatenate([state.pending_ids, *(ids for ids, _ in documents)])
                state.pending_keys = np.concatenate([state.pending_keys, *(keys for _, keys in documents)])
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

    def _most_behind(self, block_tokens: int) -> int | None:
        """The strand furthest below its share once `block_tokens` more are emitted; ties to the first."""
        live = [i for i in range(len(self.strands)) if i not in self._ended]
        if not live:
            return None
        emitted = np.asarray([s.emitted for s in self.state.strands], dtype=np.float64)
        deficit = self.shares * (emitted.sum() + block_tokens) - emitted
        return max(live, key=lambda i: deficit[i])

    def _take(self, index: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        state = self.state.strands[index]
        while len(state.pending_ids) < count:
            if not self._fill(index):
                self._ended.add(index)
                break
        ids, keys = state.pending_ids[:count], state.pending_keys[:count]
        state.pending_ids, state.pending_keys = state.pending_ids[count:], state.pending_keys[count:]
        state.emitted += len(ids)
        return ids, keys

    def next_block(self) -> tuple[np.ndarray, np.ndarray, int] | None:
        """(ids, word keys, real length) of the next block; None after the last block of a single pass."""
        body = self.body_len
        id_parts: list[np.ndarray] = []
        key_parts: list[np.ndarray] = []
        missing = body
        while missing and (index := self._most_behind(missing)) is not None:
            ids, keys = self._take(index, missing)
            id_parts.append(ids)
            key_parts.append(keys)
            missing -= len(ids)
        if missing == body:
            return None
        ids, keys = np.concatenate(id_parts), np.concatenate(key_parts)
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

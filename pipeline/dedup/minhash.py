"""Near duplicates: MinHash signatures per document, then LSH banding and union-find across the build.

Signatures are computed here with vectorized numpy rather than datasketch. On 20,000 headlines and reviews
drawn from ../shared/data (3.1 MB, bench/dedup_bench.py, one core, 128 permutations, character 5-grams)
datasketch's `MinHash.update_batch` per document took 32.8 s and this implementation 1.6 s (20x): datasketch
hashes each shingle with sha1 in Python and permutes one document at a time, here a batch's shingles are
hashed with a rolling polynomial and permuted together. Both find the same near-duplicate pairs at 0.8 up
to the estimator's noise (415 in common of 417 and 416).

Hashing scheme, fixed by our own code so that signatures do not change with the numpy version:
- tokens: Unicode code points of the canonical text (the exact-dedup form: case folded, no whitespace or
  punctuation) for Chinese and any other language; for English, crc32 of each case-folded `\\w+` word;
- shingle hash: polynomial over `ngram` consecutive tokens mod 2**64, finished with splitmix64;
- permutation p: multiply-shift `(a_p * h + b_p) mod 2**64 >> 32`, with odd a_p and b_p drawn from
  splitmix64 of the configured seed, giving uint32 values; the signature is the minimum per permutation.
"""

from __future__ import annotations

import functools
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from pipeline import sortedsets
from pipeline.config import DedupConfig
from pipeline.dedup.exact import canonical_codepoints
from pipeline.stages import StageResult, set_column

_SHINGLE_BASE = np.uint64(0x100000001B3)  # odd, so the polynomial mixes every token into every bit above it
_BAND_BASE = np.uint64(0x9E3779B97F4A7C15)
_WORD = re.compile(r"\w+")
_BLOCK_SHINGLES = 1 << 15  # 256 KB of uint64 per permutation pass: stays in the CPU cache
_BLOCK_VALUES = 1 << 22  # pairs x permutations compared at once when verifying: ~4 MB of booleans
# Candidates are verified against the signatures afterwards, so a false positive of the banding costs a
# comparison while a false negative loses a duplicate for good: the band choice weighs misses more.
LSH_FALSE_NEGATIVE_WEIGHT = 0.8
# Each document in a band bucket is compared with its next BUCKET_WINDOW members and the bucket's head.
BUCKET_WINDOW = 32


def splitmix64(values: np.ndarray) -> np.ndarray:
    """The splitmix64 finalizer: a bijective mix of uint64 values (wrap-around arithmetic on purpose)."""
    z = values.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _permutation_params(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    base = splitmix64(np.array([seed % 2**64], dtype=np.uint64))[0]
    draws = splitmix64(base + np.arange(2 * num_perm, dtype=np.uint64))
    return draws[0::2] | np.uint64(1), draws[1::2]


def _word_tokens(text: str) -> np.ndarray:
    words = _WORD.findall(text.casefold())
    return np.fromiter((zlib.crc32(w.encode("utf-8")) for w in words), dtype=np.uint64, count=len(words))


def _polynomial(tokens: np.ndarray, width: int) -> np.ndarray:
    """Hash of every window of `width` consecutive tokens (one value per window start)."""
    count = len(tokens) - width + 1
    hashes = np.zeros(count, dtype=np.uint64)
    for k in range(width):
        hashes = hashes * _SHINGLE_BASE + tokens[k : k + count]
    return hashes


def _padded(codes: np.ndarray, starts: np.ndarray, lengths: np.ndarray, ngram: int) -> tuple[np.ndarray, np.ndarray]:
    """The token runs codes[start:start + length] concatenated as uint64, each padded with zero tokens to at
    least `ngram`; and the padded lengths."""
    padded_lengths = np.maximum(lengths, ngram)
    out_starts = np.cumsum(padded_lengths) - padded_lengths
    within = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    tokens = np.zeros(padded_lengths.sum(), dtype=np.uint64)
    tokens[np.repeat(out_starts, lengths) + within] = codes[np.repeat(starts, lengths) + within]
    return tokens, padded_lengths


def _shingle_hashes(tokens: np.ndarray, lengths: np.ndarray, ngram: int) -> tuple[np.ndarray, np.ndarray]:
    """Shingle hashes of docs whose tokens lie concatenated in `tokens` (each at least `ngram` long, padded
    with zero tokens when shorter, so that it is one shingle of all its tokens), and each doc's start offset
    in the hashes."""
    windows = _polynomial(tokens, ngram)  # also spans doc boundaries; those are skipped below
    counts = lengths - ngram + 1
    doc_starts = np.cumsum(lengths) - lengths
    offsets = np.cumsum(counts) - counts
    inside = np.arange(counts.sum()) + np.repeat(doc_starts - offsets, counts)
    return splitmix64(windows[inside]), offsets


@dataclass(frozen=True)
class MinHasher:
    """Signatures of texts under one configuration; the same config gives the same signatures everywhere."""

    num_perm: int
    zh_char_ngram: int
    en_word_ngram: int
    min_chars: int
    seed: int

    @classmethod
    def from_config(cls, config: DedupConfig) -> MinHasher:
        return cls(config.num_perm, config.zh_char_ngram, config.en_word_ngram, config.min_chars_for_near,
                   config.seed)

    def signatures(self, texts: Sequence[str], langs: Sequence[str | None]) -> tuple[np.ndarray, np.ndarray]:
        """Signatures (uint32 [n, num_perm]; rows of short texts are 0) and the mask of texts that have one.

        A text has one when its canonical form has at least min_chars characters and it yields tokens.
        """
        codes, offsets = canonical_codepoints(texts)
        long_enough = np.diff(offsets) >= max(self.min_chars, 1)
        is_en = np.array([lang == "en" for lang in langs], dtype=bool)
        signatures = np.zeros((len(texts), self.num_perm), dtype=np.uint32)
        has_signature = np.zeros(len(texts), dtype=bool)
        chars = np.flatnonzero(long_enough & ~is_en)
        if len(chars):
            starts = offsets[chars]
            tokens, lengths = _padded(codes, starts, offsets[chars + 1] - starts, self.zh_char_ngram)
            signatures[chars] = self._min_hashes(*_shingle_hashes(tokens, lengths, self.zh_char_ngram))
            has_signature[chars] = True
        words = {row: _word_tokens(texts[row]) for row in np.flatnonzero(long_enough & is_en).tolist()}
        words = {row: tokens for row, tokens in words.items() if len(tokens)}
        if words:
            rows = list(words)
            joined = np.concatenate(list(words.values()))
            lengths = np.array([len(t) for t in words.values()], dtype=np.int64)
            tokens, lengths = _padded(joined, np.cumsum(lengths) - lengths, lengths, self.en_word_ngram)
            signatures[rows] = self._min_hashes(*_shingle_hashes(tokens, lengths, self.en_word_ngram))
            has_signature[rows] = True
        return signatures, has_signature

    def _min_hashes(self, hashes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """Minimum per document and permutation; one permutation at a time over blocks of ~32k shingles
        (measured: 2.4x faster than a [shingles x permutations] block, which leaves the cache)."""
        a, b = _permutation_params(self.num_perm, self.seed)
        result = np.empty((len(offsets), self.num_perm), dtype=np.uint32)
        ends = np.append(offsets[1:], len(hashes))
        for first, last in _blocks(offsets, _BLOCK_SHINGLES):
            block = hashes[offsets[first] : ends[last - 1]]
            starts = offsets[first:last] - offsets[first]
            permuted = np.empty_like(block)
            for p in range(self.num_perm):
                np.multiply(block, a[p], out=permuted)
                np.add(permuted, b[p], out=permuted)
                # the shift keeps order, so it is applied to the minima rather than to every shingle
                result[first:last, p] = np.minimum.reduceat(permuted, starts) >> np.uint64(32)
        return result


def _blocks(offsets: np.ndarray, max_shingles: int) -> list[tuple[int, int]]:
    """Runs of consecutive docs [first, last) holding about `max_shingles` shingles (one long doc may exceed)."""
    starts = np.flatnonzero(np.diff(offsets // max_shingles, prepend=-1))
    return list(zip(starts.tolist(), np.append(starts[1:], len(offsets)).tolist()))


def signature_array(signatures: np.ndarray, has_signature: np.ndarray) -> pa.FixedSizeListArray:
    """Signatures as fixed_size_list<uint32>[num_perm], null where a text is too short to have one."""
    values = pa.array(signatures.ravel(), type=pa.uint32())
    return pa.FixedSizeListArray.from_arrays(values, signatures.shape[1], mask=pa.array(~has_signature))


def signature_matrix(column: pa.Array | pa.ChunkedArray, num_perm: int) -> tuple[np.ndarray, np.ndarray]:
    """The `minhash` column back as (uint32 [n, num_perm], has_signature); null rows are 0."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if not pa.types.is_fixed_size_list(array.type) or array.type.list_size != num_perm:
        raise ValueError(f"minhash must be fixed_size_list<uint32>[{num_perm}] (dedup.num_perm), got {array.type}")
    has_signature = array.is_valid().to_numpy(zero_copy_only=False)
    signatures = np.zeros((len(array), num_perm), dtype=np.uint32)
    signatures[has_signature] = array.drop_null().flatten().to_numpy().reshape(-1, num_perm)
    return signatures, has_signature


class MinHashStage:
    """Adds `minhash`: fixed_size_list<uint32>[num_perm], null for texts shorter than min_chars_for_near."""

    name = "minhash"
    reads = ("text", "lang")
    adds = ("minhash",)

    def __init__(self, config: DedupConfig) -> None:
        self.hasher = MinHasher.from_config(config)

    def __call__(self, batch: pa.RecordBatch) -> StageResult:
        texts = batch.column("text").to_pylist()
        langs = batch.column("lang").to_pylist()
        signatures, has_signature = self.hasher.signatures(texts, langs)
        return StageResult(batch=set_column(batch, "minhash", signature_array(signatures, has_signature)))


@functools.lru_cache(maxsize=64)  # ~15 ms a search, asked for by every batch of keys a partition writes
def lsh_bands(threshold: float, num_perm: int, false_negative_weight: float = 0.5) -> tuple[int, int]:
    """(bands, rows per band) with bands * rows <= num_perm minimising the weighted error areas.

    A pair of Jaccard similarity s shares at least one band with probability 1 - (1 - s**rows)**bands. The
    false-positive area below the threshold and the false-negative area above it are weighed and the
    cheapest (bands, rows) is taken, the same criterion as datasketch's MinHashLSH.
    """
    grid = np.linspace(0.0, 1.0, 2001)
    below, above = grid <= threshold, grid >= threshold
    best = (np.inf, 1, 1)
    for rows in range(1, num_perm + 1):
        for bands in range(1, num_perm // rows + 1):
            collide = 1.0 - (1.0 - grid**rows) ** bands
            false_positive = collide[below].mean() * threshold
            false_negative = (1.0 - collide[above]).mean() * (1.0 - threshold)
            error = (1.0 - false_negative_weight) * false_positive + false_negative_weight * false_negative
            if error < best[0]:
                best = (error, bands, rows)
    return best[1], best[2]


def band_keys(signatures: np.ndarray, band: int, rows: int) -> np.ndarray:
    """One uint64 per document for a band: equal band values give equal keys (unequal collide ~2**-64)."""
    keys = np.zeros(len(signatures), dtype=np.uint64)
    for column in range(band * rows, (band + 1) * rows):
        keys = keys * _BAND_BASE + signatures[:, column].astype(np.uint64)
    return splitmix64(keys)


def bucket_pairs(keys: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Candidate pairs (left < right) of documents whose keys are equal.

    Members of a bucket, in index order, are paired with their next `window` members and with the bucket's
    first member. Buckets up to window + 1 members thus give all their pairs; a bigger bucket gives
    O(size * window) pairs instead of O(size**2), and still links every member to its neighbours and its head.
    """
    order = np.argsort(keys, kind="stable")  # stable: inside a bucket, documents stay in index order
    sorted_keys = keys[order]
    lefts, rights = [], []
    for distance in range(1, window + 1):
        same = np.flatnonzero(sorted_keys[:-distance] == sorted_keys[distance:])
        if len(same) == 0:
            break  # no bucket has more than `distance` members, so none has pairs farther apart
        lefts.append(order[same])
        rights.append(order[same + distance])
    bucket_start = np.flatnonzero(np.diff(sorted_keys, prepend=~sorted_keys[:1]) != 0)
    head = np.repeat(bucket_start, np.diff(np.append(bucket_start, len(keys))))
    far = np.flatnonzero(np.arange(len(keys)) - head > window)
    lefts.append(order[head[far]])
    rights.append(order[far])
    return np.concatenate(lefts), np.concatenate(rights)


def estimated_jaccard(signatures: np.ndarray, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Fraction of equal permutation minima for each pair (float32), computed in blocks to bound memory."""
    similarity = np.empty(len(left), dtype=np.float32)
    step = max(1, _BLOCK_VALUES // signatures.shape[1])
    for start in range(0, len(left), step):
        stop = start + step
        equal = signatures[left[start:stop]] == signatures[right[start:stop]]
        similarity[start:stop] = equal.mean(axis=1)
    return similarity


def near_pairs(signatures: np.ndarray, threshold: float, window: int = BUCKET_WINDOW) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (left < right, unique) of rows whose estimated Jaccard similarity is at least `threshold`.

    Scaling: one band at a time, a uint64 key per document (8 bytes x n) is sorted, so the extra memory is
    O(n) besides the signatures (4 bytes x num_perm x n: 51 MB for 100k docs x 128). Candidates of a band
    are verified right away and only verified pairs are kept, so memory never holds every band's candidates;
    time is bands x O(n log n) for the sorts plus O(candidates x num_perm) for the verification. Measured:
    181k signatures (93 MB) in 3.1 s with 14 MB of extra memory; banding found 102 of 102 pairs >= 0.8
    that brute force found on a 10k sample.
    """
    bands, rows = lsh_bands(threshold, signatures.shape[1], LSH_FALSE_NEGATIVE_WEIGHT)
    n = len(signatures)
    found: list[np.ndarray] = []
    for band in range(bands):
        left, right = bucket_pairs(band_keys(signatures, band, rows), window)
        similar = estimated_jaccard(signatures, left, right) >= threshold
        found.append(np.minimum(left, right)[similar] * n + np.maximum(left, right)[similar])
    pair_codes = sortedsets.unique(np.concatenate(found)) if found else np.empty(0, dtype=np.int64)
    return pair_codes // n, pair_codes % n


def connected_components(n: int, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Union-find over the pairs, vectorized: each node's label is the smallest node index in its component.

    Every round hooks both ends of each edge to the smaller of their labels, then compresses paths
    (label = label[label]) until stable. Labels only decrease and always name a node of the same component,
    so when every edge has equal labels at both ends each component carries its minimum index.
    """
    labels = np.arange(n, dtype=np.int64)
    while True:
        unequal = labels[left] != labels[right]
        if not unequal.any():
            return labels
        low = np.minimum(labels[left[unequal]], labels[right[unequal]])
        np.minimum.at(labels, labels[left[unequal]], low)
        np.minimum.at(labels, labels[right[unequal]], low)
        while not np.array_equal(compressed := labels[labels], labels):
            labels = compressed

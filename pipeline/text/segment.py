"""Stage 5, segmentation: `words` per document, jieba precise mode for zh, a regex tokenizer for en.

jieba is the hot spot of the whole chain (about 1 MB/s per core). With HMM on (the default) its precise
mode runs through pipeline.text.precise_cut, which gives jieba's words in about half its time; with HMM off
jieba itself cuts. `segment.engine: rjieba` opts into rjieba (jieba-rs), faster still, whose words differ
from jieba's in a few percent of documents; user dictionaries are read the way jieba reads them.

Segmentation runs in a process pool: each worker loads the dictionary once (its initializer), chunks of
documents balanced by bytes are sent to it,
and the pool is created lazily and reused by every later call with the same (workers, segment config).
`jieba.enable_parallel` would not help: it splits one text by lines across processes, and our texts are
short. Workers are started with 'spawn': the flow calls stages from threads, and forking a process that
runs threads can copy a lock in its held state. With one worker everything runs in this process, and
the output is identical either way: each document is segmented on its own, by the same code and
dictionary, and the chunks are reassembled in order.

English gets a regex word tokenizer rather than a model tokenizer: `words` serves word counts, quality
signals and whole-word masking, which need word boundaries, not subwords; a regex needs no download,
is deterministic and is many times faster. The tokenizer of the trained model is built later, in
train/, from these shards.

Whitespace-only tokens are removed; PII placeholders (<EMAIL>...) stay one token each. Stop words are
not removed: the words must still spell the text, and stop words feed a quality signal instead.
"""

from __future__ import annotations

import atexit
import importlib.util
import logging
import math
import multiprocessing
import re
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from functools import lru_cache, partial
from pathlib import Path

import jieba
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.config import ConfigError, SegmentConfig
from pipeline.stages import StageResult, set_column
from pipeline.text.pii import PLACEHOLDERS
from pipeline.text.precise_cut import PreciseCutter

WORDS_TYPE = pa.list_(pa.string())
_PLACEHOLDER = "|".join(re.escape(p) for p in PLACEHOLDERS.values())
_PLACEHOLDER_SPLIT = re.compile(f"({_PLACEHOLDER})")
_EN_WORD = re.compile(rf"{_PLACEHOLDER}|\w+(?:['’]\w+)*|[^\w\s]")


@dataclass(frozen=True)
class SegmenterSpec:
    """What decides the segmentation: hashable, picklable, the key of a worker pool."""

    hmm: bool
    user_dicts: tuple[str, ...]
    engine: str

    @classmethod
    def from_config(cls, config: SegmentConfig) -> SegmenterSpec:
        paths = tuple(str(Path(p).resolve()) for p in config.user_dicts)
        missing = [p for p in paths if not Path(p).is_file()]
        if missing:
            raise FileNotFoundError(f"segment.user_dicts: no such file(s): {missing}")
        if config.engine == "rjieba" and importlib.util.find_spec("rjieba") is None:
            raise ConfigError(
                "segment.engine: 'rjieba' needs the rjieba package, which is not installed; "
                "install the extra with: pip install 'corpusflow[fast]'"
            )
        return cls(hmm=config.hmm, user_dicts=paths, engine=config.engine)


@lru_cache(maxsize=None)
def jieba_tokenizer(spec: SegmenterSpec) -> jieba.Tokenizer:
    """A tokenizer of our own rather than jieba's global one, so user dictionaries stay ours."""
    jieba.setLogLevel(logging.WARNING)
    tokenizer = jieba.Tokenizer()
    tokenizer.initialize()
    for path in spec.user_dicts:
        tokenizer.load_userdict(path)
    return tokenizer


def user_dict_entries(path: str) -> Iterator[tuple[str, int | None, str | None]]:
    """(word, frequency, tag) per line of a jieba user dictionary, read the way jieba reads it."""
    for line in Path(path).read_text(encoding="utf-8-sig").splitlines():
        if line := line.strip():
            word, freq, tag = jieba.re_userdict.match(line).groups()
            yield word.strip(), int(freq) if freq else None, tag.strip() if tag else None


def rjieba_cutter(spec: SegmenterSpec) -> Callable[[str], list[str]]:
    import rjieba  # the optional `fast` extra; SegmenterSpec.from_config checked that it is there

    segmenter = rjieba.Jieba()
    for path in spec.user_dicts:
        for word, freq, tag in user_dict_entries(path):
            segmenter.add_word(word, freq, tag)
    return partial(segmenter.cut, hmm=spec.hmm)


@lru_cache(maxsize=None)
def zh_cutter(spec: SegmenterSpec) -> Callable[[str], list[str]]:
    """The function that cuts Chinese text into words under `spec`, built once per process."""
    if spec.engine == "rjieba":
        return rjieba_cutter(spec)
    tokenizer = jieba_tokenizer(spec)
    if spec.hmm:
        return PreciseCutter(tokenizer).cut
    return partial(tokenizer.lcut, HMM=False)


def segment_zh(text: str, cut: Callable[[str], list[str]]) -> list[str]:
    if "<" not in text:
        return [w for w in cut(text) if not w.isspace()]
    words: list[str] = []
    for i, part in enumerate(_PLACEHOLDER_SPLIT.split(text)):
        if i % 2:
            words.append(part)  # a placeholder, kept whole
        elif part:
            words.extend(w for w in cut(part) if not w.isspace())
    return words


def segment_en(text: str) -> list[str]:
    return _EN_WORD.findall(text)


def segment_texts(texts: list[str], is_zh: list[bool], spec: SegmenterSpec) -> pa.Array:
    """Words of each text as a list<string> array; the unit of work of a worker."""
    cut = zh_cutter(spec)
    words: list[str] = []
    offsets = [0]
    for text, zh in zip(texts, is_zh):
        words += segment_zh(text, cut) if zh else segment_en(text)
        offsets.append(len(words))
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(words, pa.string()))


def _init_worker(spec: SegmenterSpec) -> None:
    zh_cutter(spec)


_pools: dict[tuple[int, SegmenterSpec], ProcessPoolExecutor] = {}
_pools_lock = threading.Lock()


def _pool(workers: int, spec: SegmenterSpec) -> ProcessPoolExecutor:
    with _pools_lock:
        key = (workers, spec)
        if key not in _pools:
            _pools[key] = ProcessPoolExecutor(
                max_workers=workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker,
                initargs=(spec,),
            )
        return _pools[key]


def _discard_pool(workers: int, spec: SegmenterSpec) -> None:
    with _pools_lock:
        pool = _pools.pop((workers, spec), None)
    if pool is not None:
        pool.shutdown(wait=False, cancel_futures=True)


def shutdown_segment_pools() -> None:
    """Stop every worker pool of this process (also run at interpreter exit)."""
    with _pools_lock:
        pools = list(_pools.values())
        _pools.clear()
    for pool in pools:
        pool.shutdown(wait=True, cancel_futures=True)


atexit.register(shutdown_segment_pools)


def chunk_bounds(byte_lengths: np.ndarray, n_chunks: int) -> list[tuple[int, int]]:
    """Contiguous [start, stop) ranges holding about the same number of bytes each."""
    n = len(byte_lengths)
    cumulative = np.cumsum(byte_lengths, dtype=np.int64)
    targets = cumulative[-1] * np.arange(1, n_chunks) / n_chunks
    cuts = np.searchsorted(cumulative, targets, side="right")
    edges = np.unique(np.concatenate([[0], cuts.clip(0, n), [n]])).tolist()
    return list(zip(edges[:-1], edges[1:]))


class Segment:
    name = "segment"
    reads = ("text", "lang")
    adds = ("words", "n_words")

    def __init__(self, config: SegmentConfig, workers: int) -> None:
        self.config = config
        self.workers = workers
        self.spec = SegmenterSpec.from_config(config)

    def __call__(self, batch: pa.RecordBatch) -> StageResult:
        texts = batch.column("text")
        is_zh = pc.fill_null(pc.equal(batch.column("lang"), "zh"), False).to_pylist()
        words = self.segment(texts, is_zh)
        batch = set_column(batch, "words", words)
        n_words = pc.cast(pc.fill_null(pc.list_value_length(words), 0), pa.int32())
        return StageResult(set_column(batch, "n_words", n_words))

    def segment(self, texts: pa.Array, is_zh: list[bool]) -> pa.Array:
        values = texts.to_pylist()
        if self.workers == 1 or len(values) < 2:
            return segment_texts(values, is_zh, self.spec)
        # enough chunks that a slow chunk does not leave the other workers idle, none above chunk_docs
        n_chunks = max(2 * self.workers, math.ceil(len(values) / self.config.chunk_docs))
        lengths = pc.fill_null(pc.binary_length(texts), 0).to_numpy(zero_copy_only=False)
        bounds = chunk_bounds(lengths, n_chunks)
        pool = _pool(self.workers, self.spec)
        try:
            futures = [
                pool.submit(segment_texts, values[a:b], is_zh[a:b], self.spec) for a, b in bounds
            ]
            return pa.concat_arrays([f.result() for f in futures])
        except BrokenProcessPool:
            _discard_pool(self.workers, self.spec)  # a retry of the task gets a fresh pool
            raise

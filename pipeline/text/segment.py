"""Stage 5, segmentation: `words` per document, jieba precise mode for zh, a regex tokenizer for en.

jieba is the hot spot of the whole chain (about 1 MB/s per core). With HMM on (the default) its precise
mode runs through pipeline.text.precise_cut, which gives jieba's words in about half its time; with HMM off
jieba itself cuts. `segment.engine: rjieba` opts into rjieba (jieba-rs), faster still, whose words differ
from jieba's in a few percent of documents; user dictionaries are read the way jieba reads them.

The stage segments in the process it runs in: the build parallelises whole partitions across worker
processes (flows/workers.py), each of which loads the dictionary once. `jieba.enable_parallel` would not
help: it splits one text by lines across processes, and our texts are short.

English gets a regex word tokenizer rather than a model tokenizer: `words` serves word counts, quality
signals and whole-word masking, which need word boundaries, not subwords; a regex needs no download,
is deterministic and is many times faster. The tokenizer of the trained model is built later, in
train/, from these shards.

Whitespace-only tokens are removed; PII placeholders (<EMAIL>...) stay one token each. Stop words are
not removed: the words must still spell the text, and stop words feed a quality signal instead.
"""

from __future__ import annotations

import importlib.util
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache, partial
from pathlib import Path

import jieba
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
    """What decides the segmentation: hashable, the key of the cutter cached per process."""

    hmm: bool
    user_dicts: tuple[str, ...]
    engine: str

    @classmethod
    def from_config(cls, config: SegmentConfig) -> SegmenterSpec:
        paths = tuple(str(Path(p).resolve()) for p in config.user_dicts)
        missing = [p for p in paths if not Path(p).is_file()]
        if missing:
            raise ConfigError(f"segment.user_dicts: no such file(s): {missing}")
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
    """Words of each text as a list<string> array."""
    cut = zh_cutter(spec)
    words: list[str] = []
    offsets = [0]
    for text, zh in zip(texts, is_zh):
        words += segment_zh(text, cut) if zh else segment_en(text)
        offsets.append(len(words))
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(words, pa.string()))


class Segment:
    name = "segment"
    reads = ("text", "lang")
    adds = ("words", "n_words")

    def __init__(self, config: SegmentConfig) -> None:
        self.spec = SegmenterSpec.from_config(config)

    def __call__(self, batch: pa.RecordBatch) -> StageResult:
        texts = batch.column("text")
        is_zh = pc.fill_null(pc.equal(batch.column("lang"), "zh"), False).to_pylist()
        words = segment_texts(texts.to_pylist(), is_zh, self.spec)
        batch = set_column(batch, "words", words)
        n_words = pc.cast(pc.fill_null(pc.list_value_length(words), 0), pa.int32())
        return StageResult(set_column(batch, "n_words", n_words))

"""Stage 6, quality: signals as columns first (`QualitySignals`), decisions by rule sets after
(`QualityFilter`), so thresholds can be retuned on finished shards without recomputing anything.

Every signal is computed column-wise: RE2 counts for character classes, pyarrow list kernels plus numpy
for word and line signals (n-grams are hashed per word id, duplicates found by sorting). The longest
run of one character, a backreference RE2 cannot express, is found on the code points of the whole batch.

Signals (all per document):
  n_chars                   characters of the text (int32)
  cjk_ratio                 Han characters / non-space characters (ChineseWebText's "Chinese ratio")
  punct_ratio, symbol_ratio, digit_ratio
                            Unicode P*, S* (emoji, currency, math, #) and Nd / non-space characters
  mean_word_len             mean length in characters of the words that hold a letter or digit
  n_stop_words, stop_word_ratio
                            stop-word occurrences, and their share of those words (both scripts' lists)
  dup_line_frac             non-empty lines that repeat an earlier line / non-empty lines (FineWeb-2)
  dup_ngram_frac            characters of words inside a repeated word 5-gram / characters of all words
                            (Gopher's duplicate n-gram fraction, n = 5)
  bullet_line_frac          lines starting with a bullet / non-empty lines (Gopher)
  terminal_punct_line_frac  lines ending in terminal punctuation / non-empty lines (C4, FineWeb)
  max_char_run              the longest run of one repeated character ("好好好好好好", "!!!!!!")
  chars_beside_repetition   what is left to read besides the one thing the text repeats most: characters
                            of its words minus those of its longest run of one character (from
                            CHAR_RUN_MIN on) or of one word or word pair repeated back to back (from
                            REPEAT_MIN times on: "很好很好很好很好" is 很 好 很 好..), whichever is larger;
                            NaN when nothing repeats that often. Emphasis, which normalisation cuts to 3,
                            never reaches it
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline import sortedsets
from pipeline.config import QualityConfig, QualityRules, SegmentConfig
from pipeline.stages import StageResult, set_column
from pipeline.text import charclass

DUP_NGRAM = 5
REPEAT_MIN = 4
CHAR_RUN_MIN = 5  # "太太太太差" (too-too-too-too bad) is emphasis too
_SPACE = r"\s\p{Z}"
_WORD_CHAR = r"\p{L}\p{N}"  # a word holds one of these
_BULLET_LINE = r"^(?:[-*•●▪◦‣⁃·・]|\d{1,2}[.)、])"
_TERMINAL_LINE = r"[.!?。！？…\"'”’」』)）]$"
_STOP_WORD_FILES = (Path(__file__).with_name("stopwords_zh.txt"), Path(__file__).with_name("stopwords_en.txt"))

FLOAT_SIGNALS = (
    "cjk_ratio", "punct_ratio", "symbol_ratio", "digit_ratio", "mean_word_len", "stop_word_ratio",
    "dup_line_frac", "dup_ngram_frac", "bullet_line_frac", "terminal_punct_line_frac",
    "chars_beside_repetition",
)
INT_SIGNALS = ("n_chars", "n_stop_words", "max_char_run")


@lru_cache(maxsize=None)
def load_stop_words(path: str | None) -> pa.Array:
    """The configured stop-word file, or the built-in zh and en lists; one word per line."""
    files = (Path(path),) if path else _STOP_WORD_FILES
    words = {line.strip() for f in files for line in f.read_text(encoding="utf-8").splitlines()}
    return pa.array(sorted(w for w in words if w), pa.string())


def _doc_sums(parents: np.ndarray, weights: np.ndarray | None, n_docs: int) -> np.ndarray:
    return np.bincount(parents, weights=weights, minlength=n_docs)


def _mask(values: pa.Array, pattern: str) -> np.ndarray:
    return pc.fill_null(pc.match_substring_regex(values, pattern), False).to_numpy(zero_copy_only=False)


def character_signals(texts: pa.Array) -> dict[str, np.ndarray]:
    n_chars = pc.fill_null(pc.utf8_length(texts), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    non_space = n_chars - charclass.count(texts, _SPACE)
    max_char_run = longest_runs(texts)
    return {
        "n_chars": n_chars,
        "cjk_ratio": charclass.share(charclass.count(texts, charclass.HAN), non_space),
        "punct_ratio": charclass.share(charclass.count(texts, r"\p{P}"), non_space),
        "symbol_ratio": charclass.share(charclass.count(texts, r"\p{S}"), non_space),
        "digit_ratio": charclass.share(charclass.count(texts, r"\p{Nd}"), non_space),
        "max_char_run": max_char_run,
        "char_run_chars": np.where(max_char_run >= CHAR_RUN_MIN, max_char_run, 0),
    }


def longest_runs(texts: pa.Array) -> np.ndarray:
    """Per text, the longest run of one repeated character (0 for an empty text), over all code points at once."""
    lengths = pc.fill_null(pc.utf8_length(texts), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    longest = np.zeros(len(lengths), np.int64)
    if not lengths.any():
        return longest
    codes, _ = charclass.code_points(texts)
    starts = (np.cumsum(lengths) - lengths)[lengths > 0]
    run_start = np.ones(len(codes), bool)
    run_start[1:] = codes[1:] != codes[:-1]
    run_start[starts] = True  # a run never continues into the next text
    run_starts = np.flatnonzero(run_start)
    run_lengths = np.diff(np.append(run_starts, len(codes)))
    longest[lengths > 0] = np.maximum.reduceat(run_lengths, np.searchsorted(run_starts, starts))
    return longest


def line_signals(texts: pa.Array) -> dict[str, np.ndarray]:
    n_docs = len(texts)
    lines = pc.split_pattern(pc.fill_null(texts, ""), "\n")
    parents = pc.list_parent_indices(lines).to_numpy()
    flat = pc.utf8_trim_whitespace(pc.list_flatten(lines))
    non_empty = pc.not_equal(flat, "").to_numpy(zero_copy_only=False)
    flat, parents = flat.filter(pa.array(non_empty)), parents[non_empty]
    n_lines = _doc_sums(parents, None, n_docs)
    ids = pc.dictionary_encode(flat).indices.to_numpy(zero_copy_only=False).astype(np.int64)
    distinct = sortedsets.unique(parents.astype(np.int64) * (int(ids.max(initial=0)) + 1) + ids)
    n_distinct = _doc_sums(distinct // (int(ids.max(initial=0)) + 1), None, n_docs)
    return {
        "dup_line_frac": charclass.share(n_lines - n_distinct, n_lines),
        "bullet_line_frac": charclass.share(_doc_sums(parents[_mask(flat, _BULLET_LINE)], None, n_docs), n_lines),
        "terminal_punct_line_frac": charclass.share(
            _doc_sums(parents[_mask(flat, _TERMINAL_LINE)], None, n_docs), n_lines
        ),
    }


def word_signals(words: pa.Array, stop_words: pa.Array) -> dict[str, np.ndarray]:
    n_docs = len(words)
    flat = pc.list_flatten(words)
    parents = pc.list_parent_indices(words).to_numpy()
    lengths = pc.utf8_length(flat).to_numpy(zero_copy_only=False).astype(np.float64)
    is_word = charclass.count(flat, _WORD_CHAR) > 0
    is_stop = pc.is_in(flat, value_set=stop_words).to_numpy(zero_copy_only=False) & is_word
    n_word = _doc_sums(parents[is_word], None, n_docs)
    n_stop = _doc_sums(parents[is_stop], None, n_docs)
    word_chars = _doc_sums(parents[is_word], lengths[is_word], n_docs)
    return {
        "mean_word_len": charclass.share(word_chars, n_word),
        "n_stop_words": n_stop.astype(np.int64),
        "stop_word_ratio": charclass.share(n_stop, n_word),
        "dup_ngram_frac": charclass.share(
            _duplicate_ngram_chars(flat, parents, lengths, n_docs), _doc_sums(parents, lengths, n_docs)
        ),
        "word_chars": word_chars,
        "repeated_run_chars": _repeated_run_chars(flat, parents, lengths, is_word, n_docs),
    }


def _repeated_run_chars(
    flat: pa.Array, parents: np.ndarray, lengths: np.ndarray, is_word: np.ndarray, n_docs: int
) -> np.ndarray:
    """Per document, the characters of its longest run of one word, or of one pair of words, repeated
    back to back at least REPEAT_MIN times (punctuation between them skipped); 0 when there is none.
    Neighbours are compared as strings, so this is a few linear passes, no sorting."""
    top = np.zeros(n_docs)
    words, docs = flat.filter(pa.array(is_word)), parents[is_word]
    ends = np.concatenate([[0.0], np.cumsum(lengths[is_word])])  # characters before each word
    for period in (1, 2):  # a word repeated; a pair repeated ("很 好 很 好": 很好 is two jieba words)
        n = len(words) - period
        if n <= 0:
            break
        same = _equal(words.slice(period), words.slice(0, n)) & (docs[period:] == docs[:n])
        if period == 2:  # a run of one word also repeats with period 2; it counts as period 1
            same &= ~_equal(words.slice(2), words.slice(1, n))
        edges = np.diff(np.concatenate([[0], same.astype(np.int8), [0]]))
        starts, stops = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
        long_enough = stops - starts + period >= REPEAT_MIN * period
        starts, stops = starts[long_enough], stops[long_enough]
        np.maximum.at(top, docs[starts], ends[stops + period] - ends[starts])
    return top


def _equal(left: pa.Array, right: pa.Array) -> np.ndarray:
    return pc.fill_null(pc.equal(left, right), False).to_numpy(zero_copy_only=False)


def _duplicate_ngram_chars(flat: pa.Array, parents: np.ndarray, lengths: np.ndarray, n_docs: int) -> np.ndarray:
    """Per document, characters of the words covered by a word n-gram seen earlier in the same document."""
    n = DUP_NGRAM
    if len(flat) < n:
        return np.zeros(n_docs)
    ids = pc.dictionary_encode(flat).indices.to_numpy(zero_copy_only=False).astype(np.uint64)
    starts = np.arange(len(flat) - n + 1)
    starts = starts[parents[starts] == parents[starts + n - 1]]  # n-grams inside one document only
    # polynomial hash of the n word ids; uint64 arithmetic wraps, which is what a hash wants
    key = parents[starts].astype(np.uint64)
    with np.errstate(over="ignore"):
        for k in range(n):
            key = key * np.uint64(1_000_003) + ids[starts + k]
    _, first = np.unique(key, return_index=True)
    repeated = np.ones(len(starts), bool)
    repeated[first] = False
    size = len(flat) + 1
    coverage = np.bincount(starts[repeated], minlength=size) - np.bincount(starts[repeated] + n, minlength=size)
    covered = np.cumsum(coverage[:-1]) > 0
    return _doc_sums(parents[covered], lengths[covered], n_docs)


class QualitySignals:
    name = "quality_signals"
    reads = ("text", "words")
    adds = INT_SIGNALS + FLOAT_SIGNALS

    def __init__(self, segment: SegmentConfig) -> None:
        self.stop_words = load_stop_words(segment.stop_words)

    def __call__(self, batch: pa.RecordBatch) -> StageResult:
        texts = batch.column("text")
        signals = {
            **character_signals(texts),
            **line_signals(texts),
            **word_signals(batch.column("words"), self.stop_words),
        }
        repeated = np.maximum(signals["char_run_chars"], signals["repeated_run_chars"])
        signals["chars_beside_repetition"] = np.where(
            repeated > 0, np.maximum(signals["word_chars"] - repeated, 0), np.nan
        )
        for name in INT_SIGNALS:
            batch = set_column(batch, name, pa.array(signals[name].astype(np.int32), pa.int32()))
        for name in FLOAT_SIGNALS:
            batch = set_column(batch, name, pa.array(signals[name].astype(np.float32), pa.float32()))
        return StageResult(batch)


@dataclass(frozen=True)
class Threshold:
    rule: str  # the QualityRules field
    reason: str  # what a drop is called: "quality:<reason>"
    signal: str  # the column it reads
    fails: Callable[[np.ndarray, float], np.ndarray]


def _below(values: np.ndarray, limit: float) -> np.ndarray:
    return values < limit


def _above(values: np.ndarray, limit: float) -> np.ndarray:
    return values > limit


# The fixed order in which rules are tried; a dropped document gets the first rule it fails. Spam and
# forbidden phrases come first (text rules, checked before these), being the most telling reasons.
THRESHOLDS = (
    Threshold("min_chars", "min_chars", "n_chars", _below),
    Threshold("max_chars", "max_chars", "n_chars", _above),
    Threshold("min_words", "min_words", "n_words", _below),
    Threshold("max_words", "max_words", "n_words", _above),
    Threshold("min_cjk_ratio", "min_cjk_ratio", "cjk_ratio", _below),
    Threshold("max_symbol_ratio", "max_symbol_ratio", "symbol_ratio", _above),
    Threshold("max_punct_ratio", "max_punct_ratio", "punct_ratio", _above),
    Threshold("max_digit_ratio", "max_digit_ratio", "digit_ratio", _above),
    Threshold("min_mean_word_len", "min_mean_word_len", "mean_word_len", _below),
    Threshold("max_mean_word_len", "max_mean_word_len", "mean_word_len", _above),
    Threshold("min_stop_words", "min_stop_words", "n_stop_words", _below),
    Threshold("min_stop_word_ratio", "min_stop_word_ratio", "stop_word_ratio", _below),
    Threshold("max_repeat_char_run", "repeat_char_run", "max_char_run", _above),
    Threshold("min_chars_beside_repetition", "repetition", "chars_beside_repetition", _below),
    Threshold("max_dup_line_frac", "max_dup_line_frac", "dup_line_frac", _above),
    Threshold("max_dup_ngram_frac", "max_dup_ngram_frac", "dup_ngram_frac", _above),
    Threshold("max_bullet_lines_frac", "max_bullet_lines_frac", "bullet_line_frac", _above),
    Threshold("min_terminal_punct_line_frac", "min_terminal_punct_line_frac", "terminal_punct_line_frac", _below),
)


def rule_set_names(kinds: list[str], langs: list[str], available: set[str]) -> list[str | None]:
    """The one rule set that judges each document: the most specific of "<kind>.<lang>", "<kind>",
    "<lang>" that the config defines (None: no rules apply)."""
    names: list[str | None] = []
    for kind, lang in zip(kinds, langs):
        candidates = (f"{kind}.{lang}", kind, lang)
        names.append(next((c for c in candidates if c in available), None))
    return names


class QualityFilter:
    name = "quality_filter"
    reads = ("text", "kind", "lang", "n_words") + INT_SIGNALS + FLOAT_SIGNALS
    adds: tuple[str, ...] = ()

    def __init__(self, config: QualityConfig) -> None:
        self.config = config
        for set_name, rules in config.rule_sets.items():
            for pattern in [*rules.spam_patterns, _any_of(rules.spam_patterns)]:
                try:
                    pc.match_substring_regex(pa.array([""]), pattern)
                except pa.ArrowInvalid as error:
                    raise ValueError(f"quality.rule_sets.{set_name}.spam_patterns: {pattern!r}: {error}") from None

    def __call__(self, batch: pa.RecordBatch) -> StageResult:
        if not self.config.enabled:
            return StageResult(batch)
        names = np.array(
            rule_set_names(
                batch.column("kind").to_pylist(), batch.column("lang").to_pylist(), set(self.config.rule_sets)
            ),
            dtype=object,
        )
        reasons = np.full(batch.num_rows, None, dtype=object)
        for set_name, rules in self.config.rule_sets.items():
            rows = names == set_name
            if rows.any():
                self._judge(batch, rules, rows, reasons)
        return StageResult(batch, pa.array(reasons.tolist(), pa.string()))

    def _judge(self, batch: pa.RecordBatch, rules: QualityRules, rows: np.ndarray, reasons: np.ndarray) -> None:
        """Writes the first failed rule's reason into `reasons` for the rows of `rows`."""
        undecided = rows.copy()

        def drop(fails: np.ndarray, reason: str) -> None:
            hit = undecided & fails
            reasons[hit] = f"quality:{reason}"
            undecided[hit] = False

        texts = batch.column("text")
        if rules.spam_patterns:
            drop(spam_share(texts, rules.spam_patterns) >= rules.spam_min_share, "spam")
        for phrase in rules.forbid_phrases:
            found = pc.fill_null(pc.match_substring(texts, phrase, ignore_case=True), False)
            drop(found.to_numpy(zero_copy_only=False), "forbidden_phrase")
        for threshold in THRESHOLDS:
            limit = getattr(rules, threshold.rule)
            if limit is not None:
                values = batch.column(threshold.signal).to_numpy(zero_copy_only=False)
                drop(threshold.fails(values, limit), threshold.reason)


def _any_of(patterns: list[str]) -> str:
    return "|".join(f"(?:{p})" for p in patterns)


def spam_share(texts: pa.Array, patterns: list[str]) -> np.ndarray:
    """Per text, the share of its characters that the spam patterns match (matches of several patterns
    that overlap count once): advertising is text that is mostly contact or ad text."""
    if not patterns:
        return np.zeros(len(texts))
    n_chars = pc.fill_null(pc.utf8_length(texts), 0)
    rest = pc.fill_null(pc.utf8_length(pc.replace_substring_regex(texts, _any_of(patterns), "")), 0)
    covered = pc.subtract(n_chars, rest).to_numpy(zero_copy_only=False)
    return charclass.share(covered, n_chars.to_numpy(zero_copy_only=False))

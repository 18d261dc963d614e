"""Character-class counts over a whole text column: RE2 decides each code point's class once, numpy counts.

Running an RE2 character class over every text costs about as much as segmenting headlines with jieba
when the class is large (\\p{L}) and several classes are counted per batch. Instead a batch's texts are
decoded once into code points (straight from the column's UTF-8 buffer); each block of 256 code points
holding one not seen before is classified by the same RE2 class (pyarrow's regex kernel over
single-character strings), and the verdicts are kept in a table per class: the counts are exactly those
of the regex, at the price of a table lookup per character.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# Character classes, as the inside of an RE2 bracket expression.
HAN = r"\p{Han}"
KANA_HANGUL = r"\p{Hiragana}\p{Katakana}\p{Hangul}"
LETTER = r"\p{L}"

_UNSEEN = 2  # a code point whose class has not been asked yet
_CODE_POINTS = 0x110000
_PAGE = 256
_SURROGATES = (0xD800, 0xE000)


@dataclass
class _Decoded:
    """A text column as concatenated code points; `ends[i]` is where text i ends in them."""

    texts: pa.Array  # held, so that the identity check below cannot match a new array at a freed address
    codes: np.ndarray
    ends: np.ndarray


# The column decoded last, per thread: callers count several classes on the same column in a row, and
# the flow runs stages from several threads.
_last = threading.local()


def code_points(texts: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """The texts' code points concatenated (uint32; a null text has none), and where each text ends in them.

    Remembered for the column asked last in this thread, which is usually asked again for the next class.
    """
    last = getattr(_last, "decoded", None)
    if last is None or last.texts is not texts:
        last = _last.decoded = _Decoded(texts, *_utf8_code_points(texts))
    return last.codes, last.ends


def _utf8_code_points(texts: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    if texts.null_count:
        texts = pc.fill_null(texts, "")  # a null slot then holds no bytes
    lengths = pc.utf8_length(texts).to_numpy(zero_copy_only=False).astype(np.int64)
    _, offset_buffer, data_buffer = texts.buffers()
    if data_buffer is None or not lengths.any():
        return np.zeros(0, np.uint32), np.cumsum(lengths)
    offsets = np.frombuffer(offset_buffer, np.int32)[texts.offset : texts.offset + len(texts) + 1]
    data = memoryview(data_buffer)[offsets[0] : offsets[-1]]
    codes = np.frombuffer(bytes(data).decode("utf-8").encode("utf-32-le"), "<u4")
    return codes, np.cumsum(lengths)


@lru_cache(maxsize=None)
def _class_table(char_class: str) -> np.ndarray:
    return np.full(_CODE_POINTS, _UNSEEN, np.uint8)


def _single_characters(code_points: np.ndarray) -> pa.Array:
    lengths = np.select([code_points < 0x80, code_points < 0x800, code_points < 0x10000], [1, 2, 3], 4)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    data = code_points.astype("<u4").tobytes().decode("utf-32-le").encode("utf-8")
    return pa.StringArray.from_buffers(len(code_points), pa.py_buffer(offsets.tobytes()), pa.py_buffer(data))


def _members(codes: np.ndarray, char_class: str) -> np.ndarray:
    table = _class_table(char_class)
    verdicts = table[codes]
    unseen = verdicts == _UNSEEN
    if unseen.any():
        # Whole blocks of code points around the new ones are classified at once: text in a script keeps
        # meeting new characters of the same blocks, and each regex call has a fixed cost.
        pages = np.unique(codes[unseen] // _PAGE).astype(np.uint32)
        new = (pages[:, None] * _PAGE + np.arange(_PAGE, dtype=np.uint32)).ravel()
        new = new[(new < _SURROGATES[0]) | (new >= _SURROGATES[1])]  # not characters; never in UTF-8 text
        matched = pc.match_substring_regex(_single_characters(new), f"[{char_class}]")
        table[new] = matched.to_numpy(zero_copy_only=False)
        verdicts = table[codes]
    return verdicts.astype(bool)


def count(texts: pa.Array, char_class: str) -> np.ndarray:
    """Characters of `char_class` per text, as int64 (null text counts 0)."""
    codes, ends = code_points(texts)
    in_class = np.concatenate([[0], np.cumsum(_members(codes, char_class), dtype=np.int64)])
    return in_class[ends] - in_class[np.concatenate([[0], ends[:-1]])]


def share(part: np.ndarray, whole: np.ndarray) -> np.ndarray:
    """part / whole as float32, 0 where whole is 0."""
    return np.divide(part, whole, out=np.zeros(len(part), np.float64), where=whole > 0).astype(np.float32)


def han_letter_share(texts: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Share of letters that are Han characters, share that are kana or hangul, and the letter count."""
    letters = count(texts, LETTER)
    return share(count(texts, HAN), letters), share(count(texts, KANA_HANGUL), letters), letters


def looks_chinese(texts: pa.Array, min_han_share: float, max_kana_hangul_share: float) -> np.ndarray:
    """Written in Chinese by script alone: enough Han among the letters and (almost) no kana or hangul.

    Japanese and Korean also use Han characters, but never without kana or hangul around them.
    """
    han, kana_hangul, _ = han_letter_share(texts)
    return chinese_by_script(han, kana_hangul, min_han_share, max_kana_hangul_share)


def chinese_by_script(
    han: np.ndarray, kana_hangul: np.ndarray, min_han_share: float, max_kana_hangul_share: float
) -> np.ndarray:
    return (han >= min_han_share) & (han > 0) & (kana_hangul <= max_kana_hangul_share)

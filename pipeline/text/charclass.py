"""Character-class counts over a whole text column, computed with pyarrow's RE2 kernels (no Python loop)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# Character classes, as the inside of an RE2 bracket expression.
HAN = r"\p{Han}"
KANA_HANGUL = r"\p{Hiragana}\p{Katakana}\p{Hangul}"
LETTER = r"\p{L}"


def count(texts: pa.Array, char_class: str, dense: bool = False) -> np.ndarray:
    """Characters of `char_class` per text, as int64 (null text counts 0).

    RE2 pays per match, so for a class that covers most characters (Han in Chinese, letters) it is
    3-4x faster to delete everything else and measure what is left; rare classes are counted directly.
    """
    if dense:
        counts = pc.utf8_length(pc.replace_substring_regex(texts, f"[^{char_class}]+", ""))
    else:
        counts = pc.count_substring_regex(texts, f"[{char_class}]")
    return pc.fill_null(counts, 0).to_numpy(zero_copy_only=False).astype(np.int64)


def share(part: np.ndarray, whole: np.ndarray) -> np.ndarray:
    """part / whole as float32, 0 where whole is 0."""
    return np.divide(part, whole, out=np.zeros(len(part), np.float64), where=whole > 0).astype(np.float32)


def han_letter_share(texts: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Share of letters that are Han characters, share that are kana or hangul, and the letter count."""
    letters = count(texts, LETTER, dense=True)
    return share(count(texts, HAN, dense=True), letters), share(count(texts, KANA_HANGUL), letters), letters


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

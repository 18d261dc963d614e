"""Exact duplicates: a content hash of the text in a canonical form, and grouping by that hash.

The canonical form decides what "the same text" means. It is the normalized text (the normalize stage ran
before) with case folded, all whitespace removed and punctuation removed, except punctuation between two
digits ("3.5" stays apart from "35", "1,999" from "1999"). Measured on the online-shopping reviews
(bench/dedup_bench.py): this catches the reviews that differ only in a trailing "!", a "。" versus "." or
spacing, and every extra pair it merges reads the same. Symbols (emoji, currency, math signs) are kept, because
"👍" and "👎" are different comments. A text that is nothing but punctuation and whitespace keeps itself
(case-folded) as its canonical form, so "!!!" and "???" are not merged into one empty text.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from functools import lru_cache

import numpy as np
import pyarrow as pa

from pipeline.stages import StageResult, set_column

# Unicode punctuation lies in planes 0 and 1 only; scanning them once takes ~50 ms per process.
_PUNCTUATION_PLANES_END = 0x20000


@lru_cache(maxsize=1)
def _strip_pattern() -> re.Pattern[str]:
    punctuation = "".join(
        chr(c) for c in range(_PUNCTUATION_PLANES_END) if unicodedata.category(chr(c)).startswith("P")
    )
    punct_class = "[" + re.escape(punctuation) + "]"
    # whitespace always goes; a punctuation run goes unless it sits between two digits
    return re.compile(rf"\s+|(?<!\d){punct_class}+|{punct_class}+(?!\d)")


def canonical_text(text: str) -> str:
    """The form two texts must share to count as exact duplicates (see the module docstring)."""
    folded = text.casefold()
    stripped = _strip_pattern().sub("", folded)
    return stripped or "".join(folded.split())


def content_hash(text: str) -> str:
    """Lowercase hex sha256 (64 chars) of the canonical form."""
    return hashlib.sha256(canonical_text(text).encode("utf-8")).hexdigest()


class ContentHashStage:
    """Adds `content_hash` (string, 64 hex chars) for exact deduplication across the whole build."""

    name = "content_hash"
    reads = ("text",)
    adds = ("content_hash",)

    def __call__(self, batch: pa.RecordBatch) -> StageResult:
        hashes = [content_hash(text) for text in batch.column("text").to_pylist()]
        return StageResult(batch=set_column(batch, "content_hash", pa.array(hashes, pa.string())))


def exact_representatives(hashes: pa.Array) -> np.ndarray:
    """For rows in preference order (best first), the row index of each row's exact-group representative.

    The representative of a group is its first row, i.e. the preferred one. A null hash groups with nothing.
    """
    codes = hashes.dictionary_encode().indices.to_numpy(zero_copy_only=False)
    valid = hashes.is_valid().to_numpy(zero_copy_only=False)
    representative = np.arange(len(hashes), dtype=np.int64)
    rows = np.flatnonzero(valid)
    group_codes = codes[rows]
    # return_index gives each group's first row, which is its best one because rows come in preference order
    _, first, inverse = np.unique(group_codes, return_index=True, return_inverse=True)
    representative[rows] = rows[first[inverse]]
    return representative

"""Vectorised text signals give exactly what the per-document regexes they replaced give."""

from __future__ import annotations

import random
import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from pipeline.text import charclass
from pipeline.text.quality import longest_runs

# Han (BMP and beyond), kana, hangul, full-width forms, every UTF-8 length, emoji, several kinds of space,
# Arabic-Indic digits, punctuation of both scripts, symbols.
ALPHABET = "好的！ 中文abcＡＢＣ１２３ひらがなカタカナ한국어\n\t\u3000😀👍€$%#,.。，𠀀𪚥\u00a0\u2028٣\x7f\u07ff\u0800\uffff\U0010ffff"
CLASSES = [charclass.LETTER, charclass.HAN, charclass.KANA_HANGUL, r"\s\p{Z}", r"\p{P}", r"\p{S}", r"\p{Nd}", r"\p{L}\p{N}"]


def random_columns(seed: int, count: int = 150) -> list[pa.Array]:
    rng = random.Random(seed)
    columns = []
    for _ in range(count):
        texts = [
            None if rng.random() < 0.1 else "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 30)))
            for _ in range(rng.randint(0, 10))
        ]
        column = pa.array(texts, pa.string())
        columns.append(column.slice(1, len(column) - 2) if len(column) > 2 and rng.random() < 0.3 else column)
    return columns


@pytest.mark.parametrize("char_class", CLASSES)
def test_class_counts_equal_re2_counts(char_class: str) -> None:
    for texts in random_columns(seed=len(char_class)):
        expected = pc.fill_null(pc.count_substring_regex(texts, f"[{char_class}]"), 0).to_numpy(zero_copy_only=False)
        assert charclass.count(texts, char_class).tolist() == expected.tolist(), texts


def test_code_points_decode_the_utf8_buffer() -> None:
    for texts in random_columns(seed=7):
        codes, ends = charclass.code_points(texts)
        values = [t or "" for t in texts.to_pylist()]
        assert codes.tobytes().decode("utf-32-le") == "".join(values)
        assert ends.tolist() == np.cumsum([len(t) for t in values], dtype=np.int64).tolist()


def test_longest_runs_equal_the_backreference_regex() -> None:
    run = re.compile(r"(.)\1+", re.S)
    for texts in random_columns(seed=11):
        expected = [max((len(m.group()) for m in run.finditer(t)), default=1) if t else 0 for t in texts.to_pylist()]
        assert longest_runs(texts).tolist() == expected
    assert longest_runs(pa.array(["好好好好好好！！", "a\n\nb", "", None])).tolist() == [6, 2, 0, 0]

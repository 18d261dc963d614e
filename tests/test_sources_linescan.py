"""Planning numbers records by scanning bytes (linescan.py) and parsing only the lines bytes cannot settle:
on files made of the cases where the two could differ, the record starts it finds are exactly those of
reading every record, whatever the block size, the cap on a line, the encoding and the compression."""

from __future__ import annotations

import bz2
import gzip
import io
import random
import zipfile
from pathlib import Path

import numpy as np
import pytest

from helpers.sources import source_for
from pipeline.config import SourceConfig
from pipeline.sources import linescan, tabular
from pipeline.sources.linescan import line_blocks
from pipeline.sources.textio import capped_lines, members

# Pieces a CSV/TSV line is made of, weighted towards the ones that change where records start.
CSV_PIECES = ["评论", "good", ",", "\t", " ", '"', '""', '"a,b"', "\n", "\r\n", "\r", "\x00", "\u3000", "x" * 40]
CSV_WEIGHTS = [8, 8, 4, 2, 2, 2, 1, 1, 5, 2, 1, 1, 1, 1]
JSON_PIECES = ['{"review": "很好", "label": "1"}', '{"review": "a\\nb"}', "[1, 2]", "{bad", "\u3000", " ", "\t",
               "\x1c", "\x00", "\n", "\r\n", "\r", "中文", "y" * 40]
JSON_WEIGHTS = [8, 3, 1, 1, 2, 2, 1, 1, 1, 5, 2, 1, 2, 1]


def random_text(rng: random.Random, pieces: list[str], weights: list[int], count: int) -> str:
    return "".join(rng.choices(pieces, weights, k=count))


def exact_positions(source: SourceConfig, path: Path) -> list[int]:
    return [record.position for record in tabular.iter_records(source, str(path))]


def scanned_positions(source: SourceConfig, path: Path) -> list[int]:
    return [int(p) for member in members(str(path)) for lines, _ in tabular._record_positions(source, member)
            for p in lines]


@pytest.fixture(params=[7, 64, 4096], ids=lambda size: f"block{size}")
def small_blocks(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    """Blocks far smaller than a file, so records and long lines straddle them."""
    size = request.param
    real = linescan.line_blocks
    monkeypatch.setattr(tabular, "line_blocks", lambda stream, cap, offset=0: real(stream, cap, size, offset))
    return size


@pytest.mark.parametrize("fmt,header", [("csv", True), ("csv", False), ("tsv", True), ("jsonl", None)])
@pytest.mark.parametrize("encoding", ["utf-8", "gb18030", "big5", "utf-16"])
def test_scanned_record_starts_equal_reading_every_record(tmp_path: Path, small_blocks: int, fmt: str,
                                                         header: bool | None, encoding: str) -> None:
    rng = random.Random(f"{fmt}{header}{encoding}{small_blocks}")
    pieces, weights = (JSON_PIECES, JSON_WEIGHTS) if fmt == "jsonl" else (CSV_PIECES, CSV_WEIGHTS)
    for trial in range(12):
        text = random_text(rng, pieces, weights, rng.randint(0, 400))
        if header:
            text = "label,review\n" + text if fmt == "csv" else "label\treview\n" + text
        path = tmp_path / f"t{trial}.{fmt}"
        path.write_bytes(text.encode(encoding, "replace"))
        mapping = {"header": header, "fields": {"text": "review" if header else "1"}} if fmt != "jsonl" \
            else {"fields": {"text": "review"}}
        source = source_for(path, format=fmt, encoding=encoding, max_record_bytes=rng.choice([30, 100, 10_000]),
                            **mapping)
        assert scanned_positions(source, path) == exact_positions(source, path), text


@pytest.mark.parametrize("compress", [gzip.compress, bz2.compress], ids=["gz", "bz2"])
def test_compressed_inputs_scan_the_same(tmp_path: Path, compress, small_blocks: int) -> None:
    rng = random.Random(3)
    text = "label,review\n" + random_text(rng, CSV_PIECES, CSV_WEIGHTS, 2000)
    suffix = ".gz" if compress is gzip.compress else ".bz2"
    path = tmp_path / f"reviews.csv{suffix}"
    path.write_bytes(compress(text.encode()))
    source = source_for(path, format="csv", fields={"text": "review"}, max_record_bytes=200)
    assert scanned_positions(source, path) == exact_positions(source, path)


def test_blocks_split_lines_as_capped_lines_does(small_blocks: int) -> None:
    rng = random.Random(5)
    for _ in range(50):
        data = random_text(rng, ["a", "中", "\n", "\r\n", "z" * 25], [5, 3, 3, 1, 1], rng.randint(0, 120)).encode()
        cap = rng.choice([4, 10, 30])
        expected = list(capped_lines(io.BytesIO(data), cap))
        blocks = list(line_blocks(io.BytesIO(data), cap, small_blocks))
        assert [block.line(i) for block in blocks for i in range(len(block))] == expected
        assert [bool(x) for block in blocks for x in block.oversize()] == [line.oversize for line in expected]


def test_a_line_past_the_cap_is_held_as_its_head_only() -> None:
    huge = b"x" * 5_000_000
    blocks = list(line_blocks(io.BytesIO(b"a\n" + huge + b"\nb\n"), cap=1000, block_bytes=4096))
    lines = [block.line(i) for block in blocks for i in range(len(block))]
    assert [(len(line.data), line.size, line.oversize) for line in lines] == [(2, 2, False), (1000, 5_000_001, True),
                                                                             (2, 2, False)]
    assert max(len(block.data) for block in blocks) <= 4096 + 1001


def test_planning_a_large_csv_gives_the_ranges_of_its_records(tmp_path: Path) -> None:
    """Ranges of 1,000 records over 25,000 rows of which one in twenty holds a quoted newline."""
    rows = [f'{i % 2},"第{i}条\n续行"' if i % 20 == 0 else f"{i % 2},第{i}条评论" for i in range(25_000)]
    path = tmp_path / "reviews.csv"
    path.write_text("label,review\n" + "\n".join(rows) + "\n", encoding="utf-8")
    source = source_for(path, format="csv", fields={"text": "review"}, rows_per_partition=1000)
    ranges = tabular.record_ranges(source, str(path), 1000)
    positions = exact_positions(source, path)
    assert [(r.start, r.stop) for r in ranges] == [(i, i + 1000 if i < 24_000 else None) for i in range(0, 25_000, 1000)]
    assert [r.seek.lines + 1 for r in ranges] == [positions[i] for i in range(0, 25_000, 1000)]
    assert np.diff([r.seek.lines for r in ranges]).min() > 1000  # the quoted rows take two lines
    # each range's bytes are those of its lines: together the file less its header
    data = path.read_bytes()
    line_starts = [0] + [i + 1 for i, byte in enumerate(data) if byte == 0x0A]
    starts = [line_starts[r.seek.lines] for r in ranges] + [len(data)]
    assert [r.size for r in ranges] == [b - a for a, b in zip(starts, starts[1:])]
    assert sum(r.size for r in ranges) == len(data) - len("label,review\n")


def test_range_sizes_follow_the_bytes_of_their_records(tmp_path: Path, small_blocks: int) -> None:
    """Long records make a large range: what a build hands out first. Gzip and zip members count their
    decompressed bytes, across members."""
    short, long = "1,好\n" * 300, "0," + "很长的评论" * 40 + "\n"
    text = "label,review\n" + short + long * 300 + short
    path = tmp_path / "mixed.csv"
    path.write_text(text, encoding="utf-8")
    source = source_for(path, format="csv", fields={"text": "review"})
    sizes = [r.size for r in tabular.record_ranges(source, str(path), 300)]
    assert sizes == [len(short.encode()), len(long.encode()) * 300, len(short.encode())]
    archive = tmp_path / "two.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("a.csv", "label,review\n" + short)
        zipped.writestr("b.csv", "label,review\n" + long * 300)
    sizes = [r.size for r in tabular.record_ranges(source_for(archive, format="csv", fields={"text": "review"}),
                                                   str(archive), 300)]
    assert sizes == [len(short.encode()) + len("label,review\n"), len(long.encode()) * 300]

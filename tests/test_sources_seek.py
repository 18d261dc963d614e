"""Record-range partitions of a large CSV/JSONL file start where planning found their first record: read
one by one they give exactly the rows (ids, positions, rejects) of the file read whole, in every shape."""

from __future__ import annotations

import gzip
import json
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from helpers.sources import read_rows, source_for
from pipeline.config import SourceConfig
from pipeline.sources import expand_uri, plan_partitions
from pipeline.sources.base import Partition

REVIEWS = [f"第{i}条评论，质量{'很好' if i % 3 else '一般'}，物流很快" for i in range(41)]


def csv_with_quirks(reviews: list[str]) -> str:
    """Blank lines, quoted newlines, a row with too few fields and an empty text among the rows."""
    lines = ["label,review"]
    for i, review in enumerate(reviews):
        if i % 7 == 3:
            lines.append("")
        if i % 5 == 1:
            review = f'"{review}\n第二行"'
        lines.append(f"{i % 2},{review}")
        if i == 17:
            lines += ["1", "0,"]
    return "\n".join(lines) + "\n"


def jsonl_with_quirks(reviews: list[str]) -> str:
    lines = []
    for i, review in enumerate(reviews):
        lines.append(json.dumps({"review": review, "label": str(i % 2)}, ensure_ascii=False))
        if i % 6 == 2:
            lines.append("")
        if i == 11:
            lines += ["{not json", "[1, 2]"]
    return "\n".join(lines) + "\n"


def plain(encoding: str, fmt: str) -> Callable[[Path], Path]:
    def write(directory: Path) -> Path:
        text = csv_with_quirks(REVIEWS) if fmt == "csv" else jsonl_with_quirks(REVIEWS)
        path = directory / f"reviews.{fmt}"
        path.write_bytes(text.encode(encoding))
        return path
    return write


def gzipped_jsonl(directory: Path) -> Path:
    path = directory / "reviews.jsonl.gz"
    path.write_bytes(gzip.compress(jsonl_with_quirks(REVIEWS).encode()))
    return path


def zip_of_two_members(directory: Path) -> Path:
    """Partitions cross from one member to the next; each member has its own header and line numbers."""
    path = directory / "reviews.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("a/first.csv", csv_with_quirks(REVIEWS[:19]).encode("gbk"))
        archive.writestr("b/second.csv", csv_with_quirks(REVIEWS[19:]).encode("utf-8-sig"))
    return path


def headerless_tsv(directory: Path) -> Path:
    path = directory / "reviews.tsv"
    path.write_text("".join(f"{review}\t{i % 2}\n" for i, review in enumerate(REVIEWS)) + "短\n", encoding="utf-8")
    return path


SHAPES = {
    "csv utf-8": (plain("utf-8", "csv"), {}),
    "csv gb18030": (plain("gb18030", "csv"), {}),
    "csv utf-16": (plain("utf-16", "csv"), {}),
    "jsonl utf-8": (plain("utf-8", "jsonl"), {"format": "jsonl"}),
    "jsonl gzip": (gzipped_jsonl, {"format": "jsonl"}),
    "zip of two csv": (zip_of_two_members, {}),
    "headerless tsv": (headerless_tsv, {"format": "tsv", "header": False, "fields": {"text": "0", "label": "1"}}),
}


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("rows_per_partition", [4, 9])
def test_partitions_read_from_their_seek_points_equal_the_whole_file(
    tmp_path: Path, shape: str, rows_per_partition: int
) -> None:
    write, settings = SHAPES[shape][0], dict(SHAPES[shape][1])
    path = write(tmp_path)
    fields = settings.pop("fields", {"text": "review", "label": "label"})
    whole = read_rows(source_for(path, fields=fields, **settings))
    split_source = source_for(path, fields=fields, rows_per_partition=rows_per_partition, **settings)
    partitions = plan_partitions(split_source, expand_uri(split_source))
    assert len(partitions) > 3
    split = read_rows(split_source, partitions)
    assert split == whole
    assert len(whole[0]) >= 40 and whole[1]  # real documents and real rejects on both sides
    if shape == "headerless tsv":
        assert all(p.seek is None for p in partitions)  # the first row's width is the reference
    else:
        assert all(p.seek is not None for p in partitions)
        _first_rows_begin_at_their_seek_points(split_source, partitions)


def _first_rows_begin_at_their_seek_points(source: SourceConfig, partitions: list[Partition]) -> None:
    """Each partition's first record sits on the line after those it skips, in the first file it reads."""
    for partition in partitions:
        documents, rejects = read_rows(source, [partition])
        rows = documents + rejects
        first_file = min(row["meta"]["file"] for row in rows)  # zip members are read in name order
        first_line = min(int(row["meta"]["position"]) for row in rows if row["meta"]["file"] == first_file)
        assert first_line == partition.seek.lines + 1, partition

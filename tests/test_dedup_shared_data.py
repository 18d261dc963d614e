"""Dedup on the public online-shopping reviews (skipped when ../shared/data is absent)."""

from __future__ import annotations

import csv
import io
import zipfile
from pathlib import Path

import pyarrow as pa
import pytest

from pipeline.config import DedupConfig
from pipeline.dedup import ContentHashStage, MinHashStage, find_duplicates
from tests.test_dedup_external import reference_duplicates

pytestmark = pytest.mark.shared_data


def shopping_reviews(shared_data: Path) -> list[str]:
    with zipfile.ZipFile(shared_data / "comments" / "online_shopping_10_cats.zip") as archive:
        with archive.open("online_shopping_10_cats.csv") as raw:
            rows = csv.DictReader(io.TextIOWrapper(raw, encoding="utf-8-sig"))
            return [" ".join((row["review"] or "").replace("\ufeff", "").split()) for row in rows]


def test_online_shopping_exact_duplicates_are_caught(shared_data: Path) -> None:
    texts = [t for t in shopping_reviews(shared_data) if t]
    batch = ContentHashStage()(pa.RecordBatch.from_pydict({"text": texts})).batch
    keys = pa.table(
        {
            "id": [f"shopping-{i:06d}" for i in range(len(texts))],
            "source": ["shopping"] * len(texts),
            "lang": ["zh"] * len(texts),
            "content_hash": batch.column("content_hash"),
            "minhash": pa.nulls(len(texts), pa.list_(pa.uint32(), 128)),
            "rank": pa.array([0] * len(texts), pa.int32()),
        }
    )
    duplicates = find_duplicates(keys, DedupConfig())
    raw_duplicates = len(texts) - len(set(texts))
    assert set(duplicates.column("kind").to_pylist()) == {"exact"}
    # measured: 54 identical strings, 235 once case, spacing and punctuation are set aside
    assert 100 <= duplicates.num_rows <= 400
    assert duplicates.num_rows > raw_duplicates
    for row in duplicates.to_pylist():
        assert row["duplicate_of"] < row["id"]  # one rank: the smallest id is kept


@pytest.mark.slow
def test_real_reviews_give_the_in_memory_result(shared_data: Path) -> None:
    texts = [t for t in shopping_reviews(shared_data) if t]
    batch = pa.RecordBatch.from_pydict({"text": texts, "lang": ["zh"] * len(texts)})
    batch = MinHashStage(DedupConfig())(ContentHashStage()(batch).batch).batch
    keys = pa.table({"id": [f"shopping-{i:06d}" for i in range(len(texts))],
                     "content_hash": batch.column("content_hash"), "minhash": batch.column("minhash"),
                     "rank": pa.array([i % 3 - 1 for i in range(len(texts))], pa.int32())})
    expected = reference_duplicates(keys, DedupConfig())
    assert expected.num_rows > 200 and "near" in expected.column("kind").to_pylist()  # measured: 328, 139 near
    assert find_duplicates(keys, DedupConfig()).equals(expected)

"""Drop rates per label, label skew, and samples of one reason's drops, over a version written by hand."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from pipeline.drop_sample import sample_drops, sample_rows
from pipeline.label_skew import (
    LabelDropRate,
    LabelsMissing,
    drop_rates_by_label,
    label_skews,
    rates_by_source,
)
from pipeline.schema import Manifest, documents_batch, rejects_from_documents
from pipeline.shards import shard_record, write_shard
from pipeline.storage import read_arrow_table
from pipeline.versions import load_manifest, write_manifest


def _documents(source: str, label: str | None, count: int, start: int = 0) -> pa.Table:
    rows = [{"id": f"{source}-{label}-{i}", "source": source, "kind": "comments", "lang": "zh", "label": label,
             "text": f"评论{i}", "meta": {"file": f"{source}.csv", "position": i + 2}}
            for i in range(start, start + count)]
    return pa.Table.from_batches([documents_batch(rows)])


def _version(root: Path, kept: list[pa.Table], rejects: list[pa.Table]) -> Path:
    shards = [shard_record(write_shard(t, root / "data" / "train" / f"part-{i}.arrow"), root, "train", "s", "zh")
              for i, t in enumerate(kept)]
    dropped = [shard_record(write_shard(t, root / "rejects" / f"part-{i}.arrow"), root, "rejects", "s", "")
               for i, t in enumerate(rejects)]
    manifest = Manifest(dataset="t", config_hash="c", code_version="v", libraries={}, inputs=[], shards=shards,
                        rejects=dropped, ledger_totals={}, ledger_by_source={})
    write_manifest(root, manifest)
    return root


def version_drop_rates(version: Path, outcomes: tuple[str, ...] = ("filtered",)) -> list:
    manifest = load_manifest(version / "manifest.json")
    kept = [read_arrow_table(version / s.path, ["source", "label"]) for s in manifest.shards]
    return drop_rates_by_label(kept, [read_arrow_table(version / s.path) for s in manifest.rejects], outcomes)


def _filtered(documents: pa.Table, reason: str) -> pa.Table:
    return rejects_from_documents(documents, outcome="filtered", reasons=reason, stage="quality_filter")


@pytest.fixture()
def skewed_version(tmp_path: Path) -> Path:
    """Reviews: negatives filtered at 20%, positives at 5%; news: unlabelled; one duplicate outcome."""
    kept = [_documents("reviews", "negative", 160), _documents("reviews", "positive", 190), _documents("news", None, 50)]
    rejects = [
        _filtered(_documents("reviews", "negative", 30, start=1000), "quality:repetition"),
        _filtered(_documents("reviews", "negative", 10, start=2000), "quality:spam"),
        _filtered(_documents("reviews", "positive", 10, start=1000), "quality:repetition"),
        rejects_from_documents(_documents("reviews", "positive", 40, start=3000), outcome="duplicate",
                               reasons="exact", stage="dedup", duplicate_of=["x"] * 40),
    ]
    return _version(tmp_path / "v1", kept, rejects)


def test_rejects_carry_the_documents_label() -> None:
    rejects = _filtered(_documents("reviews", "negative", 2), "quality:spam")
    assert rejects.column("label").to_pylist() == ["negative", "negative"]


def test_drop_rates_per_label_count_filtered_records_only(skewed_version: Path) -> None:
    rates = {(r.source, r.label): r for r in version_drop_rates(skewed_version)}
    assert set(rates) == {("reviews", "negative"), ("reviews", "positive")}  # unlabelled news left out
    assert (rates["reviews", "negative"].read, rates["reviews", "negative"].dropped) == (200, 40)
    assert (rates["reviews", "positive"].read, rates["reviews", "positive"].dropped) == (200, 10)
    assert rates_by_source(version_drop_rates(skewed_version))["reviews"]["negative"] == {
        "read": 200, "dropped": 40, "rate": 0.2}
    with_duplicates = {(r.source, r.label): r for r in version_drop_rates(skewed_version, ("filtered", "duplicate"))}
    assert with_duplicates["reviews", "positive"].dropped == 50


def test_a_label_dropped_over_twice_as_often_is_flagged(skewed_version: Path) -> None:
    skews = label_skews(version_drop_rates(skewed_version))
    assert len(skews) == 1
    skew = skews[0]
    assert (skew.source, skew.most_dropped.label, skew.least_dropped.label) == ("reviews", "negative", "positive")
    assert skew.ratio == pytest.approx(4.0)
    assert skew.message() == ("reviews: label 'negative' is dropped at 20.0% (40/200), "
                              "4.0x label 'positive' at 5.0% (10/200)")
    assert label_skews(version_drop_rates(skewed_version), max_ratio=4.0) == []


def test_small_groups_and_few_drops_do_not_flag() -> None:
    def rate(label: str, read: int, dropped: int) -> LabelDropRate:
        return LabelDropRate("s", label, read, dropped)

    assert label_skews([rate("a", 50, 20), rate("b", 1000, 10)]) == []  # "a" has too few records
    assert label_skews([rate("a", 1000, 9), rate("b", 1000, 1)]) == []  # too few drops to say anything
    flagged = label_skews([rate("a", 1000, 12), rate("b", 1000, 0), rate("c", 1000, 5)])
    assert [(s.most_dropped.label, s.least_dropped.label, s.ratio) for s in flagged] == [("a", "b", float("inf"))]
    assert label_skews([rate("a", 1000, 12), rate("b", 1000, 6)]) == []  # exactly 2x is not more than 2x


def test_rejects_without_labels_say_so(tmp_path: Path) -> None:
    old = _filtered(_documents("reviews", "negative", 3), "quality:spam").drop_columns(["label"])
    with pytest.raises(LabelsMissing, match="no label"):
        drop_rates_by_label([_documents("reviews", "negative", 3)], [old])


def test_sample_of_one_reason_is_deterministic_and_spread_over_shards(skewed_version: Path) -> None:
    sample = sample_drops(skewed_version, "quality:repetition", 5)
    assert len(sample) == 5
    assert {r["reason"] for r in sample} == {"quality:repetition"}
    assert {r["label"] for r in sample} == {"negative", "positive"}  # both rejects shards contribute
    first = sample[0]
    assert first["file"] == "reviews.csv" and first["position"].isdigit() and first["text"].startswith("评论")
    assert sample_drops(skewed_version, "quality:repetition", 5) == sample
    assert sample_drops(skewed_version, "quality:repetition", 3) == sample[:3]  # a smaller sample is a prefix
    assert len(sample_drops(skewed_version, "quality:repetition", 1000)) == 40
    assert sample_drops(skewed_version, "quality:nothing_like_it", 5) == []


def test_sample_rows_does_not_depend_on_row_order() -> None:
    table = _documents("reviews", "negative", 30)
    reversed_table = table.take(pa.array(range(29, -1, -1)))
    assert sample_rows(table, 7).column("id").to_pylist() == sample_rows(reversed_table, 7).column("id").to_pylist()

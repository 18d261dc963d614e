"""Shards validated several to a Great Expectations run get the verdict each would get alone; the build
writes (and validates) its shards in tasks cut from the partitions in their order."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pytest

from pipeline import contracts
from pipeline.steps import writing
from pipeline.steps.partitions import StagedPartition
from pipeline.config import ContractsConfig
from pipeline.schema import ShardRecord
from tests.test_contracts import CONTRACTS, _document, replace, write_stream

ZH = ["这家酒店的服务很好，房间也干净", "物流很快，包装完好，质量不错", "屏幕有点暗，但是价格便宜", "客服态度差，再也不买了",
      "快递员送货上门很准时", "衣服尺码偏小，建议买大一号"]


def documents(first: int, count: int) -> pa.Table:
    """`count` clean zh documents whose ids start at `first`: shards built from disjoint ranges share no id."""
    from tests.test_contracts import SHARD_SCHEMA

    return pa.Table.from_pylist(
        [_document(first + i, ZH[i % len(ZH)] + "。" * (first + i), "zh") for i in range(count)], schema=SHARD_SCHEMA)


def checks_for(tmp_path: Path, tables: list[pa.Table], suite: str = "documents.v1") -> list[contracts.ShardCheck]:
    return [contracts.ShardCheck(str(write_stream(t, tmp_path / "data" / "train" / f"s-zh-{i:05d}.arrow")), suite)
            for i, t in enumerate(tables)]


def failed(summary: dict) -> set[tuple[str, str | None]]:
    return {(e["type"], e["column"]) for e in summary["expectations"] if not e["success"]}


def test_clean_shards_pass_as_one_batch_naming_its_members(tmp_path: Path) -> None:
    tables = [documents(0, 3), documents(10, 5), documents(20, 1)]
    checks = checks_for(tmp_path, tables)
    docs = tmp_path / "docs"
    summaries = contracts.validate_shards(checks, CONTRACTS, docs)
    assert [s["shard"] for s in summaries] == [c.path for c in checks]
    assert [s["rows"] for s in summaries] == [3, 5, 1]  # each its own rows, not the batch's
    assert all(s["success"] and not s["critical_failed"] for s in summaries)
    assert all(s["batch"] == [c.path for c in checks] for s in summaries)
    assert "train-s-zh-00000-and-2-more" in (docs / "index.html").read_text(encoding="utf-8")
    json.dumps(summaries)


def test_a_failing_shard_in_a_batch_is_counted_alone_and_the_others_pass(tmp_path: Path) -> None:
    bad = replace(documents(10, 4), "lang", ["zh", "zh", "fr", "fr"])
    checks = checks_for(tmp_path, [documents(0, 3), bad, documents(20, 2)])
    summaries = contracts.validate_shards(checks, CONTRACTS)
    assert [s["success"] for s in summaries] == [True, False, True]
    assert failed(summaries[1]) == {("expect_column_values_to_be_in_set", "lang")}
    count = next(e["unexpected_count"] for e in summaries[1]["expectations"]
                 if e["type"] == "expect_column_values_to_be_in_set" and e["column"] == "lang")
    assert count == 2
    assert all("batch" not in s for s in summaries)  # re-validated one by one


def test_ids_repeated_across_shards_fail_the_batch_but_no_shard(tmp_path: Path) -> None:
    """Unique in each shard, not across them: the batch's failure must not become a shard's."""
    summaries = contracts.validate_shards(checks_for(tmp_path, [documents(0, 3), documents(0, 3)]), CONTRACTS)
    assert [s["success"] for s in summaries] == [True, True]


def test_an_unreadable_shard_among_readable_ones_is_its_own_failed_result(tmp_path: Path) -> None:
    checks = checks_for(tmp_path, [documents(0, 2), documents(10, 2)])
    Path(checks[1].path).write_bytes(b"not arrow")
    corrupted = contracts.ShardCheck(checks[0].path, checks[0].suite, sha256="0" * 64)
    summaries = contracts.validate_shards([corrupted, checks[1], *checks_for(tmp_path / "ok", [documents(5, 2)])],
                                          CONTRACTS)
    assert [s["success"] for s in summaries] == [False, False, True]
    assert "sha256" in summaries[0]["error"] and "not a readable Arrow file" in summaries[1]["error"]


def test_shards_of_other_schemas_are_not_mixed(tmp_path: Path) -> None:
    table = documents(10, 2)
    wider = table.cast(table.schema.set(table.schema.get_field_index("title"), pa.field("title", pa.large_string())))
    checks = checks_for(tmp_path, [documents(0, 2), wider])
    summaries = contracts.validate_shards(checks, CONTRACTS)
    assert all(s["success"] and "batch" not in s for s in summaries)


def test_an_empty_shard_is_not_hidden_in_a_batch(tmp_path: Path) -> None:
    checks = checks_for(tmp_path, [documents(0, 2), documents(10, 0), documents(20, 2)])
    summaries = contracts.validate_shards(checks, CONTRACTS)
    assert [s["critical_failed"] for s in summaries] == [False, True, False]
    assert failed(summaries[1]) == {("expect_table_row_count_to_be_between", None)}


@pytest.mark.parametrize("expectation, batches", [
    ({"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "id"}}, True),
    ({"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "id", "mostly": 0.9}}, False),
    ({"type": "expect_column_mean_to_be_between", "kwargs": {"column": "n_chars", "min_value": 1}}, False),
    ({"type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": 2}}, True),
    ({"type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": 1, "max_value": 3}}, False),
])
def test_only_suites_whose_batch_verdict_is_each_shards_are_batched(
    tmp_path: Path, expectation: dict, batches: bool
) -> None:
    directory = tmp_path / "contracts"
    shutil.copytree(CONTRACTS, directory)
    suite = json.loads((directory / "documents.v1.json").read_text())
    suite["expectations"] = [{**expectation, "meta": {"severity": "critical"}}]
    (directory / "documents.v1.json").write_text(json.dumps(suite))
    assert (contracts.batch_row_floor(directory, "documents.v1") is not None) is batches
    summaries = contracts.validate_shards(checks_for(tmp_path, [documents(0, 2), documents(10, 2)]), directory)
    assert all(s["success"] for s in summaries)
    assert all(("batch" in s) is batches for s in summaries)


def test_batches_hold_at_most_the_row_cap(tmp_path: Path) -> None:
    checks = checks_for(tmp_path, [documents(i * 10, 3) for i in range(5)])
    summaries = contracts.validate_shards(checks, CONTRACTS, batch_rows=6)
    assert [s["batch"] for s in summaries[:4]] == [[checks[0].path, checks[1].path]] * 2 + [
        [checks[2].path, checks[3].path]] * 2
    assert "batch" not in summaries[4] and summaries[4]["success"]


def _staged(name: str, rows: int) -> StagedPartition:
    return StagedPartition(source=name.rsplit("-", 1)[0], name=name, directory=f"/work/{name}", notes={},
                           ledger=[{"source": "s", "partition": name, "outcome": "kept", "reason": "", "count": rows}])


def test_writing_groups_follow_partition_order_and_join_small_partitions_of_one_source() -> None:
    staged = [_staged(name, rows) for name, rows in [
        ("b-00001", 900), ("a-00000", 100), ("b-00000", 100), ("a-00001", 100), ("a-00002", 2000), ("a-00003", 10)]]
    groups = writing.plan_writing(staged, max_rows=1000)
    assert [[p.name for p in g.partitions] for g in groups] == [
        ["a-00000", "a-00001", "a-00002"], ["a-00003"], ["b-00000", "b-00001"]]
    assert groups[0].name == "a-00000 and 2 more"
    assert writing.plan_writing(staged[::-1], max_rows=1000) == groups  # the order of the futures is irrelevant


def test_runs_of_rows_cut_in_order_at_the_limit_and_keep_a_large_item_alone() -> None:
    rows = {"a": 3, "b": 4, "c": 9, "d": 2, "e": 2, "f": 1}
    assert contracts.runs_of_rows(list(rows), rows.get, 7) == [["a", "b"], ["c"], ["d", "e", "f"]]
    assert contracts.runs_of_rows([], rows.get, 7) == []

"""Finding a source's files, fingerprinting them, and reading the demo samples with full accounting."""

from __future__ import annotations

from pathlib import Path

import fsspec
import pytest

from pipeline.config import load_config
from pipeline.sources import expand_uri, fingerprint, is_remote, plan_partitions
from pipeline.sources.base import SourceUnreadable
from pipeline.steps.partitions import StagedPartition, in_plan_order, largest_first
from helpers.sources import read_rows, reasons, source_for

REPO = Path(__file__).resolve().parents[1]


def test_expand_uri_globs_directories_and_urls(tmp_path: Path) -> None:
    for name in ("b.csv", "a.csv", "c.txt"):
        (tmp_path / name).write_text("text\nx\n")
    assert expand_uri(source_for(tmp_path / "*.csv")) == [str(tmp_path / "a.csv"), str(tmp_path / "b.csv")]
    assert expand_uri(source_for(tmp_path)) == [str(tmp_path / n) for n in ("a.csv", "b.csv", "c.txt")]
    assert expand_uri(source_for("https://example.org/data.csv")) == ["https://example.org/data.csv"]
    assert is_remote("HTTPS://example.org/x") and not is_remote("s3://bucket/x") and not is_remote("/tmp/x")


def test_a_uri_matching_nothing_names_the_uri(tmp_path: Path) -> None:
    with pytest.raises(SourceUnreadable, match="nothing-here"):
        expand_uri(source_for(tmp_path / "nothing-here*.csv"))


def test_fsspec_urls_are_read_like_local_files() -> None:
    with fsspec.open("memory://corpus/reviews.csv", "wb") as out:
        out.write("label,text\n1,很好\n0,不好\n".encode())
    source = source_for("memory://corpus/*.csv")
    assert expand_uri(source) == ["memory:///corpus/reviews.csv"]  # fsspec's canonical form
    documents, rejects = read_rows(source)
    assert [d["text"] for d in documents] == ["很好", "不好"] and rejects == []


def test_fingerprint_follows_content(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text("text\nx\n")
    before = fingerprint(str(path))
    path.write_text("text\ny\n")
    assert fingerprint(str(path)) != before and before.startswith("size:7:sha256:")


def test_partitions_are_numbered_across_files_in_order(tmp_path: Path) -> None:
    for name in ("b.jsonl", "a.jsonl"):
        (tmp_path / name).write_text("".join(f'{{"text": "{i}"}}\n' for i in range(7)))
    source = source_for(tmp_path / "*.jsonl", format="jsonl", rows_per_partition=3)
    partitions = plan_partitions(source, expand_uri(source))
    assert [(Path(p.path).name, p.index, p.start, p.stop) for p in partitions] == [
        ("a.jsonl", 0, 0, 3), ("a.jsonl", 1, 3, 6), ("a.jsonl", 2, 6, None),
        ("b.jsonl", 3, 0, 3), ("b.jsonl", 4, 3, 6), ("b.jsonl", 5, 6, None),
    ]
    assert [p.name for p in partitions][:2] == ["test-00000", "test-00001"]


def test_partitions_are_handed_out_largest_first_and_come_back_in_plan_order(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_text("".join(f'{{"text": "{"长" * (i * 20)}"}}\n' for i in range(9)))
    (tmp_path / "b.jsonl").write_text('{"text": "short"}\n')  # under rows_per_partition bytes: one partition
    source = source_for(tmp_path / "*.jsonl", format="jsonl", rows_per_partition=3)
    planned = plan_partitions(source, expand_uri(source))
    assert [p.size for p in planned[:3]] == [sum(len(f'{{"text": "{"长" * (i * 20)}"}}\n'.encode()) for i in rows)
                                             for rows in (range(0, 3), range(3, 6), range(6, 9))]
    assert planned[3].size == len('{"text": "short"}\n')
    handed_out = largest_first(planned)
    assert [p.index for p in handed_out] == [2, 1, 0, 3]
    staged = [StagedPartition(source=p.source, name=p.name, directory=f"/work/{p.name}", ledger=[], notes={})
              for p in handed_out]
    assert [s.name for s in in_plan_order(staged, planned)] == [p.name for p in planned]


EXPECTED_SAMPLES = {
    "zhwiki": (3, ["redirect", "namespace", "namespace"]),
    "enwiki": (2, ["redirect", "namespace"]),
    "news_crawl": (3, ["not_html", "empty_extraction"]),
    "news_feed": (28, ["empty_text", "malformed_json"]),
    "reviews_gbk": (32, ["missing_text"]),
    "reviews_utf8": (12, ["invalid_utf8"]),
}


def test_demo_samples_read_with_every_record_accounted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    config = load_config("configs/demo.yaml")
    assert [s.name for s in config.sources] == list(EXPECTED_SAMPLES)
    for source in config.sources:
        documents, rejects = read_rows(source)
        assert (len(documents), reasons(rejects)) == EXPECTED_SAMPLES[source.name], source.name
        assert all(d["text"].strip() and d["meta"]["file"] for d in documents)
        assert len({d["id"] for d in documents}) == len(documents)

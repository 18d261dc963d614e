"""diff_versions on two synthetic builds from different inputs: every document lands in exactly one of
added / removed / changed / unchanged, per source, and the text report names the reasons."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers.versions import write_version
from pipeline.diff import diff_versions, render_diff
from pipeline.schema import InputRecord


def _doc(source: str, lang: str, doc_id: str, text: str) -> dict[str, str]:
    return {"source": source, "lang": lang, "id": doc_id, "text": text}


def _ledger(counts: dict[str, int]) -> list[dict[str, object]]:
    return [{"source": s, "partition": f"{s}-00000", "outcome": "kept", "reason": "", "count": c} for s, c in counts.items()]


@pytest.fixture()
def two_versions(tmp_path: Path) -> tuple[Path, Path]:
    old = write_version(
        tmp_path / "datasets",
        docs=[
            _doc("news", "en", "n1", "Markets rose on Monday."),
            _doc("news", "en", "n2", "Rain is expected tomorrow."),
            _doc("news", "en", "n3", "The museum reopens in May."),
            _doc("news", "en", "n4", "A new bridge opened."),
            _doc("reviews", "zh", "r1", "这家店的菜很好吃"),
            _doc("reviews", "zh", "r2", "服务太慢了"),
        ],
        ledger_rows=_ledger({"news": 4, "reviews": 2}),
        inputs=[
            InputRecord(source="news", uri="samples/news.jsonl", fingerprint="size:10:sha:aaa"),
            InputRecord(source="reviews", uri="samples/reviews.csv", fingerprint="size:20:sha:bbb"),
        ],
    )
    new = write_version(
        tmp_path / "datasets",
        docs=[
            _doc("news", "en", "n1", "Markets rose on Monday."),
            _doc("news", "en", "n2", "Heavy rain is expected tomorrow."),  # changed
            _doc("news", "en", "n4", "A new bridge opened."),
            _doc("news", "en", "n5", "Schools close for summer."),  # added; n3 removed
            _doc("reviews", "zh", "r1", "这家店的菜很好吃"),
            _doc("reviews", "zh", "r2", "服务太慢了"),
            _doc("reviews", "zh", "r3", "价格便宜，环境不错"),  # added
            _doc("wiki", "zh", "w1", "长城是中国古代的军事防御工程"),  # a new source
        ],
        ledger_rows=_ledger({"news": 4, "reviews": 3, "wiki": 1}),
        inputs=[
            InputRecord(source="news", uri="samples/news.jsonl", fingerprint="size:12:sha:ccc"),
            InputRecord(source="reviews", uri="samples/reviews.csv", fingerprint="size:20:sha:bbb"),
            InputRecord(source="wiki", uri="samples/zhwiki.xml.bz2", fingerprint="size:30:sha:ddd"),
        ],
    )
    return old, new


def test_diff_counts_each_document_once_per_source(two_versions: tuple[Path, Path]) -> None:
    old, new = two_versions
    result = diff_versions(str(old), str(new))
    assert result["by_source"] == {
        "news": {"added": 1, "removed": 1, "changed": 1, "unchanged": 2},
        "reviews": {"added": 1, "removed": 0, "changed": 0, "unchanged": 2},
        "wiki": {"added": 1, "removed": 0, "changed": 0, "unchanged": 0},
    }
    assert result["totals"] == {"added": 3, "removed": 1, "changed": 1, "unchanged": 4}
    assert result["a"]["documents"] == 6 and result["b"]["documents"] == 8
    assert result["examples"]["news"] == {"added": ["n5"], "changed": ["n2"], "removed": ["n3"]}
    assert [(c["source"], c["status"]) for c in result["inputs"]] == [("news", "changed"), ("wiki", "added")]
    assert result["ledger_by_source"]["reviews"] == {"kept": [2, 3], "read": [2, 3]}
    assert result["config_changed"] is False


def test_diff_of_a_version_with_itself_is_all_unchanged(two_versions: tuple[Path, Path]) -> None:
    _, new = two_versions
    result = diff_versions(str(new), str(new))
    assert result["totals"] == {"added": 0, "removed": 0, "changed": 0, "unchanged": 8}
    assert result["inputs"] == [] and result["ledger_by_source"] == {}


def test_render_names_sources_totals_and_reasons(two_versions: tuple[Path, Path]) -> None:
    old, new = two_versions
    text = render_diff(diff_versions(str(old), str(new)))
    rows = {line.split()[0]: line.split()[1:] for line in text.splitlines() if line.split()[:1] in (["news"], ["total"])}
    assert rows["news"] == ["1", "1", "1", "2"]
    assert rows["total"] == ["3", "1", "1", "4"]
    assert "input changed: news samples/news.jsonl" in text
    assert "input added: wiki samples/zhwiki.xml.bz2" in text
    assert "e.g. removed in news: n3" in text

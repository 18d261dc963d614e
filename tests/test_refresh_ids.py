"""Refreshes of a growing source keep the ids readers know: `corpusflow diff` shows only what changed there."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pipeline.diff import diff_versions
from pipeline.schema import document_id
from pipeline.versions import load_manifest

ARTICLES = {
    "a-101": "市政府今天上午召开新闻发布会，介绍今年城市轨道交通建设的最新进展和下一步计划。",
    "a-102": "气象部门发布寒潮预警，预计未来三天北方大部分地区气温将下降八到十度，请注意防寒保暖。",
    "a-103": "本市第一家社区图书馆正式开放，居民可以凭身份证免费借阅图书，开放时间为每天九点到晚上九点。",
    "a-104": "教育部门表示，今年秋季学期将在全市中小学推广课后服务，家长可以自愿报名参加。",
}
NEW_ARTICLE = ("a-105", "农业部门介绍，今年全市粮食总产量再创新高，优质水稻种植面积比去年扩大了两成。")
EDITED = ("a-103", ARTICLES["a-103"].replace("九点到晚上九点", "八点到晚上十点"))


def _copy_id_sorting_first(source: str, original: str) -> str:
    """A native id under which a re-published copy sorts before the original: it would win a plain tie."""
    return next(f"republished-{n}" for n in range(1000)
                if document_id(source, f"republished-{n}") < document_id(source, original))


def _write_feed(path: Path, records: list[tuple[str, str]]) -> None:
    path.write_text("".join(json.dumps({"id": i, "content": t}, ensure_ascii=False) + "\n" for i, t in records),
                    encoding="utf-8")


def _build(config_path: Path, refresh: bool = True) -> str:
    from flows.build_corpus import build_corpus

    return build_corpus(str(config_path), refresh=refresh)


@pytest.mark.slow
def test_refreshes_of_a_growing_source_change_only_what_changed(prefect_api: str, tmp_path: Path) -> None:
    feed = tmp_path / "feed.jsonl"
    config_path = tmp_path / "refresh.yaml"
    config_path.write_text(yaml.safe_dump({"run_dir": str(tmp_path / "run"), "runner": {"workers": 1},
                                           "contracts": {"enabled": False}, "sources": [
        {"name": "feed", "kind": "news", "lang": "zh", "uri": str(feed), "format": "jsonl",
         "fields": {"text": "content", "id": "id"}}]}, allow_unicode=True))
    records = list(ARTICLES.items())
    _write_feed(feed, records)
    first = _build(config_path)  # no version yet: a plain build

    copy_id = _copy_id_sorting_first("feed", "a-102")
    records += [NEW_ARTICLE, (copy_id, ARTICLES["a-102"])]  # appended: one new article, one re-published
    _write_feed(feed, records)
    appended = _build(config_path)
    changes = diff_versions(first, appended)
    assert changes["totals"] == {"added": 1, "removed": 0, "changed": 0, "unchanged": 4}, changes
    assert changes["examples"]["feed"]["added"] == [document_id("feed", NEW_ARTICLE[0])]
    assert load_manifest(appended).ledger_totals["duplicate"] == 1, "the re-published copy is the duplicate"

    records = [EDITED if native == EDITED[0] else (native, text) for native, text in records]
    _write_feed(feed, records)
    edited = _build(config_path)
    changes = diff_versions(appended, edited)
    assert changes["totals"] == {"added": 0, "removed": 0, "changed": 1, "unchanged": 4}, changes
    assert changes["examples"]["feed"]["changed"] == [document_id("feed", EDITED[0])]

    again = _build(config_path)  # the same inputs again: the same version, not a new one
    assert load_manifest(again).version == load_manifest(edited).version

    plain = _build(config_path, refresh=False)  # `corpusflow build`: ties by source order and id alone
    assert diff_versions(edited, plain)["examples"]["feed"]["removed"] == [document_id("feed", "a-102")], \
        "without the previous version's ids the re-published copy takes the original's place"

"""The global dedup step: representatives, near duplicates, chains, order independence, previous version."""

from __future__ import annotations

import random

import pyarrow as pa
import pytest

from pipeline.config import DedupConfig
from pipeline.dedup import DUPLICATES_SCHEMA, ContentHashStage, MinHashStage, deduplicate, find_duplicates

CONFIG = DedupConfig()
ZH_100 = (
    "今年夏天我们全家去了一趟云南，先在昆明住了两天，看了滇池和西山，然后坐火车到大理，在古城里慢慢地走，"
    "吃了很多当地的小吃，最后到丽江看了玉龙雪山，孩子们玩得非常开心，都说明年还想再来，我也觉得这次旅行很值得"
)
EN_PARAGRAPH = (
    "The committee met on Tuesday to review the budget for the coming year. After a long discussion about "
    "the costs of the new library, the members agreed to postpone the decision until the next meeting, when "
    "the final estimates from the architects will be available. The chair thanked everyone for their patience "
    "and asked the treasurer to prepare a short summary of the options for the public."
)


def keys(docs: list[tuple[str, str, str, int]]) -> pa.Table:
    """(id, source, text, rank) rows through the two stages, as the flow's keys table."""
    ids, sources, texts, ranks = zip(*docs)
    langs = ["en" if text.isascii() else "zh" for text in texts]
    batch = pa.RecordBatch.from_pydict({"text": list(texts), "lang": langs})
    batch = MinHashStage(CONFIG)(ContentHashStage()(batch).batch).batch
    return pa.table(
        {
            "id": list(ids),
            "source": list(sources),
            "lang": langs,
            "content_hash": batch.column("content_hash"),
            "minhash": batch.column("minhash"),
            "rank": pa.array(ranks, pa.int32()),
        }
    )


def as_dict(result: pa.Table) -> dict[str, tuple[str, str]]:
    return {row["id"]: (row["duplicate_of"], row["kind"]) for row in result.to_pylist()}


def test_exact_duplicates_across_sources_keep_the_smallest_rank_then_id() -> None:
    docs = [
        ("n-2", "news", "物流很快，包装完好，好评！", 1),
        ("c-9", "comments", "物流很快,包装完好,好评", 0),
        ("c-3", "comments", "物流很快。包装完好。好评", 0),
        ("w-1", "wiki", "完全不同的内容", 2),
    ]
    result = find_duplicates(keys(docs), CONFIG)
    assert result.schema == DUPLICATES_SCHEMA
    assert as_dict(result) == {"c-9": ("c-3", "exact"), "n-2": ("c-3", "exact")}
    assert result.column("similarity").to_pylist() == [1.0, 1.0]


def test_near_duplicates_point_at_their_representative() -> None:
    docs = [
        ("zh-b", "news", ZH_100.replace("滇池", "洱海"), 0),
        ("zh-a", "news", ZH_100, 0),
        ("zh-c", "news", ZH_100.replace("玉龙", "玉珑"), 0),
        ("en-b", "wiki", EN_PARAGRAPH.replace("Tuesday", "Monday"), 0),
        ("en-a", "wiki", EN_PARAGRAPH, 0),
    ]
    result = find_duplicates(keys(docs), CONFIG)
    assert as_dict(result) == {
        "en-b": ("en-a", "near"),
        "zh-b": ("zh-a", "near"),
        "zh-c": ("zh-a", "near"),
    }
    assert all(CONFIG.threshold <= s < 1.0 for s in result.column("similarity").to_pylist())


def test_different_short_texts_are_not_merged() -> None:
    docs = [
        ("a", "c", "郑州今早必知的那些事儿", 0),
        ("b", "c", "苏州今早必知的那些事儿", 0),
        ("c", "c", "期货舵手·今日行情分析(20180509)", 0),
        ("d", "c", "期货舵手·今日行情分析(20180508)", 0),
        ("e", "c", "质量很好，物流很快", 0),
        ("f", "c", "质量很差，物流很慢", 0),
        ("g", "c", "价格3.5元", 0),
        ("h", "c", "价格35元", 0),
    ]
    assert find_duplicates(keys(docs), CONFIG).num_rows == 0


def test_transitive_chains_resolve_to_one_representative() -> None:
    step_1 = ZH_100.replace("滇池", "洱海")
    step_2 = step_1.replace("小吃", "米线")
    step_3 = step_2.replace("开心", "高兴")
    docs = [("d3", "s", step_3, 0), ("d1", "s", step_1, 0), ("d2", "s", step_2, 0), ("d0", "s", ZH_100, 0),
            ("e3", "s", step_3 + "。", 0)]
    result = as_dict(find_duplicates(keys(docs), CONFIG))
    assert {dup_of for dup_of, _ in result.values()} == {"d0"}
    assert set(result) == {"d1", "d2", "d3", "e3"}
    assert result["e3"] == ("d0", "near")  # an exact copy of a near duplicate still names the kept document


def test_result_does_not_depend_on_input_order() -> None:
    docs = [(f"id-{i:02d}", f"s{i % 3}", text, i % 2) for i, text in enumerate([
        ZH_100, ZH_100 + "！", ZH_100.replace("滇池", "洱海"), EN_PARAGRAPH, EN_PARAGRAPH.lower(),
        EN_PARAGRAPH.replace("library", "school"), "很好", "很好!", "不好", ZH_100.replace("云南", "贵州"),
    ])]
    table = keys(docs)
    expected = find_duplicates(table, CONFIG)
    assert expected.num_rows >= 6
    rng = random.Random(7)
    for _ in range(5):
        order = list(range(table.num_rows))
        rng.shuffle(order)
        assert find_duplicates(table.take(order), CONFIG).equals(expected)


def test_previous_version_documents_are_never_reported_and_win_ties() -> None:
    docs = [
        ("old-2", "v1", ZH_100, -1),
        ("old-1", "v1", ZH_100 + "。", -1),
        ("new-0", "news", ZH_100, 0),
        ("new-1", "news", ZH_100.replace("滇池", "洱海"), 0),
    ]
    result = as_dict(find_duplicates(keys(docs), CONFIG))
    assert result == {"new-0": ("old-1", "exact"), "new-1": ("old-1", "near")}


def test_switches_and_bad_input() -> None:
    docs = [("a", "s", ZH_100, 0), ("b", "s", ZH_100 + "!", 0), ("c", "s", ZH_100.replace("滇池", "洱海"), 0)]
    table = keys(docs)
    assert as_dict(find_duplicates(table, DedupConfig(near=False))) == {"b": ("a", "exact")}
    assert as_dict(find_duplicates(table, DedupConfig(exact=False))) == {"b": ("a", "near"), "c": ("a", "near")}
    with pytest.raises(ValueError, match="more than once"):
        find_duplicates(pa.concat_tables([table, table]), CONFIG)
    with pytest.raises(ValueError, match="rank"):
        find_duplicates(table.drop_columns(["rank"]), CONFIG)
    with pytest.raises(ValueError, match="num_perm"):
        find_duplicates(table, DedupConfig(num_perm=64))


def test_repeated_ids_are_settled_whatever_the_order_of_the_keys() -> None:
    docs = [
        ("u", "crawl", ZH_100, 0),  # first of id u: keeps it
        ("u", "crawl", ZH_100 + "。", 0),  # the same text again (canonically): duplicate of the first
        ("u", "crawl", "另一篇完全不同的文章，讲的是城市图书馆延长开放时间的消息。", 0),  # other text: kept
        ("v", "crawl", ZH_100, 0),  # another id, same text as u: an ordinary exact duplicate
    ]
    partitions = ["crawl-00000", "crawl-00001", "crawl-00002", "crawl-00003"]
    table = keys(docs).append_column("partition", pa.array(partitions))
    table = table.append_column("row", pa.array([0, 0, 0, 0], pa.int64()))
    result = deduplicate(table, CONFIG)
    new_ids = dict(zip(result.renamed.column("partition").to_pylist(), result.renamed.column("new_id").to_pylist()))
    assert sorted(new_ids) == ["crawl-00001", "crawl-00002"] and result.repeated_by_source == {"crawl": 2}
    assert as_dict(result.duplicates) == {new_ids["crawl-00001"]: ("u", "exact"), "v": ("u", "exact")}
    for seed in range(3):
        order = list(range(4))
        random.Random(seed).shuffle(order)
        shuffled = deduplicate(table.take(order), CONFIG)
        assert shuffled.duplicates.equals(result.duplicates) and shuffled.renamed.sort_by("partition").equals(
            result.renamed.sort_by("partition"))


def test_repeated_ids_with_a_previous_version() -> None:
    other = "另一篇完全不同的文章，讲的是城市图书馆延长开放时间的消息，市民可以在晚上借书和自习。"
    current = keys([("u", "crawl", other, 0), ("u", "crawl", ZH_100.replace("滇池", "洱海"), 0), ("z", "crawl", ZH_100, 0)])
    current = current.append_column("partition", pa.array(["crawl-00000", "crawl-00001", "crawl-00001"]))
    current = current.append_column("row", pa.array([0, 0, 1], pa.int64()))
    previous = keys([("u", "v1", other, -1), ("w", "v1", ZH_100, -1)])
    result = deduplicate(current, CONFIG, previous=previous)
    renamed = result.renamed.column("new_id").to_pylist()
    # the previous "u" is this build's own document; "z" repeats the previous "w"; the second "u" is a near
    # duplicate of the previous "w" under its new id
    assert as_dict(result.duplicates) == {"z": ("w", "exact"), renamed[0]: ("w", "near")}

"""Data as it comes from the field, through the pipeline's own steps: every class of bad input has an outcome.

Each test plans a source, processes every partition, settles repeated ids and duplicates with the build's
global dedup step, assembles the shards, and checks what became of every record (kept, filtered,
duplicate, rejected with which reason, skipped input with which reason) and that
read = kept + filtered + duplicate + rejected.
"""

from __future__ import annotations

import errno
import gzip
import json
import pickle
import random
import unicodedata
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from helpers.steps import process_all, run_global_steps
from pipeline.config import CorpusflowConfig, SourceConfig
from pipeline.dedup import RepeatedIdError, deduplicate, find_duplicates
from pipeline.schema import Ledger, document_id
from pipeline.storage import read_arrow_table
from pipeline.sources import (
    SourceMappingError,
    SourceUnreadable,
    TooManyBadInputs,
    check_bad_inputs,
    expand_uri,
    input_records,
    is_transient,
    plan_partitions,
)
from pipeline.sources.fetch import FetchError, FetchRefused
from helpers.inputs import (
    PAGE_A,
    PAGE_B,
    PAGE_C,
    page,
    write_bad_files,
    write_good_files,
    write_warc,
)
from helpers.sources import read_rows

# ---- a build without the orchestrator: plan, process every partition, dedup across all, account ----------


@dataclass
class Outcome:
    kept: list[dict]  # kept documents, meta parsed
    drops: list[dict]  # every reject row: read, stage and dedup drops
    totals: dict[str, int]  # ledger totals
    inputs: list  # InputRecord of every input
    repeated_ids: dict[str, int]

    def reasons(self) -> Counter:
        return Counter(row["reason"] for row in self.drops)

    def texts(self) -> list[str]:
        return [row["text"] for row in self.kept]


def build_sources(tmp_path: Path, *sources: SourceConfig, exact: bool = True, near: bool = True) -> Outcome:
    """Plan and process every partition, then the build's global steps: dedup (with repeated ids) and assembly."""
    config = CorpusflowConfig(sources=list(sources), dedup={"exact": exact, "near": near},
                              runner={"workers": 1}, run_dir=str(tmp_path / "run"), contracts={"enabled": False})
    planned = [p for source in config.sources for p in plan_partitions(source, expand_uri(source))]
    staged = process_all(config, planned, tmp_path / "work")
    assembled, decided = run_global_steps(config, staged, tmp_path / "work", tmp_path / "staging")
    root = Path(assembled.staging)
    kept = [row for shard in assembled.shards for row in read_arrow_table(root / shard.path).to_pylist()]
    drops = [row for shard in assembled.rejects for row in read_arrow_table(root / shard.path).to_pylist()]
    for row in kept + drops:
        row["meta"] = json.loads(row["meta"]) if row.get("meta") else {}
    totals = Ledger.from_rows(assembled.ledger_rows).totals()
    outcome = Outcome(kept, drops, totals, input_records(planned), decided.repeated_by_source)
    assert_accounted(outcome)
    return outcome


def assert_accounted(outcome: Outcome) -> None:
    totals = outcome.totals
    assert totals["read"] == totals["kept"] + totals["filtered"] + totals["duplicate"] + totals["rejected"]
    assert totals["kept"] == len(outcome.kept)
    assert totals["read"] - totals["kept"] == len(outcome.drops)
    assert len({row["id"] for row in outcome.kept}) == len(outcome.kept), "kept ids are unique"


def source(path: Path | str, **settings: Any) -> SourceConfig:
    defaults: dict[str, Any] = {"name": "field", "kind": "comments", "lang": "zh", "format": "csv",
                                "fields": {"text": "review", "label": "label"}}
    return SourceConfig(uri=str(path), **{**defaults, **settings})


# ---- ids ----------------------------------------------------------------------------------------------

def warc_source(path: Path | str, **settings: Any) -> SourceConfig:
    return SourceConfig(name="crawl", kind="news", lang="en", format="warc", uri=str(path), **settings)


def test_a_page_crawled_in_two_warc_files_keeps_both_texts_and_drops_the_same_text(tmp_path: Path) -> None:
    url = "http://example.com/harbour"
    write_warc(tmp_path / "crawl-01.warc.gz", [(url, page(PAGE_A, PAGE_B)), ("http://example.com/other", page(PAGE_C))])
    write_warc(tmp_path / "crawl-02.warc.gz", [(url, page(PAGE_A, PAGE_B, PAGE_C))])
    write_warc(tmp_path / "crawl-03.warc.gz", [(url, page(PAGE_A, PAGE_B))])
    outcome = build_sources(tmp_path, warc_source(tmp_path / "crawl-*.warc.gz"), exact=True)
    by_url = Counter(row["url"] for row in outcome.kept)
    assert by_url == {url: 2, "http://example.com/other": 1}, "both versions of the page are kept"
    first = next(r for r in outcome.kept if r["url"] == url and "crawl-01" in r["meta"]["file"])
    assert first["id"] == document_id("crawl", url), "the first occurrence keeps the id of its URL"
    duplicate = next(r for r in outcome.drops if r["outcome"] == "duplicate")
    assert (duplicate["reason"], duplicate["duplicate_of"]) == ("exact", first["id"])
    assert "crawl-03" in duplicate["file"]
    assert outcome.repeated_ids == {"crawl": 2}
    assert outcome.totals == {"kept": 3, "filtered": 0, "duplicate": 1, "rejected": 0, "read": 4}


def test_repeated_ids_get_the_same_derived_ids_in_every_build(tmp_path: Path) -> None:
    url = "http://example.com/harbour"
    write_warc(tmp_path / "a.warc.gz", [(url, page(PAGE_A, PAGE_B))])
    write_warc(tmp_path / "b.warc.gz", [(url, page(PAGE_A, PAGE_C))])
    once = build_sources(tmp_path / "one", warc_source(tmp_path / "*.warc.gz"))
    again = build_sources(tmp_path / "two", warc_source(tmp_path / "*.warc.gz"))
    assert sorted(r["id"] for r in once.kept) == sorted(r["id"] for r in again.kept)
    assert len(once.kept) == 2


@pytest.mark.parametrize("exact", [True, False])
def test_an_export_repeating_its_id_column(tmp_path: Path, exact: bool) -> None:
    lines = [
        {"id": "7", "content": "地铁三号线今天下午恢复运营，乘客出行恢复正常。"},
        {"id": "7", "content": "地铁三号线今天下午恢复运营，乘客出行恢复正常。"},  # the same record again
        {"id": "7", "content": "暴雨导致城区多条道路积水，交管部门提醒绕行。"},  # another text under the id
        {"id": "8", "content": "新图书馆将于下月开放，市民可以免费办理借书证。"},
    ]
    path = tmp_path / "export.jsonl"
    path.write_text("".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines), encoding="utf-8")
    outcome = build_sources(tmp_path, source(path, kind="news", format="jsonl", fields={"text": "content", "id": "id"}),
                            exact=exact, near=exact)
    assert outcome.repeated_ids == {"field": 2}
    if exact:
        assert sorted(outcome.texts()) == sorted({line["content"] for line in lines})
        duplicate = next(r for r in outcome.drops if r["outcome"] == "duplicate")
        assert duplicate["duplicate_of"] == document_id("field", "7") and duplicate["position"] == "2"
    else:
        assert len(outcome.kept) == 4 and len({r["id"] for r in outcome.kept}) == 4


def test_ids_repeated_across_sources_never_collide() -> None:
    keys = pa.table({"id": ["x", "x"], "source": ["a", "b"], "lang": ["zh", "zh"], "content_hash": ["h1", "h2"],
                     "minhash": pa.array([None, None], pa.list_(pa.uint32(), 128)),
                     "rank": pa.array([0, 1], pa.int32())})
    with pytest.raises(RepeatedIdError, match=r"x \(source a, b\)"):
        find_duplicates(keys, CorpusflowConfig(sources=[source("x")]).dedup)
    with pytest.raises(RepeatedIdError, match="no partition tells them apart"):
        deduplicate(keys, CorpusflowConfig(sources=[source("x")]).dedup)
    located = keys.append_column("partition", pa.array(["a-00000", "b-00000"])).append_column(
        "row", pa.array([0, 0], pa.int64()))
    result = deduplicate(located, CorpusflowConfig(sources=[source("x")]).dedup)
    assert result.duplicates.num_rows == 0 and result.repeated_by_source == {"b": 1}
    assert result.renamed.column("partition").to_pylist() == ["b-00000"]


# ---- encodings ---------------------------------------------------------------------------------------

BIG5_REVIEWS = ["這家餐廳的服務很好，菜也很好吃。", "價格有點貴，但是環境乾淨，還會再來。"]
BIG5_SIMPLIFIED = ["这家餐厅的服务很好，菜也很好吃。", "价格有点贵，但是环境干净，还会再来。"]
GBK_REVIEWS = ["物流很快，包装也很结实，好评。", "屏幕有坏点，联系客服也没人回复。"]
GB18030_REVIEWS = ["𠮷野家的牛肉饭味道不错，分量也够。", "店名里有个䶮字，很多人都不认识。"]  # beyond GBK
JAPANESE_REVIEWS = ["このホテルは駅から近くてとても便利でした。", "朝食の種類が多くて、また泊まりたいです。"]


def tabular_bytes(form: str, texts: list[str], encoding: str) -> bytes:
    if form == "jsonl":
        text = "".join(json.dumps({"review": t, "label": "1"}, ensure_ascii=False) + "\n" for t in texts)
    else:
        separator = "\t" if form == "tsv" else ","
        text = f"label{separator}review\n" + "".join(f"1{separator}{t}\n" for t in texts)
    return (text.encode("utf-8-sig") if encoding == "utf-8-sig" else text.encode(encoding))


@pytest.mark.parametrize("form", ["csv", "tsv", "jsonl"])
@pytest.mark.parametrize("rows", [1, 2])
@pytest.mark.parametrize(
    ("encoding", "lang", "texts", "expected", "chosen"),
    [
        ("big5", "zh", BIG5_REVIEWS, BIG5_SIMPLIFIED, "big5hkscs"),
        ("big5", "auto", BIG5_REVIEWS, BIG5_SIMPLIFIED, "big5hkscs"),
        ("gbk", "zh", GBK_REVIEWS, GBK_REVIEWS, "gb18030"),
        ("gbk", "auto", GBK_REVIEWS, GBK_REVIEWS, "gb18030"),
        ("gb18030", "zh", GB18030_REVIEWS, GB18030_REVIEWS, "gb18030"),
        ("utf-16", "zh", GBK_REVIEWS, GBK_REVIEWS, "utf-16"),
        ("utf-8-sig", "auto", BIG5_REVIEWS, BIG5_SIMPLIFIED, "utf-8-sig"),
    ],
)
def test_chinese_in_every_encoding_is_read_and_kept(
    tmp_path: Path, form: str, rows: int, encoding: str, lang: str, texts: list[str], expected: list[str], chosen: str
) -> None:
    path = tmp_path / f"reviews.{form}"
    path.write_bytes(tabular_bytes(form, texts[:rows], encoding))
    outcome = build_sources(tmp_path, source(path, lang=lang, format=form))
    assert outcome.texts() == expected[:rows] and outcome.drops == []
    assert {row["lang"] for row in outcome.kept} == {"zh"}
    assert [(record.encoding, record.status) for record in outcome.inputs] == [(chosen, "read")]


@pytest.mark.parametrize("form", ["csv", "tsv", "jsonl"])
@pytest.mark.parametrize("rows", [1, 2])
def test_shift_jis_japanese_in_an_auto_source_stays_japanese(tmp_path: Path, form: str, rows: int) -> None:
    path = tmp_path / f"reviews.{form}"
    path.write_bytes(tabular_bytes(form, JAPANESE_REVIEWS[:rows], "shift_jis"))
    japanese = source(path, lang="auto", format=form)
    documents, _ = read_rows(japanese)
    assert [row["text"] for row in documents] == JAPANESE_REVIEWS[:rows], "decoded as the Japanese it is"
    outcome = build_sources(tmp_path, japanese)
    assert outcome.kept == [], "Japanese never reaches the zh shards"
    # compared in NFC: the normalize stage leaves kana with dakuten decomposed (pyarrow's utf8_normalize)
    assert [(row["reason"], unicodedata.normalize("NFC", row["text"])) for row in outcome.drops] == [
        ("lang:ja", t) for t in JAPANESE_REVIEWS[:rows]]
    assert outcome.inputs[0].encoding == "cp932"


def test_utf16_with_a_damaged_record_rejects_only_that_record(tmp_path: Path) -> None:
    good = "label,review\n1,物流很快，包装也很结实，好评。\n".encode("utf-16-le")
    damaged = "0,这一条".encode("utf-16-le") + b"\x00\xd8" + "坏了\n1,屏幕很清楚，声音也不错。\n".encode("utf-16-le")
    path = tmp_path / "reviews.csv"
    path.write_bytes(b"\xff\xfe" + good + damaged)
    outcome = build_sources(tmp_path, source(path))
    assert outcome.texts() == ["物流很快，包装也很结实，好评。", "屏幕很清楚，声音也不错。"]
    assert [(r["reason"], r["position"]) for r in outcome.drops] == [("invalid_encoding", "3")]


# ---- bad files: one bad file is one skipped input ----------------------------------------------------

def test_a_glob_of_good_files_and_bad_ones_skips_only_the_bad(tmp_path: Path) -> None:
    data = tmp_path / "data"
    good_records = write_good_files(data, 50)
    expected = write_bad_files(data)
    outcome = build_sources(tmp_path, source(data / "reviews-*.csv", fields={"text": "review", "label": "label"}))
    status = {Path(r.uri).name: (r.status, r.reason) for r in outcome.inputs}
    assert {name: s for name, (s, _) in status.items() if s != "read"} == {
        name: "empty" if want == "empty" else "skipped" for name, want in expected.items()}
    assert status["reviews-other.csv"][1].startswith("input:missing_columns: its header ['user', 'comment'] lacks")
    skipped_rows = [r for r in outcome.drops if r["reason"].startswith("input:")]
    assert sorted((Path(r["file"]).name, r["reason"], r["outcome"]) for r in skipped_rows) == sorted(
        (name, want, "rejected") for name, want in expected.items() if want != "empty")
    assert len(outcome.kept) == good_records, "every record of the good files is kept"
    assert outcome.totals["read"] == good_records + 3, "a skipped input is one rejected record"
    assert check_bad_inputs(CorpusflowConfig(sources=[source("x")], max_bad_inputs=3), outcome.inputs)
    with pytest.raises(TooManyBadInputs, match=r"(?s)3 of 54 inputs .*reviews-image.csv: input:binary"):
        check_bad_inputs(CorpusflowConfig(sources=[source("x")], max_bad_inputs=0.05), outcome.inputs)


def test_a_source_that_fails_on_bad_input_fails_when_planned(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_good_files(data, 3)
    (data / "reviews-image.csv").write_bytes(random.Random(3).randbytes(3000))
    strict = source(data / "*.csv", on_bad_input="fail")
    with pytest.raises(SourceUnreadable, match="reviews-image.csv: binary data") as raised:
        plan_partitions(strict, expand_uri(strict))
    assert raised.value.reason == "binary" and raised.value.file.endswith("reviews-image.csv")


def test_a_mapping_no_file_fits_fails_before_any_partition(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_good_files(data, 3)
    wrong = source(data / "*.csv", fields={"text": "comment"})
    with pytest.raises(SourceMappingError) as raised:
        plan_partitions(wrong, expand_uri(wrong))
    message = str(raised.value)
    assert "reviews-000.csv" in message and "['label', 'review']" in message and "['comment']" in message


@pytest.mark.parametrize(
    ("name", "content", "settings", "reason"),
    [
        ("notes.warc.gz", b"these are notes, not a web archive\n" * 20, {"kind": "news", "format": "warc"},
         "input:not_format"),
        ("page.jsonl", b"<html><body>not json</body></html>\n" * 5, {"kind": "news", "format": "jsonl"},
         "input:not_format"),
        ("dump.xml", b"just some text", {"kind": "wiki", "format": "mediawiki", "fields": {}}, "input:not_format"),
        ("reviews.csv.gz", b"\x1f\x8b\x08\x00garbage-not-gzip" * 10, {}, "input:unreadable"),
        ("export.zip", b"PK\x03\x04 not really a zip", {}, "input:not_format"),
    ],
)
def test_a_file_that_is_not_its_format_is_one_skipped_input(
    tmp_path: Path, name: str, content: bytes, settings: dict, reason: str
) -> None:
    data = tmp_path / "data"
    write_good_files(data, 1)
    (data / name).write_bytes(content)
    bad = source(data / name, **settings)
    outcome = build_sources(tmp_path, source(data / "reviews-000.csv"), bad.model_copy(update={"name": "bad"}))
    assert [(r["source"], r["reason"], Path(r["file"]).name) for r in outcome.drops] == [("bad", reason, name)]
    assert [(Path(r.uri).name, r.status) for r in outcome.inputs if r.source == "bad"] == [(name, "skipped")]
    assert len(outcome.kept) == 2


def test_an_empty_file_and_a_header_only_file_are_zero_records(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_bytes(b"")
    (tmp_path / "b.csv").write_text("label,review\n", encoding="utf-8")
    (tmp_path / "c.csv").write_text("label,review\n1,干净整洁，服务周到\n", encoding="utf-8")
    outcome = build_sources(tmp_path, source(tmp_path / "*.csv"))
    assert [(Path(r.uri).name, r.status) for r in outcome.inputs] == [("a.csv", "empty"), ("b.csv", "read"),
                                                                        ("c.csv", "read")]
    assert outcome.totals["read"] == 1 and outcome.texts() == ["干净整洁，服务周到"]


def test_only_storage_and_network_failures_are_worth_a_retry(tmp_path: Path) -> None:
    unreadable = SourceUnreadable("a.csv", "binary", "binary data")
    crossed = pickle.loads(pickle.dumps(unreadable))  # as it comes back from a worker process
    assert (crossed.file, crossed.reason, str(crossed)) == ("a.csv", "binary", "a.csv: binary data")
    corrupt = tmp_path / "corrupt.gz"
    corrupt.write_bytes(b"not gzip at all")
    with pytest.raises(OSError) as decompressing:
        gzip.open(corrupt).read()
    deterministic = [unreadable, SourceMappingError("a.csv", "missing_columns", "x"), decompressing.value, EOFError(),
                     FetchRefused("HTTP 404"), TooManyBadInputs("3 of 4"), RepeatedIdError("x")]
    transient = [OSError(errno.EIO, "I/O error"), FetchError("HTTP 503"), TimeoutError(), ConnectionResetError()]
    assert [is_transient(e) for e in deterministic] == [False] * len(deterministic)
    assert [is_transient(e) for e in transient] == [True] * len(transient)


# ---- headerless CSV / TSV ----------------------------------------------------------------------------


def test_headerless_tsv_maps_columns_by_position(tmp_path: Path) -> None:
    path = tmp_path / "labelled.txt"
    path.write_text(
        "The staff were friendly and the room was spotless, we would stay here again.\t1\n"
        "Cold food, slow service and the waiter forgot our drinks twice.\t0\n"
        "\n"
        "Only a label here\n"
        "\t1\n"
        "Great view from the terrace and the breakfast was plentiful and fresh.\t1\textra\n",
        encoding="utf-8",
    )
    headerless = source(path, lang="en", format="tsv", header=False, fields={"text": 0, "label": 1},
                        label_map={"1": "positive", "0": "negative"})
    outcome = build_sources(tmp_path, headerless)
    assert [(r["text"][:9], r["label"]) for r in outcome.kept] == [("The staff", "positive"), ("Cold food", "negative")]
    assert sorted((r["reason"], r["position"]) for r in outcome.drops) == [
        ("bad_csv_row", "4"), ("bad_csv_row", "6"), ("empty_text", "5")]


def test_headerless_csv_with_the_text_in_the_second_column(tmp_path: Path) -> None:
    path = tmp_path / "reviews.csv"
    path.write_bytes("5,这家店的咖啡很香，甜点也不错\n1,等了一个小时才上菜，太慢了\n".encode("gbk"))
    outcome = build_sources(tmp_path, source(path, header=False, fields={"text": "1", "label": "0"}))
    assert [(r["text"], r["label"]) for r in outcome.kept] == [("这家店的咖啡很香，甜点也不错", "5"),
                                                               ("等了一个小时才上菜，太慢了", "1")]


def test_headerless_positions_beyond_the_first_row_fail_when_planned(tmp_path: Path) -> None:
    path = tmp_path / "labelled.txt"
    path.write_text("Nice place.\t1\n", encoding="utf-8")
    wrong = source(path, lang="en", format="tsv", header=False, fields={"text": 0, "label": 2})
    with pytest.raises(SourceMappingError, match=r"labelled.txt: its first row has 2 column\(s\) .* \['2'\]"):
        plan_partitions(wrong, expand_uri(wrong))


@pytest.mark.shared_data
def test_yelp_sentences_read_headerless(shared_data: Path, tmp_path: Path) -> None:
    path = shared_data / "comments" / "yelp_labelled.txt"
    yelp = source(path, name="yelp", lang="en", format="tsv", header=False, fields={"text": 0, "label": 1},
                  label_map={"1": "positive", "0": "negative"})
    outcome = build_sources(tmp_path, yelp)
    assert outcome.totals["read"] == 1000
    assert outcome.reasons()["bad_csv_row"] == 0 and outcome.reasons()["missing_text"] == 0
    assert {row["label"] for row in outcome.kept} == {"positive", "negative"}
    assert any(row["text"].startswith("Wow... Loved this place.") for row in outcome.kept)

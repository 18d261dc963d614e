"""CSV / TSV / JSON-lines readers (comments and news feeds) on files written here, good and bad."""

from __future__ import annotations

import json
import os
import random
import tracemalloc
import zipfile
from pathlib import Path

import pytest

from pipeline.sources import expand_uri, plan_partitions
from pipeline.sources.base import SourceMappingError, SourceUnreadable
from helpers.sources import read_rows, reasons, source_for

REVIEWS = [
    ("1", "房间干净整洁，服务员态度很好，下次还会再来。"),
    ("0", "隔音太差了，晚上一直听到走廊里的声音。"),
    ("1", "早餐种类丰富，位置方便，离地铁站很近。"),
]


def write_csv(path: Path, text: str, encoding: str) -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def csv_text(rows: list[tuple[str, str]]) -> str:
    return "label,review\n" + "".join(f"{label},{review}\n" for label, review in rows)


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "gbk", "gb18030", "big5"])
def test_encoding_is_detected(tmp_path: Path, encoding: str) -> None:
    rows = REVIEWS * 3
    if encoding == "big5":  # Big5 holds traditional characters only
        rows = [("1", "房間乾淨整潔，服務員態度很好，下次還會再來。"), ("0", "隔音太差了，晚上一直聽到走廊裡的聲音。")] * 3
    path = write_csv(tmp_path / "reviews.csv", csv_text(rows), encoding)
    documents, rejects = read_rows(source_for(path, fields={"text": "review", "label": "label"}))
    assert [d["text"] for d in documents] == [review for _, review in rows] and rejects == []


def test_labels_are_mapped_and_meta_names_file_and_line(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "reviews.csv", csv_text(REVIEWS), "utf-8")
    source = source_for(path, fields={"text": "review", "label": "label"}, label_map={"1": "pos", "0": "neg"})
    documents, _ = read_rows(source)
    assert [d["label"] for d in documents] == ["pos", "neg", "pos"]
    assert [d["meta"]["position"] for d in documents] == [2, 3, 4]
    assert {d["meta"]["file"] for d in documents} == {str(path)}
    assert len({d["id"] for d in documents}) == 3 and documents[0]["kind"] == "comments"


def test_quoted_newlines_quotes_and_boms_inside_fields(tmp_path: Path) -> None:
    text = 'cat,label,review\n书籍,1,"第一行\n第二行"\n书籍,0,"\ufeff他说""不错""。"\n水果,1,新鲜\n'
    path = write_csv(tmp_path / "reviews.csv", text, "utf-8-sig")
    documents, rejects = read_rows(source_for(path, fields={"text": "review", "label": "label"}))
    assert [d["text"] for d in documents] == ["第一行\n第二行", '他说"不错"。', "新鲜"]
    assert [d["meta"]["position"] for d in documents] == [2, 4, 5]
    assert documents[0]["meta"]["category"] == "书籍" and rejects == []


def test_invalid_utf8_rejects_only_its_row(tmp_path: Path) -> None:
    path = tmp_path / "reviews.csv"
    path.write_bytes(
        "\ufefflabel,review\n1,好评\n0,有几个字节坏了".encode() + b"\xff\xfe" + "的一条评论\n1,不错\n".encode()
    )
    documents, rejects = read_rows(source_for(path, fields={"text": "review"}))
    assert [d["text"] for d in documents] == ["好评", "不错"]
    assert reasons(rejects) == ["invalid_utf8"]
    assert rejects[0]["file"] == str(path) and rejects[0]["position"] == "3"
    assert "\ufffd" in rejects[0]["text"]


def test_missing_text_empty_text_and_bad_rows(tmp_path: Path) -> None:
    text = "label,review,extra\n1,很好,a\n0\n1,   ,b\n1,多了,c,d\n0,正常,e\n"
    path = write_csv(tmp_path / "reviews.csv", text, "utf-8")
    documents, rejects = read_rows(source_for(path, fields={"text": "review"}))
    assert [d["text"] for d in documents] == ["很好", "正常"]
    assert reasons(rejects) == ["missing_text", "empty_text", "bad_csv_row"]
    assert [r["position"] for r in rejects] == ["3", "4", "5"]
    assert len(documents) + len(rejects) == 5


def test_csv_without_the_mapped_text_column_is_a_mapping_error(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "reviews.csv", csv_text(REVIEWS), "utf-8")
    with pytest.raises(SourceMappingError, match="lacks the mapped column") as raised:
        read_rows(source_for(path, fields={"text": "comment"}))
    assert str(path) in str(raised.value) and "comment" in str(raised.value) and "'review'" in str(raised.value)


def test_empty_file_is_zero_records(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_bytes(b"")
    assert read_rows(source_for(path, format="jsonl")) == ([], [])


def test_binary_garbage_file_is_one_skipped_input(tmp_path: Path) -> None:
    path = tmp_path / "garbage.csv"
    path.write_bytes(random.Random(7).randbytes(20_000))
    with pytest.raises(SourceUnreadable, match="garbage.csv"):
        read_rows(source_for(path, fields={"text": "review"}, on_bad_input="fail"))
    documents, rejects = read_rows(source_for(path, fields={"text": "review"}))
    assert documents == [] and [(r["reason"], r["file"]) for r in rejects] == [("input:binary", str(path))]


def test_jsonl_broken_lines_are_rejected_and_the_rest_read(tmp_path: Path) -> None:
    good = [json.dumps({"id": i, "text": f"第{i}条新闻", "date": "2024-01-02 03:04:05"}, ensure_ascii=False)
            for i in range(5)]
    lines = [good[0], '{"id": 9, "text": "没写完', good[1], "", "[1, 2]", good[2],
             "\x00\x01\x02\x03\x04\x05\x06\x07\x08garbage", good[3], good[4]]
    path = tmp_path / "news.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    source = source_for(path, kind="news", format="jsonl", fields={"text": "text", "id": "id", "date": "date"})
    documents, rejects = read_rows(source)
    assert [d["text"] for d in documents] == [f"第{i}条新闻" for i in range(5)]
    assert [(r["reason"], r["position"]) for r in rejects] == [
        ("malformed_json", "2"), ("malformed_json", "5"), ("binary_garbage", "7")
    ]
    assert all(r["file"] == str(path) for r in rejects)
    assert str(documents[0]["published_at"]) == "2024-01-02 03:04:05+00:00"
    assert len(documents) + len(rejects) == len([line for line in lines if line])


def test_unparseable_date_is_null_with_a_note(tmp_path: Path) -> None:
    path = tmp_path / "news.jsonl"
    path.write_text(json.dumps({"text": "正文", "date": "去年冬天"}, ensure_ascii=False) + "\n", encoding="utf-8")
    documents, _ = read_rows(source_for(path, kind="news", format="jsonl", fields={"text": "text", "date": "date"}))
    assert documents[0]["published_at"] is None and documents[0]["meta"]["unparsed_date"] == "去年冬天"


def test_a_50mb_single_line_record_is_rejected_within_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "huge.jsonl"
    with open(path, "w", encoding="utf-8") as out:
        out.write('{"text": "前一条"}\n{"text": "')
        chunk = "长" * 1_000_000
        for _ in range(17):  # 17 M characters of 3 bytes each: 51 MB on one line
            out.write(chunk)
        out.write('"}\n{"text": "后一条"}\n')
    assert os.path.getsize(path) > 50_000_000
    tracemalloc.start()
    documents, rejects = read_rows(source_for(path, format="jsonl"))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert [d["text"] for d in documents] == ["前一条", "后一条"]
    assert reasons(rejects) == ["record_too_large"] and rejects[0]["position"] == "2"
    assert peak < 30_000_000  # the cap is 1 MB; the line is never held whole


def test_oversized_csv_line_is_rejected_and_the_next_rows_read(tmp_path: Path) -> None:
    text = "label,review\n1,短评\n0," + "长" * 3000 + "\n1,又一条\n"
    path = write_csv(tmp_path / "reviews.csv", text, "utf-8")
    documents, rejects = read_rows(source_for(path, fields={"text": "review"}, max_record_bytes=1000))
    assert [d["text"] for d in documents] == ["短评", "又一条"]
    assert reasons(rejects) == ["record_too_large"] and rejects[0]["position"] == "3"


def test_tsv_and_zipped_csv(tmp_path: Path) -> None:
    tsv = write_csv(tmp_path / "reviews.tsv", "review\tlabel\n很好\t1\n一般\t0\n", "utf-8")
    documents, _ = read_rows(source_for(tsv, format="tsv", fields={"text": "review", "label": "label"}))
    assert [(d["text"], d["label"]) for d in documents] == [("很好", "1"), ("一般", "0")]
    archive = tmp_path / "reviews.zip"
    with zipfile.ZipFile(archive, "w") as packed:
        packed.writestr("data/reviews.csv", csv_text(REVIEWS).encode("gbk"))
    documents, rejects = read_rows(source_for(archive, fields={"text": "review"}))
    assert [d["text"] for d in documents] == [review for _, review in REVIEWS] and rejects == []
    assert documents[0]["meta"]["file"] == f"{archive}!data/reviews.csv"


def test_row_partitions_read_the_same_as_one(tmp_path: Path) -> None:
    rows = [(str(i % 2), f"第{i}条评论，\n带换行") for i in range(23)]
    text = "label,review\n" + "".join(f'{label},"{review}"\n' for label, review in rows) + "1,\n"
    path = write_csv(tmp_path / "reviews.csv", text, "utf-8")
    split_source = source_for(path, fields={"text": "review"}, rows_per_partition=5)
    partitions = plan_partitions(split_source, expand_uri(split_source))
    assert [(p.start, p.stop) for p in partitions] == [(0, 5), (5, 10), (10, 15), (15, 20), (20, None)]
    whole = read_rows(source_for(path, fields={"text": "review"}))
    split = read_rows(split_source, partitions)
    assert [d["id"] for d in split[0]] == [d["id"] for d in whole[0]] and len(whole[0]) == 23
    assert reasons(split[1]) == reasons(whole[1]) == ["empty_text"]

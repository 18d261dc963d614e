"""The MediaWiki reader on exports written here: cleaning, filtering, truncation, partitions."""

from __future__ import annotations

import bz2
from pathlib import Path

import pytest

from pipeline.sources import expand_uri, plan_partitions
from pipeline.sources.base import SourceUnreadable
from pipeline.sources.wikitext import convert_variants, wikitext_to_text
from tests.source_fixtures import read_rows, reasons, source_for


def page(page_id: int, title: str, text: str, ns: int = 0, redirect: str | None = None) -> str:
    redirect_xml = f'<redirect title="{redirect}" />' if redirect else ""
    return (
        f"<page><title>{title}</title><ns>{ns}</ns><id>{page_id}</id>{redirect_xml}"
        f"<revision><id>{page_id}0</id><timestamp>2023-05-06T07:08:09Z</timestamp>"
        f'<text xml:space="preserve">{text}</text></revision></page>\n'
    )


def export(pages: str, version: str = "0.11", lang: str = "zh") -> str:
    return (
        f'<mediawiki xmlns="http://www.mediawiki.org/xml/export-{version}/" version="{version}">\n'
        f"<siteinfo><base>https://{lang}.wikipedia.org/wiki/Main_Page</base><namespaces>"
        '<namespace key="6">文件</namespace><namespace key="14">分类</namespace></namespaces></siteinfo>\n'
        f"{pages}</mediawiki>\n"
    )


def articles(count: int) -> str:
    return "".join(page(i, f"条目{i}", f"第{i}篇条目的正文，有一些'''文字'''。") for i in range(1, count + 1))


def wiki_source(path: Path, **settings):
    return source_for(path, kind="wiki", format="mediawiki", **settings)


def test_wikitext_cleaning_removes_markup_and_keeps_headings_and_paragraphs() -> None:
    wikitext = (
        "{{Infobox|名称=甲}}'''甲'''是一种-{zh-hans:计算机; zh-hant:電腦}-。<ref>{{cite|x}}</ref>\n\n"
        "== 历史 ==\n见[[乙|乙方]]与[[丙]]。[[文件:图.jpg|thumb|说明]]<!-- 注释 -->\n"
        '{| class="wikitable"\n| 表格 || 内容\n|}\n__NOTOC__\n[[分类:甲]]\n[[en:Alpha]]'
    )
    text = wikitext_to_text(wikitext, frozenset({"文件", "分类"}))
    assert text == "甲是一种计算机。\n历史\n见乙方与丙。"


@pytest.mark.parametrize(
    ("markup", "expected"),
    [
        ("-{zh-hans:计算机; zh-hant:電腦}-", "计算机"),
        ("-{zh-tw:軟體;zh-cn:软件}-", "软件"),
        ("-{zh-hk:電腦;zh-tw:電腦}-", "電腦"),
        ("-{A}-", "A"),
        ("-{H|zh-cn:软件;zh-tw:軟體}-", ""),
        ("a-{{模板}}-b", "a-{{模板}}-b"),
    ],
)
def test_conversion_markup_picks_the_simplified_variant(markup: str, expected: str) -> None:
    assert convert_variants(markup) == expected


def test_redirects_and_other_namespaces_are_filtered_with_a_reason(tmp_path: Path) -> None:
    path = tmp_path / "dump.xml"
    path.write_text(
        export(
            page(1, "计算机", "计算机是一种机器。")
            + page(2, "电脑", "#REDIRECT [[计算机]]", redirect="计算机")
            + page(3, "讨论:计算机", "讨论内容", ns=1)
            + page(4, "电子计算机", "#重定向 [[计算机]]")
        ),
        encoding="utf-8",
    )
    documents, rejects = read_rows(wiki_source(path))
    assert [d["title"] for d in documents] == ["计算机"]
    assert sorted(reasons(rejects)) == ["namespace", "redirect", "redirect"]
    assert {r["outcome"] for r in rejects} == {"filtered"} and {r["stage"] for r in rejects} == {"read"}
    document = documents[0]
    assert document["url"] == "https://zh.wikipedia.org/wiki/%E8%AE%A1%E7%AE%97%E6%9C%BA"
    assert document["meta"]["page_id"] == "1" and document["meta"]["rev_timestamp"] == "2023-05-06T07:08:09Z"
    assert str(document["published_at"]) == "2023-05-06 07:08:09+00:00"


def test_any_export_schema_version_and_plain_or_bz2(tmp_path: Path) -> None:
    plain = tmp_path / "old.xml"
    plain.write_text(export(articles(3), version="0.10"), encoding="utf-8")
    packed = tmp_path / "new.xml.bz2"
    packed.write_bytes(bz2.compress(export(articles(3), version="0.11").encode()))
    texts_plain = [d["text"] for d in read_rows(wiki_source(plain))[0]]
    texts_packed = [d["text"] for d in read_rows(wiki_source(packed))[0]]
    assert texts_plain == texts_packed == [f"第{i}篇条目的正文，有一些文字。" for i in (1, 2, 3)]


def test_multistream_bz2_reads_across_streams(tmp_path: Path) -> None:
    path = tmp_path / "multistream.xml.bz2"
    path.write_bytes(b"".join(multistream(export(articles(7)), pages_per_stream=2)))
    documents, rejects = read_rows(wiki_source(path))
    assert [d["title"] for d in documents] == [f"条目{i}" for i in range(1, 8)] and rejects == []


def multistream(text: str, pages_per_stream: int) -> list[bytes]:
    """The export as a multistream dump does it: header, then bz2 streams of a few pages each, then footer."""
    head, rest = text.split("<page>", 1)
    pages = ["<page>" + p for p in rest.split("<page>")]
    pages[-1], tail = pages[-1].split("</mediawiki>")
    groups = ["".join(pages[i : i + pages_per_stream]) for i in range(0, len(pages), pages_per_stream)]
    return [bz2.compress(part.encode()) for part in [head, *groups, "</mediawiki>" + tail]]


def test_truncated_bz2_keeps_earlier_pages_and_rejects_the_broken_one(tmp_path: Path) -> None:
    streams = multistream(export(articles(30)), pages_per_stream=5)
    path = tmp_path / "cut.xml.bz2"
    cut_stream = streams[4]  # pages 16-20
    path.write_bytes(b"".join(streams[:4]) + cut_stream[: len(cut_stream) // 2])
    documents, rejects = read_rows(wiki_source(path))
    assert [d["title"] for d in documents] == [f"条目{i}" for i in range(1, 16)]
    assert reasons(rejects) == ["truncated_page"]
    assert rejects[0]["file"] == str(path) and rejects[0]["position"] == "15"
    assert "EOFError" in rejects[0]["meta"]["cause"]


def test_truncated_xml_mid_page(tmp_path: Path) -> None:
    text = export(articles(5))
    path = tmp_path / "cut.xml"
    path.write_text(text[: text.index("第4篇")], encoding="utf-8")
    documents, rejects = read_rows(wiki_source(path))
    assert [d["title"] for d in documents] == ["条目1", "条目2", "条目3"]
    assert reasons(rejects) == ["truncated_page"] and rejects[0]["title"] == "条目4"


def test_invalid_utf8_costs_only_its_page(tmp_path: Path) -> None:
    raw = export(page(1, "好", "正常的正文。") + page(2, "坏", "BROKEN") + page(3, "好二", "另一篇正文。")).encode()
    path = tmp_path / "bad.xml"
    path.write_bytes(raw.replace(b"BROKEN", "坏的".encode() + b"\xff\xfe" + "字节".encode()))
    documents, rejects = read_rows(wiki_source(path))
    assert [d["title"] for d in documents] == ["好", "好二"]
    assert reasons(rejects) == ["invalid_utf8"] and "坏的" in rejects[0]["text"]


@pytest.mark.parametrize(
    ("content", "cause"),
    [(b"\x00\x01\x02garbage" * 50, "not a readable MediaWiki"), (b"just text", "not a readable")],
)
def test_unreadable_dumps_name_the_file(tmp_path: Path, content: bytes, cause: str) -> None:
    path = tmp_path / "broken.xml"
    path.write_bytes(content)
    with pytest.raises(SourceUnreadable, match=cause) as raised:
        read_rows(wiki_source(path, on_bad_input="fail"))
    assert str(path) in str(raised.value)
    documents, rejects = read_rows(wiki_source(path))
    assert documents == [] and [(r["reason"], r["file"]) for r in rejects] == [("input:not_format", str(path))]


def test_an_empty_dump_is_zero_records(tmp_path: Path) -> None:
    path = tmp_path / "empty.xml"
    path.write_bytes(b"")
    assert read_rows(wiki_source(path)) == ([], [])


def test_a_bz2_that_is_not_bz2_is_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "fake.xml.bz2"
    path.write_text(export(articles(2)), encoding="utf-8")
    with pytest.raises(SourceUnreadable, match="fake.xml.bz2"):
        read_rows(wiki_source(path, on_bad_input="fail"))


def test_oversized_page_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "big.xml"
    path.write_text(export(page(1, "大", "字" * 5000) + page(2, "小", "短文。")), encoding="utf-8")
    documents, rejects = read_rows(wiki_source(path, max_record_bytes=4000))
    assert [d["title"] for d in documents] == ["小"]
    assert reasons(rejects) == ["record_too_large"]
    assert len(rejects[0]["text"]) < 5000 and rejects[0]["meta"]["text_truncated_from_chars"] == 5000


def test_page_range_partitions_read_the_same_as_one(tmp_path: Path) -> None:
    path = tmp_path / "dump.xml.bz2"
    pages = articles(23) + page(99, "转", "#REDIRECT [[条目1]]", redirect="条目1")
    path.write_bytes(bz2.compress(export(pages).encode()))
    split_source = wiki_source(path, pages_per_partition=5)
    partitions = plan_partitions(split_source, expand_uri(split_source))
    assert [(p.index, p.start, p.stop) for p in partitions] == [
        (0, 0, 5), (1, 5, 10), (2, 10, 15), (3, 15, 20), (4, 20, None)
    ]
    assert len({p.fingerprint for p in partitions}) == 1
    whole = read_rows(wiki_source(path))
    split = read_rows(split_source, partitions)
    assert [d["id"] for d in split[0]] == [d["id"] for d in whole[0]] and len(whole[0]) == 23
    assert [r["id"] for r in split[1]] == [r["id"] for r in whole[1]] and len(whole[1]) == 1

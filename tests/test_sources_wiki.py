"""The MediaWiki reader on exports written here: cleaning, filtering, truncation, partitions."""

from __future__ import annotations

import bz2
from pathlib import Path

import pytest

from pipeline.sources import expand_uri, plan_partitions
from pipeline.sources.base import Partition, SourceUnreadable
from pipeline.sources.wikitext import WikitextCleaner, convert_variants
from helpers.sources import read_rows, reasons, source_for


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
    text = WikitextCleaner(hidden_namespaces=frozenset({"文件", "分类"})).text(wikitext)
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


def test_one_stream_dump_without_index_is_one_partition(tmp_path: Path) -> None:
    path = tmp_path / "dump.xml.bz2"
    path.write_bytes(bz2.compress(export(articles(23)).encode()))
    source = wiki_source(path, pages_per_partition=5)
    partitions = plan_partitions(source, expand_uri(source))
    assert [(p.start, p.stop, p.byte_start, p.byte_stop) for p in partitions] == [(0, None, 0, None)]
    assert len(read_rows(source, partitions)[0]) == 23


def dump_pages() -> str:
    """23 articles with a redirect and a page without an id in between, so reject ids count positions."""
    pages = [page(i, f"条目{i}", f"第{i}篇条目的正文。") for i in range(1, 24)]
    pages[7] = page(99, "转", "#REDIRECT [[条目1]]", redirect="条目1")
    pages[12] = pages[12].replace("<id>13</id>", "")
    return "".join(pages)


def write_multistream(directory: Path, pages_per_stream: int, index: bool = True, name: str = "zhwiki-x") -> Path:
    """A multistream dump as Wikimedia writes it, and (when asked) its index of offset:page_id:title lines."""
    # the site's own base (not the one the source's language implies) shows that later partitions read it
    streams = multistream(export(dump_pages(), lang="zh-classical"), pages_per_stream)
    path = directory / f"{name}-pages-articles-multistream.xml.bz2"
    path.write_bytes(b"".join(streams))
    lines, offset = [], len(streams[0])
    for stream in streams[1:-1]:
        text = bz2.decompress(stream).decode()
        for chunk in text.split("<page>")[1:]:
            page_id = chunk.split("<id>", 1)[1].split("<", 1)[0] if "<ns>0</ns><id>" in chunk else ""
            lines.append(f"{offset}:{page_id}:{chunk.split('<title>', 1)[1].split('<', 1)[0]}")
        offset += len(stream)
    if index:
        index_path = directory / f"{name}-pages-articles-multistream-index.txt.bz2"
        index_path.write_bytes(bz2.compress(("\n".join(lines) + "\n").encode()))
    return path


def whole_file(source) -> tuple[list[dict], list[dict]]:
    """The dump read as one partition from its start: what every split must add up to."""
    return read_rows(source, [Partition(source.name, source.uri, "fingerprint")])


@pytest.mark.parametrize("pages_per_stream", [3, 5])
def test_multistream_index_plans_page_ranges_and_partitions_seek_to_their_streams(
    tmp_path: Path, pages_per_stream: int
) -> None:
    path = write_multistream(tmp_path, pages_per_stream)
    source = wiki_source(path, pages_per_partition=5)
    partitions = plan_partitions(source, expand_uri(source))
    assert [(p.index, p.start, p.stop) for p in partitions] == [
        (0, 0, 5), (1, 5, 10), (2, 10, 15), (3, 15, 20), (4, 20, None)
    ]
    assert partitions[0].byte_start == 0 and all(p.byte_start > 0 for p in partitions[1:])
    assert partitions[-1].byte_stop is None and all(p.byte_stop for p in partitions[:-1])
    whole = whole_file(source)
    split = read_rows(source, partitions)
    assert split == whole and len(whole[0]) == 22 and reasons(whole[1]) == ["redirect"]
    middle_documents, middle_rejects = read_rows(source, [partitions[2]])  # pages 10-14, ordinals from 0
    assert [d["title"] for d in middle_documents] == [f"条目{i}" for i in range(11, 16)]
    assert [d["meta"]["position"] for d in middle_documents] == [10, 11, 12, 13, 14]
    assert middle_documents[2]["id"] == next(d["id"] for d in whole[0] if d["title"] == "条目13")
    assert middle_documents[0]["url"] == "https://zh-classical.wikipedia.org/wiki/%E6%9D%A1%E7%9B%AE11"
    assert middle_rejects == []


def test_multistream_index_named_in_the_source(tmp_path: Path) -> None:
    path = write_multistream(tmp_path, 4, name="elsewhere")
    index = tmp_path / "elsewhere-pages-articles-multistream-index.txt.bz2"
    moved = tmp_path / "my-index.bz2"
    index.rename(moved)
    renamed = tmp_path / "dump.xml.bz2"
    path.rename(renamed)
    source = wiki_source(renamed, pages_per_partition=6, multistream_index=str(moved))
    partitions = plan_partitions(source, expand_uri(source))
    assert [(p.start, p.stop) for p in partitions] == [(0, 6), (6, 12), (12, 18), (18, None)]
    assert read_rows(source, partitions) == whole_file(source)


def test_index_of_another_dump_is_refused(tmp_path: Path) -> None:
    path = write_multistream(tmp_path, 4)
    index = path.with_name(path.name.replace(".xml.bz2", "-index.txt.bz2"))
    index.write_bytes(bz2.compress(b"12:1:a\n99999:2:b\n"))
    source = wiki_source(path)
    with pytest.raises(SourceUnreadable, match="index belongs to another dump"):
        plan_partitions(source, expand_uri(source))


def test_multistream_without_index_splits_at_stream_boundaries(tmp_path: Path) -> None:
    path = write_multistream(tmp_path, 3, index=False)
    source = wiki_source(path, pages_per_partition=4)
    partitions = plan_partitions(source, expand_uri(source))
    assert len(partitions) > 2 and [p.first_record for p in partitions][:2] == [0, None]
    documents, rejects = read_rows(source, partitions)
    whole_documents, whole_rejects = whole_file(source)
    assert [d["text"] for d in documents] == [d["text"] for d in whole_documents]
    assert [r["id"] for r in rejects] == [r["id"] for r in whole_rejects]
    # pages keep their ids; a page without one is named by its partition's offset and its place in it
    with_id = [d["id"] for d in documents if d["meta"]["page_id"]]
    assert with_id == [d["id"] for d in whole_documents if d["meta"]["page_id"]] and len(with_id) == 21
    later = [d for d in documents if d["meta"]["position"] is None]
    assert later and all(d["title"] != "条目1" for d in later)
    assert read_rows(source, partitions[-1:])[0]  # the closing tag's stream joined the last pages


def test_a_range_without_pages_reads_as_nothing(tmp_path: Path) -> None:
    path = write_multistream(tmp_path, 3, index=False)
    footer = path.stat().st_size - len(multistream(export(dump_pages(), lang="zh-classical"), 3)[-1])
    source = wiki_source(path)
    assert read_rows(source, [Partition(source.name, str(path), "fp", byte_start=footer, first_record=None)]) == (
        [], [])


def test_an_index_named_in_the_source_needs_one_dump(tmp_path: Path) -> None:
    write_multistream(tmp_path, 4, name="a")
    write_multistream(tmp_path, 4, name="b")
    source = wiki_source(tmp_path / "*.xml.bz2", multistream_index=str(tmp_path / "a-index.bz2"))
    with pytest.raises(SourceUnreadable, match="index of one dump"):
        plan_partitions(source, expand_uri(source))

"""The WARC news reader on crawls written here: extraction, non-article records, truncation."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from pipeline.sources.base import SourceUnreadable
from helpers.sources import read_rows, reasons, source_for

PARAGRAPHS = [
    "The city library will stay open until ten in the evening from next month, the council announced on "
    "Monday, after a survey showed that most readers could only visit after work.",
    "Librarians said the longer hours would be covered by new staff and volunteers, and that the reading "
    "rooms on the second floor would be reserved for quiet study during the evening.",
    "The council expects the change to cost less than the renovation planned for next year, and will "
    "review the opening hours again after six months based on the number of visitors.",
]


def article(title: str) -> bytes:
    body = "".join(f"<p>{p}</p>" for p in PARAGRAPHS)
    return (
        f"<html><head><title>{title}</title><meta property='article:published_time' content='2024-05-06'>"
        "</head><body><nav><a href='/'>Home</a> | <a href='/sport'>Sport</a></nav>"
        f"<article><h1>{title}</h1>{body}</article>"
        "<footer>Copyright 2024 Example News | Privacy | Contact</footer></body></html>"
    ).encode()


def write_warc(path: Path, records: list[tuple[str, str, str, bytes]]) -> list[int]:
    """Write (url, status, content type, payload) responses; returns the end offset of every record."""
    buffer = io.BytesIO()
    writer = WARCWriter(buffer, gzip=True)
    ends = []
    for url, status, content_type, payload in records:
        headers = StatusAndHeaders(status, [("Content-Type", content_type)], protocol="HTTP/1.1")
        writer.write_record(writer.create_warc_record(url, "response", payload=io.BytesIO(payload),
                                                      http_headers=headers))
        ends.append(buffer.tell())
    path.write_bytes(buffer.getvalue())
    return ends


CRAWL = [
    ("http://example.com/library", "200 OK", "text/html; charset=utf-8", article("Library opens longer")),
    ("http://example.com/logo.png", "200 OK", "image/png", b"\x89PNG\r\n\x1a\n" + bytes(40)),
    ("http://example.com/missing", "404 Not Found", "text/html", b"<html><body>Not found</body></html>"),
    ("http://example.com/empty", "200 OK", "text/html", b"<html><body><script>go()</script></body></html>"),
    ("http://example.com/library-2", "200 OK", "text/html", article("Library hours, again")),
]


def news_source(path: Path, **settings):
    return source_for(path, kind="news", lang="en", format="warc", **settings)


def test_articles_are_extracted_and_other_records_rejected_with_a_reason(tmp_path: Path) -> None:
    path = tmp_path / "crawl.warc.gz"
    write_warc(path, CRAWL)
    documents, rejects = read_rows(news_source(path))
    assert [d["url"] for d in documents] == ["http://example.com/library", "http://example.com/library-2"]
    first = documents[0]
    assert first["title"] == "Library opens longer"
    assert PARAGRAPHS[1] in first["text"] and "Privacy" not in first["text"] and "Sport" not in first["text"]
    assert str(first["published_at"]) == "2024-05-06 00:00:00+00:00"
    assert reasons(rejects) == ["not_html", "http_error", "empty_extraction"]
    assert rejects[1]["meta"]["http_status"] == "404"
    assert all(r["file"] == str(path) and int(r["position"]) > 0 for r in rejects)
    assert len(documents) + len(rejects) == len(CRAWL)


def test_truncated_warc_keeps_the_records_before_the_break(tmp_path: Path) -> None:
    path = tmp_path / "cut.warc.gz"
    ends = write_warc(path, CRAWL)
    data = path.read_bytes()
    path.write_bytes(data[: ends[3] + (ends[4] - ends[3]) // 2])
    documents, rejects = read_rows(news_source(path))
    assert [d["url"] for d in documents] == ["http://example.com/library"]
    assert reasons(rejects) == ["not_html", "http_error", "empty_extraction", "truncated_record"]
    assert rejects[-1]["position"] == str(ends[3])


def test_a_file_that_is_not_a_warc_is_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "notes.warc.gz"
    path.write_bytes(b"these are notes, not a web archive\n" * 20)
    with pytest.raises(SourceUnreadable, match="notes.warc.gz"):
        read_rows(news_source(path, on_bad_input="fail"))
    documents, rejects = read_rows(news_source(path))
    assert documents == [] and [(r["reason"], r["file"]) for r in rejects] == [("input:not_format", str(path))]

"""MediaWiki XML exports (.xml, .xml.bz2, multistream .xml.bz2), streamed page by page.

Any export schema version works: element names are matched without their namespace. A page's position is
its 0-based number in the file, which is also what partition ranges count. Pages outside the main
namespace and redirects are filtered at read time; a page cut off by a truncated file is rejected and the
pages before it are kept.
"""

from __future__ import annotations

import codecs
import xml.etree.ElementTree as ET
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import quote

from pipeline.config import SourceConfig
from pipeline.sources.base import Partition, ReadBatch, RecordBatcher, SourceUnreadable
from pipeline.sources.rows import document_row, native_lang, read_date, reject_row
from pipeline.sources.textio import open_binary
from pipeline.sources.wikitext import DEFAULT_HIDDEN_NAMESPACES, wikitext_to_text

_CHUNK = 1 << 20
_REDIRECT_PREFIXES = ("#redirect", "#重定向")
_MEDIA_AND_CATEGORY_KEYS = ("-2", "6", "14")  # Media, File, Category in every MediaWiki


@dataclass
class SiteInfo:
    article_base: str | None = None  # e.g. https://zh.wikipedia.org/wiki/
    hidden_namespaces: frozenset[str] = DEFAULT_HIDDEN_NAMESPACES


@dataclass
class RawPage:
    ordinal: int
    title: str | None
    namespace: str | None
    page_id: str | None
    redirect: bool
    revision: dict[str, str | None] = field(default_factory=dict)  # id, timestamp, text


@dataclass
class BrokenPage:
    """Where the file broke off: the page being read then, or the one that would have come next."""

    ordinal: int
    title: str | None
    cause: str


def count_pages(path: str) -> int:
    """Pages in a dump, a page cut off by truncation included (it is read as a reject)."""
    return sum(1 for _ in DumpReader(path).pages())


def read_wiki(source: SourceConfig, partition: Partition, batch_size: int) -> Iterator[ReadBatch]:
    reader = DumpReader(partition.path)
    rows = (
        _page_row(source, reader.site, partition.path, page)
        for page in reader.pages(partition.start, partition.stop)
    )
    yield from RecordBatcher(batch_size).drain(rows)


class DumpReader:
    """Pages of one export, parsed incrementally; `site` is filled once <siteinfo> has been read."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.site = SiteInfo()
        self._root: ET.Element | None = None
        self._next_ordinal = 0
        self._page_title: str | None = None
        self._in_page = False

    def pages(self, start: int = 0, stop: int | None = None) -> Iterator[RawPage | BrokenPage]:
        for page in self._all_pages():
            if stop is not None and page.ordinal >= stop:
                return  # later pages belong to later partitions; stop decompressing
            if page.ordinal >= start:
                yield page

    def _all_pages(self) -> Iterator[RawPage | BrokenPage]:
        # Bytes are decoded here, not by expat, so invalid UTF-8 costs the page holding it (it shows as
        # U+FFFD and the page is rejected) instead of stopping the parse of the whole file.
        parser = ET.XMLPullParser(events=("start", "end"))
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        with open_binary(self.path) as stream:
            # read1 hands out what was decompressed before a truncated stream ends; read() would drop it
            read = getattr(stream, "read1", stream.read)
            try:
                while chunk := read(_CHUNK):
                    parser.feed(decoder.decode(chunk))
                    yield from self._pages_from(parser)
                parser.feed(decoder.decode(b"", final=True))
                parser.close()
                yield from self._pages_from(parser)
            except (ET.ParseError, OSError, EOFError, zlib.error) as error:
                yield self._broken(error)

    def _broken(self, error: Exception) -> BrokenPage:
        if self._next_ordinal == 0 and not self._in_page:
            raise SourceUnreadable(self.path, "not_format", f"not a readable MediaWiki XML export: {error}") from None
        return BrokenPage(self._next_ordinal, self._page_title, f"{type(error).__name__}: {error}")

    def _pages_from(self, parser: ET.XMLPullParser) -> Iterator[RawPage]:
        for event, element in parser.read_events():
            name = _local(element.tag)
            if event == "start":
                self._root = self._root if self._root is not None else element
                self._in_page = self._in_page or name == "page"
                continue
            if name == "title" and self._in_page:
                self._page_title = element.text
            elif name == "siteinfo":
                self.site = _site_info(element)
            elif name == "page":
                yield _raw_page(element, self._next_ordinal)
                self._next_ordinal += 1
                self._in_page, self._page_title = False, None
                # pages already handed out are dropped from the tree, so memory stays one page deep
                self._root.clear()


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _child(element: ET.Element, name: str) -> ET.Element | None:
    return next((child for child in element if _local(child.tag) == name), None)


def _child_text(element: ET.Element | None, name: str) -> str | None:
    child = None if element is None else _child(element, name)
    return None if child is None else child.text


def _site_info(siteinfo: ET.Element) -> SiteInfo:
    base = _child_text(siteinfo, "base")
    namespaces = _child(siteinfo, "namespaces")
    names = {
        (ns.text or "").strip().lower()
        for ns in (namespaces if namespaces is not None else [])
        if ns.get("key") in _MEDIA_AND_CATEGORY_KEYS
    }
    article_base = base.rsplit("/", 1)[0] + "/" if base and "/wiki/" in base else None
    return SiteInfo(article_base, DEFAULT_HIDDEN_NAMESPACES | (names - {""}))


def _raw_page(page: ET.Element, ordinal: int) -> RawPage:
    revision = _child(page, "revision")
    return RawPage(
        ordinal=ordinal,
        title=_child_text(page, "title"),
        namespace=_child_text(page, "ns"),
        page_id=_child_text(page, "id"),
        redirect=_child(page, "redirect") is not None,
        revision={name: _child_text(revision, name) for name in ("id", "timestamp", "text")},
    )


def _page_row(
    source: SourceConfig, site: SiteInfo, path: str, page: RawPage | BrokenPage
) -> tuple[str, dict[str, Any]]:
    meta: dict[str, Any] = {"file": path, "position": page.ordinal}
    key = PurePosixPath(path).name
    if isinstance(page, BrokenPage):
        meta["cause"] = page.cause
        return "reject", reject_row(source, f"{key}:{page.ordinal}", "truncated_page", page.title or "", meta,
                                    title=page.title)
    meta.update(page_id=page.page_id, rev_id=page.revision["id"], rev_timestamp=page.revision["timestamp"],
                namespace=page.namespace)
    native_id = page.page_id or f"{key}:{page.ordinal}"
    wikitext = page.revision["text"] or ""
    problem = _page_problem(source, page, wikitext)
    if problem:
        outcome = "filtered" if problem in ("namespace", "redirect") else "rejected"
        return "reject", reject_row(source, native_id, problem, wikitext, meta, outcome=outcome, title=page.title)
    text = wikitext_to_text(wikitext, site.hidden_namespaces)
    if not text:
        return "reject", reject_row(source, native_id, "empty_text", wikitext, meta, title=page.title)
    return "document", document_row(
        source,
        native_id,
        text,
        meta,
        title=page.title,
        url=_page_url(source, site, page.title),
        # a wiki page has no publication date; its revision time says how current the text is
        published_at=read_date(page.revision["timestamp"], meta),
    )


def _page_problem(source: SourceConfig, page: RawPage, wikitext: str) -> str | None:
    if (page.namespace or "0").strip() != "0":
        return "namespace"
    if page.redirect or wikitext.lstrip()[:12].lower().startswith(_REDIRECT_PREFIXES):
        return "redirect"
    if not wikitext.strip():
        return "missing_text"
    if len(wikitext) > source.max_record_bytes or len(wikitext.encode()) > source.max_record_bytes:
        return "record_too_large"
    if "\ufffd" in wikitext:
        return "invalid_utf8"
    return None


def _page_url(source: SourceConfig, site: SiteInfo, title: str | None) -> str | None:
    lang = native_lang(source)
    base = site.article_base or (f"https://{lang}.wikipedia.org/wiki/" if lang else None)
    if not title or not base:
        return None
    return base + quote(title.replace(" ", "_"), safe=":/(),'!*@$;=&+-._~")

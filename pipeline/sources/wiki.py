"""MediaWiki XML exports (.xml, .xml.bz2, multistream .xml.bz2), streamed page by page.

Any export schema version works: element names are matched without their namespace. A page's position is
its 0-based number in the file. Pages outside the main namespace and redirects are filtered at read time; a
page cut off by a truncated file is rejected and the pages before it are kept.

How a dump splits into partitions, so that each costs the same wherever it lies in the file:
- a multistream dump with its index (beside it, or named by the source) splits into ranges of
  `pages_per_partition` pages; each partition seeks to the stream holding its first page and decompresses
  only the streams of its pages;
- a bz2 file of several streams without an index splits at stream boundaries, found by one scan of the
  compressed bytes, into ranges of about `pages_per_partition` pages (estimated from the first streams); a
  partition owns the pages whose `<page>` tag lies in its streams. Such a partition that does not start
  the file cannot know its pages' positions: they read as null, and a page without an id is named by the
  byte offset of its partition and its number in it;
- anything else (one bz2 stream, gzip, plain XML) is one partition.
"""

from __future__ import annotations

import codecs
import re
import xml.etree.ElementTree as ET
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import quote, urlsplit

from pipeline.config import SourceConfig, WikiConfig
from pipeline.sources.base import Partition, ReadBatch, RecordBatcher, SourceUnreadable
from pipeline.sources.multistream import (
    StreamIndex,
    decompressed_range,
    index_beside,
    read_index,
    stream_starts,
)
from pipeline.sources.rows import document_row, native_lang, read_date, reject_row
from pipeline.sources.textio import open_binary
from pipeline.sources.wikitext import DEFAULT_HIDDEN_NAMESPACES, WikitextCleaner

_CHUNK = 1 << 20
_PAGE_TAG = b"<page>"
_SITE_INFO_CHUNK = 1 << 14  # the header is a few kilobytes; reading it must not decompress pages
_SAMPLE_BYTES = 256 * 1024  # compressed bytes decompressed to estimate the pages per byte of a dump without index
_REDIRECT_PREFIXES = ("#redirect", "#重定向", "#重新导向", "#重新導向")
_MEDIA_AND_CATEGORY_KEYS = ("-2", "6", "14")  # Media, File, Category in every MediaWiki


@dataclass
class SiteInfo:
    article_base: str | None = None  # e.g. https://zh.wikipedia.org/wiki/
    hidden_namespaces: frozenset[str] = DEFAULT_HIDDEN_NAMESPACES
    lang: str | None = None  # the wiki's language, from its address (zh.wikipedia.org: zh)


@dataclass(frozen=True)
class DumpRange:
    """A partition's share of a dump: pages [start, stop) and the compressed bytes that hold them.

    Reading begins at byte_start, whose first page is number first_page (None: unknown); with byte_stop
    set, the partition owns only the pages whose `<page>` tag lies before byte_stop.
    """

    start: int = 0
    stop: int | None = None
    byte_start: int = 0
    byte_stop: int | None = None
    first_page: int | None = 0


@dataclass
class RawPage:
    ordinal: int  # the page's number in the file, or in its partition when the file's is unknown
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


def plan_dump(source: SourceConfig, path: str, index_path: str | None = None) -> list[DumpRange]:
    """How a dump splits into partitions (see the module docstring), without parsing it."""
    index_path = index_path or index_beside(path)
    if index_path:
        return _ranges_from_index(read_index(index_path, path), source.pages_per_partition)
    if not path.lower().endswith(".bz2"):
        return [DumpRange()]
    starts, size = stream_starts(path)
    if len(starts) < 2:
        return [DumpRange()]
    return _ranges_from_streams(path, starts, size, source.pages_per_partition)


def _ranges_from_index(index: StreamIndex, pages_per_partition: int) -> list[DumpRange]:
    ranges = []
    for start in range(0, max(index.pages, 1), pages_per_partition):
        stop = start + pages_per_partition if start + pages_per_partition < index.pages else None
        first, last = index.stream_of(start), index.stream_of((stop or index.pages) - 1)
        # the first partition reads from the file's start, header stream included
        byte_start = 0 if first == 0 else int(index.offsets[first])
        byte_stop = int(index.offsets[last + 1]) if stop is not None and last + 1 < len(index.offsets) else None
        ranges.append(DumpRange(start, stop, byte_start, byte_stop, 0 if first == 0 else int(index.first_pages[first])))
    return ranges


def _ranges_from_streams(path: str, starts: list[int], size: int, pages_per_partition: int) -> list[DumpRange]:
    """Runs of whole streams of about pages_per_partition pages each, judged by their compressed size; a
    last run of under half that size (such as the closing tag's stream) joins the run before it."""
    target_bytes = pages_per_partition * _compressed_bytes_per_page(path, starts)
    cuts = [0]
    for offset in starts[1:]:
        if offset - cuts[-1] >= target_bytes and size - offset >= target_bytes / 2:
            cuts.append(offset)
    return [
        DumpRange(byte_start=begin, byte_stop=end, first_page=0 if begin == 0 else None)
        for begin, end in zip(cuts, [*cuts[1:], None])
    ]


def _compressed_bytes_per_page(path: str, starts: list[int]) -> float:
    """Compressed bytes per page in the first whole streams after the header, _SAMPLE_BYTES or more of them
    (decompressing is the slow part of reading a dump, so the sample stays small)."""
    first = 1 if len(starts) > 2 else 0  # the first stream of a dump is usually the header alone
    last = next((i for i in range(first + 1, len(starts)) if starts[i] - starts[first] >= _SAMPLE_BYTES),
                len(starts) - 1)
    pages = 0
    try:
        for piece in decompressed_range(path, starts[first], starts[last]):
            pages += piece.count(_PAGE_TAG)
    except (OSError, EOFError):
        pass  # a damaged file is judged by what could be read; its partitions reject the damage
    return (starts[last] - starts[first]) / max(pages, 1)


def probe_dump(path: str) -> None:
    """Raise SourceUnreadable unless the file starts like a MediaWiki export (its root is <mediawiki>)."""
    parser = ET.XMLPullParser(events=("start",))
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    try:
        with open_binary(path) as stream:
            read = getattr(stream, "read1", stream.read)
            while chunk := read(_SITE_INFO_CHUNK):
                parser.feed(decoder.decode(chunk))
                for _, element in parser.read_events():
                    if _local(element.tag) != "mediawiki":
                        raise SourceUnreadable(path, "not_format", f"not a MediaWiki export: its root is <{element.tag}>")
                    return
    except (ET.ParseError, OSError, EOFError) as error:
        raise SourceUnreadable(path, "not_format", f"not a readable MediaWiki XML export: {error}") from None
    raise SourceUnreadable(path, "not_format", "not a MediaWiki XML export: no root element")


def site_info(path: str) -> SiteInfo:
    """The <siteinfo> of a dump, read from its start and no further than its end."""
    parser = ET.XMLPullParser(events=("end",))
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    with open_binary(path) as stream:
        read = getattr(stream, "read1", stream.read)
        while chunk := read(_SITE_INFO_CHUNK):
            parser.feed(decoder.decode(chunk))
            for _, element in parser.read_events():
                if _local(element.tag) == "siteinfo":
                    return _site_info(element)
                if _local(element.tag) == "page":
                    return SiteInfo()  # an export without siteinfo
    return SiteInfo()


def read_wiki(source: SourceConfig, partition: Partition, batch_size: int, wiki: WikiConfig) -> Iterator[ReadBatch]:
    dump_range = DumpRange(partition.start, partition.stop, partition.byte_start, partition.byte_stop,
                           partition.first_record)
    reader = DumpReader(partition.path, dump_range)
    pages = PageReader(source, wiki)
    rows = (pages.row(reader, page) for page in reader.pages())
    yield from RecordBatcher(batch_size).drain(rows)


class DumpReader:
    """Pages of one export (or of one range of it), parsed incrementally; `site` is filled once
    <siteinfo> has been read (for a range that does not start the file, from the file's start first)."""

    def __init__(self, path: str, dump_range: DumpRange = DumpRange()) -> None:
        self.path = path
        self.range = dump_range
        self.site = SiteInfo()
        self._root: ET.Element | None = None
        self._next_ordinal = dump_range.first_page or 0
        self._read_pages = 0
        self._owned: int | None = None  # pages whose tag lay inside the range so far; None: all pages
        self._range_read = False  # every byte of the range has been handed out (the rest is overflow)
        self._skipping = dump_range.byte_start > 0  # before the first page read of a range that starts mid-file
        # pages of the range's first stream that lie before its first page: passed over as bytes, not parsed
        self._pages_to_pass = dump_range.start - dump_range.first_page if (
            self._skipping and dump_range.first_page is not None) else 0
        self._next_ordinal += self._pages_to_pass
        self._page_title: str | None = None
        self._in_page = False

    @property
    def positions_known(self) -> bool:
        return self.range.first_page is not None

    def pages(self) -> Iterator[RawPage | BrokenPage]:
        start, stop = self.range.start, self.range.stop
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
        try:
            if self.range.byte_start == 0 and self.range.byte_stop is None:
                chunks = self._whole_file()
            else:
                chunks = self._owned_bytes(parser)
            for chunk in chunks:
                parser.feed(decoder.decode(chunk))
                for page in self._pages_from(parser):
                    if self._owned is not None and self._read_pages > self._owned:
                        return  # the first page past the range: the rest belongs to later partitions
                    yield page
                if self._range_read and self._owned is not None and self._read_pages >= self._owned:
                    return  # the range's pages are complete: stop before decompressing the next stream
            if self._skipping:
                return  # the range holds no page (the closing stream of a dump): nothing to read
            parser.feed(decoder.decode(b"", final=True))
            parser.close()
            yield from self._pages_from(parser)
        except (ET.ParseError, OSError, EOFError, zlib.error) as error:
            yield self._broken(error)

    def _whole_file(self) -> Iterator[bytes]:
        with open_binary(self.path) as stream:
            # read1 hands out what was decompressed before a truncated stream ends; read() would drop it
            read = getattr(stream, "read1", stream.read)
            while chunk := read(_CHUNK):
                yield chunk

    def _owned_bytes(self, parser: ET.XMLPullParser) -> Iterator[bytes]:
        """Decompressed bytes of the range, counting the pages it owns, then of the rest of the file for
        a page that runs past the range's end. A range that does not start the file gets the file's site
        info first and a bare root element in place of its header, and skips to its first page."""
        start, stop = self.range.byte_start, self.range.byte_stop
        self._owned = 0 if stop is not None else None
        if start > 0:
            self.site = site_info(self.path)
            parser.feed("<mediawiki>")
        carried = b""  # the tail of earlier bytes, where a <page> tag may have begun
        for piece in decompressed_range(self.path, start, stop):
            if self._skipping:
                carried += piece
                begin = self._first_page_read(carried)
                if begin < 0:
                    carried = carried[-(len(_PAGE_TAG) - 1) :]
                    continue
                piece, carried, self._skipping = carried[begin:], b"", False
            if self._owned is not None:
                self._owned += (carried + piece).count(_PAGE_TAG)
                carried = (carried + piece)[-(len(_PAGE_TAG) - 1) :]
            yield piece
        if stop is not None:
            self._range_read = True
            yield b""  # lets the reader stop here when its last page is complete
            yield from decompressed_range(self.path, stop, None)

    def _first_page_read(self, data: bytes) -> int:
        """Where in `data` the first page to read begins (-1: not in it), passing over the pages before it;
        a tag cut by the end of `data` is found in the next call, which gets the tail of this one again."""
        begin = data.find(_PAGE_TAG)
        while begin >= 0 and self._pages_to_pass:
            self._pages_to_pass -= 1
            begin = data.find(_PAGE_TAG, begin + 1)
        return begin

    def _broken(self, error: Exception) -> BrokenPage:
        if self._read_pages == 0 and not self._in_page and self.range.byte_start == 0:
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
                self._read_pages += 1
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
    host = urlsplit(base or "").hostname or ""
    lang = host.split(".", 1)[0] if host.endswith(".wikipedia.org") else None
    return SiteInfo(article_base, DEFAULT_HIDDEN_NAMESPACES | (names - {""}), lang)


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


class PageReader:
    """Turns the pages of a dump into document or reject rows, by the source's settings and the `wiki` config."""

    def __init__(self, source: SourceConfig, wiki: WikiConfig) -> None:
        self.source = source
        self.wiki = wiki
        self._cleaners: dict[tuple[frozenset[str], str], WikitextCleaner] = {}
        self._disambiguation = _template_use(wiki.disambiguation_templates)

    def row(self, reader: DumpReader, page: RawPage | BrokenPage) -> tuple[str, dict[str, Any]]:
        source, path, site = self.source, reader.path, reader.site
        key = PurePosixPath(path).name
        # without the file's page numbers, a page is named by where its partition starts and its number in it
        at = f"{key}:" if reader.positions_known else f"{key}@{reader.range.byte_start}:"
        position_key = f"{at}{page.ordinal}"
        meta: dict[str, Any] = {"file": path, "position": page.ordinal if reader.positions_known else None}
        if isinstance(page, BrokenPage):
            meta["cause"] = page.cause
            return "reject", reject_row(source, position_key, "truncated_page", page.title or "", meta,
                                        title=page.title)
        meta.update(page_id=page.page_id, rev_id=page.revision["id"], rev_timestamp=page.revision["timestamp"],
                    namespace=page.namespace)
        native_id = page.page_id or position_key
        wikitext = page.revision["text"] or ""
        problem = self._problem(page, wikitext)
        if problem:
            outcome = "filtered" if problem in _FILTERED else "rejected"
            return "reject", reject_row(source, native_id, problem, wikitext, meta, outcome=outcome, title=page.title)
        text = self._cleaner(site).text(wikitext)
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

    def _cleaner(self, site: SiteInfo) -> WikitextCleaner:
        """One cleaner per wiki: template labels are written in its language (the source's, if unnamed)."""
        lang = site.lang or native_lang(self.source) or "en"
        key = (site.hidden_namespaces, lang)
        if key not in self._cleaners:
            self._cleaners[key] = WikitextCleaner(self.wiki, site.hidden_namespaces, lang)
        return self._cleaners[key]

    def _problem(self, page: RawPage, wikitext: str) -> str | None:
        if (page.namespace or "0").strip() != "0":
            return "namespace"
        if page.redirect or wikitext.lstrip()[:12].lower().startswith(_REDIRECT_PREFIXES):
            return "redirect"
        if not wikitext.strip():
            return "missing_text"
        if len(wikitext) > self.source.max_record_bytes or len(wikitext.encode()) > self.source.max_record_bytes:
            return "record_too_large"
        if "\ufffd" in wikitext:
            return "invalid_utf8"
        if _DISAMBIGUATION_MAGIC in wikitext or self._disambiguation.search(wikitext):
            return "disambiguation"
        return None


# Pages that are not articles: filtered, not rejected (nothing is wrong with them).
_FILTERED = frozenset({"namespace", "redirect", "disambiguation"})
_DISAMBIGUATION_MAGIC = "__DISAMBIG__"


def _template_use(names: list[str]) -> re.Pattern[str]:
    """Matches a use of any of the templates `names` ({{Disambig}}, {{消歧义|...}}), however it is cased
    and spaced; matches nothing when there are none."""
    if not names:
        return re.compile(r"(?!)")
    alternatives = "|".join(r"[\s_]+".join(re.escape(word) for word in name.split()) for name in names)
    return re.compile(rf"\{{\{{\s*(?:template:|模板:)?\s*(?:{alternatives})\s*(?:\||\}}\}})", re.IGNORECASE)


def _page_url(source: SourceConfig, site: SiteInfo, title: str | None) -> str | None:
    lang = native_lang(source)
    base = site.article_base or (f"https://{lang}.wikipedia.org/wiki/" if lang else None)
    if not title or not base:
        return None
    return base + quote(title.replace(" ", "_"), safe=":/(),'!*@$;=&+-._~")

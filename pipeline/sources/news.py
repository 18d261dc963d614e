"""News: WARC / WARC.gz crawls (main text extracted by trafilatura), or JSON lines / CSV through the mapping.

In a WARC, the records are the response (and resource) records: requests, metadata and warcinfo records
describe a capture and hold no article. A WARC record's position is its byte offset in the file.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Iterator
from pathlib import PurePosixPath
from typing import Any

import trafilatura
from warcio.archiveiterator import ArchiveIterator
from warcio.exceptions import ArchiveLoadFailed
from warcio.recordloader import ArcWarcRecord

from pipeline.config import SourceConfig
from pipeline.sources.base import Partition, ReadBatch, RecordBatcher, SourceUnreadable
from pipeline.sources.rows import document_row, read_date, reject_row
from pipeline.sources.tabular import read_tabular
from pipeline.sources.textio import open_binary

_CONTENT_RECORDS = ("response", "resource")
_HTML_TYPES = ("text/html", "application/xhtml+xml")
RowOut = tuple[str, dict[str, Any]]


def read_news(source: SourceConfig, partition: Partition, batch_size: int) -> Iterator[ReadBatch]:
    if source.format != "warc":
        yield from read_tabular(source, partition, batch_size, news_extras)
        return
    yield from RecordBatcher(batch_size).drain(_warc_rows(source, partition.path))


def probe_warc(path: str) -> None:
    """Raise SourceUnreadable unless the file starts with a readable WARC record."""
    with open_binary(path, decompress=False) as stream:
        try:
            first = next(iter(ArchiveIterator(stream)), None)
        except (ArchiveLoadFailed, OSError, EOFError, zlib.error) as error:
            raise SourceUnreadable(path, "not_format", f"not a readable WARC file: {error}") from None
    if first is not None and first.format != "warc":
        raise SourceUnreadable(path, "not_format", "not a WARC file: its first record is not a WARC record")


def news_extras(columns: dict[str, Any]) -> dict[str, Any]:
    """Unmapped columns for meta; comma-separated keywords become a list."""
    extras = dict(columns)
    keywords = extras.get("keywords")
    if isinstance(keywords, str):
        extras["keywords"] = [word for word in map(str.strip, keywords.split(",")) if word]
    return extras


def _warc_rows(source: SourceConfig, path: str) -> Iterator[RowOut]:
    with open_binary(path, decompress=False) as stream:
        records = ArchiveIterator(stream)
        end = 0  # where the last complete record ended
        try:
            for record in records:
                if record.format != "warc":
                    # warcio falls back to the old ARC layout for anything it cannot parse as WARC
                    raise ArchiveLoadFailed(f"record at offset {end} is not a WARC record")
                payload = record.content_stream().read(source.max_record_bytes + 1)
                # a payload read to its end with part of the record's declared length unread was cut off
                cut_short = len(payload) <= source.max_record_bytes and record.raw_stream.limit > 0
                # the offset is asked for after the payload is read: warcio skips the content to find it
                offset = records.get_record_offset()
                if cut_short:
                    yield _truncated(source, path, offset, "record ends before its declared Content-Length")
                    return
                end = offset + records.get_record_length()
                if record.rec_type in _CONTENT_RECORDS:
                    yield _warc_row(source, path, record, payload, offset)
        except (ArchiveLoadFailed, OSError, EOFError, zlib.error) as error:
            if end == 0:
                raise SourceUnreadable(path, "not_format", f"not a readable WARC file: {error}") from None
            yield _truncated(source, path, end, f"{type(error).__name__}: {error}")
            return
        # a gzip member cut short ends the iteration quietly; bytes left after the last record say so
        size = stream.seek(0, io.SEEK_END)
        if end < size:
            yield _truncated(source, path, end, f"{size - end} bytes after the last complete record")


def _truncated(source: SourceConfig, path: str, offset: int, cause: str) -> RowOut:
    meta = {"file": path, "position": offset, "cause": cause}
    return "reject", reject_row(source, f"{PurePosixPath(path).name}@{offset}", "truncated_record", "", meta)


def _warc_row(source: SourceConfig, path: str, record: ArcWarcRecord, payload: bytes, offset: int) -> RowOut:
    url = record.rec_headers.get_header("WARC-Target-URI")
    meta: dict[str, Any] = {
        "file": path,
        "position": offset,
        "crawled_at": record.rec_headers.get_header("WARC-Date"),
    }
    native_id = url or f"{PurePosixPath(path).name}@{offset}"
    problem = _payload_problem(source, record, payload, meta)
    if problem:
        return "reject", reject_row(source, native_id, problem, _preview(payload), meta)
    extracted = trafilatura.bare_extraction(payload, url=url, with_metadata=True)
    text = (extracted.text or "").strip() if extracted is not None else ""
    if not text:
        return "reject", reject_row(source, native_id, "empty_extraction", _preview(payload), meta)
    if extracted.sitename:
        meta["sitename"] = extracted.sitename
    return "document", document_row(
        source,
        native_id,
        text,
        meta,
        title=extracted.title,
        url=url,
        published_at=read_date(extracted.date, meta),
    )


def _payload_problem(
    source: SourceConfig, record: ArcWarcRecord, payload: bytes, meta: dict[str, Any]
) -> str | None:
    headers = record.http_headers
    if headers is not None and headers.get_statuscode() not in ("200", None):
        meta["http_status"] = headers.get_statuscode()
        return "http_error"
    content_type = (headers or record.rec_headers).get_header("Content-Type") or ""
    if content_type.split(";")[0].strip().lower() not in _HTML_TYPES:
        meta["content_type"] = content_type
        return "not_html"
    if len(payload) > source.max_record_bytes:
        return "record_too_large"
    if not payload.strip():
        return "empty_text"
    return None


def _preview(payload: bytes) -> str:
    return payload.decode("utf-8", "replace")

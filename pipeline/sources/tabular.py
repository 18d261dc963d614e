"""CSV, TSV and JSON-lines records through the source's field mapping, shared by news and comments.

A record's position is the 1-based line where it starts (editors show that line); partition ranges
count records from 0 in file order, blank lines and the CSV header excluded. A CSV/TSV file without a
header (`header: false`) has its columns named by position, "0" for the first, and `fields` names those.
"""

from __future__ import annotations

import codecs
import csv
import json
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import islice
from typing import Any, BinaryIO

import numpy as np

from pipeline.config import SourceConfig
from pipeline.sources.base import Partition, ReadBatch, RecordBatcher, RecordSeek, SourceUnreadable
from pipeline.sources.rows import document_row, read_date, reject_row, strip_bom, undecodable_reason
from pipeline.sources.linescan import LineCursor, csv_lines, jsonl_lines, line_blocks, record_starts
from pipeline.sources.textio import Line, Member, capped_lines, detect_encoding, members, open_lines_as, read_sample

# A JSON-lines file none of whose first records is a JSON object is not JSON lines (a CSV, a log, HTML).
JSONL_PROBE_LINES = 20

# Columns a reader leaves unmapped go to meta; a kind may rename or reshape them there.
Extras = Callable[[dict[str, Any]], dict[str, Any]]
RowOut = tuple[str, dict[str, Any]]  # ("document" | "reject", row)
_SCALAR = (str, int, float)  # what a text field may hold (bool excepted)


@dataclass(frozen=True)
class RawRecord:
    index: int  # 0-based record number in the input, counted across zip members
    position: int  # 1-based line where the record starts
    member: Member
    columns: dict[str, Any] | None  # None when the record could not be parsed
    reason: str | None  # why it could not be parsed
    raw: str  # the record as read, for reject rows


@dataclass(frozen=True)
class RecordRange:
    """Records [start, stop) of a file (stop None: to its end), where the first begins, and how many bytes
    (of the decompressed data files) the range spans: what its partition will read."""

    start: int
    stop: int | None
    seek: RecordSeek | None
    size: int


def record_ranges(source: SourceConfig, path: str, size: int) -> list[RecordRange]:
    """Ranges of `size` records, from one pass over the file.

    The last range is open-ended, so nothing past the count is lost. A headerless CSV has no seek points:
    its first row fixes the width later rows are checked against, so its partitions parse from the start.
    """
    seekable = source.format == "jsonl" or source.header
    starts: list[tuple[int, RecordSeek | None, int]] = []  # (record, seek, byte offset across data files)
    index = done_bytes = 0
    for ordinal, member in enumerate(members(path)):
        scan = _record_positions(source, member)
        while (batch := next(scan, None)) is not None:
            positions, offsets = batch
            for k in range(-index % size, len(positions), size):
                seek = RecordSeek(ordinal, int(positions[k]) - 1) if seekable else None
                starts.append((index + k, seek, done_bytes + int(offsets[k])))
            index += len(positions)
        done_bytes += scan.end_offset
    if not starts:
        return [RecordRange(0, None, None, done_bytes)]
    bounds = [offset for _, _, offset in starts[1:]] + [done_bytes]
    stops = [start for start, _, _ in starts[1:]] + [None]
    return [RecordRange(start, stop, seek, end - offset)
            for (start, seek, offset), stop, end in zip(starts, stops, bounds, strict=True)]


def read_tabular(
    source: SourceConfig, partition: Partition, batch_size: int, extras: Extras
) -> Iterator[ReadBatch]:
    records = _in_range(iter_records(source, partition.path, partition.seek, partition.start), partition)
    rows = (to_row(source, record, extras) for record in records)
    yield from RecordBatcher(batch_size).drain(rows)


def _in_range(records: Iterator[RawRecord], partition: Partition) -> Iterator[RawRecord]:
    for record in records:
        if partition.stop is not None and record.index >= partition.stop:
            return  # stop parsing: the rest of the file belongs to later partitions
        if record.index >= partition.start:
            yield record


def iter_records(source: SourceConfig, path: str, seek: RecordSeek | None = None, first: int = 0) -> Iterator[RawRecord]:
    """The records of an input in order, numbered across zip members; from `seek` (record `first`) if given."""
    index = first if seek else 0
    for ordinal, member in enumerate(members(path)):
        if seek and ordinal < seek.member:
            continue
        skip = seek.lines if seek and ordinal == seek.member else 0
        for record in _member_records(source, member, index, skip):
            yield record
            index = record.index + 1


def _member_records(source: SourceConfig, member: Member, first: int, skip_lines: int = 0) -> Iterator[RawRecord]:
    parse = _jsonl_records if source.format == "jsonl" else _csv_records
    return parse(source, member, member_encoding(source, member), first, skip_lines)


class _Scan:
    """Batches of (the line each record of a data file starts on, numbered as `_member_records` numbers
    them; its byte offset); once they are all taken, `end_offset` is the size of the data file read."""

    def __init__(self, batches: Generator[tuple[np.ndarray, np.ndarray], None, int]) -> None:
        self._batches = batches
        self.end_offset = 0

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        return self

    def __next__(self) -> tuple[np.ndarray, np.ndarray]:
        try:
            return next(self._batches)
        except StopIteration as ended:
            self.end_offset = ended.value or 0
            raise


def _record_positions(source: SourceConfig, member: Member) -> _Scan:
    """Where each record of a data file starts, in batches (see _Scan).

    Planning a build passes over the whole input before any partition starts, so this pass is on every
    build's critical path: lines are settled by numpy where their bytes suffice (linescan.py), and only the
    others parsed, as the records are.
    """
    encoding = member_encoding(source, member)
    if source.format == "jsonl":
        return _Scan(_jsonl_positions(source, member, encoding))
    return _Scan(_csv_positions(source, member, encoding))


def _jsonl_positions(source: SourceConfig, member: Member, encoding: str) -> Generator[tuple[np.ndarray, np.ndarray], None, int]:
    with open_lines_as(member, encoding) as (stream, line_codec):
        cursor = LineCursor(line_blocks(stream, source.max_record_bytes), 0)

        def record_at(cursor: LineCursor) -> int | None:
            line = next(cursor.lines())
            text = line.data.decode(line_codec, "surrogateescape")
            return cursor.line_no if line.oversize or text.strip() else None

        utf8 = codecs.lookup(line_codec).name in ("utf-8", "utf-8-sig")
        return (yield from record_starts(cursor, lambda block: jsonl_lines(block, utf8), record_at))


def member_encoding(source: SourceConfig, member: Member) -> str:
    """The codec a data file is read with: the source's own setting, else the one its bytes point to."""
    return source.encoding or detect_encoding(read_sample(member), member.label, source.lang)


def probe_input(source: SourceConfig, path: str) -> str | None:
    """Check that a CSV/TSV/JSON-lines input can be read with the source's mapping, before any work.

    Reads only the head of each data file: its encoding, its header (or first row, or first JSON
    objects). Raises SourceUnreadable naming the file and what is wrong; returns the codec(s) used, as
    "codec" or, for a zip whose members differ, "member:codec; ...". None when there is no data file.
    """
    found = [(member, member_encoding(source, member)) for member in members(path)]
    for member, encoding in found:
        if source.format == "jsonl":
            _probe_jsonl(source, member, encoding)
        else:
            _probe_csv(source, member, encoding)
    codecs_used = {encoding for _, encoding in found}
    if len(codecs_used) <= 1:
        return next(iter(codecs_used), None)
    return "; ".join(f"{member.key}:{encoding}" for member, encoding in found)


def _probe_csv(source: SourceConfig, member: Member, encoding: str) -> None:
    with open_lines_as(member, encoding) as (stream, line_codec):
        feed = _LineFeed(capped_lines(stream, source.max_record_bytes), line_codec)
        reader = csv.reader(feed, delimiter=_delimiter(source))
        if source.header:
            _read_header(source, member, reader)
        else:
            _first_row(source, member, reader)


def _probe_jsonl(source: SourceConfig, member: Member, encoding: str) -> None:
    keys: set[str] = set()
    objects = lines = 0
    with open_lines_as(member, encoding) as (stream, line_codec):
        for line in capped_lines(stream, source.max_record_bytes):
            text = line.data.decode(line_codec, "surrogateescape")
            if line.oversize or not text.strip():
                continue
            columns, _ = _parse_json_line(text, line, encoding)
            lines += 1
            if columns is not None:
                objects += 1
                keys.update(columns)
            if lines >= JSONL_PROBE_LINES:
                break
    if lines and not objects:
        raise SourceUnreadable(
            member.label, "not_format", f"not JSON lines: none of its first {lines} lines is a JSON object"
        )
    text_key = source.fields["text"]
    if objects and text_key not in keys:
        raise SourceUnreadable(
            member.label, "missing_columns",
            f"its records have the keys {sorted(keys)[:20]} and lack the mapped key {text_key!r} (fields.text)",
        )


def _delimiter(source: SourceConfig) -> str:
    return "\t" if source.format == "tsv" else ","


def _jsonl_records(
    source: SourceConfig, member: Member, encoding: str, first: int, skip_lines: int = 0,
) -> Iterator[RawRecord]:
    index = first
    with open_lines_as(member, encoding) as (stream, line_codec):
        lines = capped_lines(stream, source.max_record_bytes)
        for _ in islice(lines, skip_lines):
            pass  # lines before the partition: split, never decoded or parsed
        for line_no, line in enumerate(lines, start=skip_lines + 1):
            text = line.data.decode(line_codec, "surrogateescape")
            if not line.oversize and not text.strip():
                continue
            columns, reason = _parse_json_line(text, line, encoding)
            yield RawRecord(index, line_no, member, columns, reason, text)
            index += 1


def _parse_json_line(text: str, line: Line, encoding: str) -> tuple[dict[str, Any] | None, str | None]:
    if line.oversize:
        return None, "record_too_large"
    reason = undecodable_reason(text, encoding)
    if reason:
        return None, reason
    try:
        value = json.loads(strip_bom(text))
    except ValueError:
        return None, "malformed_json"
    if not isinstance(value, dict):
        return None, "malformed_json"
    return {k: strip_bom(v) if isinstance(v, str) else v for k, v in value.items()}, None


class _LineFeed:
    """Decoded lines for the csv module, remembering what one record consumed (raw text, oversize)."""

    # Stands in for a line that was too long: csv needs a string, and a private-use marker cannot be
    # mistaken for data.
    OVERSIZE = "\ue000record_too_large\ue000\n"

    def __init__(self, lines: Iterator[Line], encoding: str, lines_before: int = 0) -> None:
        self._lines = lines
        self.encoding = encoding
        self.line_no = lines_before
        self.consumed: list[str] = []
        self.oversize = False

    def skip(self, count: int) -> None:
        """Pass over `count` lines without decoding them (lines before a partition's first record)."""
        for _ in islice(self._lines, max(count, 0)):
            self.line_no += 1

    def start_record(self) -> int:
        self.consumed, self.oversize = [], False
        return self.line_no + 1

    def __iter__(self) -> Iterator[str]:
        for line in self._lines:
            self.line_no += 1
            text = line.data.decode(self.encoding, "surrogateescape")
            self.consumed.append(text)
            if line.oversize:
                self.oversize = True
                text = self.OVERSIZE
            yield text


def _csv_records(
    source: SourceConfig, member: Member, encoding: str, first: int, skip_lines: int = 0,
) -> Iterator[RawRecord]:
    with _csv_reader(source, member, encoding) as (feed, reader, header, _):
        feed.skip(skip_lines - feed.line_no)  # the header read, on to the partition's first record
        width = len(header) if header is not None else None
        text_at = header.index(source.fields["text"]) if header is not None else int(source.fields["text"])
        for index, (position, row, reason) in enumerate(_csv_rows(feed, reader), first):
            if row is not None:
                width = width if width is not None else len(row)  # a headerless file: its first row's
                reason = _csv_row_problem(width, text_at, row, feed, encoding)
            names = header if header is not None else [str(i) for i in range(len(row or ()))]
            columns = dict(zip(names, (strip_bom(v) for v in row))) if row and not reason else None
            yield RawRecord(index, position, member, columns, reason, "".join(feed.consumed))


def _csv_positions(source: SourceConfig, member: Member, encoding: str) -> Generator[tuple[np.ndarray, np.ndarray], None, int]:
    with _csv_reader(source, member, encoding) as (feed, reader, header, stream):
        if source.header and header is None:
            return 0
        cursor = LineCursor(line_blocks(stream, source.max_record_bytes, offset=_position(stream)), feed.line_no)

        def record_at(cursor: LineCursor) -> int | None:
            """One record read as `_csv_rows` reads it: the csv module is fresh at every record."""
            lines = _LineFeed(cursor.lines(), feed.encoding, lines_before=cursor.line_no)
            read = _next_csv_row(lines, csv.reader(lines, delimiter=_delimiter(source)))
            return None if read is None or read[1] == [] else read[0]

        return (yield from record_starts(cursor, csv_lines, record_at))


def _position(stream: BinaryIO) -> int:
    """Where a stream stands (past a header read by lines), 0 where it cannot tell."""
    try:
        return stream.tell()
    except (OSError, ValueError, AttributeError):
        return 0


@contextmanager
def _csv_reader(
    source: SourceConfig, member: Member, encoding: str
) -> Iterator[tuple[_LineFeed, Iterator[list[str]], list[str] | None, BinaryIO]]:
    """The line feed and csv reader of a data file, past its header (read and checked when it has one),
    and the stream they read, whose next line is the one after the header."""
    # csv's field limit is process-wide; it is raised to the record cap so fields up to the cap parse,
    # and a quoted field growing past it over many lines becomes a csv.Error, not unbounded memory.
    csv.field_size_limit(max(csv.field_size_limit(), source.max_record_bytes))
    with open_lines_as(member, encoding) as (stream, line_codec):
        feed = _LineFeed(capped_lines(stream, source.max_record_bytes), line_codec)
        reader = csv.reader(feed, delimiter=_delimiter(source))
        header = _read_header(source, member, reader) if source.header else None
        no_rows = source.header and header is None  # not even a header: zero records
        yield feed, iter(()) if no_rows else reader, header, stream


CsvRow = tuple[int, list[str] | None, str | None]  # (line it starts on, row, why it could not be parsed)


def _csv_rows(feed: _LineFeed, reader: Iterator[list[str]]) -> Iterator[CsvRow]:
    """Each record of the file; blank rows are no records."""
    while (read := _next_csv_row(feed, reader)) is not None:
        if read[1] != []:
            yield read


def _next_csv_row(feed: _LineFeed, reader: Iterator[list[str]]) -> CsvRow | None:
    """The next row (an empty one for a blank line), None at the end."""
    position = feed.start_record()
    try:
        return position, next(reader), None
    except StopIteration:
        return None
    except csv.Error as error:
        return position, None, "record_too_large" if "field larger" in str(error) else "bad_csv_row"


def _read_header(source: SourceConfig, member: Member, reader: Iterator[list[str]]) -> list[str] | None:
    """The header row (None for a file without any row), checked against the mapped columns."""
    try:
        header = next((row for row in reader if row), None)
    except csv.Error as error:
        raise SourceUnreadable(member.label, "unreadable", f"unreadable CSV header: {error}") from None
    if header is None:
        return None
    header = [strip_bom(name).strip() for name in header]
    missing = sorted(column for column in source.fields.values() if column not in header)
    if missing:
        raise SourceUnreadable(
            member.label, "missing_columns",
            f"its header {header[:20]} lacks the mapped column(s) {missing} (fields: {dict(source.fields)})",
        )
    return header


def _first_row(source: SourceConfig, member: Member, reader: Iterator[list[str]]) -> None:
    """A headerless file's first row must reach every column position the mapping names."""
    try:
        row = next((row for row in reader if row), None)
    except csv.Error as error:
        raise SourceUnreadable(member.label, "unreadable", f"unreadable first row: {error}") from None
    if row is None:
        return
    beyond = sorted(column for column in source.fields.values() if int(column) >= len(row))
    if beyond:
        raise SourceUnreadable(
            member.label, "missing_columns",
            f"its first row has {len(row)} column(s) (0 to {len(row) - 1}) and lacks the mapped "
            f"position(s) {beyond} (fields: {dict(source.fields)})",
        )


def _csv_row_problem(width: int, text_at: int, row: list[str], feed: _LineFeed, encoding: str) -> str | None:
    if feed.oversize:
        return "record_too_large"
    reason = undecodable_reason("".join(row), encoding)
    if reason:
        return reason
    if len(row) < width and text_at >= len(row):
        return "missing_text"
    if len(row) != width:
        return "bad_csv_row"
    return None


def to_row(source: SourceConfig, record: RawRecord, extras: Extras) -> RowOut:
    """A parsed record as a document row, or a reject row naming why it cannot be one."""
    meta: dict[str, Any] = {"file": record.member.label, "position": record.position}
    fallback_id = f"{record.member.key}:{record.position}"
    if record.columns is None:
        return "reject", reject_row(source, fallback_id, record.reason or "unreadable", record.raw, meta)
    columns = dict(record.columns)
    mapped = {field: columns.pop(column, None) for field, column in source.fields.items()}
    native_id = _text_or_none(mapped.get("id")) or fallback_id
    text = mapped.get("text")
    if not isinstance(text, _SCALAR) or isinstance(text, bool):
        return "reject", reject_row(source, native_id, "missing_text", record.raw, meta)
    text = str(text).strip()
    if not text:
        return "reject", reject_row(source, native_id, "empty_text", record.raw, meta)
    meta.update(extras(columns))
    return "document", document_row(
        source,
        native_id,
        text,
        meta,
        title=_text_or_none(mapped.get("title")),
        url=_text_or_none(mapped.get("url")),
        label=_label(source, mapped.get("label")),
        published_at=read_date(mapped.get("date"), meta),
    )


def _text_or_none(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _label(source: SourceConfig, raw: Any) -> str | None:
    label = _text_or_none(raw)
    if label is None:
        return None
    return source.label_map.get(label, label)

"""What every reader shares: partitions, batching of records, and reject rows for unreadable records."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from pipeline.errors import UserError
from pipeline.schema import documents_batch, rejects_batch
from pipeline.sources.fetch import FetchError, FetchRefused


@dataclass(frozen=True)
class RecordSeek:
    """Where a CSV/JSONL partition's first record begins: its data file (zip member, by order) and the
    number of that file's lines before it. Planning finds these in its one counting pass, so a partition
    of a large file skips the lines before it unparsed instead of parsing the file from its start."""

    member: int
    lines: int


@dataclass(frozen=True)
class Partition:
    """The unit of a task, a retry, a cache entry and a resume: one file, or a record range of one file."""

    source: str
    path: str  # a local path (remote inputs are fetched into the cache first) or an fsspec URL
    fingerprint: str  # of the input file: size + content hash, or the server's ETag
    index: int = 0  # position of this partition within its source
    start: int = 0  # first record (page or row) of the range, inclusive
    stop: int | None = None  # exclusive; None reads to the end of the file
    # where a dump partition's compressed bytes lie (see pipeline/sources/wiki.py): it reads from byte_start,
    # whose first record has number first_record (None: unknown), and owns the records begun before byte_stop
    byte_start: int = 0
    byte_stop: int | None = None
    first_record: int | None = 0
    seek: RecordSeek | None = None  # CSV/JSONL ranges: where record `start` begins (None: parse from the start)
    origin: str | None = None  # the URL a fetched input came from; the manifest names inputs by it
    encoding: str | None = None  # text inputs: the codec chosen when planning ("member:codec; ..." for a zip)
    # Set when the whole input cannot be read and its source skips bad inputs: the partition then reads
    # as one rejected record with this reason ("input:binary", ...) so the input stays in the ledger.
    skipped: str | None = None
    skip_detail: str | None = None  # what was wrong with it, for the reject row and the manifest
    # Bytes the partition reads, as planning measured them (None: not known): a build hands the largest
    # partitions to its workers first, so the last ones to finish are short.
    size: int | None = None

    @property
    def name(self) -> str:
        return f"{self.source}-{self.index:05d}"

    @property
    def empty(self) -> bool:
        """A zero-byte input: zero records, whatever its format would demand of a header or a root element."""
        return self.fingerprint.startswith("size:0:")


@dataclass
class ReadBatch:
    documents: pa.RecordBatch  # DOCUMENT_SCHEMA
    rejects: pa.RecordBatch  # REJECT_SCHEMA: records dropped while reading (rejected, or filtered e.g. redirect)


class SourceUnreadable(UserError, RuntimeError):
    """A whole input cannot be read: not text, not the declared format, lacking the mapped columns.

    Deterministic: reading the same bytes again fails the same way, so it is never worth a retry. `reason`
    is a short code (binary, not_format, missing_columns, unreadable, no_files) that becomes the ledger
    reason `input:<reason>` when the input is skipped.
    """

    def __init__(self, file: str, reason: str, detail: str) -> None:
        super().__init__(f"{file}: {detail}")
        self.file, self.reason, self.detail = file, reason, detail

    hint = ("fix or remove the file, or set the source's `on_bad_input: skip` to build without it; for a wrong "
            "mapping, correct the source's `fields` (and `header`)")

    def __reduce__(self) -> tuple:  # keeps the fields when it crosses a process boundary
        return type(self), (self.file, self.reason, self.detail)


class SourceMappingError(SourceUnreadable):
    """What the config says of a source fits none of its inputs (no input has the columns `fields` names, a
    multistream index belongs to another dump): the config is wrong, not one file, so it is never skipped."""


def is_transient(error: BaseException) -> bool:
    """Whether a failure may pass on retry: storage and network errors, a worker process that died.

    What is wrong with the bytes (SourceUnreadable) or the config is not, nor is a refused download. An
    OSError raised by a decompressor for corrupt data has no errno; one from the system has.
    """
    if isinstance(error, SourceUnreadable | FetchRefused):
        return False
    if isinstance(error, FetchError | TimeoutError | ConnectionError | BrokenProcessPool):
        return True
    return isinstance(error, OSError) and error.errno is not None

class RecordBatcher:
    """Collects document and reject rows and hands them out as Arrow batches of a bounded size."""

    def __init__(self, batch_size: int = 1000) -> None:
        self.batch_size = batch_size
        self._documents: list[Mapping[str, Any]] = []
        self._rejects: list[Mapping[str, Any]] = []

    def document(self, row: Mapping[str, Any]) -> ReadBatch | None:
        self._documents.append(row)
        return self._flush_if_full()

    def reject(self, row: Mapping[str, Any]) -> ReadBatch | None:
        self._rejects.append(row)
        return self._flush_if_full()

    def _flush_if_full(self) -> ReadBatch | None:
        if len(self._documents) + len(self._rejects) >= self.batch_size:
            return self.flush()
        return None

    def flush(self) -> ReadBatch | None:
        if not self._documents and not self._rejects:
            return None
        batch = ReadBatch(documents_batch(self._documents), rejects_batch(self._rejects))
        self._documents, self._rejects = [], []
        return batch

    def drain(self, rows: Iterator[tuple[str, Mapping[str, Any]]]) -> Iterator[ReadBatch]:
        """Batch a stream of ("document" | "reject", row) pairs."""
        for what, row in rows:
            ready = self.document(row) if what == "document" else self.reject(row)
            if ready is not None:
                yield ready
        rest = self.flush()
        if rest is not None:
            yield rest

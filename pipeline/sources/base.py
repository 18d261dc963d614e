"""What every reader shares: partitions, batching of records, and reject rows for unreadable records."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from pipeline.schema import documents_batch, rejects_batch


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
    origin: str | None = None  # the URL a fetched input came from; the manifest names inputs by it

    @property
    def name(self) -> str:
        return f"{self.source}-{self.index:05d}"


@dataclass
class ReadBatch:
    documents: pa.RecordBatch  # DOCUMENT_SCHEMA
    rejects: pa.RecordBatch  # REJECT_SCHEMA: records dropped while reading (rejected, or filtered e.g. redirect)


class SourceUnreadable(RuntimeError):
    """The whole source cannot be read (missing, empty, not the declared format); names the file and cause."""


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

"""Deterministic Arrow shards: split assignment, the writer, numbered shards per group, quarantine.

Shards are Arrow IPC *stream* files, the format `datasets.Dataset.from_file` and
`load_dataset("arrow", ...)` read as they are. Bytes depend only on the rows and their order: the writer
re-chunks every shard to a fixed batch size and writes no timestamps, so the same rows give the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from pipeline import storage
from pipeline.schema import ShardRecord

IPC_BATCH_ROWS = 1024  # fixed chunking keeps shard bytes independent of how rows arrived
SPLIT_BUCKETS = 10_000


def split_of(doc_id: str, splits: dict[str, float]) -> str:
    """Split assigned by a hash of the id, so a document keeps its split in every build and version."""
    bucket = int.from_bytes(hashlib.sha256(doc_id.encode()).digest()[:8], "big") % SPLIT_BUCKETS
    edge = 0.0
    for name in ("train", "validation", "test"):
        edge += splits.get(name, 0.0)
        if bucket < round(edge * SPLIT_BUCKETS):
            return name
    return "train"


@dataclass
class ShardFile:
    path: str  # a local path or a URL
    rows: int
    bytes: int
    sha256: str


def write_shard(table: pa.Table, path: str | Path, durable: bool = True) -> ShardFile:
    """Write one shard atomically (temp file, fsync unless not `durable`, rename): never half visible;
    hashed as it is written."""
    table = table.replace_schema_metadata(None).combine_chunks()
    size, sha256 = storage.write_arrow_stream(str(path), table, IPC_BATCH_ROWS, durable)
    return ShardFile(path=str(path), rows=table.num_rows, bytes=size, sha256=sha256)


@dataclass
class ShardSink:
    """Streams rows of one group into shards `<stem>-NNN.arrow` of at most `max_rows` rows each."""

    directory: str | Path
    stem: str
    max_rows: int
    written: list[ShardFile] = field(default_factory=list)
    _pending: list[pa.Table] = field(default_factory=list)
    _pending_rows: int = 0

    def add(self, table: pa.Table) -> None:
        while table.num_rows:
            room = self.max_rows - self._pending_rows
            head, table = table.slice(0, room), table.slice(room)
            self._pending.append(head)
            self._pending_rows += head.num_rows
            if self._pending_rows == self.max_rows:
                self.flush()

    def flush(self) -> None:
        if not self._pending_rows:
            return
        table = pa.concat_tables(self._pending, promote_options="permissive")
        path = storage.join(str(self.directory), f"{self.stem}-{len(self.written):05d}.arrow")
        self.written.append(write_shard(table, path))
        self._pending, self._pending_rows = [], 0


def shard_record(shard: ShardFile, root: str | Path, split: str, source: str, lang: str) -> ShardRecord:
    return ShardRecord(
        path=relative_to(shard.path, root), split=split, source=source, lang=lang,
        rows=shard.rows, bytes=shard.bytes, sha256=shard.sha256,
    )


def relative_to(uri: str, root: str | Path) -> str:
    """The path of `uri` below `root`, with "/" whatever the store."""
    root = str(root)
    relative = uri[len(root.rstrip("/")):].lstrip("/\\")
    if not uri.startswith(root.rstrip("/")):
        raise ValueError(f"{uri} is not below {root}")
    return relative.replace(os.sep, "/")


def quarantine(root: str, record: ShardRecord, report: dict) -> ShardRecord:
    """Move a shard that broke its contract out of the data tree, its report beside it."""
    target = storage.join(root, "quarantine", record.path)
    storage.move(storage.join(root, record.path), target)
    storage.write_text(target.removesuffix(".arrow") + ".report.json", json.dumps(report, indent=2, ensure_ascii=False))
    return record.model_copy(update={"path": f"quarantine/{record.path}", "usable": False})

"""Deterministic Arrow shards, the manifest and publication of a dataset version.

Shards are Arrow IPC *stream* files, the format `datasets.Dataset.from_file` and
`load_dataset("arrow", ...)` read as they are. Bytes depend only on the rows and their order: the writer
re-chunks every shard to a fixed batch size and writes no timestamps, so the same rows give the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import fsspec
import pyarrow as pa

from pipeline.schema import Manifest, ShardRecord
from pipeline.storage import fsync_directory

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


def fsync_replace(tmp: Path, final: Path) -> None:
    """Make a finished temporary file durable, then move it into place in one atomic step."""
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, final)
    fsync_directory(final.parent)


def write_atomic_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    fsync_replace(tmp, path)


@dataclass
class ShardFile:
    path: Path
    rows: int
    bytes: int
    sha256: str


def write_shard(table: pa.Table, path: Path) -> ShardFile:
    """Write one shard atomically: temp file in the same directory, fsync, rename. Never half visible."""
    path.parent.mkdir(parents=True, exist_ok=True)
    table = table.replace_schema_metadata(None).combine_chunks()
    tmp = path.with_name(f".{path.name}.tmp")
    with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        for batch in table.to_batches(max_chunksize=IPC_BATCH_ROWS):
            writer.write_batch(batch)
    fsync_replace(tmp, path)
    return ShardFile(path=path, rows=table.num_rows, bytes=path.stat().st_size, sha256=file_sha256(path))


def file_sha256(path: Path | str) -> str:
    digest = hashlib.sha256()
    with fsspec.open(str(path), "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_shard(path: Path | str, columns: list[str] | None = None) -> pa.Table:
    with fsspec.open(str(path), "rb") as handle:
        table = pa.ipc.open_stream(handle).read_all()
    return table.select(columns) if columns else table


@dataclass
class ShardSink:
    """Streams rows of one (split, source, lang) group into numbered shards of at most `max_rows` rows."""

    directory: Path
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
        path = self.directory / f"{self.stem}-{len(self.written):05d}.arrow"
        self.written.append(write_shard(table, path))
        self._pending, self._pending_rows = [], 0


def shard_record(shard: ShardFile, root: Path, split: str, source: str, lang: str) -> ShardRecord:
    return ShardRecord(
        path=shard.path.relative_to(root).as_posix(), split=split, source=source, lang=lang,
        rows=shard.rows, bytes=shard.bytes, sha256=shard.sha256,
    )


def quarantine(root: Path, record: ShardRecord, report: dict) -> ShardRecord:
    """Move a shard that broke its contract out of the data tree, its report beside it."""
    source = root / record.path
    target = root / "quarantine" / record.path
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(source, target)
    write_atomic_text(target.with_suffix(".report.json"), json.dumps(report, indent=2, ensure_ascii=False))
    return record.model_copy(update={"path": target.relative_to(root).as_posix(), "usable": False})


def write_manifest(root: Path, manifest: Manifest) -> Path:
    path = root / "manifest.json"
    write_atomic_text(path, manifest.model_dump_json(indent=2))
    return path


def load_manifest(path: str | Path) -> Manifest:
    with fsspec.open(str(path), "r", encoding="utf-8") as handle:
        return Manifest.model_validate_json(handle.read())


def publish(staging: Path, datasets_uri: str, dataset: str, version: str) -> str:
    """Move a finished build to <datasets_uri>/<dataset>/<version>; returns the manifest's URI.

    Locally one rename makes the whole version appear at once. On object stores there is no rename: files
    are uploaded first and the manifest last, so a version without a manifest is never treated as built.
    An identical version that already exists is kept as it is (same content, same id).
    """
    fs, root = fsspec.core.url_to_fs(datasets_uri)
    target = f"{root.rstrip('/')}/{dataset}/{version}"
    manifest_uri = f"{target}/manifest.json"
    if fs.exists(manifest_uri):
        shutil.rmtree(staging)
    elif _is_local(fs):
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        if Path(target).exists():  # a half-published remnant without manifest
            shutil.rmtree(target)
        os.replace(staging, target)
    else:
        _upload_manifest_last(fs, staging, target)
        shutil.rmtree(staging)
    _write_latest(fs, f"{root.rstrip('/')}/{dataset}/LATEST", version)
    return manifest_uri if _is_local(fs) else fs.unstrip_protocol(manifest_uri)


def latest_version(datasets_uri: str, dataset: str) -> str | None:
    """The version LATEST names, or None before the first build."""
    fs, root = fsspec.core.url_to_fs(datasets_uri)
    uri = f"{root.rstrip('/')}/{dataset}/LATEST"
    return fs.cat_file(uri).decode().strip() if fs.exists(uri) else None


def _upload_manifest_last(fs: fsspec.AbstractFileSystem, staging: Path, target: str) -> None:
    files = sorted(p for p in staging.rglob("*") if p.is_file() and p.name != "manifest.json")
    for path in files:
        fs.put_file(str(path), f"{target}/{path.relative_to(staging).as_posix()}")
    fs.put_file(str(staging / "manifest.json"), f"{target}/manifest.json")


def _write_latest(fs: fsspec.AbstractFileSystem, uri: str, version: str) -> None:
    if _is_local(fs):
        write_atomic_text(Path(uri), version + "\n")
    else:
        with fs.open(uri, "w") as handle:
            handle.write(version + "\n")


def _is_local(fs: fsspec.AbstractFileSystem) -> bool:
    return "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))


def new_staging_dir(work_dir: Path) -> Path:
    work_dir.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="build-", dir=work_dir))


def ipc_files(directory: Path) -> Iterable[Path]:
    return sorted(directory.rglob("*.arrow"))

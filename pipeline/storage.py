"""Paths and files behind fsspec URLs, so a dataset can live on local disk, S3/MinIO or any fsspec store.

A URL without a scheme is a local path. Writes are all-or-nothing on both kinds of store, but they get
there differently:

- Local disk: the bytes go to a temporary file in the target's directory, are fsynced, then renamed over
  the target (rename is atomic within one filesystem), and the directory is fsynced so the rename
  survives a crash.
- Object stores (S3, MinIO, GCS...): there is no rename (a "move" is copy + delete, and a reader can see
  the copy half-done). Instead the bytes are written to a local temporary file and uploaded with one
  PUT, or one multipart upload that is completed only after every part arrived. Either way the object
  appears whole or not at all; a writer that fails before the upload leaves nothing behind.

Object stores still have no multi-object transaction, so a dataset version is published in an order that
readers rely on: shards first, then the manifest, then LATEST. A version exists only once its manifest
does, and readers find shards through the manifest, never by listing a directory.
"""

from __future__ import annotations

import os
import posixpath
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import fsspec
import pyarrow as pa
from fsspec.implementations.local import LocalFileSystem

ARROW_FILE_MAGIC = b"ARROW1"  # the IPC *file* format starts with it; the stream format does not


def _filesystem(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    return fsspec.core.url_to_fs(uri)


def is_local(uri: str) -> bool:
    return isinstance(_filesystem(uri)[0], LocalFileSystem)


def join(uri: str, *parts: str) -> str:
    """Join path parts onto a local path or a URL; URLs always use "/" whatever the OS."""
    if "://" in uri:
        return posixpath.join(uri, *parts)
    return str(Path(uri).joinpath(*parts))


def parent(uri: str) -> str:
    if "://" in uri:
        return posixpath.dirname(uri.rstrip("/"))
    return str(Path(uri).parent)


def exists(uri: str) -> bool:
    fs, path = _filesystem(uri)
    return fs.exists(path)


def makedirs(uri: str) -> None:
    """Create a directory and its parents; object stores have no directories, so there it does nothing."""
    fs, path = _filesystem(uri)
    fs.makedirs(path, exist_ok=True)


@contextmanager
def open_input(uri: str) -> Iterator[BinaryIO]:
    with fsspec.open(uri, "rb") as handle:
        yield handle


@contextmanager
def open_output(uri: str) -> Iterator[BinaryIO]:
    """A binary file to write `uri` through; the target changes only if the block ends without error."""
    fs, path = _filesystem(uri)
    if isinstance(fs, LocalFileSystem):
        with _atomic_local_output(Path(path)) as handle:
            yield handle
    else:
        with _single_upload_output(fs, path) as handle:
            yield handle


@contextmanager
def _atomic_local_output(target: Path) -> Iterator[BinaryIO]:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    temp = Path(temp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)
    fsync_directory(target.parent)


def fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def _single_upload_output(fs: fsspec.AbstractFileSystem, path: str) -> Iterator[BinaryIO]:
    # A local spool keeps memory flat for large shards; the upload starts only after the writer is done.
    with tempfile.NamedTemporaryFile(prefix="corpusflow-upload-", suffix=".tmp") as spool:
        yield spool
        spool.flush()
        fs.put_file(spool.name, path)


def write_bytes(uri: str, data: bytes) -> None:
    with open_output(uri) as handle:
        handle.write(data)


def read_bytes(uri: str) -> bytes:
    with open_input(uri) as handle:
        return handle.read()


@contextmanager
def open_arrow(uri: str) -> Iterator[tuple[pa.Schema, Iterator[pa.RecordBatch]]]:
    """Schema and record batches of an Arrow IPC file (stream or file format), one batch in memory at a time."""
    with open_input(uri) as handle:
        is_file_format = handle.read(len(ARROW_FILE_MAGIC)) == ARROW_FILE_MAGIC
        handle.seek(0)
        if is_file_format:
            reader = pa.ipc.open_file(handle)
            yield reader.schema, (reader.get_batch(i) for i in range(reader.num_record_batches))
        else:
            stream = pa.ipc.open_stream(handle)
            yield stream.schema, iter(stream)


def read_arrow_table(uri: str, columns: list[str] | None = None) -> pa.Table:
    with open_arrow(uri) as (schema, batches):
        table = pa.Table.from_batches(list(batches), schema=schema)
    return table.select(columns) if columns is not None else table

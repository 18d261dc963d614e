"""Paths and files behind fsspec URLs, so a dataset can live on local disk, S3/MinIO or any fsspec store.

This is the only module that knows fsspec. A URL without a scheme is a local path. Writes are
all-or-nothing on both kinds of store, but they get there differently:

- Local disk: the bytes go to a temporary file in the target's directory, are fsynced, then renamed over
  the target (rename is atomic within one filesystem), and the directory is fsynced so the rename
  survives a crash. A directory is swapped in the same way (`replace_directory`).
- Object stores (S3, MinIO, GCS...): there is no rename (a "move" is copy + delete, and a reader can see
  the copy half-done). Instead the bytes are written to a local temporary file and uploaded with one
  PUT, or one multipart upload that is completed only after every part arrived. Either way the object
  appears whole or not at all; a writer that fails before the upload leaves nothing behind.

Reads of data whose sha256 is known (shards named by a manifest) are verified while they stream: the
digest is fed by the same bytes the Arrow reader consumes, so there is no second read, and a mismatch,
a truncated file or a missing one is an `IntegrityError` naming the file and both hashes.
"""

from __future__ import annotations

import hashlib
import io
import os
import posixpath
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import fsspec
import pyarrow as pa
from fsspec.implementations.local import LocalFileSystem

from pipeline.errors import UserError

ARROW_FILE_MAGIC = b"ARROW1"  # the IPC *file* format starts with it; the stream format does not
READ_BLOCK = 1 << 20


class IntegrityError(UserError, RuntimeError):
    """Stored bytes are not what the manifest recorded: corrupt, truncated or missing."""

    hint = ("restore the file from a copy or build the version again; `corpusflow verify --no-rebuild <version>` "
            "lists every damaged file")

    def __init__(self, uri: str, problem: str, expected: str | None = None, actual: str | None = None) -> None:
        hashes = f" (manifest sha256 {expected}, stored {actual})" if expected and actual else ""
        super().__init__(f"{uri}: {problem}{hashes}")
        self.uri, self.problem, self.expected, self.actual = uri, problem, expected, actual


def filesystem(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    return fsspec.core.url_to_fs(uri)


def is_local(uri: str) -> bool:
    return isinstance(filesystem(uri)[0], LocalFileSystem)


def join(uri: str | Path, *parts: str) -> str:
    """Join path parts onto a local path or a URL; URLs always use "/" whatever the OS."""
    uri = str(uri)
    if "://" in uri:
        return posixpath.join(uri, *parts)
    return str(Path(uri).joinpath(*parts))


def parent(uri: str) -> str:
    if "://" in uri:
        return posixpath.dirname(uri.rstrip("/"))
    return str(Path(uri).parent)


def exists(uri: str) -> bool:
    fs, path = filesystem(uri)
    return fs.exists(path)


def makedirs(uri: str) -> None:
    """Create a directory and its parents; object stores have no directories, so there it does nothing."""
    fs, path = filesystem(uri)
    fs.makedirs(path, exist_ok=True)


def absolute(uri: str | Path) -> str:
    """A URL as it is, a local path made absolute: what a task on another node or directory can open."""
    uri = str(uri)
    return uri if "://" in uri and not uri.startswith("file://") else str(Path(uri.removeprefix("file://")).resolve())


def list_files(uri: str) -> list[str]:
    """Paths relative to `uri` of every file below it, sorted; none when it does not exist."""
    fs, root = filesystem(uri)
    if not fs.exists(root):
        return []
    root = root.rstrip("/")
    return sorted(posixpath.relpath(found, root) for found in fs.find(root))


def remove_tree(uri: str | Path) -> None:
    """Remove a directory (a prefix on object stores) and everything below it; nothing if it is absent."""
    fs, path = filesystem(str(uri))
    if fs.exists(path):
        fs.rm(path, recursive=True)


def move(source: str, target: str) -> None:
    """Move one file; atomic locally, copy then delete on object stores (used on staging no reader sees)."""
    fs, source_path = filesystem(source)
    _, target_path = filesystem(target)
    if isinstance(fs, LocalFileSystem):
        Path(target_path).parent.mkdir(parents=True, exist_ok=True)
        os.replace(source_path, target_path)
    else:
        fs.mv(source_path, target_path)


def copy_tree(source: str | Path, target: str, last: str | None = None) -> None:
    """Copy every file below `source` to the same place below `target`, the file named `last` after the rest.

    Between two stores of one kind the store copies (server-side on S3); across kinds through this machine.
    """
    source = str(source)
    files = list_files(source)
    for relative in sorted(files, key=lambda name: posixpath.basename(name) == last):
        from_uri, to_uri = join(source, relative), join(target, relative)
        if is_local(from_uri) and not is_local(to_uri):
            fs, path = filesystem(to_uri)
            fs.put_file(filesystem(from_uri)[1], path)
        elif not is_local(from_uri) and type(filesystem(from_uri)[0]) is type(filesystem(to_uri)[0]):
            fs, path = filesystem(from_uri)
            fs.copy(path, filesystem(to_uri)[1])
        else:
            with open_input(from_uri) as reader, open_output(to_uri) as writer:
                shutil.copyfileobj(reader, writer, READ_BLOCK)


def read_range(uri: str, start: int, length: int) -> bytes:
    """`length` bytes of a file from byte `start`: one ranged read, so a task reads only its part of a file."""
    if length <= 0:
        return b""
    fs, path = filesystem(uri)
    return fs.cat_file(path, start=start, end=start + length)


@contextmanager
def local_copy(uri: str) -> Iterator[Path]:
    """A local path holding the file at `uri`: the file itself when local, else a temporary download."""
    fs, path = filesystem(uri)
    if isinstance(fs, LocalFileSystem):
        yield Path(path)
        return
    with tempfile.TemporaryDirectory(prefix="corpusflow-download-") as scratch:
        local = Path(scratch) / posixpath.basename(path)
        fs.get_file(path, str(local))
        yield local


def list_dirs(uri: str) -> list[str]:
    """Names of the entries directly below `uri` that are directories (prefixes on object stores)."""
    fs, path = filesystem(uri)
    if not fs.exists(path):
        return []
    return sorted(posixpath.basename(e["name"].rstrip("/")) for e in fs.ls(path, detail=True) if e["type"] == "directory")


# ---- writes -------------------------------------------------------------------------------------------


@contextmanager
def open_input(uri: str) -> Iterator[BinaryIO]:
    with fsspec.open(uri, "rb") as handle:
        yield handle


@contextmanager
def open_output(uri: str, durable: bool = True) -> Iterator[BinaryIO]:
    """A binary file to write `uri` through; the target changes only if the block ends without error.

    Durable, a local file is on disk before it takes its name (fsync); a file every build writes anew and
    none reads after it (a build's own intermediates) need not be: a rename is already atomic for a killed
    process, and only a crash of the machine could leave it unwritten, which the next build redoes."""
    fs, path = filesystem(uri)
    if isinstance(fs, LocalFileSystem):
        with _atomic_local_output(Path(path), durable) as handle:
            yield handle
    else:
        with _single_upload_output(fs, path) as handle:
            yield handle


@contextmanager
def _atomic_local_output(target: Path, durable: bool = True) -> Iterator[BinaryIO]:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    temp = Path(temp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)
    if durable:
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


def write_bytes(uri: str, data: bytes, durable: bool = True) -> None:
    with open_output(uri, durable) as handle:
        handle.write(data)


def write_text(uri: str, text: str) -> None:
    write_bytes(uri, text.encode("utf-8"))


def read_bytes(uri: str) -> bytes:
    with open_input(uri) as handle:
        return handle.read()


def read_text(uri: str) -> str:
    return read_bytes(uri).decode("utf-8")


def size(uri: str) -> int:
    """Bytes of a file; 0 when it does not exist."""
    fs, path = filesystem(uri)
    return fs.size(path) if fs.exists(path) else 0


def replace_directory(staging: Path, target: Path) -> None:
    """Swap a finished local directory into place: readers see the old one or the new one, never a mix.

    The old directory is renamed aside first (a rename over a non-empty directory is not allowed), so
    between the two renames `target` is briefly absent, never half written; the old copy is then removed.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    retired = target.with_name(f".{target.name}.retired")
    shutil.rmtree(retired, ignore_errors=True)
    if target.exists():
        os.replace(target, retired)
    os.replace(staging, target)
    fsync_directory(target.parent)
    shutil.rmtree(retired, ignore_errors=True)


# ---- hashing ------------------------------------------------------------------------------------------


def file_sha256(uri: str | Path) -> str:
    digest = hashlib.sha256()
    with open_input(str(uri)) as handle:
        for block in iter(lambda: handle.read(READ_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


class _HashingWriter(io.RawIOBase):
    """Counts and hashes what passes through to `sink`, so a writer learns its file's sha256 without a re-read."""

    def __init__(self, sink: BinaryIO) -> None:
        self.sink, self.digest, self.size = sink, hashlib.sha256(), 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        view = memoryview(data).cast("B")
        self.digest.update(view)
        self.size += len(view)
        return self.sink.write(view)


class _HashingReader(io.RawIOBase):
    """Hashes every byte read through it; `prefix` holds bytes already read from the source (e.g. magic)."""

    def __init__(self, source: BinaryIO, prefix: bytes = b"") -> None:
        self.source, self.digest, self.prefix = source, hashlib.sha256(prefix), prefix

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:  # type: ignore[override]
        head = self.prefix if size < 0 else self.prefix[:size]
        self.prefix = self.prefix[len(head):]
        wanted = -1 if size < 0 else size - len(head)
        rest = self.source.read(wanted) if wanted else b""
        self.digest.update(rest)
        return head + rest

    def drain(self) -> str:
        for _ in iter(lambda: self.read(READ_BLOCK), b""):
            pass
        return self.digest.hexdigest()


# ---- Arrow --------------------------------------------------------------------------------------------


def write_arrow_stream(uri: str, table: pa.Table, batch_rows: int, durable: bool = True) -> tuple[int, str]:
    """Write `table` as an Arrow IPC stream in batches of `batch_rows`, atomically; returns (bytes, sha256)."""
    with open_output(uri, durable) as handle:
        sink = _HashingWriter(handle)
        with pa.ipc.new_stream(sink, table.schema) as writer:
            for batch in table.to_batches(max_chunksize=batch_rows):
                writer.write_batch(batch)
    return sink.size, sink.digest.hexdigest()


@contextmanager
def open_arrow(uri: str, sha256: str | None = None) -> Iterator[tuple[pa.Schema, Iterator[pa.RecordBatch]]]:
    """Schema and record batches of an Arrow IPC file (stream or file format), one batch in memory at a time.

    With `sha256`, the bytes are hashed as they stream by; once the batches are exhausted the digest is
    compared, so a consumer that reads a file to its end never takes corrupt data for good data.
    """
    try:
        with open_input(uri) as handle:
            magic = handle.read(len(ARROW_FILE_MAGIC))
            if magic == ARROW_FILE_MAGIC:
                handle.seek(0)
                if sha256:
                    _check_digest(uri, sha256, file_sha256(uri))
                reader = pa.ipc.open_file(handle)
                yield reader.schema, (reader.get_batch(i) for i in range(reader.num_record_batches))
                return
            source = _HashingReader(handle, prefix=magic)
            stream = pa.ipc.open_stream(source)
            yield stream.schema, _verified_batches(uri, stream, source, sha256)
    except FileNotFoundError as error:
        raise IntegrityError(uri, "missing") if sha256 else error from None
    except (pa.ArrowException, OSError) as error:  # pyarrow reports corrupt framing as either
        raise IntegrityError(uri, f"not a readable Arrow file ({error})") from None


def _verified_batches(
    uri: str, stream: pa.ipc.RecordBatchStreamReader, source: _HashingReader, sha256: str | None
) -> Iterator[pa.RecordBatch]:
    try:
        yield from stream
    except (pa.ArrowException, OSError) as error:  # a truncated or corrupt stream breaks inside a message
        raise IntegrityError(uri, f"truncated or corrupt ({error})", sha256, source.drain()) from None
    if sha256:
        _check_digest(uri, sha256, source.drain())


def _check_digest(uri: str, expected: str, actual: str) -> None:
    if actual != expected:
        raise IntegrityError(uri, "sha256 does not match the manifest", expected, actual)


def read_arrow_table(uri: str, columns: list[str] | None = None, sha256: str | None = None) -> pa.Table:
    with open_arrow(uri, sha256) as (schema, batches):
        table = pa.Table.from_batches(list(batches), schema=schema)
    return table.select(columns) if columns is not None else table

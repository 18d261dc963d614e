"""Sources: where input files are found, how they split into partitions, and how a partition is read.

A source expands into files (local paths, globs, fsspec URLs; http(s) URLs are fetched into a cache by the
flow first), each file is fingerprinted and split into partitions, and a partition is read as a stream of
Arrow batches of documents and reject rows, with memory independent of the input's size.
"""

from __future__ import annotations

import glob
import hashlib
import os
from collections.abc import Iterator

from fsspec.core import split_protocol, url_to_fs

from pipeline.config import SourceConfig
from pipeline.sources.base import Partition, ReadBatch, SourceUnreadable
from pipeline.sources.comments import read_comments
from pipeline.sources.news import read_news
from pipeline.sources.tabular import count_records
from pipeline.sources.textio import compression_of
from pipeline.sources.wiki import DumpRange, plan_dump, read_wiki

__all__ = [
    "Partition",
    "ReadBatch",
    "SourceUnreadable",
    "expand_uri",
    "fingerprint",
    "is_remote",
    "plan_partitions",
    "read_partition",
]

_HASH_CHUNK = 1 << 20


def is_remote(uri: str) -> bool:
    """True for http(s) URLs: those are downloaded into the cache before they are read."""
    return uri.lower().startswith(("http://", "https://"))


def expand_uri(source: SourceConfig) -> list[str]:
    """The files a source's uri names, sorted; a uri that matches nothing is an error naming it."""
    uri = source.uri
    if is_remote(uri):
        return [uri]
    protocol, _ = split_protocol(uri)
    files = _local_files(uri) if protocol in (None, "file") else _fsspec_files(uri)
    if not files:
        raise SourceUnreadable(f"source {source.name!r}: {uri} matches no file")
    return files


def _local_files(uri: str) -> list[str]:
    path = uri.removeprefix("file://")
    if glob.has_magic(path):
        return sorted(p for p in glob.glob(path, recursive=True) if os.path.isfile(p))
    if os.path.isdir(path):
        return sorted(
            os.path.join(path, name) for name in os.listdir(path)
            if not name.startswith(".") and os.path.isfile(os.path.join(path, name))
        )
    return [path] if os.path.isfile(path) else []


def _fsspec_files(uri: str) -> list[str]:
    fs, path = url_to_fs(uri)
    if glob.has_magic(path):
        found = fs.glob(path)
    elif fs.isdir(path):
        found = fs.find(path)
    else:
        found = [path] if fs.isfile(path) else []
    return sorted(fs.unstrip_protocol(p) for p in found if fs.isfile(p))


def fingerprint(path: str) -> str:
    """What identifies a file's content: the store's ETag when it has one, else size and sha256."""
    fs, inner = url_to_fs(path)
    info = fs.info(inner)
    size = int(info.get("size") or 0)
    if size == 0:
        raise SourceUnreadable(f"{path}: empty file")
    etag = info.get("ETag") or info.get("etag")
    if etag:
        return f"size:{size}:etag:{str(etag).strip(chr(34))}"
    digest = hashlib.sha256()
    with fs.open(inner, "rb") as stream:
        while chunk := stream.read(_HASH_CHUNK):
            digest.update(chunk)
    return f"size:{size}:sha256:{digest.hexdigest()}"


def plan_partitions(source: SourceConfig, files: list[str]) -> list[Partition]:
    """Partitions of a source, numbered from 0 across its files in sorted order.

    A wiki dump splits by its multistream index or its bz2 streams (pipeline/sources/wiki.py) and a
    CSV/JSONL file into ranges of `rows_per_partition` records, so several tasks share one large file; a
    WARC is one partition.
    """
    if source.multistream_index and len(files) != 1:
        raise SourceUnreadable(f"source {source.name!r}: multistream_index names the index of one dump, "
                               f"but {source.uri} matches {len(files)} files")
    partitions: list[Partition] = []
    for path in sorted(files):
        file_fingerprint = fingerprint(path)
        if source.format == "mediawiki":
            for part in plan_dump(source, path, source.multistream_index):
                partitions.append(_dump_partition(source, path, file_fingerprint, len(partitions), part))
            continue
        for start, stop in _record_ranges(source, path):
            partitions.append(Partition(source.name, path, file_fingerprint, len(partitions), start, stop))
    return partitions


def _dump_partition(source: SourceConfig, path: str, file_fingerprint: str, index: int, part: DumpRange) -> Partition:
    return Partition(source.name, path, file_fingerprint, index, part.start, part.stop, byte_start=part.byte_start,
                     byte_stop=part.byte_stop, first_record=part.first_page)


def _record_ranges(source: SourceConfig, path: str) -> list[tuple[int, int | None]]:
    if source.format == "warc" or not _may_hold_more_rows_than(path, source.rows_per_partition):
        return [(0, None)]
    return _ranges(count_records(source, path), source.rows_per_partition)


def _may_hold_more_rows_than(path: str, rows: int) -> bool:
    # Every record takes at least one byte, so an uncompressed file of fewer bytes than `rows` cannot
    # need splitting, and small files skip the counting pass.
    if compression_of(path) or path.lower().endswith(".zip"):
        return True
    fs, inner = url_to_fs(path)
    return int(fs.info(inner).get("size") or 0) > rows


def _ranges(count: int, size: int) -> list[tuple[int, int | None]]:
    """[start, stop) ranges of `size` records; the last is open-ended, so nothing past a count is lost."""
    starts = list(range(0, max(count, 1), size))
    return [(start, starts[i + 1] if i + 1 < len(starts) else None) for i, start in enumerate(starts)]


def read_partition(source: SourceConfig, partition: Partition, batch_size: int = 1000) -> Iterator[ReadBatch]:
    """Documents and reject rows of one partition, `batch_size` rows at a time."""
    if source.format == "mediawiki":
        yield from read_wiki(source, partition, batch_size)
    elif source.format == "warc" or source.kind == "news":
        yield from read_news(source, partition, batch_size)
    else:
        yield from read_comments(source, partition, batch_size)

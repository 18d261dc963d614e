"""Sources: where input files are found, how they split into partitions, and how a partition is read.

A source expands into files (local paths, globs, fsspec URLs; http(s) URLs are fetched into a cache by the
flow first), each file is fingerprinted, probed and split into partitions, and a partition is read as a
stream of Arrow batches of documents and reject rows, with memory independent of the input's size.

A bad input is one input. Planning reads the head of every file (encoding, header, format) so a wrong
mapping fails before any partition runs; a file that cannot be read at all becomes, when its source skips
bad inputs, a partition that reads as a single rejected record (`input:<reason>`, naming the file), so the
ledger still accounts for it and `read = kept + filtered + duplicate + rejected` holds.
"""

from __future__ import annotations

import glob
import hashlib
import os
from dataclasses import replace
from collections.abc import Iterator

from fsspec.core import split_protocol, url_to_fs

from pipeline.config import SourceConfig, WikiConfig
from pipeline.sources.base import Partition, ReadBatch, SourceMappingError, SourceUnreadable, is_transient
from pipeline.sources.comments import read_comments
from pipeline.sources.inputs import (
    TooManyBadInputs,
    check_bad_inputs,
    input_records,
    skipped_input_batch,
)
from pipeline.sources.news import probe_warc, read_news
from pipeline.sources.tabular import RecordRange, probe_input, record_ranges
from pipeline.sources.textio import compression_of
from pipeline.sources.wiki import DumpRange, plan_dump, probe_dump, read_wiki

__all__ = [
    "Partition",
    "ReadBatch",
    "SourceMappingError",
    "SourceUnreadable",
    "TooManyBadInputs",
    "check_bad_inputs",
    "expand_uri",
    "fingerprint",
    "input_records",
    "is_remote",
    "is_transient",
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
        raise SourceUnreadable(uri, "no_files", f"source {source.name!r}: the uri matches no file")
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
    WARC is one partition. An input that cannot be read raises SourceUnreadable when the source says
    `on_bad_input: fail`, and is otherwise one partition marked `skipped`. When no input of a source fits
    its mapping, the mapping is what is wrong: SourceMappingError, whatever `on_bad_input` says.
    """
    if source.multistream_index and len(files) != 1:
        raise SourceUnreadable(source.multistream_index, "not_format",
                               f"source {source.name!r}: multistream_index names the index of one dump, "
                               f"but {source.uri} matches {len(files)} files")
    partitions: list[Partition] = []
    mapped, unmapped = 0, []
    for path in sorted(files):
        file_fingerprint = fingerprint(path)
        if file_fingerprint.startswith("size:0:"):
            partitions.append(Partition(source.name, path, file_fingerprint, len(partitions)))
            continue
        try:
            encoding = _probe(source, path)
            ranges = _ranges_of(source, path, file_fingerprint)
        except SourceUnreadable as error:
            if source.on_bad_input == "fail" or isinstance(error, SourceMappingError):
                raise
            unmapped += [error] if error.reason == "missing_columns" else []
            partitions.append(Partition(source.name, path, file_fingerprint, len(partitions),
                                        skipped=f"input:{error.reason}", skip_detail=error.detail))
            continue
        mapped += 1
        partitions += [replace(part, index=len(partitions) + i, encoding=encoding) for i, part in enumerate(ranges)]
    if unmapped and not mapped:
        raise SourceMappingError(
            unmapped[0].file, "missing_columns",
            f"{unmapped[0].detail}; no input of source {source.name!r} has them, so the mapping is wrong",
        )
    return partitions


def _probe(source: SourceConfig, path: str) -> str | None:
    """Read the head of an input as its reader will; returns the text codec(s) used, if any."""
    if source.format == "warc":
        probe_warc(path)
        return None
    if source.format == "mediawiki":
        probe_dump(path)
        return "utf-8"  # MediaWiki exports are UTF-8 XML
    return probe_input(source, path)


def _ranges_of(source: SourceConfig, path: str, file_fingerprint: str) -> list[Partition]:
    """The partitions of one readable input, numbered from 0 (the caller numbers them across the source)."""
    if source.format == "mediawiki":
        return [_dump_partition(source, path, file_fingerprint, 0, part)
                for part in plan_dump(source, path, source.multistream_index)]
    return [Partition(source.name, path, file_fingerprint, 0, part.start, part.stop, seek=part.seek, size=part.size)
            for part in _record_ranges(source, path)]


def _dump_partition(source: SourceConfig, path: str, file_fingerprint: str, index: int, part: DumpRange) -> Partition:
    return Partition(source.name, path, file_fingerprint, index, part.start, part.stop, byte_start=part.byte_start,
                     byte_stop=part.byte_stop, first_record=part.first_page,
                     size=None if part.byte_stop is None else part.byte_stop - part.byte_start)


def _record_ranges(source: SourceConfig, path: str) -> list[RecordRange]:
    if source.format == "warc" or not _may_hold_more_rows_than(path, source.rows_per_partition):
        return [RecordRange(0, None, None, _stored_size(path))]
    return record_ranges(source, path, source.rows_per_partition)


def _may_hold_more_rows_than(path: str, rows: int) -> bool:
    # Every record takes at least one byte, so an uncompressed file of fewer bytes than `rows` cannot
    # need splitting, and small files skip the counting pass.
    if compression_of(path) or path.lower().endswith(".zip"):
        return True
    return _stored_size(path) > rows


def _stored_size(path: str) -> int:
    fs, inner = url_to_fs(path)
    return int(fs.info(inner).get("size") or 0)


def read_partition(
    source: SourceConfig, partition: Partition, batch_size: int = 1000, wiki: WikiConfig | None = None
) -> Iterator[ReadBatch]:
    """Documents and reject rows of one partition, `batch_size` rows at a time (wiki pages as `wiki` says,
    by default the config's defaults).

    A skipped input reads as one rejected record. An input that turns out unreadable only now (it changed
    since planning) is skipped the same way, once, by the partition that starts the file.
    """
    if partition.empty:
        return
    if partition.skipped:
        yield skipped_input_batch(source, partition.path, partition.skipped, partition.skip_detail or "")
        return
    try:
        yield from _read(source, partition, batch_size, wiki or WikiConfig())
    except SourceUnreadable as error:
        if source.on_bad_input == "fail":
            raise
        if partition.start == 0:
            yield skipped_input_batch(source, partition.path, f"input:{error.reason}", error.detail)


def _read(source: SourceConfig, partition: Partition, batch_size: int, wiki: WikiConfig) -> Iterator[ReadBatch]:
    if source.format == "mediawiki":
        yield from read_wiki(source, partition, batch_size, wiki)
    elif source.format == "warc" or source.kind == "news":
        yield from read_news(source, partition, batch_size)
    else:
        yield from read_comments(source, partition, batch_size)

"""Byte ranges of large dumps: multistream indexes, bz2 stream boundaries, and reading from an offset.

A Wikimedia multistream dump is many bz2 streams (100 pages each) behind a header stream, with an index
(`*-multistream-index.txt.bz2`) of one `offset:page_id:title` line per page, offset being where the page's
stream starts. A reader seeks to an offset and decompresses from there. Without an index, stream starts are
found by scanning the compressed bytes for a stream header followed by a block header (both byte-aligned
at a stream start; the 10-byte pattern turns up elsewhere with odds of ~2**-80 per byte).
"""

from __future__ import annotations

import bz2
import re
from collections.abc import Iterator
from dataclasses import dataclass

import fsspec
import numpy as np

from pipeline.sources.base import SourceMappingError, SourceUnreadable
from pipeline.sources.textio import open_binary

_READ_BYTES = 1 << 20
_STREAM_START = re.compile(rb"BZh[1-9]\x31\x41\x59\x26\x53\x59")
_STREAM_START_BYTES = 10
MULTISTREAM_SUFFIX = "-multistream.xml.bz2"


@dataclass(frozen=True)
class StreamIndex:
    """Streams of a dump that hold pages: where each starts and the 0-based number of its first page."""

    offsets: np.ndarray  # int64, ascending
    first_pages: np.ndarray  # int64, ascending
    pages: int  # pages in the dump

    def stream_of(self, page: int) -> int:
        return int(np.searchsorted(self.first_pages, page, side="right")) - 1


def index_beside(path: str) -> str | None:
    """The index Wikimedia publishes next to a multistream dump, when it exists."""
    if not path.endswith(MULTISTREAM_SUFFIX):
        return None
    candidate = path.removesuffix(".xml.bz2") + "-index.txt.bz2"
    fs, inner = fsspec.core.url_to_fs(candidate)
    return candidate if fs.exists(inner) else None


def read_index(index_path: str, dump_path: str) -> StreamIndex:
    """The index's streams; an index that is not ascending offsets with one line per page is an error."""
    with open_binary(index_path) as stream:
        try:
            lines = stream.read().splitlines()
        except (OSError, EOFError) as error:
            raise SourceUnreadable(index_path, "unreadable", f"unreadable multistream index: {error}") from None
    try:
        page_offsets = np.array([int(line.split(b":", 1)[0]) for line in lines if line.strip()], dtype=np.int64)
    except ValueError as error:
        raise SourceUnreadable(index_path, "not_format", f"not a multistream index (offset:page_id:title lines): {error}") from None
    if len(page_offsets) == 0 or np.any(np.diff(page_offsets) < 0):
        raise SourceUnreadable(index_path, "not_format", "multistream index is empty or its offsets are not ascending")
    starts = np.flatnonzero(np.diff(page_offsets, prepend=-1) != 0)
    _check_stream_starts(dump_path, index_path, page_offsets[starts])
    return StreamIndex(page_offsets[starts], starts.astype(np.int64), len(page_offsets))


def _check_stream_starts(dump_path: str, index_path: str, offsets: np.ndarray) -> None:
    """The first and last offsets must point at bz2 stream starts in the dump (a cheap staleness check)."""
    with open_binary(dump_path, decompress=False) as raw:
        for offset in {int(offsets[0]), int(offsets[-1])}:
            raw.seek(offset)
            if not _STREAM_START.match(raw.read(_STREAM_START_BYTES)):
                raise SourceMappingError(index_path, "not_format", f"offset {offset} is not a bz2 stream start in "
                                       f"{dump_path}; the index belongs to another dump")


def stream_starts(path: str) -> tuple[list[int], int]:
    """Byte offsets of every bz2 stream that starts with a block, found in one pass over the file, and
    the file's size."""
    found = []
    with open_binary(path, decompress=False) as raw:
        carried, base = b"", 0  # the last bytes of the previous chunk, where a pattern may have begun
        while chunk := raw.read(_READ_BYTES):
            window = carried + chunk
            found += [base - len(carried) + match.start() for match in _STREAM_START.finditer(window)]
            carried = window[-(_STREAM_START_BYTES - 1) :]
            base += len(chunk)
    return sorted(set(found)), base


def decompressed_range(path: str, start: int, stop: int | None) -> Iterator[bytes]:
    """Decompressed bytes of the bz2 streams between byte offsets `start` and `stop` (None: the file's end).

    A file cut inside a stream raises EOFError; bytes that are not bz2 raise OSError.
    """
    with open_binary(path, decompress=False) as raw:
        raw.seek(start)
        position = start
        decompressor = bz2.BZ2Decompressor()
        started = False
        while stop is None or position < stop:
            data = raw.read(_READ_BYTES if stop is None else min(_READ_BYTES, stop - position))
            if not data:
                if started and not decompressor.eof:
                    raise EOFError("Compressed file ended before the end-of-stream marker was reached")
                return
            position += len(data)
            pieces = []
            while data:
                if decompressor.eof:
                    decompressor = bz2.BZ2Decompressor()
                pieces.append(decompressor.decompress(data))
                started = True
                data = decompressor.unused_data if decompressor.eof else b""
            yield b"".join(pieces)

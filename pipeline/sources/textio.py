"""Opening inputs (local, fsspec, compressed, zipped), detecting their encoding, and reading capped lines."""

from __future__ import annotations

import codecs
import zipfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import PurePosixPath
from typing import BinaryIO

import charset_normalizer
import fsspec

from pipeline.sources.base import SourceUnreadable

ENCODING_SAMPLE_BYTES = 64 * 1024
_DRAIN_CHUNK = 1 << 20
_COMPRESSION = {".bz2": "bz2", ".gz": "gzip"}
# charset-normalizer names the narrowest codec that fits the sample; the rest of the file may need the
# superset (GBK characters beyond GB2312, HKSCS characters beyond Big5), and ASCII is UTF-8 by another name.
_SUPERSETS = {"ascii": "utf-8", "gb2312": "gb18030", "gbk": "gb18030", "big5": "big5hkscs", "cp950": "big5hkscs"}


def compression_of(path: str) -> str | None:
    return _COMPRESSION.get(PurePosixPath(path).suffix.lower())


@contextmanager
def open_binary(path: str, decompress: bool = True) -> Iterator[BinaryIO]:
    """A local path or fsspec URL as a binary stream, decompressed by its suffix (.bz2, .gz) when asked."""
    try:
        opened = fsspec.open(path, "rb", compression=compression_of(path) if decompress else None)
        stream = opened.open()
    except (FileNotFoundError, IsADirectoryError) as error:
        raise SourceUnreadable(f"{path}: cannot open: {error}") from None
    try:
        yield stream
    finally:
        stream.close()


@dataclass(frozen=True)
class Member:
    """One data file: a file itself, or a file inside a zip archive (named archive!member)."""

    label: str
    open: Callable[[], AbstractContextManager[BinaryIO]]

    @cached_property  # asked for once per record
    def key(self) -> str:
        """The file's name without its directory: part of record ids, so they survive moving the data."""
        archive, _, member = self.label.partition("!")
        name = PurePosixPath(archive).name
        return f"{name}!{PurePosixPath(member).name}" if member else name


def members(path: str) -> list[Member]:
    """The data files of an input: the file, or the members of a zip archive in name order."""
    if not path.lower().endswith(".zip"):
        return [Member(path, lambda: open_binary(path))]
    with open_binary(path, decompress=False) as stream:
        try:
            names = sorted(info.filename for info in zipfile.ZipFile(stream).infolist() if not info.is_dir())
        except zipfile.BadZipFile as error:
            raise SourceUnreadable(f"{path}: not a zip archive: {error}") from None
    if not names:
        raise SourceUnreadable(f"{path}: zip archive holds no files")
    return [Member(f"{path}!{name}", _zip_member_opener(path, name)) for name in names]


def _zip_member_opener(path: str, name: str) -> Callable[[], AbstractContextManager[BinaryIO]]:
    @contextmanager
    def open_member() -> Iterator[BinaryIO]:
        with open_binary(path, decompress=False) as stream, zipfile.ZipFile(stream).open(name) as member:
            yield member

    return open_member


def detect_encoding(sample: bytes, label: str) -> str:
    """The codec of a text file from a prefix sample; UTF-8 wins whenever the sample is (almost) UTF-8."""
    if sample.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if _mostly_utf8(sample):
        return "utf-8"
    best = charset_normalizer.from_bytes(sample).best()
    if best is None:
        raise SourceUnreadable(f"{label}: binary data, not text in any known encoding")
    encoding = _SUPERSETS.get(best.encoding, best.encoding)
    if "a\n".encode(encoding) != b"a\n":
        raise SourceUnreadable(f"{label}: encoding {encoding} is not supported (only ASCII-compatible ones)")
    return encoding


def _mostly_utf8(sample: bytes) -> bool:
    """True when at most 1% of the non-ASCII bytes are invalid UTF-8.

    A few damaged bytes in a UTF-8 file should cost the records holding them, not the whole file: a
    detector shown a sample with one bad byte would otherwise call the file GBK or cp1252.
    """
    decoded = codecs.getincrementaldecoder("utf-8")("surrogateescape").decode(sample, final=False)
    bad = sum(1 for char in decoded if "\udc80" <= char <= "\udcff")
    non_ascii = sum(1 for byte in sample if byte > 0x7F)
    return bad * 100 <= non_ascii


def read_sample(member: Member) -> bytes:
    with member.open() as stream:
        try:
            return stream.read(ENCODING_SAMPLE_BYTES)
        except (OSError, EOFError) as error:
            raise SourceUnreadable(f"{member.label}: cannot read: {error}") from None


@dataclass(frozen=True)
class Line:
    data: bytes  # the line with its newline; only the first `cap` bytes when it was longer
    size: int  # the line's full size in bytes
    oversize: bool


def capped_lines(stream: BinaryIO, cap: int) -> Iterator[Line]:
    """Lines of a binary stream, never holding more than `cap` bytes of one line in memory.

    A longer line keeps its first `cap` bytes (for the reject row) and the rest is read and dropped in
    chunks, so a 50 MB single-line record costs a megabyte, not fifty.
    """
    while line := stream.readline(cap + 1):
        if len(line) <= cap or line.endswith(b"\n"):
            yield Line(line, len(line), oversize=False)
            continue
        size = len(line)
        while rest := stream.readline(_DRAIN_CHUNK):
            size += len(rest)
            if rest.endswith(b"\n"):
                break
        yield Line(line[:cap], size, oversize=True)

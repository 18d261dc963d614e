"""Opening inputs (local, fsspec, compressed, zipped), detecting their encoding, and reading capped lines."""

from __future__ import annotations

import codecs
import io
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import PurePosixPath
from typing import BinaryIO

import charset_normalizer
import fsspec

from pipeline.sources.base import SourceUnreadable, is_transient
from pipeline.sources.charsets import MIN_SCORE, best_cjk_encoding

ENCODING_SAMPLE_BYTES = 64 * 1024
_DRAIN_CHUNK = 1 << 20
_COMPRESSION = {".bz2": "bz2", ".gz": "gzip"}
# Text holds tabs, newlines and carriage returns; a file with many other control bytes was never text
# (random bytes are 12% controls). A few stay the problem of the records holding them.
_CONTROL_BYTES = [bytes([b]) for b in (*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F)]
_MAX_CONTROL_SHARE = 0.05
# UTF-32's marks first: the UTF-32-LE mark begins with the UTF-16-LE one.
_BOMS = (
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
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
        raise SourceUnreadable(path, "unreadable", f"cannot open: {error}") from None
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
    """The data files of an input: the file, or the members of a zip archive in name order (none if empty)."""
    if not path.lower().endswith(".zip"):
        return [Member(path, lambda: open_binary(path))]
    with open_binary(path, decompress=False) as stream:
        try:
            names = sorted(info.filename for info in zipfile.ZipFile(stream).infolist() if not info.is_dir())
        except zipfile.BadZipFile as error:
            raise SourceUnreadable(path, "not_format", f"not a zip archive: {error}") from None
    return [Member(f"{path}!{name}", _zip_member_opener(path, name)) for name in names]


def _zip_member_opener(path: str, name: str) -> Callable[[], AbstractContextManager[BinaryIO]]:
    @contextmanager
    def open_member() -> Iterator[BinaryIO]:
        with open_binary(path, decompress=False) as stream, zipfile.ZipFile(stream).open(name) as member:
            yield member

    return open_member


def detect_encoding(sample: bytes, label: str, lang: str = "auto") -> str:
    """The codec of a text file from a prefix sample.

    A byte-order mark decides; then UTF-8 wins whenever the sample is (almost) UTF-8. For Chinese and
    unknown-language sources the East Asian candidates are decoded and scored (see charsets.py); the
    generic detector only judges what none of them reads well, and English sources.
    """
    for bom, encoding in _BOMS:
        if sample.startswith(bom):
            return encoding
    if _control_share(sample) > _MAX_CONTROL_SHARE:
        raise SourceUnreadable(label, "binary", "binary data (NUL and control bytes), not text")
    if _mostly_utf8(sample):
        return "utf-8"
    if lang in ("zh", "auto"):
        best = best_cjk_encoding(sample, lang)
        if best is not None and best[1] >= MIN_SCORE:
            return best[0]
    return _generic_encoding(sample, label)


def _control_share(sample: bytes) -> float:
    controls = sum(sample.count(byte) for byte in _CONTROL_BYTES)
    return controls / max(len(sample), 1)


def _generic_encoding(sample: bytes, label: str) -> str:
    best = charset_normalizer.from_bytes(sample).best()
    if best is None:
        raise SourceUnreadable(label, "binary", "binary data, not text in any known encoding")
    return _SUPERSETS.get(best.encoding, best.encoding)


def is_ascii_compatible(encoding: str) -> bool:
    """True when lines can be split on b"\\n" before decoding (UTF-16 and UTF-32 cannot)."""
    return "a\n".encode(encoding) == b"a\n"


@contextmanager
def open_lines_as(member: Member, encoding: str) -> Iterator[tuple[BinaryIO, str]]:
    """The member's bytes ready to be split at b"\\n", and the codec its lines decode with."""
    with member.open() as stream:
        if is_ascii_compatible(encoding):
            yield stream, encoding
        else:
            yield io.BufferedReader(Utf8Recoder(stream, encoding), _DRAIN_CHUNK), "utf-8"


class Utf8Recoder(io.RawIOBase):
    """A binary stream in a codec that is not ASCII-compatible (UTF-16, UTF-32), read as UTF-8 bytes.

    Line splitting and the record readers work on bytes split at b"\\n"; recoding on the fly keeps them
    unchanged and memory bounded. A code unit that cannot be decoded comes out as the byte 0xFF, invalid
    in UTF-8, so the record holding it is rejected as it would be in a UTF-8 file.
    """

    def __init__(self, stream: BinaryIO, encoding: str) -> None:
        self._stream = stream
        self._decoder = codecs.getincrementaldecoder(encoding)("replace")
        self._pending = b""
        self._done = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:
        while not self._pending and not self._done:
            chunk = self._stream.read(_DRAIN_CHUNK)
            self._done = not chunk
            text = self._decoder.decode(chunk, final=self._done)
            self._pending = text.encode("utf-8").replace("\ufffd".encode(), b"\xff")
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size


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
        except (OSError, EOFError, zlib.error) as error:
            if is_transient(error):
                raise
            raise SourceUnreadable(member.label, "unreadable", f"cannot decompress: {error}") from None


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

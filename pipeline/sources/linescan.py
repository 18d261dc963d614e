"""Where the records of a CSV/TSV or JSON-lines file start, found by numpy over blocks of lines.

Planning a build numbers every record of every input before the first partition starts (a partition is a
range of records), so this pass is on the critical path of every build and grows with the input. Most
lines settle by their bytes alone: in CSV a line with no quote and no carriage return but its ending
is one record, or none when blank; in JSON lines a line with a printable ASCII byte is a record.
Those are counted a block at a time. Only the others (quoted fields, which may span lines; oddities) are
handed to the exact per-line readers, so the result is the same as parsing every record, which the tests
check on generated files full of the cases that differ.

Lines are split at b"\\n" with the same cap as `textio.capped_lines`: a longer line keeps its first `cap`
bytes and is marked oversize, and never more than a block plus a cap of one line is held in memory.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

import numpy as np

from pipeline.sources.textio import Line

SCAN_BLOCK_BYTES = 1 << 20  # a few times this is held at once (the bytes, masks over them)
_NEWLINE, _CARRIAGE_RETURN, _QUOTE = 0x0A, 0x0D, 0x22
# Bytes str.strip() removes that are ASCII (the others need the line decoded): tab to carriage return,
# the four separators 0x1C-0x1F and space.
_ASCII_WHITESPACE = np.zeros(256, dtype=bool)
_ASCII_WHITESPACE[[0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x1C, 0x1D, 0x1E, 0x1F, 0x20]] = True
_ASCII_PRINTABLE = np.zeros(256, dtype=bool)
_ASCII_PRINTABLE[0x21:0x7F] = True


@dataclass
class LineBlock:
    """Whole lines of a stream: `data` and where each line ends in it (past its newline)."""

    data: bytes
    ends: np.ndarray
    cap: int
    offset: int = 0  # where data begins in the stream
    drained: int = 0  # for a lone line longer than the block: its full size (data holds its first cap bytes)
    starts: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.starts = np.concatenate([[0], self.ends[:-1]]).astype(np.int64)

    def __len__(self) -> int:
        return len(self.ends)

    @property
    def end_offset(self) -> int:
        """Where the stream goes on after this block."""
        return self.offset + (self.drained or len(self.data))

    def sizes(self) -> np.ndarray:
        return np.array([self.drained]) if self.drained else self.ends - self.starts

    def oversize(self) -> np.ndarray:
        """Lines `capped_lines` marks oversize: over cap + 1 bytes, or over cap with no newline to end them."""
        sizes = self.sizes()
        no_newline = np.frombuffer(self.data, np.uint8)[self.ends - 1] != _NEWLINE if len(self.data) else sizes > 0
        return (sizes > self.cap + 1) | ((sizes > self.cap) & no_newline)

    def line(self, index: int) -> Line:
        """Line `index` as `capped_lines` yields it."""
        start, end = int(self.starts[index]), int(self.ends[index])
        size = self.drained or end - start
        oversize = size > self.cap + 1 or (size > self.cap and not self.data[start:end].endswith(b"\n"))
        return Line(self.data[start:min(end, start + self.cap)] if oversize else self.data[start:end], size, oversize)


def line_blocks(stream: BinaryIO, cap: int, block_bytes: int = SCAN_BLOCK_BYTES, offset: int = 0) -> Iterator[LineBlock]:
    """The stream's lines in blocks of about `block_bytes`, `offset` being where the stream stands; a line
    longer than that (and than the cap) is a block of its own, of which only the first `cap` bytes are kept."""
    carry = b""
    while True:
        chunk = stream.read(block_bytes)
        data = carry + chunk if carry else chunk
        if not data:
            return
        cut = data.rfind(b"\n") + 1 if chunk else len(data)  # at the end, a last line may have no newline
        if cut == 0 and len(data) > cap + 1:
            head, carry = _drain_line(stream, data, cap, block_bytes, offset)
            offset = head.end_offset
            yield head
            continue
        if cut == 0:
            carry = data
            continue
        carry = data[cut:]
        buffer = np.frombuffer(data, np.uint8, count=cut)
        ends = np.flatnonzero(buffer == _NEWLINE).astype(np.int64) + 1
        if not ends.size or ends[-1] != cut:
            ends = np.append(ends, cut)
        yield LineBlock(data[:cut], ends, cap, offset)
        offset += cut


def _drain_line(stream: BinaryIO, data: bytes, cap: int, block_bytes: int, offset: int) -> tuple[LineBlock, bytes]:
    """A line already past the cap with no newline in sight: its head, its full size, and what follows it."""
    head, size = data[:cap], len(data)
    while chunk := stream.read(block_bytes):
        end = chunk.find(b"\n")
        if end >= 0:
            size += end + 1
            block = LineBlock(head + b"\n", np.array([cap + 1], dtype=np.int64), cap, offset, drained=size)
            return block, chunk[end + 1:]
        size += len(chunk)
    return LineBlock(head, np.array([cap], dtype=np.int64), cap, offset, drained=size), b""


class LineCursor:
    """A position in the lines of a stream: runs of lines are taken a block at a time, and single lines
    handed one by one to a reader that needs them (possibly across blocks)."""

    def __init__(self, blocks: Iterator[LineBlock], lines_before: int) -> None:
        self._blocks = blocks
        self.block: LineBlock | None = None
        self.index = 0
        self.line_no = lines_before  # lines consumed so far, counted from the start of the file
        self.end_offset = 0  # where the stream stands after the blocks taken so far

    def current(self) -> LineBlock | None:
        """The block holding the next line (None at the end)."""
        while self.block is None or self.index >= len(self.block):
            self.block, self.index = next(self._blocks, None), 0
            if self.block is None:
                return None
            self.end_offset = self.block.end_offset
        return self.block

    def skip_to(self, index: int) -> None:
        assert self.block is not None
        self.line_no += index - self.index
        self.index = index

    def lines(self) -> Iterator[Line]:
        while (block := self.current()) is not None:
            line = block.line(self.index)
            self.index += 1
            self.line_no += 1
            yield line


# Given the cursor at a line that needs parsing: the line the record starting there begins on (None for
# no record: blank lines, or the end), having moved the cursor past the record's last line.
ExactRecord = Callable[[LineCursor], "int | None"]


def record_starts(cursor: LineCursor, classify: Callable[[LineBlock], tuple[np.ndarray, np.ndarray]],
                  exact: ExactRecord) -> Generator[tuple[np.ndarray, np.ndarray], None, int]:
    """(1-based lines where records start, their byte offsets in the stream), a batch per block: the lines
    `classify` settles (a mask of records, a mask of lines that need parsing) by numpy, the others through
    `exact`, whose records may take in the lines after them (a quoted field spanning lines), in this block
    or the next. Returns where the stream ended."""
    while (block := cursor.current()) is not None:
        first_line = cursor.line_no - cursor.index + 1  # the line number of the block's first line
        records, unsettled = classify(block)
        records[:cursor.index] = False
        parsed: list[tuple[int, int]] = []
        for line in np.flatnonzero(unsettled[cursor.index:]) + cursor.index:
            if cursor.block is not block:
                break
            if line < cursor.index:
                continue  # taken in by the record before
            cursor.skip_to(int(line))
            position = exact(cursor)
            records[line:cursor.index if cursor.block is block else len(block)] = False
            if position is not None:
                parsed.append((position, block.offset + int(block.starts[line])))
        if cursor.block is block:
            cursor.skip_to(len(block))
        settled = np.flatnonzero(records)
        lines = np.concatenate([settled + first_line, np.array([p for p, _ in parsed], dtype=np.int64)])
        offsets = np.concatenate([block.offset + block.starts[settled], np.array([o for _, o in parsed], dtype=np.int64)])
        order = np.argsort(lines, kind="stable")
        yield lines[order], offsets[order]
    return cursor.end_offset


def csv_lines(block: LineBlock) -> tuple[np.ndarray, np.ndarray]:
    """(records, unsettled): a CSV line with no quote and no carriage return except before its newline is
    one record unless blank ("\\n" or "\\r\\n"); any other line needs the csv module (which since Python
    3.11 takes NUL as any other character)."""
    buffer = np.frombuffer(block.data, np.uint8)
    unsettled = block.oversize()
    unsettled[_line_of(block, np.flatnonzero(buffer == _QUOTE))] = True
    returns = np.flatnonzero(buffer == _CARRIAGE_RETURN)
    line_of_return = _line_of(block, returns)
    ending = (returns + 2 == block.ends[line_of_return]) & (buffer[np.minimum(returns + 1, len(buffer) - 1)] == _NEWLINE)
    unsettled[line_of_return[~ending]] = True
    sizes = block.sizes()
    first = buffer[block.starts]
    blank = ((sizes == 1) & (first == _NEWLINE)) | ((sizes == 2) & (first == _CARRIAGE_RETURN))
    return ~blank & ~unsettled, unsettled


def jsonl_lines(block: LineBlock, utf8: bool) -> tuple[np.ndarray, np.ndarray]:
    """(records, unsettled): a JSON line is a record when over the cap or holding a printable ASCII byte,
    none when all ASCII whitespace; others must be decoded to tell. Outside UTF-8 a byte under 0x80 may
    be the second half of a character (Big5's ideographic space ends in "@"), so there any line with a
    byte over 0x7F is decoded."""
    buffer = np.frombuffer(block.data, np.uint8)
    printable = np.add.reduceat(_ASCII_PRINTABLE[buffer], block.starts) > 0
    whitespace = np.add.reduceat(_ASCII_WHITESPACE[buffer], block.starts)
    oversize = block.oversize()
    if not utf8:
        printable &= np.add.reduceat(buffer >= 0x80, block.starts) == 0
    records = oversize | printable
    return records, ~records & (whitespace < block.ends - block.starts)


def _line_of(block: LineBlock, offsets: np.ndarray) -> np.ndarray:
    return np.searchsorted(block.ends, offsets, side="right")

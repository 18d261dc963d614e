"""Join records of a key file, laid out by key range, so a bucket task reads only its own range of every file.

Each key file gets a companion file of join records: one (key, row, band, join) per id, per content hash
and per LSH band key of its documents, where `join` says which of the three joins the key belongs to.
The records are ordered by the key's slot (the top bits of the key, mixed first so that every kind of
key spreads evenly over SLOTS slots), and the file starts with a header: the number of documents, then
the offset of every slot. A bucket task owning slots [lo, hi) therefore reads one byte range of each
file, whatever the number of buckets, and all the records of a key, from every file, meet in one task.

    header: int64 little-endian [rows, offset of slot 0, ..., offset of slot SLOTS]  (records, not bytes)
    body:   RECORD items sorted by slot
"""

from __future__ import annotations

import struct

import numpy as np

from pipeline import storage

SLOT_BITS = 10
SLOTS = 1 << SLOT_BITS  # the most buckets a global dedup step can be split into
JOIN_ID, JOIN_HASH, JOIN_BAND = 0, 1, 2
RECORD = np.dtype([("key", "<u8"), ("doc", "<i8"), ("band", "<i4"), ("join", "u1")])
HEADER_BYTES = 8 * (SLOTS + 2)
_MIX = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing: the top bits of key * _MIX spread any key set


def records_path(keys_path: str) -> str:
    """Where the join records of a key file lie: beside it, named after it."""
    return keys_path.removesuffix(".arrow") + ".buckets"


def slots_of(keys: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return ((keys.astype(np.uint64) * _MIX) >> np.uint64(64 - SLOT_BITS)).astype(np.int64)


def make_records(keys: np.ndarray, rows: np.ndarray, join: int, bands: np.ndarray | int = 0) -> np.ndarray:
    records = np.empty(len(keys), dtype=RECORD)
    records["key"], records["doc"], records["band"], records["join"] = keys, rows, bands, join
    return records


def encode(records: np.ndarray, rows: int) -> bytes:
    """The file's bytes: header, then the records ordered by slot (and, within a slot, as given)."""
    slots = slots_of(records["key"])
    order = np.argsort(slots, kind="stable")
    offsets = np.searchsorted(slots[order], np.arange(SLOTS + 1))
    header = np.concatenate([[rows], offsets]).astype("<i8")
    return header.tobytes() + records[order].tobytes()


def read_header(uri: str) -> tuple[int, np.ndarray]:
    """(documents in the key file, offset of every slot in records)."""
    header = np.frombuffer(storage.read_range(uri, 0, HEADER_BYTES), dtype="<i8")
    if len(header) != SLOTS + 2:
        raise ValueError(f"{uri}: not a dedup join-records file (header of {len(header)} values)")
    return int(header[0]), header[1:]


def read_rows(uri: str) -> int:
    return struct.unpack("<q", storage.read_range(uri, 0, 8))[0]


def read_slots_into(uri: str, offsets: np.ndarray, lo: int, hi: int, out: np.ndarray) -> None:
    """The records of the file's slots [lo, hi) into `out` (as long as they are): one ranged read."""
    first, last = int(offsets[lo]), int(offsets[hi])
    data = storage.read_range(uri, HEADER_BYTES + first * RECORD.itemsize, (last - first) * RECORD.itemsize)
    out[:] = np.frombuffer(data, dtype=RECORD)


def slot_range(bucket: int, buckets: int) -> tuple[int, int]:
    """Slots [lo, hi) bucket `bucket` of `buckets` owns: contiguous, together covering every slot once."""
    return bucket * SLOTS // buckets, (bucket + 1) * SLOTS // buckets

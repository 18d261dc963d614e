"""Dedup key files: what the global dedup step needs of a partition's kept documents, written beside them.

A partition writes its keys once, when it is processed; the global step then reads these files and never
the documents. Beside each key file lie its join records (buckets.py): every id, content hash and band key
laid out by key range, which is all a bucket task of the global step reads. Ranks are not stored: they follow the order of the sources in the config, which can change
without the partition (and its cached files) changing, so the global step assigns them per file.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

import numpy as np
import pyarrow as pa

from pipeline.config import DedupConfig
from pipeline.dedup import buckets
from pipeline.dedup.minhash import (
    LSH_FALSE_NEGATIVE_WEIGHT,
    MinHashStage,
    band_keys,
    lsh_bands,
    signature_array,
    signature_matrix,
)

KEYS_FILE_NAME = "dedup_keys.arrow"


def band_layout(config: DedupConfig) -> tuple[int, int]:
    """(bands, rows per band) of the LSH banding for this config."""
    return lsh_bands(config.threshold, config.num_perm, LSH_FALSE_NEGATIVE_WEIGHT)


def keys_schema(config: DedupConfig) -> pa.Schema:
    bands, _ = band_layout(config)
    return pa.schema(
        [
            pa.field("id", pa.string(), nullable=False),
            pa.field("id_key", pa.uint64(), nullable=False),  # 64-bit hash of the id: joins ids on disk
            pa.field("content_hash", pa.string()),
            pa.field("hash_key", pa.uint64()),  # 64-bit hash of content_hash; null with it
            pa.field("minhash", pa.list_(pa.uint32(), config.num_perm)),
            pa.field("band_keys", pa.list_(pa.uint64(), bands)),  # null when the text has no signature
        ]
    )


def string_keys(values: list[str]) -> np.ndarray:
    """A 64-bit hash per string (blake2b), the same on every machine and Python run."""
    return np.array(
        [int.from_bytes(hashlib.blake2b(v.encode("utf-8"), digest_size=8).digest(), "little") for v in values],
        dtype=np.uint64,
    )


def dedup_keys_batch(documents: pa.RecordBatch | pa.Table, config: DedupConfig) -> pa.RecordBatch:
    """The key rows of documents holding `id`, `content_hash` and `minhash` (as the stages add them)."""
    missing = [c for c in ("id", "content_hash", "minhash") if c not in documents.column_names]
    if missing:
        raise ValueError(f"dedup keys need column(s) {missing} of the documents")
    ids = documents.column("id")
    hashes = documents.column("content_hash")
    if isinstance(ids, pa.ChunkedArray):
        ids, hashes = ids.combine_chunks(), hashes.combine_chunks()
    signatures, has_signature = signature_matrix(documents.column("minhash"), config.num_perm)
    bands, rows = band_layout(config)
    keys = np.stack([band_keys(signatures, band, rows) for band in range(bands)], axis=1) if len(ids) else (
        np.zeros((0, bands), dtype=np.uint64))
    has_hash = hashes.is_valid().to_numpy(zero_copy_only=False)
    hash_keys = np.zeros(len(hashes), dtype=np.uint64)
    hash_keys[has_hash] = string_keys(hashes.drop_null().to_pylist())
    band_column = pa.FixedSizeListArray.from_arrays(
        pa.array(keys.ravel(), pa.uint64()), bands, mask=pa.array(~has_signature))
    return pa.RecordBatch.from_arrays(
        [ids.cast(pa.string()), pa.array(string_keys(ids.to_pylist()), pa.uint64()), hashes.cast(pa.string()),
         pa.array(hash_keys, pa.uint64(), mask=~has_hash), signature_array(signatures, has_signature), band_column],
        schema=keys_schema(config),
    )


def join_records(keys: pa.RecordBatch, first_row: int, config: DedupConfig) -> np.ndarray:
    """The join records (buckets.RECORD) of a batch of key rows numbered from `first_row`: every id, and
    the content hashes and band keys of the joins the config switches on."""
    rows = np.arange(first_row, first_row + keys.num_rows, dtype=np.int64)
    parts = [buckets.make_records(keys.column("id_key").to_numpy(), rows, buckets.JOIN_ID)]
    if config.exact:
        hashes = keys.column("hash_key")
        valid = hashes.is_valid().to_numpy(zero_copy_only=False)
        parts.append(buckets.make_records(hashes.drop_null().to_numpy(), rows[valid], buckets.JOIN_HASH))
    if config.near:
        column = keys.column("band_keys")
        valid = column.is_valid().to_numpy(zero_copy_only=False)
        bands, _ = band_layout(config)
        signed = rows[valid]
        parts.append(buckets.make_records(
            column.drop_null().flatten().to_numpy(), np.repeat(signed, bands), buckets.JOIN_BAND,
            np.tile(np.arange(bands, dtype=np.int32), len(signed))))
    return np.concatenate(parts)


class DedupKeysWriter:
    """Writes a partition's key file (Arrow IPC file, so the global step can read it batch by batch) and,
    on close, its join records beside it (buckets.records_path).

    Both files always exist once closed, empty of rows when the partition kept nothing.
    """

    def __init__(self, path: str | Path, config: DedupConfig) -> None:
        self.config, self.path = config, str(path)
        self._sink = pa.OSFile(self.path, "wb")
        self._writer = pa.ipc.new_file(self._sink, keys_schema(config))
        self._records: list[np.ndarray] = []
        self.rows = 0

    def write(self, documents: pa.RecordBatch | pa.Table) -> None:
        if documents.num_rows:
            keys = dedup_keys_batch(documents, self.config)
            self._writer.write_batch(keys)
            self._records.append(join_records(keys, self.rows, self.config))
            self.rows += keys.num_rows

    def close(self) -> None:
        self._writer.close()
        self._sink.close()
        records = np.concatenate(self._records) if self._records else np.zeros(0, dtype=buckets.RECORD)
        with open(buckets.records_path(self.path), "wb") as out:
            out.write(buckets.encode(records, self.rows))

    def __enter__(self) -> DedupKeysWriter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()


def write_id_keys(documents: Iterable[pa.RecordBatch], path: str | Path, config: DedupConfig) -> None:
    """Key file of documents' ids alone: they take part in the id join, never in exact or near dedup."""
    with DedupKeysWriter(path, config) as writer:
        for batch in documents:
            rows = batch.num_rows
            writer.write(pa.RecordBatch.from_arrays(
                [batch.column("id"), pa.nulls(rows, pa.string()), pa.nulls(rows, pa.list_(pa.uint32(), config.num_perm))],
                names=["id", "content_hash", "minhash"]))


def write_text_keys(documents: Iterable[pa.RecordBatch], path: str | Path, config: DedupConfig) -> None:
    """Key file of documents that hold `text`, `lang` and `content_hash` but no signature, such as a
    previous version's shards (they keep no signatures): signatures are computed batch by batch."""
    minhash = MinHashStage(config)
    with DedupKeysWriter(path, config) as writer:
        for batch in documents:
            writer.write(minhash(batch).batch)

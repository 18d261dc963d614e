"""Deduplication: per-partition stages that add keys, and one global step over the keys of the whole build.

Stages (run in the workers, per partition): `ContentHashStage` adds `content_hash`, `MinHashStage` adds
`minhash`; `DedupKeysWriter` then writes the partition's key file (ids, hashes, signatures, LSH band keys)
beside its documents, with its join records laid out by key range (buckets.py). The global step joins the
key files of every partition, and of the previous dataset version when deduplicating against it, as
bucket tasks that each read one key range of every file, then one resolution over the colliding
documents (pipeline/dedup/external.py), so no task's memory grows with the corpus: it first settles
documents that arrived under an id another already has (ids.py), then finds duplicates.
`find_duplicates_in_files` runs those tasks one after the other in one process. `deduplicate` and `find_duplicates` run the same step over a
table of keys.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.config import DedupConfig
from pipeline.dedup.exact import ContentHashStage, canonical_texts, content_hashes
from pipeline.dedup.external import (
    DUPLICATES_SCHEMA,
    PREVIOUS_RANK,
    DedupResult,
    KeyFile,
    find_duplicates_in_files,
)
from pipeline.dedup.ids import LOCATOR_COLUMNS, RENAMED_SCHEMA, REPEATED_ID_NOTE, RepeatedIdError, apply_renames
from pipeline.dedup.keyfiles import KEYS_FILE_NAME, DedupKeysWriter, dedup_keys_batch, write_id_keys, write_text_keys
from pipeline.dedup.minhash import MinHasher, MinHashStage

__all__ = [
    "DUPLICATES_SCHEMA",
    "KEYS_FILE_NAME",
    "LOCATOR_COLUMNS",
    "PREVIOUS_RANK",
    "RENAMED_SCHEMA",
    "REPEATED_ID_NOTE",
    "ContentHashStage",
    "DedupKeysWriter",
    "DedupResult",
    "KeyFile",
    "MinHashStage",
    "MinHasher",
    "RepeatedIdError",
    "apply_renames",
    "canonical_texts",
    "content_hashes",
    "dedup_keys_batch",
    "deduplicate",
    "find_duplicates",
    "find_duplicates_in_files",
    "write_id_keys",
    "write_text_keys",
]

KEY_COLUMNS = ("id", "content_hash", "minhash", "rank")


def deduplicate(
    keys: pa.Table, config: DedupConfig, previous: pa.Table | None = None, spill_dir: str | Path | None = None
) -> DedupResult:
    """The global step over a table of keys: one key file per (rank, partition), joined on disk.

    `keys` holds KEY_COLUMNS, and the locator columns partition and row (rows 0..n-1 of each partition)
    when ids may repeat; `previous` an earlier version's keys (rank PREVIOUS_RANK).
    """
    missing = [c for c in KEY_COLUMNS if c not in keys.column_names]
    if missing:
        raise ValueError(f"dedup keys lack column(s) {missing}; expected {list(KEY_COLUMNS)}")
    located = all(c in keys.column_names for c in LOCATOR_COLUMNS)
    if previous is not None and previous.num_rows:
        if located:  # the previous version is one more "partition" of its own; its ids are never renamed
            n = previous.num_rows
            previous = previous.append_column("partition", pa.array([""] * n)).append_column(
                "row", pa.array(range(n), pa.int64()))
        keys = pa.concat_tables([keys, previous.select(keys.column_names).cast(keys.schema)])
    with tempfile.TemporaryDirectory(prefix="dedup-keys-", dir=spill_dir) as directory:
        files = []
        for group in keys.select(["rank", *(["partition"] if located else [])]).group_by(
                ["rank", *(["partition"] if located else [])]).aggregate([]).to_pylist():
            mask = pc.equal(keys.column("rank"), group["rank"])
            if located:
                mask = pc.and_(mask, pc.equal(keys.column("partition"), group["partition"]))
            part = keys.filter(mask)
            part = part.sort_by("row") if located else part
            path = Path(directory) / f"{len(files)}-{KEYS_FILE_NAME}"
            with DedupKeysWriter(path, config) as writer:
                writer.write(part)
            source = part.column("source")[0].as_py() if "source" in part.column_names else ""
            files.append(KeyFile(str(path), group["rank"], group.get("partition", ""), source))
        files.sort(key=lambda f: (f.rank, f.partition))  # build order: the first of a repeated id keeps it
        return find_duplicates_in_files(files, config, directory)


def find_duplicates(keys: pa.Table, config: DedupConfig, spill_dir: str | Path | None = None) -> pa.Table:
    """One row per duplicate document, sorted by id; documents not listed are kept.

    Every cluster of duplicates keeps its smallest (rank, id). Exact groups (equal content_hash) come first;
    their representatives are then clustered by MinHash LSH, candidates verified by estimated Jaccard >=
    config.threshold and chained by union-find, so A~B~C all point at one representative. `duplicate_of`
    always names the cluster's kept document; `kind` is "exact" when the text equals it in canonical form,
    otherwise "near", with `similarity` the estimated Jaccard to it (it can be below the threshold at the
    end of a chain). Documents of rank -1 (the previous version) are never reported, and one whose id a
    current document holds is left out; that current document comes first among the current ones. The result does not depend on the input order. Ids must be
    unique among the current documents unless the keys locate them (see `deduplicate`).
    """
    return deduplicate(keys, config, spill_dir=spill_dir).duplicates

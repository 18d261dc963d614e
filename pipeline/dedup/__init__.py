"""Deduplication: per-partition stages that add keys, and one global step over the keys of the whole build.

Stages (run in the workers, per partition): `ContentHashStage` adds `content_hash`, `MinHashStage` adds
`minhash`; `DedupKeysWriter` then writes the partition's key file (ids, hashes, signatures, LSH band keys)
beside its documents. The global step `find_duplicates_in_files` joins the key files of every partition,
and of the previous dataset version when deduplicating against it, on disk (pipeline/dedup/external.py),
so its memory does not grow with the corpus. `find_duplicates` runs the same step over a table of keys.
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
    KeyFile,
    find_duplicates_in_files,
)
from pipeline.dedup.keyfiles import KEYS_FILE_NAME, DedupKeysWriter, dedup_keys_batch, write_text_keys
from pipeline.dedup.minhash import MinHasher, MinHashStage

__all__ = [
    "DUPLICATES_SCHEMA",
    "PREVIOUS_RANK",
    "KEYS_FILE_NAME",
    "ContentHashStage",
    "DedupKeysWriter",
    "KeyFile",
    "MinHashStage",
    "MinHasher",
    "canonical_texts",
    "content_hashes",
    "dedup_keys_batch",
    "find_duplicates",
    "find_duplicates_in_files",
    "write_text_keys",
]

KEY_COLUMNS = ("id", "content_hash", "minhash", "rank")


def find_duplicates(keys: pa.Table, config: DedupConfig, spill_dir: str | Path | None = None) -> pa.Table:
    """One row per duplicate document, sorted by id; documents not listed are kept.

    Every cluster of duplicates keeps its smallest (rank, id). Exact groups (equal content_hash) come first;
    their representatives are then clustered by MinHash LSH, candidates verified by estimated Jaccard >=
    config.threshold and chained by union-find, so A~B~C all point at one representative. `duplicate_of`
    always names the cluster's kept document; `kind` is "exact" when the text equals it in canonical form,
    otherwise "near", with `similarity` the estimated Jaccard to it (it can be below the threshold at the
    end of a chain). Documents of rank -1 (the previous version) are never reported, and one whose id a
    current document holds is left out. The result does not depend on the input order.

    The table is written as key files (one per rank) and joined on disk like a build's partitions.
    """
    missing = [c for c in KEY_COLUMNS if c not in keys.column_names]
    if missing:
        raise ValueError(f"dedup keys lack column(s) {missing}; expected {list(KEY_COLUMNS)}")
    with tempfile.TemporaryDirectory(prefix="dedup-keys-", dir=spill_dir) as directory:
        files = []
        for rank in pc.unique(keys.column("rank")).to_pylist():
            path = Path(directory) / f"rank{rank}-{KEYS_FILE_NAME}"
            with DedupKeysWriter(path, config) as writer:
                writer.write(keys.filter(pc.equal(keys.column("rank"), rank)))
            files.append(KeyFile(str(path), rank))
        return find_duplicates_in_files(files, config, directory)

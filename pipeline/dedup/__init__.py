"""Deduplication: per-partition stages that add keys, and one global step over the keys of the whole build.

Stages (run in the workers, per partition): `ContentHashStage` adds `content_hash`, `MinHashStage` adds
`minhash`. The global step `deduplicate` then sees only those keys (no text) of every kept document of
every source, and of the previous dataset version when deduplicating against it: it first settles
documents that arrived under an id another already has (ids.py), then finds duplicates.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dataclasses import dataclass

from pipeline.config import DedupConfig
from pipeline.dedup.ids import (
    LOCATOR_COLUMNS,
    RENAMED_SCHEMA,
    REPEATED_ID_NOTE,
    RepeatedIdError,
    apply_renames,
    describe_repeated,
    repeated_ids,
    resolve_repeated_ids,
)
from pipeline.dedup.exact import ContentHashStage, canonical_texts, content_hashes, exact_representatives
from pipeline.dedup.minhash import (
    MinHasher,
    MinHashStage,
    connected_components,
    estimated_jaccard,
    near_pairs,
    signature_matrix,
)

__all__ = [
    "DUPLICATES_SCHEMA",
    "LOCATOR_COLUMNS",
    "PREVIOUS_RANK",
    "RENAMED_SCHEMA",
    "REPEATED_ID_NOTE",
    "ContentHashStage",
    "DedupResult",
    "MinHashStage",
    "MinHasher",
    "RepeatedIdError",
    "apply_renames",
    "canonical_texts",
    "content_hashes",
    "deduplicate",
    "find_duplicates",
]

PREVIOUS_RANK = -1  # rank of the previous dataset version's documents: they win every tie, and stay
KEY_COLUMNS = ("id", "source", "lang", "content_hash", "minhash", "rank")
DUPLICATES_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("duplicate_of", pa.string(), nullable=False),  # the kept representative of its cluster
        pa.field("kind", pa.string(), nullable=False),  # exact | near
        pa.field("similarity", pa.float32(), nullable=False),  # estimated Jaccard to the representative
    ]
)


@dataclass(frozen=True)
class DedupResult:
    duplicates: pa.Table  # DUPLICATES_SCHEMA, by id as renamed
    renamed: pa.Table  # RENAMED_SCHEMA: (partition, row) -> new id of documents whose id was taken
    repeated_by_source: dict[str, int]  # per source, documents that arrived with an id already taken


def deduplicate(keys: pa.Table, config: DedupConfig, previous: pa.Table | None = None) -> DedupResult:
    """Settle repeated ids, then find duplicates; works with exact and near dedup both off (renames only).

    `keys` are this build's (with the locator columns partition and row when ids may repeat);
    `previous` an earlier version's keys (rank PREVIOUS_RANK), of which those whose id this build holds
    are left out. A document that repeats an earlier one's id and text is an exact duplicate pointing at
    the first one's representative; one with other text is kept under a derived id (see ids.py).
    """
    resolved = resolve_repeated_ids(keys, keep_same_text=not config.exact)
    current = resolved.keys
    if previous is not None and previous.num_rows and current.num_rows:  # alone, previous documents stay
        previous = previous.filter(pc.invert(pc.is_in(previous.column("id"), value_set=current.column("id"))))
        current = pa.concat_tables([current.select(list(KEY_COLUMNS)),
                                    previous.select(list(KEY_COLUMNS)).cast(current.select(list(KEY_COLUMNS)).schema)])
    run = current.num_rows and (config.exact or config.near)
    found = find_duplicates(current, config) if run else DUPLICATES_SCHEMA.empty_table()
    representative = dict(zip(found.column("id").to_pylist(), found.column("duplicate_of").to_pylist()))
    firsts = resolved.repeats.column("first").to_pylist()
    repeats = pa.table(
        {
            "id": resolved.repeats.column("id"),
            "duplicate_of": pa.array([representative.get(first, first) for first in firsts], pa.string()),
            "kind": pa.array(["exact"] * len(firsts), pa.string()),
            "similarity": pa.array([1.0] * len(firsts), pa.float32()),
        },
        schema=DUPLICATES_SCHEMA,
    )
    duplicates = pa.concat_tables([found, repeats]).sort_by("id")
    return DedupResult(duplicates, resolved.renamed, resolved.repeated_by_source())


def find_duplicates(keys: pa.Table, config: DedupConfig) -> pa.Table:
    """One row per duplicate document, sorted by id; documents not listed are kept.

    Every cluster of duplicates keeps its smallest (rank, id). Exact groups (equal content_hash) come first;
    their representatives are then clustered by MinHash LSH, candidates verified by estimated Jaccard >=
    config.threshold and chained by union-find, so A~B~C all point at one representative. `duplicate_of`
    always names the cluster's kept document; `kind` is "exact" when the text equals it in canonical form,
    otherwise "near", with `similarity` the estimated Jaccard to it (it can be below the threshold at the
    end of a chain). Documents of rank -1 (the previous version) are never reported. The rows are sorted
    by (rank, id) first, so the result does not depend on the input order.
    """
    missing = [c for c in KEY_COLUMNS if c not in keys.column_names]
    if missing:
        raise ValueError(f"dedup keys lack column(s) {missing}; expected {list(KEY_COLUMNS)}")
    keys = keys.select(list(KEY_COLUMNS)).sort_by([("rank", "ascending"), ("id", "ascending")])
    repeated = repeated_ids(keys)
    if repeated is not None:
        raise RepeatedIdError(f"dedup keys: {describe_repeated(keys, repeated)}; settle them with deduplicate()")
    ids = keys.column("id").combine_chunks()
    hashes = keys.column("content_hash").combine_chunks()
    exact = exact_representatives(hashes) if config.exact else np.arange(len(ids), dtype=np.int64)
    signatures, has_signature = signature_matrix(keys.column("minhash"), config.num_perm)
    final = _near_representatives(exact, signatures, has_signature, config) if config.near else exact
    return _duplicate_rows(ids, keys.column("rank"), exact, final, signatures)


def _near_representatives(
    exact: np.ndarray, signatures: np.ndarray, has_signature: np.ndarray, config: DedupConfig
) -> np.ndarray:
    """Each row's final representative: its exact representative's near-duplicate cluster's best row."""
    candidates = np.flatnonzero((exact == np.arange(len(exact))) & has_signature)  # ascending = preference
    left, right = near_pairs(signatures[candidates], config.threshold)
    cluster_best = candidates[connected_components(len(candidates), left, right)]
    best_of_row = np.arange(len(exact), dtype=np.int64)
    best_of_row[candidates] = cluster_best
    return best_of_row[exact]


def _duplicate_rows(
    ids: pa.Array, ranks: pa.ChunkedArray, exact: np.ndarray, final: np.ndarray, signatures: np.ndarray
) -> pa.Table:
    rows = np.flatnonzero((final != np.arange(len(final))) & (ranks.to_numpy() != PREVIOUS_RANK))
    # a row is an exact duplicate when its exact group's representative is the cluster's representative
    is_exact = exact[rows] == final[rows]
    similarity = np.ones(len(rows), dtype=np.float32)
    near = ~is_exact
    similarity[near] = estimated_jaccard(signatures, exact[rows[near]], final[rows[near]])
    table = pa.table(
        {
            "id": ids.take(pa.array(rows)),
            "duplicate_of": ids.take(pa.array(final[rows])),
            "kind": pa.array(np.where(is_exact, "exact", "near"), pa.string()),
            "similarity": pa.array(similarity, pa.float32()),
        },
        schema=DUPLICATES_SCHEMA,
    )
    return table.sort_by("id")

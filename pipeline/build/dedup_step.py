"""The global dedup step: exact and near duplicates across every partition, source and the previous version."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from pipeline import storage, versions
from pipeline.build.partitions import StagedPartition
from pipeline.config import CorpusflowConfig
from pipeline.dedup import PREVIOUS_RANK, MinHashStage, find_duplicates
from pipeline.shards import write_shard


def dedup_keys(config: CorpusflowConfig, staged: Sequence[StagedPartition]) -> pa.Table:
    """The columns the global dedup step needs from every kept document; no text."""
    rank_of = {source.name: rank for rank, source in enumerate(config.sources)}
    tables = []
    for part in staged:
        if part.documents_path.exists():
            keys = storage.read_arrow_table(str(part.documents_path), ["id", "source", "lang", "content_hash", "minhash"])
            tables.append(keys.append_column("rank", pa.array([rank_of[part.source]] * keys.num_rows, pa.int32())))
    if not tables:
        return pa.table({"id": pa.array([], pa.string())})
    keys = pa.concat_tables(tables, promote_options="permissive")
    if config.dedup.against_previous:
        previous_manifest = versions.resolve_manifest(config.dedup.against_previous, config.datasets_uri, config.dataset)
        previous = previous_version_keys(config, previous_manifest, keys.column("id"))
        if previous.num_rows:
            keys = pa.concat_tables([keys, previous.select(keys.column_names).cast(keys.schema)])
    return keys


def previous_version_keys(config: CorpusflowConfig, manifest_path: str, current_ids: pa.ChunkedArray) -> pa.Table:
    """Keys of an earlier version's documents that this build does not hold itself, ranked to win ties.

    Final shards keep no signatures, so they are computed again from the stored text.
    """
    manifest = versions.load_manifest(manifest_path)
    root = versions.version_dir(manifest_path)
    minhash = MinHashStage(config.dedup)
    tables = []
    for shard in manifest.usable_shards():
        documents = storage.read_arrow_table(storage.join(root, shard.path), sha256=shard.sha256,
                                             columns=["id", "source", "lang", "text", "content_hash"])
        documents = documents.filter(pc.invert(pc.is_in(documents.column("id"), value_set=current_ids)))
        for batch in documents.to_batches():
            signed = minhash(batch).batch
            tables.append(pa.Table.from_batches([signed]).drop_columns(["text"]).append_column(
                "rank", pa.array([PREVIOUS_RANK] * signed.num_rows, pa.int32())))
    return pa.concat_tables(tables) if tables else pa.table({})


def write_duplicates(config: CorpusflowConfig, staged: Sequence[StagedPartition], work_dir: Path) -> Path:
    """Find duplicates across every partition; their ids go to a file named by the partitions it covers."""
    keys = dedup_keys(config, staged)
    if keys.num_rows == 0 or not (config.dedup.exact or config.dedup.near):
        duplicates = pa.table({"id": pa.array([], pa.string()), "duplicate_of": pa.array([], pa.string()),
                               "kind": pa.array([], pa.string())})
    else:
        duplicates = find_duplicates(keys, config.dedup)
    covered = hashlib.sha256("\n".join(sorted(p.directory for p in staged)).encode()).hexdigest()[:16]
    return write_shard(duplicates, Path(work_dir) / "dedup" / f"duplicates-{covered}.arrow").path

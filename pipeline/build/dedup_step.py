"""The global dedup step: exact and near duplicates across every partition, source and the previous version."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from pipeline import storage, versions
from pipeline.build.partitions import StagedPartition, staged_key
from pipeline.config import CorpusflowConfig
from pipeline.dedup import DUPLICATES_SCHEMA, PREVIOUS_RANK, RENAMED_SCHEMA, MinHashStage, deduplicate
from pipeline.shards import write_shard


def dedup_keys(config: CorpusflowConfig, staged: Sequence[StagedPartition]) -> pa.Table:
    """The columns the global dedup step needs from every kept document, no text; located by partition and row."""
    rank_of = {source.name: rank for rank, source in enumerate(config.sources)}
    tables = []
    for part in staged:
        if part.documents_path.exists():
            keys = storage.read_arrow_table(str(part.documents_path), ["id", "source", "lang", "content_hash", "minhash"])
            n = keys.num_rows
            tables.append(keys.append_column("rank", pa.array([rank_of[part.source]] * n, pa.int32()))
                          .append_column("partition", pa.array([part.name] * n, pa.string()))
                          .append_column("row", pa.array(range(n), pa.int64())))
    if not tables:
        return pa.table({"id": pa.array([], pa.string())})
    return pa.concat_tables(tables, promote_options="permissive")


def previous_version_keys(config: CorpusflowConfig, current_ids: pa.ChunkedArray) -> pa.Table | None:
    """Keys of the earlier version's documents that this build does not hold itself, ranked to win ties.

    Final shards keep no signatures, so they are computed again from the stored text.
    """
    if not config.dedup.against_previous:
        return None
    manifest_path = versions.resolve_manifest(config.dedup.against_previous, config.datasets_uri, config.dataset)
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
    return pa.concat_tables(tables) if tables else None


@dataclass(frozen=True)
class DedupFiles:
    """What the global step decided, as files the assembly reads, and the repeated-id counts for the manifest."""

    duplicates: str  # DUPLICATES_SCHEMA: id -> duplicate_of, kind
    renamed: str  # RENAMED_SCHEMA: (partition, row) -> the id a later occurrence of a taken id gets
    repeated_by_source: dict[str, int]


def write_duplicates(config: CorpusflowConfig, staged: Sequence[StagedPartition], work_dir: Path) -> DedupFiles:
    """Settle repeated ids and find duplicates across every partition; files named by the partitions covered."""
    keys = dedup_keys(config, staged)
    if keys.num_rows:
        result = deduplicate(keys, config.dedup, previous_version_keys(config, keys.column("id")))
        duplicates, renamed, repeated = result.duplicates, result.renamed, result.repeated_by_source
    else:
        duplicates, renamed, repeated = DUPLICATES_SCHEMA.empty_table(), RENAMED_SCHEMA.empty_table(), {}
    covered = staged_key(staged)
    directory = Path(work_dir) / "dedup"
    return DedupFiles(
        duplicates=str(write_shard(duplicates, directory / f"duplicates-{covered}.arrow").path),
        renamed=str(write_shard(renamed, directory / f"renamed-{covered}.arrow").path),
        repeated_by_source=repeated,
    )

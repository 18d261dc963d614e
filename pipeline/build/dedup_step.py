"""The global dedup step: exact and near duplicates across every partition, source and the previous version."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


from pipeline import storage, versions
from pipeline.build.partitions import StagedPartition, staged_key
from pipeline.config import AGAINST_PREVIOUS_ON_REFRESH, CorpusflowConfig
from pipeline.dedup import PREVIOUS_RANK, KeyFile, find_duplicates_in_files, write_text_keys
from pipeline.shards import write_shard


def settle_previous_version(config: CorpusflowConfig, refresh: bool) -> CorpusflowConfig:
    """The config with `dedup.against_previous` as the manifest URI of the version whose documents win ties,
    or None; "on_refresh" becomes the newest version on a refresh of a dataset that has one.

    Pinned to a manifest, the config stored with the new version says exactly what it was deduplicated
    against, and `corpusflow verify` rebuilds against the same version even after LATEST has moved.
    """
    wanted = config.dedup.against_previous
    if wanted == AGAINST_PREVIOUS_ON_REFRESH:
        wanted = versions.latest_version(config.datasets_uri, config.dataset) if refresh else None
    manifest = versions.resolve_manifest(wanted, config.datasets_uri, config.dataset) if wanted else None
    if manifest and "://" not in manifest:  # a plain path: absolute, so it holds from any directory
        manifest = str(Path(manifest).resolve())
    return config.model_copy(update={"dedup": config.dedup.model_copy(update={"against_previous": manifest})})


def key_files(config: CorpusflowConfig, staged: Sequence[StagedPartition], work_dir: Path) -> list[KeyFile]:
    """The partitions' key files in build order (source rank, partition), then the previous version's."""
    rank_of = {source.name: rank for rank, source in enumerate(config.sources)}
    files = [KeyFile(str(p.keys_path), rank_of[p.source], p.name, p.source) for p in staged if p.keys_path.exists()]
    return sorted(files, key=lambda f: (f.rank, f.partition)) + previous_version_keys(config, work_dir)


def previous_version_keys(config: CorpusflowConfig, work_dir: Path) -> list[KeyFile]:
    """Key files of the earlier version's shards, ranked to win ties; its documents are never reported.

    Final shards keep no signatures, so they are computed again from the stored text.
    """
    if config.dedup.against_previous in (None, AGAINST_PREVIOUS_ON_REFRESH):  # not a refresh
        return []
    manifest_path = versions.resolve_manifest(config.dedup.against_previous, config.datasets_uri, config.dataset)
    manifest = versions.load_manifest(manifest_path)
    root = versions.version_dir(manifest_path)
    files = []
    for index, shard in enumerate(manifest.usable_shards()):
        with storage.open_arrow(storage.join(root, shard.path), shard.sha256) as (_, batches):
            columns = ["id", "lang", "text", "content_hash"]
            path = Path(work_dir) / "dedup" / f"previous-{manifest.version}-{index:05d}.arrow"
            path.parent.mkdir(parents=True, exist_ok=True)
            write_text_keys((batch.select(columns) for batch in batches), path, config.dedup)
        files.append(KeyFile(str(path), PREVIOUS_RANK))
    return files


@dataclass(frozen=True)
class DedupFiles:
    """What the global step decided, as files the assembly reads, and the repeated-id counts for the manifest."""

    duplicates: str  # DUPLICATES_SCHEMA: id -> duplicate_of, kind
    renamed: str  # RENAMED_SCHEMA: (partition, row) -> the id a later occurrence of a taken id gets
    repeated_by_source: dict[str, int]


def write_duplicates(config: CorpusflowConfig, staged: Sequence[StagedPartition], work_dir: Path) -> DedupFiles:
    """Settle repeated ids and find duplicates across every partition, on disk; files named by the partitions."""
    directory = Path(work_dir) / "dedup"
    directory.mkdir(parents=True, exist_ok=True)
    result = find_duplicates_in_files(key_files(config, staged, work_dir), config.dedup, spill_dir=directory)
    covered = staged_key(staged)
    return DedupFiles(
        duplicates=str(write_shard(result.duplicates, directory / f"duplicates-{covered}.arrow").path),
        renamed=str(write_shard(result.renamed, directory / f"renamed-{covered}.arrow").path),
        repeated_by_source=result.repeated_by_source,
    )

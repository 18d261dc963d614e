"""The global dedup step: exact and near duplicates across every partition, source and the previous version."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


from pipeline import storage, versions
from pipeline.build.partitions import StagedPartition, staged_key
from pipeline.config import KEEP_IDS_ON_REFRESH, CorpusflowConfig
from pipeline.dedup import PREVIOUS_RANK, KeyFile, find_duplicates_in_files, write_id_keys, write_text_keys
from pipeline.shards import write_shard


def settle_previous_versions(config: CorpusflowConfig, refresh: bool) -> CorpusflowConfig:
    """The config with `dedup.against_previous` and `dedup.keep_ids_of` as manifest URIs, or None;
    "on_refresh" becomes the newest version on a refresh of a dataset that has one, None otherwise.

    Pinned to manifests, the config stored with the new version says exactly which version settled its
    ties, and `corpusflow verify` rebuilds against the same one after LATEST has moved on.
    """
    keep_ids_of = config.dedup.keep_ids_of
    if keep_ids_of == KEEP_IDS_ON_REFRESH:
        keep_ids_of = versions.latest_version(config.datasets_uri, config.dataset) if refresh else None
    settled = {"against_previous": _manifest_of(config, config.dedup.against_previous),
               "keep_ids_of": _manifest_of(config, keep_ids_of)}
    return config.model_copy(update={"dedup": config.dedup.model_copy(update=settled)})


def _manifest_of(config: CorpusflowConfig, reference: str | None) -> str | None:
    if not reference:
        return None
    manifest = versions.resolve_manifest(reference, config.datasets_uri, config.dataset)
    return manifest if "://" in manifest else str(Path(manifest).resolve())  # a path that holds from anywhere


def key_files(config: CorpusflowConfig, staged: Sequence[StagedPartition], work_dir: Path) -> list[KeyFile]:
    """The partitions' key files in build order (source rank, partition), then the previous version's."""
    rank_of = {source.name: rank for rank, source in enumerate(config.sources)}
    files = [KeyFile(str(p.keys_path), rank_of[p.source], p.name, p.source) for p in staged if p.keys_path.exists()]
    return sorted(files, key=lambda f: (f.rank, f.partition)) + previous_version_keys(config, work_dir)


def previous_version_keys(config: CorpusflowConfig, work_dir: Path) -> list[KeyFile]:
    """Key files of an earlier version's shards, ranked to win ties; its documents are never reported.

    With `against_previous` its documents take part whole, so they win ties against any current document;
    with `keep_ids_of` only their ids do, so a current document that keeps one wins ties, and a text whose
    earlier holder left the sources is kept rather than matched to a document no longer there. Final shards
    keep no signatures, so they are computed again from the stored text where they are needed.
    """
    reference = config.dedup.against_previous or config.dedup.keep_ids_of
    if reference in (None, KEEP_IDS_ON_REFRESH):  # "on_refresh" left unsettled: not a refresh
        return []
    whole = bool(config.dedup.against_previous)
    manifest_path = versions.resolve_manifest(reference, config.datasets_uri, config.dataset)
    manifest = versions.load_manifest(manifest_path)
    root = versions.version_dir(manifest_path)
    files = []
    for index, shard in enumerate(manifest.usable_shards()):
        path = Path(work_dir) / "dedup" / f"previous-{manifest.version}-{'docs' if whole else 'ids'}-{index:05d}.arrow"
        path.parent.mkdir(parents=True, exist_ok=True)
        columns = ["id", "lang", "text", "content_hash"] if whole else ["id"]
        with storage.open_arrow(storage.join(root, shard.path), shard.sha256) as (_, batches):
            batches = (batch.select(columns) for batch in batches)
            if whole:
                write_text_keys(batches, path, config.dedup)
            else:
                write_id_keys(batches, path, config.dedup)
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

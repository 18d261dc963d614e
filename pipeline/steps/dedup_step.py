"""The global dedup step as tasks: plan, bucket tasks over key ranges, one resolution over the collisions.

1. `plan_dedup` lists the key files in build order (and the previous version's, computed here when
   deduplicating against it) and picks the number of buckets from the number of join records (and of
   workers, so that every worker takes a share once there is enough to share).
2. `dedup_bucket` (one task per bucket) reads its key range of every key file and writes the keys two
   or more documents share.
3. `resolve_duplicates` (one task) settles repeated ids, exact groups and near clusters over the colliding
   documents only, and writes the decisions per partition, so each writing task reads only its own.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from pipeline import storage, versions
from pipeline.config import KEEP_IDS_ON_REFRESH, CorpusflowConfig
from pipeline.dedup import PREVIOUS_RANK, KeyFile, write_id_keys, write_text_keys
from pipeline.dedup.buckets import records_path
from pipeline.dedup.external import bucket_collisions, bucket_count, resolve_collisions, write_collisions
from pipeline.shards import write_shard
from pipeline.steps.partitions import StagedPartition, staged_key


@dataclass(frozen=True)
class DedupPlan:
    files: list[KeyFile]  # build order: source rank, partition; then the previous version's
    buckets: int
    directory: str  # where the bucket tasks and the resolution write, named by the partitions covered


@dataclass(frozen=True)
class DedupDecisions:
    """What the resolution decided, per partition: files under `directory` that the writing tasks read."""

    directory: str
    duplicates_in: frozenset[str]  # partitions with documents to drop as duplicates
    renamed_in: frozenset[str]  # partitions with documents whose id was taken by an earlier one
    repeated_by_source: dict[str, int]

    def duplicates_of(self, partition: str) -> pa.Table | None:
        return _read_if(partition in self.duplicates_in, storage.join(self.directory, "duplicates", f"{partition}.arrow"))

    def renamed_of(self, partition: str) -> pa.Table | None:
        return _read_if(partition in self.renamed_in, storage.join(self.directory, "renamed", f"{partition}.arrow"))


def _read_if(present: bool, uri: str) -> pa.Table | None:
    return storage.read_arrow_table(uri) if present else None


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


def plan_dedup(
    config: CorpusflowConfig, staged: Sequence[StagedPartition], work_uri: str, buckets: int | None = None,
) -> DedupPlan:
    files = key_files(config, staged, work_uri)
    return DedupPlan(files=files, buckets=buckets or bucket_count(files, config.runner.workers),
                     directory=storage.join(work_uri, "dedup", staged_key(staged)))


def key_files(config: CorpusflowConfig, staged: Sequence[StagedPartition], work_uri: str) -> list[KeyFile]:
    """The partitions' key files in build order (source rank, partition), then the previous version's."""
    rank_of = {source.name: rank for rank, source in enumerate(config.sources)}
    files = [KeyFile(p.keys_path, rank_of[p.source], p.name, p.source) for p in staged]
    return sorted(files, key=lambda f: (f.rank, f.partition)) + previous_version_keys(config, work_uri)


def previous_version_keys(config: CorpusflowConfig, work_uri: str) -> list[KeyFile]:
    """Key files of an earlier version's shards, ranked to win ties; its documents are never reported.

    With `against_previous` its documents take part whole, so they win ties against any current document;
    with `keep_ids_of` only their ids do, so a current document that keeps one wins ties, and a text whose
    earlier holder left the sources is kept rather than matched to a document no longer there. Final shards
    keep no signatures, so they are computed again from the stored text where they are needed. The key
    files are staged under the work URL, like the partitions', so any node's bucket tasks read them.
    """
    reference = config.dedup.against_previous or config.dedup.keep_ids_of
    if reference in (None, KEEP_IDS_ON_REFRESH):  # "on_refresh" left unsettled: not a refresh
        return []
    whole = bool(config.dedup.against_previous)
    manifest_path = versions.resolve_manifest(reference, config.datasets_uri, config.dataset)
    manifest = versions.load_manifest(manifest_path)
    root = versions.version_dir(manifest_path)
    directory = storage.join(work_uri, "dedup", f"previous-{manifest.version}-{'docs' if whole else 'ids'}")
    columns = ["id", "lang", "text", "content_hash"] if whole else ["id"]
    files = []
    for index, shard in enumerate(manifest.usable_shards()):
        name = f"{index:05d}.arrow"
        if not storage.exists(records_path(storage.join(directory, name))):
            with (storage.open_arrow(storage.join(root, shard.path), shard.sha256) as (_, batches),
                  tempfile.TemporaryDirectory(prefix="corpusflow-previous-") as scratch):
                selected = (batch.select(columns) for batch in batches)
                (write_text_keys if whole else write_id_keys)(selected, Path(scratch) / name, config.dedup)
                storage.copy_tree(scratch, directory, last=Path(records_path(name)).name)
        files.append(KeyFile(storage.join(directory, name), PREVIOUS_RANK))
    return files


def dedup_bucket(plan: DedupPlan, bucket: int) -> str:
    """One bucket task: the shared keys of its key range, written under the plan's directory."""
    uri = storage.join(plan.directory, f"collisions-{bucket:04d}-of-{plan.buckets:04d}.npy")
    return write_collisions(uri, bucket_collisions(plan.files, bucket, plan.buckets))


def resolve_duplicates(config: CorpusflowConfig, plan: DedupPlan, collisions: Sequence[str]) -> DedupDecisions:
    """The resolution task: decide every duplicate and renamed document, written per partition."""
    with tempfile.TemporaryDirectory(prefix="corpusflow-resolve-") as scratch:
        result = resolve_collisions(plan.files, config.dedup, collisions, scratch)
    duplicates = result.duplicates.append_column("partition", result.partitions)
    return DedupDecisions(
        directory=plan.directory,
        duplicates_in=_write_by_partition(duplicates, storage.join(plan.directory, "duplicates"), keep_partition=False),
        renamed_in=_write_by_partition(result.renamed, storage.join(plan.directory, "renamed"), keep_partition=True),
        repeated_by_source=result.repeated_by_source,
    )


def _write_by_partition(table: pa.Table, directory: str, keep_partition: bool) -> frozenset[str]:
    """One file per partition named in the table (RENAMED_SCHEMA keeps its partition column: it is keyed by it).
    Not fsynced: every build decides again and writes them anew (storage.open_output)."""
    names = sorted(set(table.column("partition").to_pylist()))
    for name in names:
        rows = table.filter(pc.equal(table.column("partition"), name))
        write_shard(rows if keep_partition else rows.drop_columns(["partition"]), storage.join(directory, f"{name}.arrow"),
                    durable=False)
    return frozenset(names)

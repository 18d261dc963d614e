"""Build a dataset version: ingest -> clean -> segment -> filter -> dedup -> validate -> shards + manifest.

Every path a task gets is absolute or a URL, resolved once here (pipeline/steps/paths.py); staging lives
under a work URL every node reaches, so the same flow runs in local processes or on a Ray cluster.

1. Each source expands into partitions (a file, or a record range of a large file); remote inputs are
   fetched first, with retries.
2. One task per partition (the largest handed out first) reads, cleans, identifies the language, segments,
   scores quality and fingerprints its documents (cached on input fingerprint + config section + code
   version; resumable). Progress per partition goes to the run's `build-progress` artifact and to the
   CLI's display.
   When every partition came from cache and nothing else changed since a published build (config,
   contracts, code), that build's version is taken again and steps 3-7 are skipped (pipeline/steps/rebuild.py).
3. Dedup across every partition and source: one task per bucket (a range of keys, read from every
   partition's key file), then one resolution task over the colliding documents only.
4. One writing task per partition (or run of small partitions) drops the decided duplicates and writes its
   split/lang shards and its rejects; then one validation task per batch of shards of a contract (a Great
   Expectations run costs the same for 1 or 100,000 rows, so shards are validated together).
   Meanwhile a steps' worker draws the dataset's pictures from the shards as written.
5. contracts: a shard that broke a critical expectation is quarantined (and the pictures drawn again).
6. manifest: inputs, config, code, shards, ledger and contract results; its hash is the version. The
   dataset card (README.md) is written beside it, outside the hash; meanwhile a worker draws the Data
   Docs pages of the shards validated.
7. limits: a build over them is set aside under failed/ with its reports, LATEST stays, the run fails.
8. publish (shards, manifest, then LATEST), then announce.

All of it runs under the dataset's lease (flows/lease.py): one build of a dataset at a time.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

from prefect import flow, get_run_logger, task, unmapped
from prefect.artifacts import create_image_artifact, create_markdown_artifact, create_table_artifact
from prefect.context import TaskRunContext
from prefect.tasks import exponential_backoff

from flows.events import announce_dataset_version
from flows.lease import dataset_lease
from flows.progress import BuildProgress, listening, track_partitions
from flows.retries import transient_only
from flows.runners import ray_task_runner
from flows.workers import (import_in_background, run_in_step_worker, run_in_worker, start_build_workers,
                           start_step_pool_ahead)
from pipeline import card, plots, reproduce, sources, storage, versions
from pipeline.steps import dedup_step, manifest as manifests, partitions, rebuild, writing
from pipeline.steps.paths import BuildPaths, resolve_paths, working_directory
from pipeline.config import CorpusflowConfig, load_config
from pipeline.schema import InputRecord, Manifest
from pipeline.sources.base import Partition
from pipeline.sources.fetch import fetch

T = TypeVar("T")


@task(retries=4, retry_delay_seconds=exponential_backoff(backoff_factor=2), retry_jitter_factor=0.5,
      retry_condition_fn=transient_only)
def fetch_input(url: str, cache_dir: str) -> str:
    return str(fetch(url, Path(cache_dir)))


@task
def plan_source(config: CorpusflowConfig, paths: BuildPaths, source_name: str) -> list[Partition]:
    source = _source(config, source_name)
    origins = {}
    with working_directory(paths.base_dir):
        for uri in sources.expand_uri(source):
            local = fetch_input(uri, paths.fetch_cache) if sources.is_remote(uri) else uri
            origins[local] = uri
        return [replace(p, origin=origins[p.path]) for p in sources.plan_partitions(source, list(origins))]


@task
def check_inputs(config: CorpusflowConfig, planned: list[Partition]) -> list[InputRecord]:
    """Every input as the manifest lists it; skipped ones are shown in the run, too many fail it before any work."""
    inputs = sources.input_records(planned)
    skipped = [record for record in inputs if record.status == "skipped"]
    if skipped:
        get_run_logger().warning("%d input(s) skipped as unreadable: %s", len(skipped),
                                 "; ".join(f"{r.uri} ({r.reason})" for r in skipped[:10]))
        create_table_artifact([{"source": r.source, "input": r.uri, "reason": r.reason} for r in skipped],
                              key="skipped-inputs", description="Inputs skipped as unreadable (one rejected record each)")
    sources.check_bad_inputs(config, inputs)
    return inputs


def _partition_cache_key(context: TaskRunContext, parameters: dict) -> str | None:
    config, paths, partition = parameters["config"], parameters["paths"], parameters["partition"]
    staged = partitions.staged_directory(config, _source(config, partition.source), partition, paths.work)
    # The cached result is the staged directory's location: keyed by it, so another run directory's entry
    # for the same input is never handed back; none once the files are gone (it would point at nothing).
    where = hashlib.sha256(staged.encode()).hexdigest()[:20]
    return f"partition-{where}" if storage.exists(storage.join(staged, "ledger.json")) else None


@task(
    retries=2, retry_delay_seconds=exponential_backoff(backoff_factor=5), retry_condition_fn=transient_only,
    cache_key_fn=_partition_cache_key,
    persist_result=True, cache_result_in_memory=False, task_run_name="process-{partition.name}",
)
def process_partition(config: CorpusflowConfig, paths: BuildPaths, partition: Partition) -> partitions.StagedPartition:
    source = _source(config, partition.source)
    return _on_worker(config, partitions.process_partition, config, source, partition, paths.work, paths.base_dir)


@task
def find_same_build(config: CorpusflowConfig, paths: BuildPaths, inputs: list[InputRecord],
                    staged: list[partitions.StagedPartition]) -> tuple[str, str | None]:
    """The key of all the global steps derive from, and the manifest an earlier build of that key published."""
    key = rebuild.build_key(config, inputs, staged, paths.datasets, paths.contracts)
    return key, rebuild.recall(paths.work, key)


@task
def take_same_version(config: CorpusflowConfig, paths: BuildPaths, manifest_uri: str) -> tuple[Manifest, str | None]:
    """LATEST pointed at the version an identical build published; returns it and the version LATEST named."""
    manifest = versions.load_manifest(manifest_uri)
    previous = versions.latest_version(paths.datasets, config.dataset)
    versions.set_latest(paths.datasets, config.dataset, manifest.version)
    return manifest, previous


@task
def plan_dedup(config: CorpusflowConfig, paths: BuildPaths, staged: list[partitions.StagedPartition]) -> dedup_step.DedupPlan:
    return dedup_step.plan_dedup(config, staged, paths.work, config.runner.dedup_buckets)


@task(retries=2, retry_condition_fn=transient_only, task_run_name="dedup-bucket-{bucket}")
def dedup_bucket(config: CorpusflowConfig, plan: dedup_step.DedupPlan, bucket: int) -> str:
    return _on_worker(config, dedup_step.dedup_bucket, plan, bucket)


@task(retries=2, retry_condition_fn=transient_only)
def resolve_duplicates(config: CorpusflowConfig, plan: dedup_step.DedupPlan, collisions: list[str]) -> dedup_step.DedupDecisions:
    return _on_worker(config, dedup_step.resolve_duplicates, config, plan, collisions)


@task
def plan_writing(config: CorpusflowConfig, paths: BuildPaths, staged: list[partitions.StagedPartition],
                 ) -> tuple[str, list[writing.WritingGroup]]:
    """The staging directory, emptied (a killed build may have left shards in it), and the writing groups."""
    staging = paths.staging(partitions.staged_key(staged))
    storage.remove_tree(staging)
    return staging, writing.plan_writing(staged, config.shards.max_rows)


@task(retries=2, retry_condition_fn=transient_only, task_run_name="write-{group.name}")
def write_shards(config: CorpusflowConfig, group: writing.WritingGroup, decisions: dedup_step.DedupDecisions,
                 staging: str) -> writing.WrittenGroup:
    # on the chain's workers, idle by now: the steps' pool may still be importing Great Expectations
    return _on_worker(config, writing.write_group, config, group, decisions, staging)


@task
def plan_validation(config: CorpusflowConfig, written: list[writing.WrittenGroup]) -> list[writing.ValidationBatch]:
    return writing.validation_batches(written, config.contracts, config.runner.validation_batch_rows)


@task(retries=2, retry_condition_fn=transient_only, task_run_name="validate-{batch.name}")
def validate_shards(config: CorpusflowConfig, paths: BuildPaths, batch: writing.ValidationBatch, staging: str,
                    ) -> list[dict]:
    # In a worker process with Great Expectations imported: it is CPU-bound Python, threads would take turns.
    return _on_step_worker(config, writing.validate_batch, batch, staging, paths.contracts, paths.data_docs,
                           config.runner.validation_batch_rows)


@task(retries=2, retry_condition_fn=transient_only)
def render_data_docs(config: CorpusflowConfig, paths: BuildPaths, validated: list[list[dict]]) -> str | None:
    """Data Docs pages of every shard validated, and the index: once for the build, beside the steps after."""
    return _on_step_worker(config, writing.render_data_docs, validated, paths.data_docs)


@task
def assemble(written: list[writing.WrittenGroup], decisions: dedup_step.DedupDecisions, staging: str,
             ) -> writing.AssembledDataset:
    """The writing tasks' shards, rejects and ledger rows as one dataset, in partition order."""
    return writing.assemble(written, decisions.repeated_by_source, staging)


@task
def apply_contracts(assembled: writing.AssembledDataset, validated: list[list[dict]],
                    ) -> tuple[writing.AssembledDataset, dict[str, str]]:
    """The shards with their contract results; those that broke a critical expectation quarantined."""
    reports, reject_reports = writing.contract_reports(assembled, validated)
    suites = {report["suite"]: report["version"] for report in reports + reject_reports if report}
    return manifests.apply_contracts(assembled, reports, reject_reports), suites


@task
def write_manifest(config: CorpusflowConfig, inputs: list[InputRecord], assembled: writing.AssembledDataset,
                   suites: dict[str, str]) -> Manifest:
    """Manifest (its hash is the version), ledger, config and card into the staging; accounting checked."""
    manifest = manifests.build_manifest(config, inputs, assembled, suites)
    manifests.check_accounting(manifest)
    writing.write_ledger(assembled.staging, assembled.ledger_rows)
    reproduce.save_build_config(assembled.staging, config)
    versions.write_manifest(assembled.staging, manifest)
    card.write_card(assembled.staging, manifest, config)  # README.md for people and `load_dataset`
    return manifest


@task(retries=2, retry_condition_fn=transient_only)
def draw_pictures(config: CorpusflowConfig, assembled: writing.AssembledDataset) -> list[str]:
    """The card's pictures (length histograms, filter funnel, duplicate rates) into the staging's reports/,
    from the usable shards and the ledger rows."""
    return _on_step_worker(config, writing.draw_pictures, assembled)


@task
def check_limits(config: CorpusflowConfig, paths: BuildPaths, manifest: Manifest, staging: str) -> None:
    """Over the contract limits the build is set aside under failed/, with its reports, and the run fails."""
    try:
        manifests.check_limits(config.contracts, manifest)
    except manifests.QuarantineLimitExceeded:
        kept_at = versions.set_aside(staging, paths.datasets, config.dataset, manifest.version)
        _publish_artifacts(manifest, kept_at, paths, published=False)
        raise


@task
def publish(config: CorpusflowConfig, paths: BuildPaths, manifest: Manifest, staging: str, build_key: str,
            ) -> tuple[str, str | None]:
    """Shards, manifest, then LATEST; returns the manifest's URI and the version LATEST named before. The
    build's key is remembered with the version, for an unchanged rebuild to take it again."""
    previous = versions.latest_version(paths.datasets, config.dataset)
    manifest_uri = versions.publish(staging, paths.datasets, config.dataset, manifest.version)
    rebuild.remember(paths.work, build_key, manifest_uri)
    return manifest_uri, previous


@task
def announce(config: CorpusflowConfig, paths: BuildPaths, manifest: Manifest, manifest_uri: str,
             previous: str | None) -> None:
    announce_dataset_version(config.dataset, manifest.version, manifest_uri, previous)
    _publish_artifacts(manifest, manifest_uri, paths, published=True)


@flow(name="build-corpus", log_prints=True)
def build_corpus(config_path: str, refresh: bool = False, wait: bool = True) -> str:
    """Build the dataset the config describes; returns the manifest's path.

    One build of a dataset at a time: another one's lease is waited for, or with `wait` off fails this run
    (LeaseHeld). A refresh keeps the ids of the newest version where documents tie (`dedup.keep_ids_of`).
    Locally the steps run in this flow, whose thread pool hands the work to the worker processes; a nested
    flow (seconds of start and end on every build) is started only for Ray, whose task runner it sets.
    """
    config = load_config(config_path)
    with dataset_lease(config, wait):
        config = dedup_step.settle_previous_versions(config, refresh)
        if config.runner.kind == "local":
            return build_dataset(config)
        on_ray = flow(build_dataset, name="build-dataset", task_runner=ray_task_runner(config.runner))
        return on_ray(config)


def build_dataset(config: CorpusflowConfig) -> str:
    paths = resolve_paths(config)
    start_build_workers(config)
    planned = [plan_source.submit(config, paths, source.name) for source in config.sources]
    work = [partition for future in planned for partition in future.result()]
    inputs = check_inputs(config, work)
    handed_out = partitions.largest_first(work)
    # pyarrow imports pandas on its first conversion of Python rows, here the ledger's in write_manifest:
    # 0.25 s on the critical path after the partitions, unless it is imported while they run
    import_in_background("pandas")
    with listening(_preload_global_steps(config)):
        staged = track_partitions(process_partition.map(unmapped(config), unmapped(paths), handed_out), handed_out)
    staged = partitions.in_plan_order(staged, work)
    build_key, same_build = find_same_build(config, paths, inputs, staged)
    if same_build is not None:  # every partition from cache, nothing else changed: the same version again
        manifest, previous = take_same_version(config, paths, same_build)
        attached = attach_pictures.submit(same_build)
        announce(config, paths, manifest, same_build, previous)
        attached.result()
        return same_build
    plan = plan_dedup(config, paths, staged)
    collisions = dedup_bucket.map(unmapped(config), unmapped(plan), range(plan.buckets)).result()
    decisions = resolve_duplicates(config, plan, collisions)
    staging, groups = plan_writing(config, paths, staged)
    written = write_shards.map(unmapped(config), groups, unmapped(decisions), unmapped(staging)).result()
    assembled = assemble(written, decisions, staging)
    pictures = draw_pictures.submit(config, assembled)  # from the shards as written, while they are validated
    batches = plan_validation(config, written)
    validated = validate_shards.map(unmapped(config), unmapped(paths), batches, unmapped(staging)).result()
    docs = render_data_docs.submit(config, paths, validated)
    # quarantine moves shards out of the tree the pictures read, so it waits for them
    assembled, suites = apply_contracts(assembled, validated, wait_for=[pictures])
    if assembled.quarantined:
        pictures = draw_pictures.submit(config, assembled)  # drawn again, of the usable shards only
    manifest = write_manifest(config, inputs, assembled, suites)
    check_limits(config, paths, manifest, staging, wait_for=[pictures])
    manifest_uri, previous = publish(config, paths, manifest, staging, build_key)
    attached = attach_pictures.submit(manifest_uri)  # beside the announcement, which waits for the Data Docs
    announce(config, paths, manifest, manifest_uri, previous, wait_for=[docs])
    attached.result()
    return manifest_uri


@task
def attach_pictures(manifest_uri: str) -> list[str]:
    """The version's length histograms, filter funnel and duplicate rates (drawn with its card) as artifacts."""
    pictures = plots.dataset_pictures(versions.version_dir(manifest_uri))
    for picture in pictures:
        data = base64.b64encode(storage.read_bytes(picture)).decode()
        name = picture.rsplit("/", 1)[-1].removesuffix(".png")
        create_image_artifact(f"data:image/png;base64,{data}", key=f"dataset-{name}", description=name)
    return pictures


# ---- helpers ------------------------------------------------------------------------------------------


def _on_worker(config: CorpusflowConfig, fn: Callable[..., T], *args: object) -> T:
    if config.runner.kind == "local":
        return run_in_worker(config.runner.workers, fn, *args)
    return fn(*args)  # on Ray the task already runs in a worker process


def _on_step_worker(config: CorpusflowConfig, fn: Callable[..., T], *args: object) -> T:
    """In the global steps' pool, whose workers have Great Expectations and matplotlib imported."""
    if config.runner.kind == "local":
        return run_in_step_worker(config.runner.workers, fn, *args)
    return fn(*args)


def _preload_global_steps(config: CorpusflowConfig) -> Callable[[BuildProgress], None]:
    """The global steps' pool starts importing what they need a little before the last partitions end."""
    if config.runner.kind == "local":
        return start_step_pool_ahead(config.runner.workers)
    return lambda progress: None  # on Ray each task imports them in its own worker


def _source(config: CorpusflowConfig, name: str):
    return next(s for s in config.sources if s.name == name)




def _publish_artifacts(manifest: Manifest, manifest_uri: str, paths: BuildPaths, published: bool) -> None:
    counts = [{"source": source, **totals} for source, totals in manifest.ledger_by_source.items()]
    create_table_artifact(counts, key="ledger-by-source", description="Outcome of every record read, per source")
    validation = [
        {"shard": shard.path, "rows": shard.rows, "passed": (shard.contract or {}).get("success"),
         "failed expectations": ", ".join(f["type"] for f in (shard.contract or {}).get("failed", []))}
        for shard in manifest.shards + manifest.quarantined
    ]
    create_table_artifact(validation, key="contract-results", description="Every shard against its contract")
    by_label = [{"source": source, "label": label, **figures}
                for source, labels in manifest.drop_rate_by_label.items() for label, figures in labels.items()]
    if by_label:
        create_table_artifact(by_label, key="drop-rate-by-label", description="Filtered share of each label")
    for skew in manifest.label_skews:
        get_run_logger().warning("label skew: %s", skew)
    totals = manifest.ledger_totals
    create_markdown_artifact(
        "\n".join([
            f"# Dataset `{manifest.dataset}` version `{manifest.version}`"
            + ("" if published else " NOT PUBLISHED: over its contract limits, kept for inspection"),
            f"- manifest: `{manifest_uri}`",
            f"- read {totals['read']}: kept {totals['kept']}, filtered {totals['filtered']}, "
            f"duplicate {totals['duplicate']}, rejected {totals['rejected']}",
            f"- shards usable {len(manifest.shards)}, quarantined {len(manifest.quarantined)}",
            *(f"- **label skew**: {skew}" for skew in manifest.label_skews),
            *([f"- [Data Docs]({Path(docs).as_uri()})"] if Path(docs := storage.join(paths.data_docs, "index.html")).exists()
              else []),
            "", "```json", json.dumps(manifest.ledger_by_source, indent=1), "```",
        ]),
        key="build-summary",
    )

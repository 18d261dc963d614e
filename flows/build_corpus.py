"""Build a dataset version: ingest -> clean -> segment -> filter -> dedup -> validate -> shards + manifest.

1. Each source expands into partitions (a file, or a record range of a large file); remote inputs are
   fetched first, with retries.
2. One task per partition reads, cleans, identifies the language, segments, scores quality and fingerprints
   its documents (cached on input fingerprint + config section + code version; resumable). Progress per
   partition goes to the run's `build-progress` artifact and to the CLI's display.
3. One global step finds exact and near duplicates across every partition and source.
4. Kept documents land in deterministic split/source/lang shards; every drop lands in rejects with a reason.
5. Each shard is validated against its contract, in the worker processes, small shards several to a Great
   Expectations run; a failing shard is quarantined.
6. The manifest names inputs, config, code, shards, ledger and contract results; its hash is the version.
   The dataset card (README.md, with the pictures) is written beside it, outside the hash.
7. Limits are checked; only a build within them is published (shards, manifest, then LATEST) and announced.
   A build over them is set aside under failed/ with its reports, LATEST stays, and the flow run fails.

All of it runs under the dataset's lease (flows/lease.py): one build of a dataset at a time.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from dataclasses import replace
from functools import partial
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
from flows.runners import task_runner_for
from flows.workers import preload_as_workers_free, run_in_worker, start_workers
from pipeline import card, contracts, plots, reproduce, shards, sources, storage, versions
from pipeline.build import assembly, dedup_step, manifest as manifests, partitions, validation
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
def plan_source(config: CorpusflowConfig, source_name: str) -> list[Partition]:
    source = _source(config, source_name)
    origins = {}
    for uri in sources.expand_uri(source):
        local = fetch_input(uri, str(Path(config.run_dir) / "cache" / "fetch")) if sources.is_remote(uri) else uri
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
    config, partition = parameters["config"], parameters["partition"]
    key = partitions.partition_key(config, _source(config, partition.source), partition)
    staged = (Path(config.run_dir) / "work" / "partitions" / f"{partition.name}-{key}").resolve()
    # The cached result is the staged directory's path: keyed by that path, so another run directory's
    # entry for the same input is never handed back; none once the files are gone (it would point at nothing).
    where = hashlib.sha256(str(staged).encode()).hexdigest()[:20]
    return f"partition-{where}" if (staged / "ledger.json").exists() else None


@task(
    retries=2, retry_delay_seconds=exponential_backoff(backoff_factor=5), retry_condition_fn=transient_only,
    cache_key_fn=_partition_cache_key,
    persist_result=True, cache_result_in_memory=False, task_run_name="process-{partition.name}",
)
def process_partition(config: CorpusflowConfig, partition: Partition) -> partitions.StagedPartition:
    source = _source(config, partition.source)
    return _on_worker(config, partitions.process_partition, config, source, partition, Path(config.run_dir) / "work")


@task
def deduplicate(config: CorpusflowConfig, staged: list[partitions.StagedPartition]) -> dedup_step.DedupFiles:
    return dedup_step.write_duplicates(config, staged, Path(config.run_dir) / "work")


@task
def write_shards(
    config: CorpusflowConfig, staged: list[partitions.StagedPartition], decided: dedup_step.DedupFiles
) -> assembly.AssembledDataset:
    staging = shards.fresh_staging_dir(Path(config.run_dir) / "work", partitions.staged_key(staged))
    assembled = assembly.assemble(config, staged, storage.read_arrow_table(decided.duplicates),
                                  storage.read_arrow_table(decided.renamed), decided.repeated_by_source, staging)
    assembly.write_ledger(staging, assembled.ledger_rows)
    return assembled


@task(task_run_name="validate-{shards.name}")
def validate_shards(config: CorpusflowConfig, root: str, shards: validation.ValidationTask) -> dict[str, dict]:
    # In a worker process: Great Expectations is CPU-bound Python, so threads would take turns on one core.
    return _on_worker(config, validation.validate_task, shards, root, config.contracts,
                      Path(config.run_dir) / "data_docs", config.runner.validation_batch_rows)


@task
def finalize(
    config: CorpusflowConfig, assembled: assembly.AssembledDataset, inputs: list[InputRecord],
    reports: list[dict], reject_reports: list[dict],
) -> str:
    """contracts -> manifest -> limits -> publish -> announce; over the limits nothing is published."""
    assembled = manifests.apply_contracts(assembled, reports, reject_reports)
    suites = {report["suite"]: report["version"] for report in reports + reject_reports if report}
    manifest = manifests.build_manifest(config, inputs, assembled, suites)
    manifests.check_accounting(manifest)
    root = Path(assembled.staging)
    reproduce.save_build_config(root, config)
    versions.write_manifest(root, manifest)
    card.write_card(root, manifest, config)  # README.md for people and `load_dataset`, with reports/*.png
    try:
        manifests.check_limits(config.contracts, manifest)
    except manifests.QuarantineLimitExceeded:
        kept_at = versions.set_aside(root, config.datasets_uri, config.dataset, manifest.version)
        _publish_artifacts(manifest, kept_at, reports, published=False)
        raise
    previous = versions.latest_version(config.datasets_uri, config.dataset)
    manifest_uri = versions.publish(root, config.datasets_uri, config.dataset, manifest.version)
    announce_dataset_version(config.dataset, manifest.version, manifest_uri, previous)
    _publish_artifacts(manifest, manifest_uri, reports, published=True)
    return manifest_uri


@flow(name="build-corpus", log_prints=True)
def build_corpus(config_path: str, refresh: bool = False, wait: bool = True) -> str:
    """Build the dataset the config describes; returns the manifest's path.

    One build of a dataset at a time: another one's lease is waited for, or with `wait` off fails this run
    (LeaseHeld). A refresh keeps the ids of the newest version where documents tie (`dedup.keep_ids_of`).
    """
    config = load_config(config_path)
    with dataset_lease(config, wait):
        config = dedup_step.settle_previous_versions(config, refresh)
        return build_dataset.with_options(task_runner=task_runner_for(config.runner))(config)


@flow(name="build-dataset")
def build_dataset(config: CorpusflowConfig) -> str:
    if config.runner.kind == "local":
        start_workers(config.runner.workers, warm_up=partial(partitions.warm_up, config))
    planned = [plan_source.submit(config, source.name) for source in config.sources]
    work = [partition for future in planned for partition in future.result()]
    inputs = check_inputs(config, work)
    with listening(_preload_validation(config)):
        staged = track_partitions(process_partition.map(unmapped(config), work))
    duplicates = deduplicate(config, staged)
    assembled = write_shards(config, staged, duplicates)
    reports, reject_reports = [None] * len(assembled.shards), [None] * len(assembled.rejects)
    if config.contracts.enabled:
        validation_tasks = validation.plan_validation(
            assembled, config.contracts, config.runner.workers, config.runner.validation_batch_rows)
        validated = validate_shards.map(unmapped(config), unmapped(assembled.staging), validation_tasks)
        reports, reject_reports = validation.reports_in_order(assembled, validated.result())
    manifest_uri = finalize(config, assembled, inputs, reports, reject_reports)
    attach_pictures(manifest_uri)
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


def _preload_validation(config: CorpusflowConfig) -> Callable[[BuildProgress], None]:
    """Workers without a partition left import Great Expectations while the others finish and dedup runs."""
    if config.runner.kind == "local" and config.contracts.enabled:
        return preload_as_workers_free(config.runner.workers, contracts.warm_up)
    return lambda progress: None  # on Ray each validation task imports it in its own worker


def _source(config: CorpusflowConfig, name: str):
    return next(s for s in config.sources if s.name == name)




def _publish_artifacts(manifest: Manifest, manifest_uri: str, reports: list[dict], published: bool) -> None:
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
    docs = sorted({r["data_docs"] for r in reports if r and r.get("data_docs")})
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
            *(f"- [Data Docs]({Path(d).resolve().as_uri()})" for d in docs[:1]),
            "", "```json", json.dumps(manifest.ledger_by_source, indent=1), "```",
        ]),
        key="build-summary",
    )

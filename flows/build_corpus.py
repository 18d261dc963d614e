"""Build a dataset version: ingest -> clean -> segment -> filter -> dedup -> validate -> shards + manifest.

1. Each source expands into partitions (a file, or a record range of a large file); remote inputs are
   fetched first, with retries.
2. One task per partition reads, cleans, identifies the language, segments, scores quality and fingerprints
   its documents (cached on input fingerprint + config section + code version; resumable).
3. One global step finds exact and near duplicates across every partition and source.
4. Kept documents land in deterministic split/source/lang shards; every drop lands in rejects with a reason.
5. Each shard is validated against its contract; a failing shard is quarantined.
6. The manifest names inputs, config, code, shards, ledger and contract results; its hash is the version.
"""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from pathlib import Path

import fsspec
from prefect import flow, task, unmapped
from prefect.artifacts import create_image_artifact, create_markdown_artifact, create_table_artifact
from prefect.context import TaskRunContext
from prefect.tasks import exponential_backoff

from flows.events import announce_dataset_version
from flows.runners import task_runner_for
from pipeline import build, contracts, plots, reproduce, shards, sources
from pipeline.config import CorpusflowConfig, load_config
from pipeline.schema import InputRecord, Manifest, ShardRecord
from pipeline.sources.base import Partition
from pipeline.sources.fetch import fetch
from pipeline.workers import run_in_worker


class QuarantineLimitExceeded(RuntimeError):
    """More shards or rows broke their contracts than the config allows."""


@task(retries=4, retry_delay_seconds=exponential_backoff(backoff_factor=2), retry_jitter_factor=0.5)
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


def _partition_cache_key(context: TaskRunContext, parameters: dict) -> str | None:
    config, partition = parameters["config"], parameters["partition"]
    key = build.partition_key(config, _source(config, partition.source), partition)
    staged = Path(config.run_dir) / "work" / "partitions" / f"{partition.name}-{key}" / "ledger.json"
    # A cache entry pointing at staged files that were deleted would hand back paths to nothing.
    return f"partition-{key}" if staged.exists() else None


@task(
    retries=2, retry_delay_seconds=exponential_backoff(backoff_factor=5), cache_key_fn=_partition_cache_key,
    persist_result=True, cache_result_in_memory=False, task_run_name="process-{partition.name}",
)
def process_partition(config: CorpusflowConfig, partition: Partition) -> build.StagedPartition:
    args = (config, _source(config, partition.source), partition, Path(config.run_dir) / "work")
    if config.runner.kind == "local":
        return run_in_worker(config.runner.workers, build.process_partition, *args)
    return build.process_partition(*args)  # on Ray the task already runs in a worker process


@task
def deduplicate(config: CorpusflowConfig, staged: list[build.StagedPartition]) -> str:
    return str(build.write_duplicates(config, staged, Path(config.run_dir) / "work"))


@task
def write_shards(
    config: CorpusflowConfig, staged: list[build.StagedPartition], duplicates_path: str
) -> build.AssembledDataset:
    staging = shards.new_staging_dir(Path(config.run_dir) / "work")
    assembled = build.assemble(config, staged, shards.read_shard(duplicates_path), staging)
    build.write_ledger(staging, assembled.ledger_rows)
    return assembled


@task(task_run_name="validate-{shard.path}")
def validate_shard(config: CorpusflowConfig, root: str, shard: ShardRecord, suite: str) -> dict:
    return contracts.validate_shard(
        Path(root) / shard.path, suite, config.contracts.directory,
        data_docs_dir=Path(config.run_dir) / "data_docs",
    )


@task
def finalize(
    config: CorpusflowConfig, assembled: build.AssembledDataset, inputs: list[InputRecord],
    reports: list[dict], reject_reports: list[dict],
) -> str:
    root = Path(assembled.staging)
    checked = [_apply_contract(root, shard, report) for shard, report in zip(assembled.shards, reports)]
    rejects = [r.model_copy(update={"contract": _contract_summary(rep)})
               for r, rep in zip(assembled.rejects, reject_reports)]
    assembled = build.AssembledDataset(assembled.staging, checked, rejects, assembled.ledger_rows,
                                       assembled.notes_by_source)
    suites = {report["suite"]: report["version"] for report in reports + reject_reports}
    manifest = build.build_manifest(config, inputs, assembled, checked, suites)
    build.check_accounting(manifest)
    reproduce.save_build_config(root, config)
    shards.write_manifest(root, manifest)
    previous = shards.latest_version(config.datasets_uri, config.dataset)
    manifest_uri = shards.publish(root, config.datasets_uri, config.dataset, manifest.version)
    announce_dataset_version(config.dataset, manifest.version, manifest_uri, previous)
    _publish_artifacts(manifest, manifest_uri, reports)
    _enforce_quarantine_limits(config, manifest)
    return manifest_uri


@flow(name="build-corpus", log_prints=True)
def build_corpus(config_path: str) -> str:
    """Build the dataset the config describes; returns the manifest's path."""
    config = load_config(config_path)
    return build_dataset.with_options(task_runner=task_runner_for(config.runner))(config)


@flow(name="build-dataset")
def build_dataset(config: CorpusflowConfig) -> str:
    planned = [plan_source.submit(config, source.name) for source in config.sources]
    partitions = [p for future in planned for p in future.result()]
    staged = process_partition.map(unmapped(config), partitions).result()
    duplicates = deduplicate(config, staged)
    assembled = write_shards(config, staged, duplicates)
    root = unmapped(assembled.staging)
    reports = validate_shard.map(
        unmapped(config), root, assembled.shards, unmapped(config.contracts.documents_suite))
    reject_reports = validate_shard.map(
        unmapped(config), root, assembled.rejects, unmapped(config.contracts.rejects_suite))
    manifest_uri = finalize(config, assembled, _inputs_of(partitions), reports.result(), reject_reports.result())
    plot_version(manifest_uri)
    return manifest_uri


@task
def plot_version(manifest_uri: str) -> list[str]:
    """Length histograms, the filter funnel and duplicate rates, as PNGs in reports/ and as artifacts."""
    pictures = plots.plot_dataset(manifest_uri.rsplit("/", 1)[0])
    for picture in pictures:
        with fsspec.open(picture, "rb") as handle:
            data = base64.b64encode(handle.read()).decode()
        name = picture.rsplit("/", 1)[-1].removesuffix(".png")
        create_image_artifact(f"data:image/png;base64,{data}", key=f"dataset-{name}", description=name)
    return pictures


# ---- helpers ------------------------------------------------------------------------------------------


def _source(config: CorpusflowConfig, name: str):
    return next(s for s in config.sources if s.name == name)


def _inputs_of(partitions: list[Partition]) -> list[InputRecord]:
    unique = {(p.source, p.origin or p.path): p.fingerprint for p in partitions}
    return [InputRecord(source=s, uri=u, fingerprint=f) for (s, u), f in unique.items()]


def _contract_summary(report: dict) -> dict:
    """What of a validation report belongs in the manifest: content, not where its Data Docs lie."""
    failed = [e for e in report["expectations"] if not e["success"]]
    return {"suite": report["suite"], "version": report["version"], "success": report["success"],
            "critical_failed": report["critical_failed"],
            "failed": [{"type": e["type"], "column": e.get("column"), "severity": e["severity"],
                        "unexpected_count": e.get("unexpected_count")} for e in failed]}


def _apply_contract(root: Path, shard: ShardRecord, report: dict) -> ShardRecord:
    shard = shard.model_copy(update={"contract": _contract_summary(report)})
    return shards.quarantine(root, shard, report) if report["critical_failed"] else shard


def _enforce_quarantine_limits(config: CorpusflowConfig, manifest: Manifest) -> None:
    total_shards = len(manifest.shards) + len(manifest.quarantined)
    total_rows = sum(s.rows for s in manifest.shards + manifest.quarantined)
    bad_rows = sum(s.rows for s in manifest.quarantined)
    if not manifest.quarantined or not total_shards:
        return
    shard_frac, row_frac = len(manifest.quarantined) / total_shards, bad_rows / max(total_rows, 1)
    if shard_frac > config.contracts.max_quarantined_shard_frac or row_frac > config.contracts.max_quarantined_row_frac:
        names = ", ".join(s.path for s in manifest.quarantined)
        raise QuarantineLimitExceeded(
            f"{len(manifest.quarantined)}/{total_shards} shards ({row_frac:.1%} of rows) quarantined, over the "
            f"limits ({config.contracts.max_quarantined_shard_frac:.1%} shards, "
            f"{config.contracts.max_quarantined_row_frac:.1%} rows): {names}"
        )


def _publish_artifacts(manifest: Manifest, manifest_uri: str, reports: list[dict]) -> None:
    counts = [{"source": source, **totals} for source, totals in manifest.ledger_by_source.items()]
    create_table_artifact(counts, key="ledger-by-source", description="Outcome of every record read, per source")
    validation = [
        {"shard": shard.path, "rows": shard.rows, "passed": (shard.contract or {}).get("success"),
         "failed expectations": ", ".join(f["type"] for f in (shard.contract or {}).get("failed", []))}
        for shard in manifest.shards + manifest.quarantined
    ]
    create_table_artifact(validation, key="contract-results", description="Every shard against its contract")
    docs = sorted({r["data_docs"] for r in reports if r.get("data_docs")})
    totals = manifest.ledger_totals
    create_markdown_artifact(
        "\n".join([
            f"# Dataset `{manifest.dataset}` version `{manifest.version}`",
            f"- manifest: `{manifest_uri}`",
            f"- read {totals['read']}: kept {totals['kept']}, filtered {totals['filtered']}, "
            f"duplicate {totals['duplicate']}, rejected {totals['rejected']}",
            f"- shards usable {len(manifest.shards)}, quarantined {len(manifest.quarantined)}",
            *(f"- [Data Docs]({Path(d).resolve().as_uri()})" for d in docs[:1]),
            "", "```json", json.dumps(manifest.ledger_by_source, indent=1), "```",
        ]),
        key="build-summary",
    )

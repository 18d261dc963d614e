"""The build's global steps run in this process, in the flow's order, for tests that need no Prefect."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from pipeline.config import CorpusflowConfig
from pipeline.steps import dedup_step, writing
from pipeline.steps.partitions import StagedPartition, process_partition


def process_all(config: CorpusflowConfig, planned: Sequence, work: Path) -> list[StagedPartition]:
    sources = {source.name: source for source in config.sources}
    return [process_partition(config, sources[p.source], p, str(work), os.getcwd()) for p in planned]


def run_global_steps(
    config: CorpusflowConfig, staged: Sequence[StagedPartition], work: Path, staging: Path,
) -> tuple[writing.AssembledDataset, dedup_step.DedupDecisions]:
    """Dedup buckets, resolution, one writing task per group, the validation batches, assembly."""
    plan = dedup_step.plan_dedup(config, staged, str(work))
    collisions = [dedup_step.dedup_bucket(plan, bucket) for bucket in range(plan.buckets)]
    decisions = dedup_step.resolve_duplicates(config, plan, collisions)
    groups = writing.plan_writing(staged, config.shards.max_rows)
    written = [writing.write_group(config, group, decisions, str(staging)) for group in groups]
    batches = writing.validation_batches(written, config.contracts, config.runner.validation_batch_rows)
    validated = [writing.validate_batch(batch, str(staging), config.contracts.directory, str(work / "data_docs"),
                                        config.runner.validation_batch_rows) for batch in batches]
    assembled = writing.assemble(written, decisions.repeated_by_source, str(staging))
    return assembled, decisions

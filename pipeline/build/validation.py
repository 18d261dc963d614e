"""The contracts step of a build: the assembled shards split into validation tasks, and their reports back.

Each task validates a list of shards in one process (contracts.validate_shards batches small ones into one
Great Expectations run). Shards are spread over at least as many tasks as there are workers, balanced by
rows, so the workers validate in parallel; the reports come back in the assembled order for the manifest.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline import contracts
from pipeline.build.assembly import AssembledDataset
from pipeline.config import ContractsConfig
from pipeline.schema import ShardRecord


@dataclass(frozen=True)
class ValidationTask:
    """Shards one worker validates together: (path relative to the version directory, suite, sha256)."""

    shards: tuple[tuple[str, str, str], ...]
    rows: int

    @property
    def name(self) -> str:
        """How the task reads in the Prefect UI: its first shard and how many more."""
        first = self.shards[0][0]
        return first if len(self.shards) == 1 else f"{first} and {len(self.shards) - 1} more"


def plan_validation(
    assembled: AssembledDataset, config: ContractsConfig, workers: int, batch_rows: int,
) -> list[ValidationTask]:
    """Every shard and reject shard in exactly one task; tasks balanced by rows, largest shards placed first."""
    shards = [(s, config.documents_suite) for s in assembled.shards] + [(r, config.rejects_suite) for r in assembled.rejects]
    if not shards:
        return []
    total = sum(shard.rows for shard, _ in shards)
    count = min(len(shards), max(workers, math.ceil(total / batch_rows)))
    members: list[list[tuple[ShardRecord, str]]] = [[] for _ in range(count)]
    loads = [0] * count
    for shard, suite in sorted(shards, key=lambda item: (-item[0].rows, item[0].path)):
        lightest = loads.index(min(loads))
        members[lightest].append((shard, suite))
        loads[lightest] += shard.rows
    return [ValidationTask(tuple(sorted((s.path, suite, s.sha256) for s, suite in group)), load)
            for group, load in zip(members, loads, strict=True) if group]


def validate_task(
    task: ValidationTask, root: str, config: ContractsConfig, data_docs_dir: Path, batch_rows: int,
) -> dict[str, dict[str, Any]]:
    """The task's reports by shard path; each shard is read against the sha256 it was written with."""
    checks = [contracts.ShardCheck(str(Path(root) / path), suite, sha256) for path, suite, sha256 in task.shards]
    reports = contracts.validate_shards(checks, config.directory, data_docs_dir, batch_rows)
    return {path: report for (path, _, _), report in zip(task.shards, reports, strict=True)}


def reports_in_order(
    assembled: AssembledDataset, reports: Sequence[Mapping[str, dict[str, Any]]],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The reports of the data shards and of the reject shards, each in the assembled order."""
    by_path = {path: report for task_reports in reports for path, report in task_reports.items()}
    return [by_path[s.path] for s in assembled.shards], [by_path[r.path] for r in assembled.rejects]

"""How far a build is: partitions done of total, records and MB per second, ETA, drops so far.

The build flow hands its partition futures to `track_partitions`, which collects them as they finish and,
after each one, updates the run's progress artifact in Prefect (`build-progress`) and tells whoever listens
in this process (the CLI's live display) through `listening`. When every partition is in, a table artifact
(`partitions`) records each one's counts and size. Staged bytes are the partition's documents and rejects
files as written: a page range of a dump has no input size of its own.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta

from prefect.artifacts import create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.futures import PrefectFuture, as_completed

from pipeline import storage
from pipeline.sources.base import Partition
from pipeline.steps.partitions import StagedPartition
from pipeline.schema import OUTCOMES

DROPS = tuple(o for o in OUTCOMES if o != "kept")


@dataclass
class BuildProgress:
    total: int
    done: int = 0
    elapsed_s: float = 0.0
    staged_bytes: int = 0
    outcomes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    # The input bytes of every partition and of those done, when planning measured them all (else 0): the
    # largest go first, so partitions done are no measure of the time left.
    planned_bytes: int = 0
    done_bytes: int = 0

    @property
    def records(self) -> int:
        return sum(self.outcomes.values())

    @property
    def percent(self) -> float:
        return 100.0 * self.done / self.total if self.total else 100.0

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the pace so far (in input bytes when they are known); None before the first
        partition is in."""
        if not self.done:
            return None
        if self.planned_bytes and self.done_bytes:
            return self.elapsed_s / self.done_bytes * (self.planned_bytes - self.done_bytes)
        return self.elapsed_s / self.done * (self.total - self.done)

    def rates(self) -> str:
        seconds = max(self.elapsed_s, 1e-9)
        return (f"{self.records:,} records ({self.records / seconds:,.0f}/s), "
                f"{self.staged_bytes / 1e6:,.1f} MB staged ({self.staged_bytes / 1e6 / seconds:,.2f} MB/s)")

    def drops(self) -> str:
        # duplicates across partitions are found once every partition is in: shown only if a partition had some
        shown = [o for o in DROPS if o != "duplicate" or self.outcomes[o]]
        return ", ".join(f"{outcome} {self.outcomes[outcome]:,}" for outcome in shown)

    def eta(self) -> str:
        return "?" if self.eta_s is None else str(timedelta(seconds=round(self.eta_s)))

    def line(self) -> str:
        return (f"partitions {self.done}/{self.total} ({self.percent:.0f}%) | {self.rates()} | "
                f"ETA {self.eta()} | {self.drops()}")


Listener = Callable[[BuildProgress], None]
_listeners: list[Listener] = []


@contextmanager
def listening(listener: Listener) -> Iterator[None]:
    """Call `listener` with the build's progress after each partition of any build run in this process."""
    _listeners.append(listener)
    try:
        yield
    finally:
        _listeners.remove(listener)


def track_partitions(futures: list[PrefectFuture[StagedPartition]], partitions: list[Partition],
                     ) -> list[StagedPartition]:
    """The staged partitions in submission order (that of `partitions`), reporting progress as each one
    finishes."""
    sizes = {future: partition.size for future, partition in zip(futures, partitions, strict=True)}
    known = all(size is not None for size in sizes.values())
    progress = BuildProgress(total=len(futures), planned_bytes=sum(sizes.values()) if known else 0)
    started = time.monotonic()
    artifact = create_progress_artifact(0.0, key="build-progress", description=_describe(progress))
    _notify(progress)
    for future in as_completed(futures):
        staged = future.result()
        progress.done += 1
        progress.done_bytes += sizes[future] if known else 0
        progress.elapsed_s = time.monotonic() - started
        progress.staged_bytes += _staged_bytes(staged)
        for row in staged.ledger:
            progress.outcomes[row["outcome"]] += row["count"]
        update_progress_artifact(artifact, progress.percent, description=_describe(progress))
        _notify(progress)
    results = [future.result() for future in futures]
    create_table_artifact([_partition_row(s) for s in results], key="partitions",
                          description="Every partition: records by outcome (before global dedup) and staged MB")
    return results


def _notify(progress: BuildProgress) -> None:
    for listener in list(_listeners):
        listener(progress)


def _describe(progress: BuildProgress) -> str:
    return f"Partitions processed: {progress.line()} (duplicates across partitions are found after)"


def _staged_bytes(staged: StagedPartition) -> int:
    return sum(storage.size(uri) for uri in (staged.documents_path, staged.rejects_path))


def _partition_row(staged: StagedPartition) -> dict:
    counts = dict.fromkeys(OUTCOMES, 0)
    for row in staged.ledger:
        counts[row["outcome"]] += row["count"]
    return {"partition": staged.name, "source": staged.source, "read": sum(counts.values()), **counts,
            "staged MB": round(_staged_bytes(staged) / 1e6, 3)}

"""The one shape every processing stage has: a batch in, the same rows out with columns added.

A stage declares the columns it reads and the columns it adds, so a chain in the wrong order fails when it
is built, not an hour into a run. A stage that drops rows does not remove them itself: it returns a reason
per row (null keeps the row); the runner splits the batch and turns drops into reject rows with that reason,
so every drop is counted and kept for audit in the same way.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.schema import DOCUMENT_SCHEMA, Ledger, rejects_from_documents


@dataclass(frozen=True)
class StageResult:
    batch: pa.RecordBatch  # every input row, with the stage's columns added or its text column replaced
    drop_reasons: pa.Array | None = None  # string per row: null keeps it, otherwise why it is filtered
    # What the stage did to rows without dropping them (e.g. "pii:email" redactions), summed per partition
    # into the build's notes so a reviewer sees it without reading the shards.
    counts: Mapping[str, int] | None = None


class Stage(Protocol):
    name: str
    reads: tuple[str, ...]
    adds: tuple[str, ...]

    def __call__(self, batch: pa.RecordBatch) -> StageResult: ...


class StageOrderError(ValueError):
    """A stage reads a column that no earlier stage (nor the reader) provides."""


def check_chain(stages: Sequence[Stage], input_columns: Sequence[str] = DOCUMENT_SCHEMA.names) -> list[str]:
    """Validate the chain's column contract; returns the columns its output will have."""
    available = list(input_columns)
    for stage in stages:
        missing = [c for c in stage.reads if c not in available]
        if missing:
            raise StageOrderError(
                f"stage {stage.name!r} reads {missing}, which no earlier stage provides "
                f"(available: {available})"
            )
        available += [c for c in stage.adds if c not in available]
    return available


def set_column(batch: pa.RecordBatch, name: str, values: pa.Array) -> pa.RecordBatch:
    """A new batch with `name` replaced or appended; the input batch is left as it is."""
    if name in batch.schema.names:
        index = batch.schema.get_field_index(name)
        field = batch.schema.field(index).with_type(values.type)
        return batch.set_column(index, field, values)
    return batch.append_column(name, values)


@dataclass
class ChainOutput:
    kept: pa.RecordBatch
    rejects: list[pa.Table]
    counts: Counter = field(default_factory=Counter)  # the stages' counts, summed


def run_stages(stages: Sequence[Stage], batch: pa.RecordBatch, ledger: Ledger) -> ChainOutput:
    """Run a batch through the chain; drops become reject rows (outcome filtered) and ledger counts."""
    rejects: list[pa.Table] = []
    counts: Counter = Counter()
    for stage in stages:
        if batch.num_rows == 0:
            break
        result = stage(batch)
        batch = result.batch
        counts.update(result.counts or {})
        if result.drop_reasons is None or result.drop_reasons.null_count == len(result.drop_reasons):
            continue
        dropped_mask = pc.is_valid(result.drop_reasons)
        dropped = batch.filter(dropped_mask)
        reasons = result.drop_reasons.filter(dropped_mask).to_pylist()
        table = rejects_from_documents(dropped, outcome="filtered", reasons=reasons, stage=stage.name)
        ledger.add_rejects(table)
        rejects.append(table)
        batch = batch.filter(pc.invert(dropped_mask))
    return ChainOutput(kept=batch, rejects=rejects, counts=counts)

"""Drop rate per label per source, and the skews that would bias a model trained on what is kept.

A filter that drops angry reviews more often than happy ones leaves a sentiment model a skewed sample.
For every labelled source this counts, per label, the records read (kept + dropped) and those dropped by
the given outcomes (by default the filters: `filtered`), and flags a source where one label's drop rate
is more than `max_ratio` times another's. Labels with too few records, or skews resting on too few
drops, are not flagged: a handful of records says nothing about a rule.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc


DEFAULT_MAX_RATIO = 2.0
DEFAULT_MIN_RECORDS = 100  # records of a label read before its drop rate is compared
DEFAULT_MIN_DROPS = 10  # drops of the more-dropped label before a skew is flagged


@dataclass(frozen=True)
class LabelDropRate:
    source: str
    label: str
    read: int  # kept + dropped records with this label
    dropped: int

    @property
    def rate(self) -> float:
        return self.dropped / self.read if self.read else 0.0


@dataclass(frozen=True)
class LabelSkew:
    source: str
    most_dropped: LabelDropRate
    least_dropped: LabelDropRate

    @property
    def ratio(self) -> float:  # inf when the least-dropped label lost nothing
        low = self.least_dropped.rate
        return self.most_dropped.rate / low if low else float("inf")

    def message(self) -> str:
        high, low = self.most_dropped, self.least_dropped
        return (f"{self.source}: label {high.label!r} is dropped at {high.rate:.1%} ({high.dropped}/{high.read}), "
                f"{self.ratio:.1f}x label {low.label!r} at {low.rate:.1%} ({low.dropped}/{low.read})")


class LabelsMissing(ValueError):
    """The rejects hold no label column: they were written before rejects carried labels."""


class LabelTally:
    """Records read and dropped per (source, label), fed table by table, so a build counts them as it streams."""

    def __init__(self, outcomes: Sequence[str] = ("filtered",)) -> None:
        self.outcomes = pa.array(list(outcomes))
        self.read: Counter = Counter()
        self.lost: Counter = Counter()

    def add_kept(self, table: pa.Table) -> None:
        self.read.update(_source_labels(table))

    def add_dropped(self, table: pa.Table) -> None:
        """Reject rows (source, label, outcome); drops of other outcomes count as neither read nor dropped."""
        if "label" not in table.column_names:
            raise LabelsMissing("rejects carry no label column; rebuild the version to compare drop rates per label")
        counts = _source_labels(table.filter(pc.is_in(table.column("outcome"), value_set=self.outcomes)))
        self.read.update(counts)
        self.lost.update(counts)

    def rates(self) -> list[LabelDropRate]:
        return [LabelDropRate(source, label, self.read[(source, label)], self.lost[(source, label)])
                for source, label in sorted(self.read)]


def drop_rates_by_label(
    kept: Iterable[pa.Table], dropped: Iterable[pa.Table], outcomes: Sequence[str] = ("filtered",)
) -> list[LabelDropRate]:
    """Rates per (source, label) from kept tables (columns source, label) and reject tables (source,
    label, outcome). Unlabelled records are left out, so unlabelled sources give no rows."""
    tally = LabelTally(outcomes)
    for table in kept:
        tally.add_kept(table)
    for table in dropped:
        tally.add_dropped(table)
    return tally.rates()


def _source_labels(table: pa.Table) -> Counter:
    pairs = zip(table.column("source").to_pylist(), table.column("label").to_pylist())
    return Counter((source, label) for source, label in pairs if label is not None)


def label_skews(
    rates: Sequence[LabelDropRate],
    max_ratio: float = DEFAULT_MAX_RATIO,
    min_records: int = DEFAULT_MIN_RECORDS,
    min_drops: int = DEFAULT_MIN_DROPS,
) -> list[LabelSkew]:
    """Per source, the most- against the least-dropped label among those with `min_records`, when the
    first is dropped more than `max_ratio` times as often and at least `min_drops` times."""
    skews = []
    for source in sorted({r.source for r in rates}):
        comparable = [r for r in rates if r.source == source and r.read >= min_records]
        if len(comparable) < 2:
            continue
        high = max(comparable, key=lambda r: (r.rate, r.label))
        low = min(comparable, key=lambda r: (r.rate, r.label))
        skew = LabelSkew(source, high, low)
        if high.dropped >= min_drops and skew.ratio > max_ratio:
            skews.append(skew)
    return skews


def rates_by_source(rates: Sequence[LabelDropRate]) -> dict[str, dict[str, dict[str, float]]]:
    """source -> label -> {read, dropped, rate}: the JSON shape for a manifest or an artifact."""
    table: dict[str, dict[str, dict[str, float]]] = {}
    for r in rates:
        table.setdefault(r.source, {})[r.label] = {"read": r.read, "dropped": r.dropped, "rate": round(r.rate, 6)}
    return table

"""Shards written where the documents are: one writing task per partition, or per run of small partitions;
then validation tasks, each over a batch of shards of one contract.

A writing task reads its partitions' staged documents and rejects, drops the documents the dedup
resolution decided are duplicates (renaming first those whose id an earlier document took), and writes the
kept ones into split/lang shards and every drop into rejects shards. Shards are named after the group's
first partition,

    data/<split>/<source>-<partition index>-<lang>-NNNNN.arrow      rejects/<source>-<partition index>-NNNNN.arrow

so the layout follows the partitions' order and the rows' order inside each, never the number of workers.
Groups are cut from the partitions' record counts alone, for the same reason.

Validation is batched across groups (`validation_batches`): a Great Expectations run costs about a third of
a second whatever its rows (it builds a graph of metrics per expectation), so one run per contract over
up to `runner.validation_batch_rows` rows, not one per group and contract. A batch that fails anything is
validated again shard by shard (contracts.validate_shards), so the manifest records each shard's own
result, and batching never shows in it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from pipeline import contracts, plots, storage, versions
from pipeline.config import ContractsConfig, CorpusflowConfig
from pipeline.dedup import REPEATED_ID_NOTE, apply_renames
from pipeline.label_skew import LabelDropRate, LabelTally
from pipeline.schema import LEDGER_SCHEMA, Ledger, ShardRecord, rejects_from_documents
from pipeline.shards import ShardSink, shard_record, split_of, write_shard
from pipeline.steps.dedup_step import DedupDecisions
from pipeline.steps.partitions import StagedPartition


@dataclass(frozen=True)
class WritingGroup:
    """Consecutive partitions of one source whose shards one task writes."""

    partitions: tuple[StagedPartition, ...]

    @property
    def name(self) -> str:
        """How the task reads in the UI: its first partition, and how many more."""
        first = self.partitions[0].name
        return first if len(self.partitions) == 1 else f"{first} and {len(self.partitions) - 1} more"


@dataclass(frozen=True)
class WrittenGroup:
    """What a writing task wrote (paths relative to the staging root) and counted."""

    shards: list[ShardRecord]
    rejects: list[ShardRecord]
    ledger_rows: list[dict]
    notes: dict[str, dict[str, int]]  # source -> what the stages did to kept rows
    label_drop_rates: list[LabelDropRate]


@dataclass(frozen=True)
class AssembledDataset:
    """Every writing task's output in partition order: the staged version the manifest describes."""

    staging: str  # absolute path or URL holding data/, rejects/
    shards: list[ShardRecord]
    rejects: list[ShardRecord]
    ledger_rows: list[dict]
    notes_by_source: dict[str, dict[str, int]]
    label_drop_rates: list[LabelDropRate]  # per labelled source and label: read, filtered

    @property
    def usable_shards(self) -> list[ShardRecord]:
        return [shard for shard in self.shards if shard.usable]

    @property
    def quarantined(self) -> list[ShardRecord]:
        return [shard for shard in self.shards if not shard.usable]


def plan_writing(staged: Sequence[StagedPartition], max_rows: int) -> list[WritingGroup]:
    """Partitions in build order, consecutive ones of a source joined until a group has read `max_rows`
    records: a large partition is a task of its own, small ones share a task and its shards."""
    groups: list[list[StagedPartition]] = []
    held = 0
    for part in sorted(staged, key=lambda p: p.name):
        if not groups or groups[-1][0].source != part.source or held >= max_rows:
            groups.append([])
            held = 0
        groups[-1].append(part)
        held += part.rows
    return [WritingGroup(tuple(group)) for group in groups]


@dataclass(frozen=True)
class ValidationBatch:
    """Shards (paths relative to the staging root) that one task validates against one suite."""

    suite: str
    shards: tuple[str, ...]
    sha256s: tuple[str, ...]

    @property
    def name(self) -> str:
        first = self.shards[0].rsplit("/", 1)[-1].removesuffix(".arrow")
        return first if len(self.shards) == 1 else f"{first} and {len(self.shards) - 1} more"


def write_group(config: CorpusflowConfig, group: WritingGroup, decisions: DedupDecisions, staging: str) -> WrittenGroup:
    """Write one group's shards and rejects under `staging`."""
    first = group.partitions[0]
    source = first.source
    data_sinks: dict[tuple[str, str], ShardSink] = {}
    reject_sink = ShardSink(storage.join(staging, "rejects"), first.name, config.shards.max_rows)
    ledger_rows: list[dict] = []
    notes: Counter = Counter()
    labels = LabelTally()
    for part in group.partitions:
        notes.update(part.notes)
        ledger = Ledger.from_rows(part.ledger)
        if storage.exists(part.rejects_path):
            part_rejects = storage.read_arrow_table(part.rejects_path)
            labels.add_dropped(part_rejects)
            reject_sink.add(part_rejects)
        if storage.exists(part.documents_path):
            documents = storage.read_arrow_table(part.documents_path)
            renamed = decisions.renamed_of(part.name)
            if renamed is not None:
                documents = apply_renames(documents, renamed, part.name)
            kept, dropped = _split_duplicates(documents, decisions.duplicates_of(part.name))
            if dropped is not None and dropped.num_rows:
                ledger.add("kept", "", -dropped.num_rows)
                ledger.add_rejects(dropped)
                reject_sink.add(dropped)
            labels.add_kept(kept)
            _route(kept, config, staging, data_sinks, first.name)
        ledger_rows += ledger.to_rows(part.source, part.name)
    for sink in [*data_sinks.values(), reject_sink]:
        sink.flush()
    shards = [shard_record(f, staging, split, source, lang)
              for (split, lang), sink in sorted(data_sinks.items()) for f in sink.written]
    rejects = [shard_record(f, staging, "rejects", source, "") for f in reject_sink.written]
    return WrittenGroup(shards=shards, rejects=rejects, ledger_rows=ledger_rows,
                        notes={source: dict(notes)} if notes else {}, label_drop_rates=labels.rates())


def validation_batches(written: Sequence[WrittenGroup], config: ContractsConfig, batch_rows: int) -> list[ValidationBatch]:
    """The shards of each suite in partition order, cut into batches of at most `batch_rows` rows (a larger
    shard alone); none when contracts are off. Cut from row counts alone, like the groups."""
    if not config.enabled:
        return []
    by_suite = {config.documents_suite: [s for group in written for s in group.shards],
                config.rejects_suite: [r for group in written for r in group.rejects]}
    return [ValidationBatch(suite, tuple(s.path for s in run), tuple(s.sha256 for s in run))
            for suite, shards in by_suite.items()
            for run in contracts.runs_of_rows(shards, lambda shard: shard.rows, batch_rows)]


def validate_batch(batch: ValidationBatch, staging: str, contracts_dir: str, data_docs_dir: str,
                   batch_rows: int) -> list[dict]:
    """Each shard's contract report (named as the manifest names it, wherever the staging lies). The results
    are stored in the Data Docs folder; `render_data_docs` draws the pages of all batches at once."""
    checks = [contracts.ShardCheck(storage.join(staging, path), batch.suite, sha256)
              for path, sha256 in zip(batch.shards, batch.sha256s, strict=True)]
    reports = contracts.validate_shards(checks, contracts_dir, data_docs_dir, batch_rows, render_docs=False)
    for report, path in zip(reports, batch.shards, strict=True):
        report["shard"] = path
    return reports


def _split_duplicates(documents: pa.Table, duplicates: pa.Table | None) -> tuple[pa.Table, pa.Table | None]:
    """(kept, the duplicates as reject rows); None for the latter when the partition has none."""
    if duplicates is None:
        return documents, None
    row_of = pc.index_in(documents.column("id"), value_set=duplicates.column("id").combine_chunks())
    is_duplicate = pc.is_valid(row_of)
    dropped_rows = pc.drop_null(row_of).combine_chunks()
    rejects = rejects_from_documents(
        documents.filter(is_duplicate), outcome="duplicate", stage="dedup",
        reasons=duplicates.column("kind").combine_chunks().take(dropped_rows),
        duplicate_of=duplicates.column("duplicate_of").combine_chunks().take(dropped_rows),
    )
    return documents.filter(pc.invert(is_duplicate)), rejects


def _route(
    kept: pa.Table, config: CorpusflowConfig, staging: str, sinks: dict[tuple[str, str], ShardSink], stem: str,
) -> None:
    splits = pa.array([split_of(i, config.shards.splits) for i in kept.column("id").to_pylist()], pa.string())
    kept = kept.append_column("split", splits)
    groups = kept.select(["split", "lang"]).group_by(["split", "lang"]).aggregate([]).to_pylist()
    for group in sorted(groups, key=lambda g: (g["split"], g["lang"])):
        split, lang = group["split"], group["lang"]
        mask = pc.and_(pc.equal(kept.column("split"), split), pc.equal(kept.column("lang"), lang))
        if (split, lang) not in sinks:
            sinks[(split, lang)] = ShardSink(storage.join(staging, "data", split), f"{stem}-{lang}", config.shards.max_rows)
        sinks[(split, lang)].add(kept.filter(mask))


def render_data_docs(validated: Sequence[Sequence[dict]], data_docs_dir: str) -> str | None:
    """The Data Docs pages of every shard validated, and the folder's index; None without contracts."""
    keys = list(dict.fromkeys(tuple(r["docs_key"]) for reports in validated for r in reports if r.get("docs_key")))
    return contracts.render_data_docs(data_docs_dir, keys) if keys else None


def warm_up() -> None:
    """Import what the global steps' workers need (Great Expectations, matplotlib: seconds) before they do."""
    contracts.warm_up()
    plots.warm_up()


def assemble(written: Sequence[WrittenGroup], repeated_by_source: dict[str, int], staging: str) -> AssembledDataset:
    """The groups' outputs joined in partition order: the dataset as written, before its contracts."""
    notes: dict[str, Counter] = {source: Counter({REPEATED_ID_NOTE: n}) for source, n in repeated_by_source.items() if n}
    read: Counter = Counter()
    lost: Counter = Counter()
    for group in written:
        for source, counts in group.notes.items():
            notes.setdefault(source, Counter()).update(counts)
        for rate in group.label_drop_rates:
            read[(rate.source, rate.label)] += rate.read
            lost[(rate.source, rate.label)] += rate.dropped
    return AssembledDataset(
        staging=staging,
        shards=[s for group in written for s in group.shards],
        rejects=[r for group in written for r in group.rejects],
        ledger_rows=[row for group in written for row in group.ledger_rows],
        notes_by_source={source: dict(sorted(c.items())) for source, c in sorted(notes.items()) if c},
        label_drop_rates=[LabelDropRate(s, label, read[(s, label)], lost[(s, label)]) for s, label in sorted(read)],
    )


def contract_reports(assembled: AssembledDataset, validated: Sequence[Sequence[dict]],
                     ) -> tuple[list[dict | None], list[dict | None]]:
    """The validation tasks' reports in the order of the shards and of the rejects (None for a shard no
    batch validated: contracts off)."""
    by_shard = {report["shard"]: report for reports in validated for report in reports}
    return [by_shard.get(s.path) for s in assembled.shards], [by_shard.get(r.path) for r in assembled.rejects]


def draw_pictures(assembled: AssembledDataset) -> list[str]:
    """The dataset's pictures (plots.plot_dataset) from its usable shards and ledger rows, into its staging."""
    return plots.plot_dataset(assembled.staging, assembled.usable_shards, ledger_table(assembled.ledger_rows))


def ledger_table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, LEDGER_SCHEMA)


def write_ledger(staging: str, rows: list[dict]) -> None:
    write_shard(ledger_table(rows), storage.join(staging, versions.LEDGER))

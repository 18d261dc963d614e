"""Assembly: kept documents into deterministic split/source/lang shards, every drop into rejects shards."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from pipeline import storage, versions
from pipeline.build.partitions import StagedPartition
from pipeline.config import CorpusflowConfig
from pipeline.dedup import REPEATED_ID_NOTE, apply_renames
from pipeline.label_skew import LabelDropRate, LabelTally
from pipeline.schema import LEDGER_SCHEMA, Ledger, ShardRecord, rejects_from_documents
from pipeline.shards import ShardSink, shard_record, split_of, write_shard

@dataclass(frozen=True)
class AssembledDataset:
    staging: str  # local directory holding data/, rejects/, ledger.arrow
    shards: list[ShardRecord]
    rejects: list[ShardRecord]
    ledger_rows: list[dict]
    notes_by_source: dict[str, dict[str, int]]
    label_drop_rates: list[LabelDropRate]  # per labelled source and label: read, filtered


def assemble(
    config: CorpusflowConfig, staged: Sequence[StagedPartition], duplicates: pa.Table, renamed: pa.Table,
    repeated_by_source: dict[str, int], staging: Path,
) -> AssembledDataset:
    """Write the kept documents into split/source/lang shards and every drop into rejects shards.

    `duplicates` and `renamed` are the global step's decisions: documents that arrived under an id another
    already had take their new id first, then duplicates are set apart by id.

    Order is the partitions' order (sorted by source, then partition index) and the rows' order inside
    each, which do not depend on how many workers ran, so the shards are byte-identical across runs.
    """
    duplicate_of = dict(zip(duplicates.column("id").to_pylist(), duplicates.column("duplicate_of").to_pylist()))
    duplicate_kind = dict(zip(duplicates.column("id").to_pylist(), duplicates.column("kind").to_pylist()))
    data_sinks: dict[tuple[str, str, str], ShardSink] = {}
    reject_sinks: dict[str, ShardSink] = {}
    ledger_rows: list[dict] = []
    notes: dict[str, Counter] = {source: Counter({REPEATED_ID_NOTE: n}) for source, n in repeated_by_source.items() if n}
    labels = LabelTally()
    for part in sorted(staged, key=lambda p: p.name):
        notes.setdefault(part.source, Counter()).update(part.notes)
        ledger = Ledger.from_rows(part.ledger)
        reject_sink = reject_sinks.setdefault(
            part.source, ShardSink(staging / "rejects", part.source, config.shards.max_rows))
        if part.rejects_path.exists():
            part_rejects = storage.read_arrow_table(str(part.rejects_path))
            labels.add_dropped(part_rejects)
            reject_sink.add(part_rejects)
        for documents in _documents_of(part):
            documents = apply_renames(documents, renamed, part.name)
            kept, dropped = _split_duplicates(documents, duplicate_of, duplicate_kind)
            if dropped.num_rows:
                ledger.add("kept", "", -dropped.num_rows)
                ledger.add_rejects(dropped)
                reject_sink.add(dropped)
            labels.add_kept(kept)
            _route(kept, config, staging, data_sinks, part.source)
        ledger_rows += ledger.to_rows(part.source, part.name)
    for sink in [*data_sinks.values(), *reject_sinks.values()]:
        sink.flush()
    shards = [shard_record(f, staging, split, source, lang)
              for (split, source, lang), sink in sorted(data_sinks.items()) for f in sink.written]
    rejects = [shard_record(f, staging, "rejects", source, "")
               for source, sink in sorted(reject_sinks.items()) for f in sink.written]
    notes_by_source = {source: dict(sorted(counts.items())) for source, counts in sorted(notes.items()) if counts}
    return AssembledDataset(staging=str(staging), shards=shards, rejects=rejects, ledger_rows=ledger_rows,
                            notes_by_source=notes_by_source, label_drop_rates=labels.rates())


def _documents_of(part: StagedPartition) -> Iterator[pa.Table]:
    if part.documents_path.exists():
        yield storage.read_arrow_table(str(part.documents_path))


def _split_duplicates(
    documents: pa.Table, duplicate_of: dict[str, str], duplicate_kind: dict[str, str]
) -> tuple[pa.Table, pa.Table]:
    is_duplicate = pc.is_in(documents.column("id"), value_set=pa.array(list(duplicate_of), pa.string()))
    dropped = documents.filter(is_duplicate)
    ids = dropped.column("id").to_pylist()
    rejects = rejects_from_documents(
        dropped, outcome="duplicate", reasons=[duplicate_kind[i] for i in ids], stage="dedup",
        duplicate_of=[duplicate_of[i] for i in ids],
    )
    return documents.filter(pc.invert(is_duplicate)), rejects


def _route(
    kept: pa.Table, config: CorpusflowConfig, staging: Path, sinks: dict[tuple[str, str, str], ShardSink],
    source: str,
) -> None:
    splits = pa.array([split_of(i, config.shards.splits) for i in kept.column("id").to_pylist()], pa.string())
    kept = kept.append_column("split", splits)
    groups = kept.select(["split", "lang"]).group_by(["split", "lang"]).aggregate([]).to_pylist()
    for group in sorted(groups, key=lambda g: (g["split"], g["lang"])):
        split, lang = group["split"], group["lang"]
        mask = pc.and_(pc.equal(kept.column("split"), split), pc.equal(kept.column("lang"), lang))
        key = (split, source, lang)
        if key not in sinks:
            sinks[key] = ShardSink(staging / "data" / split, f"{source}-{lang}", config.shards.max_rows)
        sinks[key].add(kept.filter(mask))


def write_ledger(staging: Path, rows: list[dict]) -> None:
    write_shard(pa.Table.from_pylist(rows, LEDGER_SCHEMA), staging / versions.LEDGER)

"""The build's steps as plain functions: process one partition, deduplicate across all, write the shards.

The flow in flows/build_corpus.py calls these; each takes and returns small records (paths and counts),
never data, so they can run in another process or on another machine.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from functools import cache
from importlib import metadata
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.config import CorpusflowConfig, SourceConfig
from pipeline.dedup import PREVIOUS_RANK, ContentHashStage, MinHashStage, find_duplicates
from pipeline.schema import (
    LEDGER_SCHEMA,
    REJECT_SCHEMA,
    InputRecord,
    Ledger,
    Manifest,
    ShardRecord,
    rejects_from_documents,
)
from pipeline.shards import ShardSink, load_manifest, read_shard, shard_record, split_of, write_atomic_text, write_shard
from pipeline.sources import read_partition
from pipeline.sources.base import Partition
from pipeline.stages import Stage, check_chain, run_stages
from pipeline.text import build_text_stages

# Sections of the config that change what a partition's processing produces: its cache key covers them.
PARTITION_SECTIONS = ("normalize", "script", "pii", "langid", "segment", "quality", "dedup")
STAGED_ONLY_COLUMNS = ("minhash",)  # needed for the global dedup step, not worth keeping in shards
LIBRARIES = ("pyarrow", "jieba", "opencc", "py3langid", "datasketch", "mwparserfromhell", "trafilatura",
             "great-expectations", "prefect")


@cache
def code_version() -> str:
    """Hash of the library's source: changes whenever any code that shapes the output changes."""
    digest = hashlib.sha256()
    root = Path(__file__).parent
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.suffix in (".py", ".txt", ".json"):
            digest.update(path.relative_to(root).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def library_versions() -> dict[str, str]:
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def partition_key(config: CorpusflowConfig, source: SourceConfig, partition: Partition) -> str:
    """Cache key of a partition: its input, the config that touches it and the code version."""
    payload = {
        "partition": asdict(partition),
        "source": source.model_dump(mode="json"),
        "sections": config.section_hash(*PARTITION_SECTIONS),
        "code": code_version(),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]


@dataclass(frozen=True)
class StagedPartition:
    """Where a processed partition's kept documents and drops lie, and what happened to its records."""

    source: str
    name: str
    directory: str
    ledger: list[dict]
    notes: dict[str, int]  # what the stages did to kept rows (e.g. "pii:email"): counts, not outcomes

    @property
    def documents_path(self) -> Path:
        return Path(self.directory) / "documents.arrow"

    @property
    def rejects_path(self) -> Path:
        return Path(self.directory) / "rejects.arrow"


def processing_stages(config: CorpusflowConfig, workers: int = 1) -> list[Stage]:
    stages = [*build_text_stages(config, workers), ContentHashStage(), MinHashStage(config.dedup)]
    check_chain(stages)
    return stages


def process_partition(
    config: CorpusflowConfig, source: SourceConfig, partition: Partition, work_dir: Path
) -> StagedPartition:
    """Read, clean, segment, filter and fingerprint one partition into a staging directory.

    The directory appears complete or not at all (built aside, then renamed), so an interrupted build
    resumes by skipping every partition whose directory exists.
    """
    final = Path(work_dir) / "partitions" / f"{partition.name}-{partition_key(config, source, partition)}"
    if (final / "ledger.json").exists():
        return _load_staged(source.name, partition.name, final)
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    ledger = Ledger()
    notes: Counter = Counter()
    stages = processing_stages(config)
    with _StreamFile(tmp / "documents.arrow") as documents, _StreamFile(tmp / "rejects.arrow") as rejects:
        for read in read_partition(source, partition):
            ledger.add_rejects(read.rejects)
            rejects.write(pa.Table.from_batches([read.rejects], REJECT_SCHEMA))
            chain = run_stages(stages, read.documents, ledger)
            notes.update(chain.counts)
            for dropped in chain.rejects:
                rejects.write(dropped)
            ledger.add("kept", "", chain.kept.num_rows)
            documents.write(pa.Table.from_batches([chain.kept]))
    write_atomic_text(tmp / "notes.json", json.dumps(dict(sorted(notes.items()))))
    write_atomic_text(tmp / "ledger.json", json.dumps(ledger.to_rows(source.name, partition.name)))
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    return _load_staged(source.name, partition.name, final)


def _load_staged(source: str, name: str, directory: Path) -> StagedPartition:
    rows = json.loads((directory / "ledger.json").read_text())
    notes = json.loads((directory / "notes.json").read_text())
    return StagedPartition(source=source, name=name, directory=str(directory), ledger=rows, notes=notes)


class _StreamFile:
    """An Arrow IPC stream opened on the first table written, so it takes that table's schema."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._sink: pa.OSFile | None = None
        self._writer: pa.ipc.RecordBatchStreamWriter | None = None
        self._schema: pa.Schema | None = None

    def __enter__(self) -> _StreamFile:
        return self

    def write(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        if self._writer is None:
            self._schema = table.schema
            self._sink = pa.OSFile(str(self.path), "wb")
            self._writer = pa.ipc.new_stream(self._sink, self._schema)
        self._writer.write_table(table if table.schema == self._schema else table.cast(self._schema))

    def __exit__(self, *_: object) -> None:
        if self._writer is not None:
            self._writer.close()
            self._sink.close()


# ---- global steps -------------------------------------------------------------------------------------


def dedup_keys(config: CorpusflowConfig, staged: Sequence[StagedPartition]) -> pa.Table:
    """The columns the global dedup step needs from every kept document; no text."""
    rank_of = {source.name: rank for rank, source in enumerate(config.sources)}
    tables = []
    for part in staged:
        if part.documents_path.exists():
            keys = read_shard(part.documents_path, ["id", "source", "lang", "content_hash", "minhash"])
            tables.append(keys.append_column("rank", pa.array([rank_of[part.source]] * keys.num_rows, pa.int32())))
    if not tables:
        return pa.table({"id": pa.array([], pa.string())})
    keys = pa.concat_tables(tables, promote_options="permissive")
    if config.dedup.against_previous:
        previous = previous_version_keys(config, config.dedup.against_previous, keys.column("id"))
        if previous.num_rows:
            keys = pa.concat_tables([keys, previous.select(keys.column_names).cast(keys.schema)])
    return keys


def previous_version_keys(config: CorpusflowConfig, manifest_path: str, current_ids: pa.ChunkedArray) -> pa.Table:
    """Keys of an earlier version's documents that this build does not hold itself, ranked to win ties.

    Final shards keep no signatures, so they are computed again from the stored text.
    """
    manifest = load_manifest(manifest_path)
    root = manifest_path.rsplit("/", 1)[0]
    minhash = MinHashStage(config.dedup)
    tables = []
    for shard in manifest.usable_shards():
        documents = read_shard(f"{root}/{shard.path}", ["id", "source", "lang", "text", "content_hash"])
        documents = documents.filter(pc.invert(pc.is_in(documents.column("id"), value_set=current_ids)))
        for batch in documents.to_batches():
            signed = minhash(batch).batch
            tables.append(pa.Table.from_batches([signed]).drop_columns(["text"]).append_column(
                "rank", pa.array([PREVIOUS_RANK] * signed.num_rows, pa.int32())))
    return pa.concat_tables(tables) if tables else pa.table({})


def write_duplicates(config: CorpusflowConfig, staged: Sequence[StagedPartition], work_dir: Path) -> Path:
    """Find duplicates across every partition; their ids go to a file named by the partitions it covers."""
    keys = dedup_keys(config, staged)
    if keys.num_rows == 0 or not (config.dedup.exact or config.dedup.near):
        duplicates = pa.table({"id": pa.array([], pa.string()), "duplicate_of": pa.array([], pa.string()),
                               "kind": pa.array([], pa.string())})
    else:
        duplicates = find_duplicates(keys, config.dedup)
    covered = hashlib.sha256("\n".join(sorted(p.directory for p in staged)).encode()).hexdigest()[:16]
    return write_shard(duplicates, Path(work_dir) / "dedup" / f"duplicates-{covered}.arrow").path


@dataclass(frozen=True)
class AssembledDataset:
    staging: str  # local directory holding data/, rejects/, ledger.arrow
    shards: list[ShardRecord]
    rejects: list[ShardRecord]
    ledger_rows: list[dict]
    notes_by_source: dict[str, dict[str, int]]


def assemble(
    config: CorpusflowConfig, staged: Sequence[StagedPartition], duplicates: pa.Table, staging: Path
) -> AssembledDataset:
    """Write the kept documents into split/source/lang shards and every drop into rejects shards.

    Order is the partitions' order (sorted by source, then partition index) and the rows' order inside
    each, which do not depend on how many workers ran, so the shards are byte-identical across runs.
    """
    duplicate_of = dict(zip(duplicates.column("id").to_pylist(), duplicates.column("duplicate_of").to_pylist()))
    duplicate_kind = dict(zip(duplicates.column("id").to_pylist(), duplicates.column("kind").to_pylist()))
    data_sinks: dict[tuple[str, str, str], ShardSink] = {}
    reject_sinks: dict[str, ShardSink] = {}
    ledger_rows: list[dict] = []
    notes: dict[str, Counter] = {}
    for part in sorted(staged, key=lambda p: p.name):
        notes.setdefault(part.source, Counter()).update(part.notes)
        ledger = Ledger.from_rows(part.ledger)
        reject_sink = reject_sinks.setdefault(
            part.source, ShardSink(staging / "rejects", part.source, config.shards.max_rows))
        if part.rejects_path.exists():
            reject_sink.add(read_shard(part.rejects_path))
        for documents in _documents_of(part):
            kept, dropped = _split_duplicates(documents, duplicate_of, duplicate_kind)
            if dropped.num_rows:
                ledger.add("kept", "", -dropped.num_rows)
                ledger.add_rejects(dropped)
                reject_sink.add(dropped)
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
                            notes_by_source=notes_by_source)


def _documents_of(part: StagedPartition) -> Iterator[pa.Table]:
    if part.documents_path.exists():
        table = read_shard(part.documents_path)
        yield table.drop_columns([c for c in STAGED_ONLY_COLUMNS if c in table.column_names])


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
    write_shard(pa.Table.from_pylist(rows, LEDGER_SCHEMA), staging / "ledger.arrow")


def build_manifest(
    config: CorpusflowConfig,
    inputs: list[InputRecord],
    assembled: AssembledDataset,
    shards: list[ShardRecord],
    contract_versions: dict[str, str],
) -> Manifest:
    ledger = Ledger.from_rows(assembled.ledger_rows)
    by_source: dict[str, Ledger] = {}
    for row in assembled.ledger_rows:
        by_source.setdefault(row["source"], Ledger()).add(row["outcome"], row["reason"], row["count"])
    manifest = Manifest(
        dataset=config.dataset,
        config_hash=config.config_hash(),
        code_version=code_version(),
        libraries=library_versions(),
        inputs=sorted(inputs, key=lambda i: (i.source, i.uri)),
        shards=[s for s in shards if s.usable],
        quarantined=[s for s in shards if not s.usable],
        rejects=assembled.rejects,
        ledger_totals=ledger.totals(),
        ledger_by_source={name: by_source[name].totals() for name in sorted(by_source)},
        notes_by_source=assembled.notes_by_source,
        contracts=contract_versions,
    )
    return manifest.model_copy(update={"version": manifest.content_hash()})


class AccountingError(RuntimeError):
    """Rows in shards and rejects do not add up to the records read: a bug, never a data problem."""


def check_accounting(manifest: Manifest) -> None:
    totals = manifest.ledger_totals
    kept_rows = sum(s.rows for s in manifest.shards) + sum(s.rows for s in manifest.quarantined)
    dropped_rows = sum(s.rows for s in manifest.rejects)
    if kept_rows != totals["kept"] or dropped_rows != totals["read"] - totals["kept"]:
        raise AccountingError(
            f"ledger says kept={totals['kept']} dropped={totals['read'] - totals['kept']}, "
            f"shards hold kept={kept_rows} dropped={dropped_rows}"
        )

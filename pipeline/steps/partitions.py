"""Process one partition: read, clean, segment, filter and fingerprint its records into a staging directory."""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow as pa

from pipeline import storage
from pipeline.steps.paths import working_directory
from pipeline.steps.provenance import code_version
from pipeline.config import CorpusflowConfig, SourceConfig
from pipeline.dedup import KEYS_FILE_NAME, ContentHashStage, DedupKeysWriter, MinHashStage
from pipeline.schema import REJECT_SCHEMA, Ledger, documents_batch
from pipeline.sources import read_partition
from pipeline.sources.base import Partition
from pipeline.stages import Stage, check_chain, run_stages
from pipeline.text import build_text_stages

# Sections of the config that change what a partition's processing produces: its cache key covers them.
PARTITION_SECTIONS = ("wiki", "normalize", "script", "pii", "langid", "segment", "quality", "dedup")
# Signatures go to the partition's dedup key file; the documents file keeps only what the shards hold.
STAGED_ONLY_COLUMNS = ["minhash"]


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
    """Where a processed partition's kept documents and drops lie, and what happened to its records.

    `directory` is an absolute path or a URL under the build's work URL, so any node can read it.
    """

    source: str
    name: str
    directory: str
    ledger: list[dict]
    notes: dict[str, int]  # what the stages did to kept rows (e.g. "pii:email"): counts, not outcomes

    @property
    def documents_path(self) -> str:
        return storage.join(self.directory, "documents.arrow")

    @property
    def keys_path(self) -> str:
        return storage.join(self.directory, KEYS_FILE_NAME)

    @property
    def rejects_path(self) -> str:
        return storage.join(self.directory, "rejects.arrow")

    @property
    def rows(self) -> int:
        """Records this partition read, whatever their outcome."""
        return sum(row["count"] for row in self.ledger)


def largest_first(planned: Sequence[Partition]) -> list[Partition]:
    """The order partitions are handed to workers: largest first by the bytes planning measured (those of
    unknown size after, in plan order), so the last to finish are short and no worker idles long at the
    end. What a partition produces does not depend on when it runs."""
    return sorted(planned, key=lambda partition: -(partition.size or 0))


def in_plan_order(staged: Sequence[StagedPartition], planned: Sequence[Partition]) -> list[StagedPartition]:
    position = {partition.name: index for index, partition in enumerate(planned)}
    return sorted(staged, key=lambda partition: position[partition.name])


def staged_directory(config: CorpusflowConfig, source: SourceConfig, partition: Partition, work_uri: str) -> str:
    """Where a partition's files are staged: named by the partition and its cache key, under the work URL."""
    return storage.join(work_uri, "partitions", f"{partition.name}-{partition_key(config, source, partition)}")


def processing_stages(config: CorpusflowConfig) -> list[Stage]:
    stages = [*build_text_stages(config), ContentHashStage(), MinHashStage(config.dedup)]
    check_chain(stages)
    return stages


# Two short documents that pass through every stage: traditional script (OpenCC), Chinese and English.
WARM_UP_TEXTS = {"zh": "這家店的東西很好，物流也快，下次還會再來買。", "en": "The parcel came early and works better than expected."}


def warm_up(config: CorpusflowConfig) -> None:
    """Run the chain once over two short documents, so its dictionaries and models load before real work."""
    rows = [{"id": f"warm-up-{lang}", "source": "warm-up", "kind": "comments", "lang": lang, "text": text,
             "meta": {}} for lang, text in WARM_UP_TEXTS.items()]
    run_stages(processing_stages(config), documents_batch(rows), Ledger())


def process_partition(
    config: CorpusflowConfig, source: SourceConfig, partition: Partition, work_uri: str, base_dir: str,
) -> StagedPartition:
    """Read, clean, segment, filter and fingerprint one partition into its staging directory.

    The directory appears complete or not at all (built aside, then renamed; on an object store uploaded
    with its ledger last), so an interrupted build resumes by skipping every partition whose ledger exists.
    Inputs keep the names the config gives them (documents and rejects record them), so a relative one
    is read from `base_dir`, the directory the build started in, whatever directory this worker runs in.
    """
    final = staged_directory(config, source, partition, work_uri)
    if storage.exists(storage.join(final, "ledger.json")):
        return _load_staged(source.name, partition.name, final)
    with working_directory(base_dir):
        if storage.is_local(final):
            tmp = Path(final + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            _process_into(config, source, partition, tmp)
            shutil.rmtree(final, ignore_errors=True)
            tmp.rename(final)
        else:
            with tempfile.TemporaryDirectory(prefix="corpusflow-partition-") as tmp:
                _process_into(config, source, partition, Path(tmp))
                storage.remove_tree(final)
                storage.copy_tree(tmp, final, last="ledger.json")
    return _load_staged(source.name, partition.name, final)


def _process_into(config: CorpusflowConfig, source: SourceConfig, partition: Partition, tmp: Path) -> None:
    ledger = Ledger()
    notes: Counter = Counter()
    stages = processing_stages(config)
    with (_StreamFile(tmp / "documents.arrow") as documents, _StreamFile(tmp / "rejects.arrow") as rejects,
          DedupKeysWriter(tmp / KEYS_FILE_NAME, config.dedup) as keys):
        for read in read_partition(source, partition, wiki=config.wiki):
            ledger.add_rejects(read.rejects)
            rejects.write(pa.Table.from_batches([read.rejects], REJECT_SCHEMA))
            chain = run_stages(stages, read.documents, ledger)
            notes.update(chain.counts)
            for dropped in chain.rejects:
                rejects.write(dropped)
            ledger.add("kept", "", chain.kept.num_rows)
            keys.write(chain.kept)
            kept = pa.Table.from_batches([chain.kept])
            documents.write(kept.drop_columns([c for c in STAGED_ONLY_COLUMNS if c in kept.column_names]))
    storage.write_text(str(tmp / "notes.json"), json.dumps(dict(sorted(notes.items()))))
    storage.write_text(str(tmp / "ledger.json"), json.dumps(ledger.to_rows(source.name, partition.name)))


def staged_key(staged: Sequence[StagedPartition]) -> str:
    """Names what the global steps derive from these partitions (dedup files, the shards' staging dir)."""
    return hashlib.sha256("\n".join(sorted(p.directory for p in staged)).encode()).hexdigest()[:16]


def _load_staged(source: str, name: str, directory: str) -> StagedPartition:
    rows = json.loads(storage.read_text(storage.join(directory, "ledger.json")))
    notes = json.loads(storage.read_text(storage.join(directory, "notes.json")))
    return StagedPartition(source=source, name=name, directory=directory, ledger=rows, notes=notes)


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

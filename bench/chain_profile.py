"""Per-stage cost of one partition's processing, as a share of raw `jieba.lcut` over the same texts.

    python bench/chain_profile.py [--data ../shared/data] [--limit 20000] [--record-digests]

For each data set (the online-shopping reviews, a zipped CSV; the TNEWS headlines, JSON lines), in one
process and one core: the reader is timed over the first `--limit` records, raw `jieba.lcut` (jieba's
global tokenizer, HMM on, as shipped) over the texts read, then every stage of the partition chain
(`pipeline.steps.processing_stages` with one worker: normalize .. quality filter, content hash, MinHash).
Models (jieba's dictionary, py3langid's model), OpenCC's dictionaries and lookup tables are loaded before
timing: a build loads them once per worker process.

Times are CPU seconds of this process (time.process_time): on a machine shared with other work, wall time
swings with their load while CPU time measures what each step costs a core. Each figure is printed as
seconds and as a ratio to raw jieba's seconds; "chain per core" is raw jieba's
time over the time of reading plus every stage (1.0 = as fast as jieba alone). The targets: segment stage
<= 1.0, reading <= 0.05, all other stages together <= 0.15.

The output of the chain (kept rows, reject rows, ledger and stage counts) is hashed and compared with the
digests recorded in bench/results/chain_output_digests.json: a speed change must not change one byte of
the output. Records name their file, so the data directory is replaced by <data> before hashing: the
digests hold wherever the data lies. A change that alters the output on purpose (a filter rule, a reader,
a column) re-records them with `--record-digests`, in the same commit, saying so; the digests were last
recorded by the code of 2026-12-06, after checking that the output had not changed since the last such
change (the merge of the relaxed filters).
Results go to bench/results/chain_profile-<date>.json.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import platform
import time
from collections import Counter
from pathlib import Path

import jieba
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.steps.partitions import processing_stages
from pipeline.config import CorpusflowConfig, SourceConfig, parse_config
from pipeline.schema import REJECT_SCHEMA, Ledger
from pipeline.sources import read_partition
from pipeline.sources.base import Partition
from pipeline.stages import Stage, StageResult, run_stages
from pipeline.text.langid import identifier as language_model

RESULTS = Path(__file__).parent / "results"
DIGESTS = RESULTS / "chain_output_digests.json"
WARM_ROWS = 50

DATA_SETS = {
    "online_shopping": {
        "kind": "comments", "lang": "zh", "uri": "comments/online_shopping_10_cats.zip", "format": "csv",
        "fields": {"text": "review", "label": "label"}, "label_map": {"1": "positive", "0": "negative"},
    },
    "tnews": {
        "kind": "news", "lang": "zh", "uri": "news/tnews_unlabeled.json", "format": "jsonl",
        "fields": {"text": "sentence", "id": "id"},
    },
}


def bench_config(data: Path) -> CorpusflowConfig:
    sources = [{"name": name, **spec, "uri": str(data / spec["uri"])} for name, spec in DATA_SETS.items()]
    return parse_config({"sources": sources})


class TimedStage:
    """A stage that adds its wall time to a shared tally."""

    def __init__(self, stage: Stage, seconds: Counter) -> None:
        self.stage, self.seconds = stage, seconds
        self.name, self.reads, self.adds = stage.name, stage.reads, stage.adds

    def __call__(self, batch: pa.RecordBatch) -> StageResult:
        start = time.process_time()
        result = self.stage(batch)
        self.seconds[self.name] += time.process_time() - start
        return result


def time_raw_jieba(texts: list[str]) -> float:
    start = time.process_time()
    for text in texts:
        jieba.lcut(text)
    return time.process_time() - start


def profile_run(
    stages: list[Stage], source: SourceConfig, limit: int | None, data: Path
) -> tuple[Counter, str, int, int]:
    """Seconds of reading, raw jieba and each stage; the digest of the output; documents read and kept.

    The three are interleaved batch by batch (read a batch, jieba over its texts, the chain over it), so
    that load from other processes on a shared machine weighs on all of them alike.
    """
    seconds: Counter = Counter()
    timed = [TimedStage(stage, seconds) for stage in stages]
    ledger, counts = Ledger(), Counter()
    kept: list[pa.RecordBatch] = []
    rejects: list[pa.Table] = []
    reads = read_partition(source, Partition(source.name, source.uri, "bench", 0, 0, limit))
    pa.RecordBatch.from_pylist([{"warm": 1}])  # pyarrow imports pandas on its first rows-to-batch: once per process
    documents = 0
    while True:
        start = time.process_time()
        read = next(reads, None)
        seconds["read"] += time.process_time() - start
        if read is None:
            break
        if not kept:  # load models, dictionaries and tables before the first batch is timed
            language_model()
            run_stages(stages, read.documents.slice(0, WARM_ROWS), Ledger())
        documents += read.documents.num_rows
        seconds["raw_jieba"] += time_raw_jieba(read.documents.column("text").to_pylist())
        ledger.add_rejects(read.rejects)
        rejects.append(pa.Table.from_batches([read.rejects], REJECT_SCHEMA))
        chain = run_stages(timed, read.documents, ledger)
        counts.update(chain.counts)
        rejects.extend(chain.rejects)
        kept.append(chain.kept)
        ledger.add("kept", "", chain.kept.num_rows)
    digest = output_digest(pa.Table.from_batches(kept), pa.concat_tables(rejects), ledger, counts, data)
    return seconds, digest, documents, sum(b.num_rows for b in kept)


def output_digest(kept: pa.Table, rejects: pa.Table, ledger: Ledger, counts: Counter, data: Path) -> str:
    """sha256 of the kept and reject tables as Arrow IPC streams (as shards are written) and of the counts.

    Records name the file they came from (`file`, and `meta`'s "file"): the data directory is written as
    <data> in them first, so the digest does not change with where the data lies on a machine.
    """
    digest = hashlib.sha256()
    for table in (kept, rejects):
        sink = pa.BufferOutputStream()
        table = _without_data_dir(table.combine_chunks(), data)
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        digest.update(sink.getvalue().to_pybytes())
    totals = {"ledger": sorted([list(k), v] for k, v in ledger.items()), "counts": sorted(counts.items())}
    digest.update(json.dumps(totals).encode())
    return digest.hexdigest()


def _without_data_dir(table: pa.Table, data: Path) -> pa.Table:
    for name in ("file", "meta"):
        if name in table.column_names:
            where = table.schema.get_field_index(name)
            named = pc.replace_substring(table.column(name), json.dumps(str(data))[1:-1], "<data>")
            table = table.set_column(where, table.schema.field(where), named)
    return table


def profile(config: CorpusflowConfig, source: SourceConfig, limit: int | None, data: Path) -> dict:
    stages = processing_stages(config)
    seconds, digest, documents, kept = profile_run(stages, source, limit, data)
    jieba_s = seconds.pop("raw_jieba")
    megabytes = sum(
        len(t.encode()) for read in read_partition(source, Partition(source.name, source.uri, "bench", 0, 0, limit))
        for t in read.documents.column("text").to_pylist()
    ) / 1e6
    other_s = sum(s for name, s in seconds.items() if name not in ("read", "segment"))
    return {
        "documents": documents,
        "megabytes": round(megabytes, 3),
        "rows_kept": kept,
        "raw_jieba_seconds": round(jieba_s, 3),
        "seconds": {name: round(s, 3) for name, s in seconds.items()} | {"all_but_read_and_segment": round(other_s, 3)},
        "ratio_to_raw_jieba": {name: round(s / jieba_s, 3) for name, s in seconds.items()}
        | {"all_but_read_and_segment": round(other_s / jieba_s, 3)},
        "chain_per_core_vs_raw_jieba": round(jieba_s / sum(seconds.values()), 3),
        "output_digest": digest,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data")
    parser.add_argument("--limit", type=int, default=20000, help="records read per data set (0: all)")
    parser.add_argument("--only", choices=sorted(DATA_SETS), help="profile one data set")
    parser.add_argument("--record-digests", action="store_true", help="store the output digests as the reference")
    args = parser.parse_args()

    config = bench_config(args.data)
    jieba.setLogLevel(60)
    jieba.initialize()
    limit = args.limit or None
    recorded = json.loads(DIGESTS.read_text()) if DIGESTS.exists() else {}
    results = {}
    for source in config.sources:
        if args.only and source.name != args.only:
            continue
        result = profile(config, source, limit, args.data)
        key = f"{source.name}:{limit}"
        if args.record_digests:
            recorded[key] = result["output_digest"]
        result["output_matches_reference"] = recorded.get(key) == result["output_digest"] if key in recorded else None
        results[source.name] = result
        print_profile(source.name, result)
    if args.record_digests:
        DIGESTS.write_text(json.dumps(recorded, indent=2, sort_keys=True) + "\n")
    date = datetime.date.today().isoformat()
    out = RESULTS / f"chain_profile-{date}.json"
    out.write_text(json.dumps({
        "date": date,
        "machine": f"{platform.machine()}, {platform.python_version()}",
        "limit": limit,
        "data_sets": results,
    }, indent=2) + "\n")
    print("written", out)


def print_profile(name: str, result: dict) -> None:
    print(f"\n{name}: {result['documents']} documents, {result['megabytes']} MB, "
          f"raw jieba {result['raw_jieba_seconds']} s")
    for stage, ratio in sorted(result["ratio_to_raw_jieba"].items(), key=lambda item: -item[1]):
        print(f"  {stage:26s} {result['seconds'].get(stage, 0):8.3f} s  {ratio:6.3f}x")
    verdict = {True: "identical to the reference", False: "DIFFERS from the reference", None: "no reference"}
    print(f"  chain per core vs raw jieba: {result['chain_per_core_vs_raw_jieba']:.3f}x; "
          f"output {verdict[result['output_matches_reference']]} ({result['output_digest'][:16]})")


if __name__ == "__main__":
    main()

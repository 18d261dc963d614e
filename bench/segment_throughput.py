"""Segmentation throughput: raw `jieba.lcut` in one process vs the text stage chain (all 7 stages) with 1
and 2 workers, on real Chinese texts from ../shared/data, measured side by side in one run.

    python bench/segment_throughput.py [--data ../shared/data] [--fraction 1.0]

Prints MB/s (UTF-8 bytes of input text per second of wall time) and the ratios, and writes
bench/results/segment_throughput-<date>.json. Worker pools are started and warmed before timing: their
start-up (about 1-2 s per pool) is paid once per build, not per batch.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import io
import json
import platform
import time
import zipfile
from pathlib import Path

import jieba
import pyarrow as pa

from pipeline.config import CorpusflowConfig, parse_config
from pipeline.schema import Ledger, documents_batch
from pipeline.stages import Stage, run_stages
from pipeline.text import build_text_stages, shutdown_segment_pools

RESULTS = Path(__file__).parent / "results"
BATCH_ROWS = 1000


def load_texts(data: Path) -> list[tuple[str, str]]:
    """(kind, text): TNEWS headlines, online-shopping reviews, ChnSentiCorp hotel reviews."""
    texts = [("news", json.loads(line)["sentence"]) for line in open(data / "news/tnews_unlabeled.json", encoding="utf-8")]
    with zipfile.ZipFile(data / "comments/online_shopping_10_cats.zip") as archive:
        raw = archive.read(archive.namelist()[0]).decode("utf-8-sig")
    texts += [("comments", row["review"]) for row in csv.DictReader(io.StringIO(raw)) if row["review"]]
    with open(data / "comments/ChnSentiCorp_htl_all.csv", encoding="utf-8-sig") as file:
        texts += [("comments", row["review"]) for row in csv.DictReader(file) if row["review"]]
    return texts


def to_batches(texts: list[tuple[str, str]]) -> list[pa.RecordBatch]:
    rows = [
        {"id": str(i), "source": "bench", "kind": kind, "lang": None if kind == "news" else "zh", "text": text}
        for i, (kind, text) in enumerate(texts)
    ]
    return [documents_batch(rows[i : i + BATCH_ROWS]) for i in range(0, len(rows), BATCH_ROWS)]


def time_raw_jieba(texts: list[str]) -> float:
    jieba.initialize()
    start = time.perf_counter()
    for text in texts:
        jieba.lcut(text)
    return time.perf_counter() - start


def time_chain(stages: list[Stage], batches: list[pa.RecordBatch]) -> tuple[float, dict[str, float], int]:
    """Wall seconds of the chain over all batches, seconds per stage, rows kept."""
    per_stage = {stage.name: 0.0 for stage in stages}
    timed = [_Timed(stage, per_stage) for stage in stages]
    kept = 0
    start = time.perf_counter()
    for batch in batches:
        kept += run_stages(timed, batch, Ledger()).kept.num_rows
    return time.perf_counter() - start, per_stage, kept


class _Timed:
    def __init__(self, stage: Stage, seconds: dict[str, float]) -> None:
        self.stage, self.seconds = stage, seconds
        self.name, self.reads, self.adds = stage.name, stage.reads, stage.adds

    def __call__(self, batch: pa.RecordBatch):
        start = time.perf_counter()
        result = self.stage(batch)
        self.seconds[self.name] += time.perf_counter() - start
        return result


def bench_config() -> CorpusflowConfig:
    return parse_config(
        {"sources": [{"name": "bench", "kind": "comments", "uri": "-", "format": "jsonl", "fields": {"text": "t"}}]}
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data")
    parser.add_argument("--fraction", type=float, default=1.0, help="use every n-th text, n = 1/fraction")
    args = parser.parse_args()

    texts = load_texts(args.data)[:: max(1, round(1 / args.fraction))]
    megabytes = sum(len(t.encode()) for _, t in texts) / 1e6
    batches = to_batches(texts)
    config = bench_config()

    raw_s = time_raw_jieba([t for _, t in texts])
    runs = {}
    for workers in (1, 2):
        stages = build_text_stages(config, workers)
        run_stages(stages, batches[0].slice(0, 50), Ledger())  # start and warm the pool, load models
        seconds, per_stage, kept = time_chain(stages, batches)
        other = sum(s for name, s in per_stage.items() if name != "segment")
        runs[workers] = {
            "seconds": round(seconds, 3), "mb_per_s": round(megabytes / seconds, 3), "rows_kept": kept,
            "stage_seconds": {k: round(v, 3) for k, v in per_stage.items()},
            "non_segment_share": round(other / seconds, 3),
        }
    shutdown_segment_pools()

    raw_mbs = megabytes / raw_s
    result = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {platform.python_version()}",
        "input": {"documents": len(texts), "megabytes": round(megabytes, 3), "fraction": args.fraction},
        "raw_jieba": {"seconds": round(raw_s, 3), "mb_per_s": round(raw_mbs, 3)},
        "chain_workers_1": runs[1],
        "chain_workers_2": runs[2],
        "ratios": {
            "chain_w1_vs_raw_jieba": round(runs[1]["mb_per_s"] / raw_mbs, 3),
            "chain_w2_vs_raw_jieba": round(runs[2]["mb_per_s"] / raw_mbs, 3),
            "chain_w2_vs_w1": round(runs[2]["mb_per_s"] / runs[1]["mb_per_s"], 3),
        },
    }
    print(f"{len(texts)} documents, {megabytes:.2f} MB")
    print(f"raw jieba.lcut, 1 process : {raw_mbs:6.3f} MB/s")
    for workers in (1, 2):
        run = runs[workers]
        print(f"text chain, {workers} worker(s)  : {run['mb_per_s']:6.3f} MB/s "
              f"(non-segment stages {run['non_segment_share']:.0%} of wall time) {run['stage_seconds']}")
    print("ratios:", result["ratios"])
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"segment_throughput-{result['date']}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print("written", out)


if __name__ == "__main__":
    main()

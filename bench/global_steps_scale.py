"""The build's global dedup steps as tasks at scale: wall time and peak memory of every task, 1 and 2 workers.

Key files of 1 M and 10 M synthetic documents are written as the partitions write them (generator of
dedup_scale.py: 1 % exact and 1 % near copies within a partition, 0.5 % copies of a pool repeated across
the corpus), with their join records. Then the global dedup runs as the flow runs it: the bucket tasks
(`dedup_step.dedup_bucket`) on a pool of 1 or 2 worker processes, then the resolution task (`resolve_duplicates`). Workers are spawned and warmed up before the clock
starts, as the build's pool is; each task resets its process's peak RSS first (/proc/self/clear_refs) and
reads it after (VmHWM), so a task's figure is its own, interpreter and imports included. Reported per
size and worker count: the wall time of the bucket phase, of the resolution, and of both; the largest
peak RSS of any bucket task and the resolution's. Every run must decide the same duplicates. A control
runs first: the same CPU-bound numpy sorts on 1 and 2 workers, which says how much parallelism the
machine gives at that moment (on a machine shared with other work, less than its core count).
Run: python bench/global_steps_scale.py [--sizes 1000000 10000000] [--workers 1 2] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import date
from pathlib import Path

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).parent))
from dedup_scale import generate  # noqa: E402 - the same synthetic key files as the dedup_scale benchmark

from pipeline import storage  # noqa: E402
from pipeline.config import CorpusflowConfig, DedupConfig  # noqa: E402
from pipeline.steps import dedup_step  # noqa: E402

RESULTS = Path(__file__).parent / "results"


def _reset_peak_rss() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # Linux: VmHWM starts again from the current RSS


def _peak_rss_mb() -> float:
    status = Path("/proc/self/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1]) / 1024


def _warm() -> None:
    time.sleep(0.5)  # long enough that every worker of the pool takes one and imports what tasks need


def _bucket_task(plan: dedup_step.DedupPlan, bucket: int) -> tuple[float, float]:
    _reset_peak_rss()
    started = time.perf_counter()
    dedup_step.dedup_bucket(plan, bucket)
    return time.perf_counter() - started, _peak_rss_mb()


def _resolution_task(config: CorpusflowConfig, plan: dedup_step.DedupPlan, collisions: list[str],
                     ) -> tuple[float, float, int]:
    _reset_peak_rss()
    started = time.perf_counter()
    decisions = dedup_step.resolve_duplicates(config, plan, collisions)
    seconds, peak = time.perf_counter() - started, _peak_rss_mb()
    duplicates = sum(storage.read_arrow_table(storage.join(decisions.directory, "duplicates", f"{name}.arrow")).num_rows
                     for name in decisions.duplicates_in)
    return seconds, peak, duplicates


def _control_sorts(_: int) -> None:
    rng = np.random.default_rng(0)
    for _ in range(6):
        np.argsort(rng.integers(0, 2**63, 2_000_000))


def control_ratio() -> float:
    """Wall time of 4 CPU-bound jobs on 2 workers over that on 1: 0.5 on two idle cores."""
    seconds = {}
    for workers in (1, 2):
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            list(pool.map(_control_sorts, range(workers)))
            started = time.perf_counter()
            list(pool.map(_control_sorts, range(4)))
            seconds[workers] = time.perf_counter() - started
    return round(seconds[2] / seconds[1], 2)


def run_global_steps(config: CorpusflowConfig, plan: dedup_step.DedupPlan, workers: int) -> dict:
    collisions = [f"{plan.directory}/collisions-{b:04d}-of-{plan.buckets:04d}.npy" for b in range(plan.buckets)]
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        for future in [pool.submit(_warm) for _ in range(workers)]:
            future.result()
        started = time.perf_counter()
        buckets = list(pool.map(_bucket_task, [plan] * plan.buckets, range(plan.buckets)))
        bucket_wall = time.perf_counter() - started
        resolve_seconds, resolve_rss, duplicates = pool.submit(_resolution_task, config, plan, collisions).result()
    return {
        "workers": workers, "buckets": plan.buckets,
        "bucket_phase_seconds": round(bucket_wall, 1),
        "bucket_task_seconds_max": round(max(s for s, _ in buckets), 2),
        "bucket_task_peak_rss_mb_max": round(max(r for _, r in buckets), 1),
        "resolution_seconds": round(resolve_seconds, 1),
        "resolution_peak_rss_mb": round(resolve_rss, 1),
        "global_dedup_seconds": round(bucket_wall + resolve_seconds, 1),
        "duplicates": duplicates,
    }


def measure(docs: int, partition_docs: int, workers: list[int], workdir: Path | None) -> dict:
    config = CorpusflowConfig(sources=[{"name": f"s{i}", "kind": "comments", "lang": "zh", "uri": "unused", "format": "jsonl",
                                        "fields": {"text": "text"}}
                                       for i in range(4)], dedup=DedupConfig())
    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
    directory = Path(tempfile.mkdtemp(prefix=f"global-steps-{docs}-", dir=workdir))
    try:
        started = time.perf_counter()
        files = generate(directory, docs, partition_docs, config.dedup)
        generate_seconds = time.perf_counter() - started
        plan = dedup_step.DedupPlan(files=files, buckets=dedup_step.bucket_count(files),
                                    directory=str(directory / "dedup"))
        runs = [run_global_steps(config, plan, count) for count in workers]
        key_bytes = sum(Path(f.path).stat().st_size + Path(f.path).with_suffix(".buckets").stat().st_size for f in files)
        result = {"documents": docs, "partitions": len(files), "key_and_record_files_mb": round(key_bytes / 2**20),
                  "write_keys_seconds": round(generate_seconds, 1), "runs": runs}
        if len({run["duplicates"] for run in runs}) != 1:
            raise RuntimeError(f"worker counts decided different duplicates: {runs}")
        return result
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--partition-docs", type=int, default=100_000)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    control = control_ratio()
    print(f"control: CPU-bound sorts on 2 workers take {control}x the wall time of 1 (0.5 on two idle cores)")
    sizes = []
    for docs in args.sizes:
        sizes.append(measure(docs, args.partition_docs, args.workers, args.workdir))
        print(json.dumps(sizes[-1]), flush=True)
    report = {"date": date.today().isoformat(), "cpus": psutil.cpu_count(), "config": DedupConfig().model_dump(),
              "control_two_vs_one_worker_wall": control, "sizes": sizes,
              "note": "shared machine: other work ran beside these measurements"}
    for size in sizes:
        by_workers = {run["workers"]: run for run in size["runs"]}
        if 1 in by_workers and 2 in by_workers:
            size["two_vs_one_worker_wall"] = round(
                by_workers[2]["global_dedup_seconds"] / by_workers[1]["global_dedup_seconds"], 2)
            print(f"{size['documents']:,} documents: 2 workers take {size['two_vs_one_worker_wall']}x the wall "
                  "time of 1 (target <= 0.6x)")
    peaks = [max(run["bucket_task_peak_rss_mb_max"], run["resolution_peak_rss_mb"]) for s in sizes for run in s["runs"]]
    print(f"largest peak RSS of any task: {max(peaks)} MB (target <= 500 MB, flat from 1 M to 10 M)")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"global_steps_scale-{date.today().isoformat()}.json").write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()

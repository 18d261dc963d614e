"""Global dedup at scale: seconds and peak RSS of the on-disk join at 1x and 10x synthetic documents.

Synthetic documents are signatures only: each partition's key file is written as the build writes it
(random 128-permutation signatures, with 1 % exact copies and 1 % near copies of documents of the same
partition and 0.5 % copies of a small pool of documents repeated across the corpus), then the global step
runs over all key files in a process of its own, whose peak RSS (the whole process tree, polled, and the
step's own ru_maxrss) is what the target is about.
Run: python bench/dedup_scale.py [--sizes 1000000 10000000] [--partition-docs 100000] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa

from pipeline.config import DedupConfig
from pipeline.dedup import DedupKeysWriter, KeyFile, find_duplicates_in_files
from pipeline.dedup.minhash import signature_array

RESULTS = Path(__file__).parent / "results"
SOURCES = 4
POOL = 2000
EXACT_SHARE, NEAR_SHARE, POOL_SHARE = 0.01, 0.01, 0.005
NEAR_CHANGED = 0.06  # share of minima a near copy changes: estimated Jaccard ~0.94


def partition_keys(index: int, docs: int, pool: np.ndarray, num_perm: int) -> pa.Table:
    rng = np.random.default_rng(1000 + index)
    signatures = rng.integers(0, 2**32, size=(docs, num_perm), dtype=np.uint32)
    hashes = rng.integers(0, 2**63, size=(docs, 4))  # 256 random bits, printed as a sha256 would be
    exact = rng.choice(docs, size=int(docs * EXACT_SHARE), replace=False)
    exact_source = rng.integers(0, docs, size=len(exact))
    signatures[exact], hashes[exact] = signatures[exact_source], hashes[exact_source]
    near = rng.choice(docs, size=int(docs * NEAR_SHARE), replace=False)
    signatures[near] = signatures[rng.integers(0, docs, size=len(near))]
    changed = rng.random((len(near), num_perm)) < NEAR_CHANGED
    signatures[near] = np.where(changed, rng.integers(0, 2**32, size=changed.shape, dtype=np.uint32), signatures[near])
    pooled = rng.choice(docs, size=int(docs * POOL_SHARE), replace=False)
    pool_rows = rng.integers(0, len(pool), size=len(pooled))
    signatures[pooled], hashes[pooled] = pool[pool_rows], pool_rows[:, None]
    return pa.table({
        "id": [f"p{index:05d}-{row:07d}" for row in range(docs)],
        "content_hash": ["".join(f"{part:016x}" for part in row) for row in hashes.tolist()],
        "minhash": signature_array(signatures, np.ones(docs, dtype=bool)),
    })


def generate(directory: Path, docs: int, partition_docs: int, config: DedupConfig) -> list[KeyFile]:
    pool = np.random.default_rng(0).integers(0, 2**32, size=(POOL, config.num_perm), dtype=np.uint32)
    files = []
    for index, start in enumerate(range(0, docs, partition_docs)):
        path = directory / f"part-{index:05d}.arrow"
        keys = partition_keys(index, min(partition_docs, docs - start), pool, config.num_perm)
        with DedupKeysWriter(path, config) as writer:
            for batch in keys.to_batches(max_chunksize=20_000):
                writer.write(batch)
        files.append(KeyFile(str(path), index % SOURCES))
    return files


def run_step(listing: Path, result: Path) -> None:
    """The measured process: the global step over the key files named in `listing`."""
    files = [KeyFile(**f) for f in json.loads(listing.read_text())]
    started = time.perf_counter()
    duplicates = find_duplicates_in_files(files, DedupConfig(), listing.parent).duplicates
    seconds = time.perf_counter() - started
    kinds = dict(zip(*np.unique(duplicates.column("kind").to_numpy(zero_copy_only=False), return_counts=True)))
    result.write_text(json.dumps({
        "seconds": round(seconds, 1),
        "self_max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "duplicates": duplicates.num_rows,
        "by_kind": {str(k): int(v) for k, v in kinds.items()},
    }))


def measure(docs: int, partition_docs: int, workdir: Path) -> dict:
    config = DedupConfig()
    directory = Path(tempfile.mkdtemp(prefix=f"dedup-scale-{docs}-", dir=workdir))
    try:
        started = time.perf_counter()
        files = generate(directory, docs, partition_docs, config)
        generate_seconds = time.perf_counter() - started
        listing = directory / "files.json"
        listing.write_text(json.dumps([{"path": f.path, "rank": f.rank} for f in files]))
        result = directory / "result.json"
        step = subprocess.Popen([sys.executable, __file__, "--step", str(listing), str(result)])
        peak = _peak_tree_rss(step)
        if step.returncode:
            raise RuntimeError(f"global step failed with exit code {step.returncode}")
        figures = json.loads(result.read_text())
        key_bytes = sum(Path(f.path).stat().st_size for f in files)
        return {"documents": docs, "partitions": len(files), "key_files_mb": round(key_bytes / 2**20),
                "write_keys_seconds": round(generate_seconds, 1), "tree_peak_rss_mb": round(peak / 2**20, 1),
                **figures}
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _peak_tree_rss(process: subprocess.Popen) -> int:
    root = psutil.Process(process.pid)
    peak = 0
    while process.poll() is None:
        try:
            tree = [root, *root.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree))
        except psutil.NoSuchProcess:
            pass
        time.sleep(0.05)
    return peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--partition-docs", type=int, default=100_000)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--step", type=Path, nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.step:
        run_step(*args.step)
        return
    runs = []
    for docs in args.sizes:
        runs.append(measure(docs, args.partition_docs, args.workdir))
        print(json.dumps(runs[-1]), flush=True)
    report = {"date": date.today().isoformat(), "config": DedupConfig().model_dump(), "runs": runs,
              "cpus": psutil.cpu_count()}
    if len(runs) > 1:
        first, last = runs[0], runs[-1]
        report["ratios_largest_vs_smallest"] = {
            "documents": round(last["documents"] / first["documents"], 2),
            "self_max_rss": round(last["self_max_rss_mb"] / first["self_max_rss_mb"], 2),
            "tree_peak_rss_polled": round(last["tree_peak_rss_mb"] / first["tree_peak_rss_mb"], 2),
            "seconds": round(last["seconds"] / first["seconds"], 2),
        }
        print(f"{last['documents']:,} vs {first['documents']:,} documents: {report['ratios_largest_vs_smallest']} "
              "(target: peak RSS <= 1.2x)")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"dedup_scale-{date.today().isoformat()}.json").write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()

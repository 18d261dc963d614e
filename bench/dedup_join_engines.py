"""The band-key join of the global dedup step: our bucket spill + sort against DuckDB's out-of-core GROUP BY.

Both find the (band, key) pairs that two or more documents share among the LSH band keys of synthetic key
files (written as bench/dedup_scale.py writes them), each in a process of its own, reporting seconds and
ru_maxrss. DuckDB is not a dependency of the project: it is imported from --duckdb-path when given.
Run: python bench/dedup_join_engines.py --docs 1000000 [--duckdb-path DIR] [--memory-limit 200MB]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

from pipeline.config import DedupConfig
from pipeline.dedup.external import DEFAULT_BUCKET_ROWS, _Corpus, _spill_keys

RESULTS = Path(__file__).parent / "results"


def ours(files: list[dict], scratch: Path) -> dict:
    from pipeline.dedup import KeyFile

    config = DedupConfig(exact=False)
    corpus = _Corpus([KeyFile(**f) for f in files], config)
    spills = _spill_keys(corpus, config, scratch, DEFAULT_BUCKET_ROWS)
    shared = sum(len(records) for records in spills["band"].collisions())
    return {"shared_records": int(shared)}


def duckdb_group_by(files: list[dict], scratch: Path, duckdb_path: str, memory_limit: str) -> dict:
    sys.path.insert(0, duckdb_path)
    import duckdb
    import pyarrow.dataset as ds

    dataset = ds.dataset([f["path"] for f in files], format="arrow")  # noqa: F841 (scanned by name below)
    connection = duckdb.connect(config={"memory_limit": memory_limit, "temp_directory": str(scratch),
                                        "threads": 1, "preserve_insertion_order": False})
    shared = connection.execute("""
        WITH bands AS (
            SELECT id_key AS doc, unnest(band_keys::UBIGINT[]) AS key,
                   generate_subscripts(band_keys::UBIGINT[], 1) AS band
            FROM dataset WHERE band_keys IS NOT NULL)
        SELECT sum(n) FROM (SELECT count(*) AS n FROM bands GROUP BY band, key HAVING count(*) > 1)
    """).fetchone()[0]
    return {"shared_records": int(shared or 0)}


def run_engine(engine: str, listing: Path, duckdb_path: str, memory_limit: str) -> None:
    files = json.loads(listing.read_text())
    with tempfile.TemporaryDirectory(dir=listing.parent) as scratch:
        started = time.perf_counter()
        figures = ours(files, Path(scratch)) if engine == "ours" else duckdb_group_by(
            files, Path(scratch), duckdb_path, memory_limit)
        seconds = time.perf_counter() - started
    print(json.dumps({"engine": engine, "seconds": round(seconds, 1),
                      "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1), **figures}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=1_000_000)
    parser.add_argument("--partition-docs", type=int, default=100_000)
    parser.add_argument("--duckdb-path", default=None)
    parser.add_argument("--memory-limit", default="200MB")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--engine", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.engine:
        run_engine(args.engine[0], Path(args.engine[1]), args.duckdb_path, args.memory_limit)
        return
    sys.path.insert(0, str(Path(__file__).parent))
    from dedup_scale import generate

    with tempfile.TemporaryDirectory(prefix="dedup-engines-", dir=args.workdir) as directory:
        files = generate(Path(directory), args.docs, args.partition_docs, DedupConfig())
        listing = Path(directory) / "files.json"
        listing.write_text(json.dumps([{"path": f.path, "rank": f.rank} for f in files]))
        runs = []
        for engine in ["ours"] + (["duckdb"] if args.duckdb_path else []):
            command = [sys.executable, __file__, "--engine", engine, str(listing), "--memory-limit", args.memory_limit]
            if args.duckdb_path:
                command += ["--duckdb-path", args.duckdb_path]
            output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            runs.append(json.loads(output.strip().splitlines()[-1]))
            print(json.dumps(runs[-1]), flush=True)
    report = {"date": date.today().isoformat(), "documents": args.docs, "memory_limit": args.memory_limit,
              "runs": runs, "note": "band-key collisions only (12 bands x documents), one thread each"}
    if len(runs) == 2:
        report["duckdb_vs_ours"] = {"seconds": round(runs[1]["seconds"] / runs[0]["seconds"], 2),
                                    "max_rss": round(runs[1]["max_rss_mb"] / runs[0]["max_rss_mb"], 2)}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"dedup_join_engines-{date.today().isoformat()}.json").write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()

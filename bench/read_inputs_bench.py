"""Planning and reading real inputs: CPU seconds, so a change to the readers can be compared side by side.

Plans (fingerprint, probe, partition) and reads every partition of: ChnSentiCorp (UTF-8 CSV), the same
reviews re-encoded in GBK, the online-shopping zip and TNEWS JSON lines. With
--baseline DIR it also runs the same measurement on the library in DIR (e.g. an earlier commit unpacked
with `git archive <commit> pipeline | tar -x -C DIR`) in a subprocess, alternating runs, and reports the
ratio of the best CPU times. Prints the figures and writes bench/results/read_inputs-<date>.json.
Run: python bench/read_inputs_bench.py [--data ../shared/data] [--baseline DIR] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def inputs(data: Path, scratch: Path) -> list[dict]:
    gbk = scratch / "chnsenticorp_gbk.csv"
    if not gbk.exists():
        text = (data / "comments" / "ChnSentiCorp_htl_all.csv").read_text(encoding="utf-8-sig")
        gbk.write_bytes(text.encode("gb18030"))
    comments = {"kind": "comments", "lang": "zh", "format": "csv", "fields": {"text": "review", "label": "label"}}
    return [
        {"name": "chnsenticorp", "uri": str(data / "comments" / "ChnSentiCorp_htl_all.csv"), **comments},
        {"name": "chnsenticorp_gbk", "uri": str(gbk), **comments},
        {"name": "shopping", "uri": str(data / "comments" / "online_shopping_10_cats.zip"), **comments},
        {"name": "tnews", "kind": "news", "lang": "zh", "format": "jsonl", "fields": {"text": "sentence"},
         "uri": str(data / "news" / "tnews_unlabeled.json")},
    ]


def measure(specs: list[dict], rounds: int = 3) -> dict[str, float]:
    """CPU seconds (best of `rounds`, after a warm-up) to plan and read every partition of each input.

    CPU time, not wall time: on a machine shared with other work it is what the change itself costs.
    Runs inside the library being measured.
    """
    from pipeline.config import SourceConfig
    from pipeline.sources import expand_uri, plan_partitions, read_partition

    seconds = {}
    for spec in specs:
        source = SourceConfig(**spec)
        best = float("inf")
        for _ in range(rounds + 1):
            started = time.process_time()
            for partition in plan_partitions(source, expand_uri(source)):
                for _batch in read_partition(source, partition):
                    pass
            best = min(best, time.process_time() - started)
        seconds[spec["name"]] = best
    return seconds


def run_in(library: Path, specs: list[dict]) -> dict[str, float]:
    code = ("import json, sys; from bench.read_inputs_bench import measure; "
            "print(json.dumps(measure(json.loads(sys.argv[1]))))")
    env = {**os.environ, "PYTHONPATH": f"{library}{os.pathsep}{Path(__file__).parents[1]}"}
    out = subprocess.run([sys.executable, "-c", code, json.dumps(specs)], env=env, check=True,
                         capture_output=True, text=True, cwd=Path(__file__).parents[1])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=str(Path(__file__).parents[1].parent / "shared" / "data"))
    parser.add_argument("--baseline", default=None)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="read-bench-"))
    specs = inputs(Path(args.data), scratch)
    sizes = {s["name"]: Path(s["uri"]).stat().st_size / 1e6 for s in specs}
    libraries = {"current": Path(__file__).parents[1]}
    if args.baseline:
        libraries["baseline"] = Path(args.baseline)
    best: dict[str, dict[str, float]] = {name: {} for name in libraries}
    for _ in range(args.repeats):  # alternate, so load on the machine falls on both alike
        for name, library in libraries.items():
            for source, seconds in run_in(library, specs).items():
                best[name][source] = min(seconds, best[name].get(source, float("inf")))
    result: dict = {"date": date.today().isoformat(), "mb": {k: round(v, 2) for k, v in sizes.items()},
                    "best_seconds": {n: {k: round(v, 3) for k, v in s.items()} for n, s in best.items()}}
    if args.baseline:
        result["current_over_baseline"] = {k: round(best["current"][k] / best["baseline"][k], 3) for k in sizes}
        total = {n: sum(s.values()) for n, s in best.items()}
        result["total_current_over_baseline"] = round(total["current"] / total["baseline"], 3)
    print(json.dumps(result, indent=1))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"read_inputs-{result['date']}.json").write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()

"""Seconds per text stage (normalize .. quality filter) on the public data, this checkout against another
git revision, run alternately in one go so both see the same machine load.

    python bench/text_stage_cost.py --base f9e6878 [--rounds 2] [--data ../shared/data]

Prints per stage the mean seconds of each side and the ratio; jieba (segment) is printed too but is the
same code on both sides, so its spread shows how noisy the machine was.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import Counter
from io import BytesIO
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def time_stages(data: str) -> dict[str, float]:
    """Runs inside one checkout: reads the inputs, then times each stage over every batch."""
    from pipeline.config import parse_config
    from pipeline.sources import expand_uri, plan_partitions, read_partition
    from pipeline.text import build_text_stages
    import pyarrow.compute as pc

    sentiment = {"1": "positive", "0": "negative"}
    config = parse_config({"sources": [
        {"name": "tnews", "kind": "news", "lang": "zh", "uri": f"{data}/news/tnews_unlabeled.json", "format": "jsonl",
         "fields": {"text": "sentence", "id": "id"}},
        {"name": "shopping", "kind": "comments", "lang": "zh", "uri": f"{data}/comments/online_shopping_10_cats.zip",
         "format": "csv", "fields": {"text": "review", "label": "label"}, "label_map": sentiment},
        {"name": "enwiki", "kind": "wiki", "lang": "en", "format": "mediawiki", "pages_per_partition": 50,
         "uri": f"{data}/wiki/enwiki-pages-articles-excerpt.xml.bz2"},
    ]})
    stages = build_text_stages(config)
    batches = [read.documents for source in config.sources
               for partition in plan_partitions(source, expand_uri(source))
               for read in read_partition(source, partition)]
    seconds: Counter = Counter()
    for batch in batches:
        for stage in stages:
            start = time.perf_counter()
            result = stage(batch)
            seconds[stage.name] += time.perf_counter() - start
            batch = result.batch
            if result.drop_reasons is not None:
                batch = batch.filter(pc.is_null(result.drop_reasons))
    return dict(seconds)


def checkout(revision: str, into: Path) -> Path:
    archive = subprocess.run(["git", "archive", revision, "pipeline"], cwd=REPO, check=True, capture_output=True).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def run_in(root: Path, data: str) -> dict[str, float]:
    code = f"import json, sys; sys.path.insert(0, {str(REPO / 'bench')!r}); from text_stage_cost import time_stages; " \
           f"print(json.dumps(time_stages({data!r})))"
    out = subprocess.run([sys.executable, "-c", code], env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin",
                                                             "TOKENIZERS_PARALLELISM": "false"},
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="git revision to compare against")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        base = checkout(args.base, Path(scratch))
        runs: dict[str, list[dict[str, float]]] = {"base": [], "this": []}
        for _ in range(args.rounds):
            runs["base"].append(run_in(base, args.data))
            runs["this"].append(run_in(REPO, args.data))
    stages = list(runs["this"][0])
    mean = {side: {s: sum(r[s] for r in rs) / len(rs) for s in stages} for side, rs in runs.items()}
    results = {"date": dt.date.today().isoformat(), "base": args.base, "rounds": runs,
               "ratio_this_vs_base": {s: round(mean["this"][s] / mean["base"][s], 3) for s in stages},
               "ratio_all_but_segment": round(sum(mean["this"][s] for s in stages if s != "segment")
                                              / sum(mean["base"][s] for s in stages if s != "segment"), 3)}
    for stage in stages:
        print(f"{stage:16s} base {mean['base'][stage]:7.2f} s  this {mean['this'][stage]:7.2f} s  "
              f"ratio {results['ratio_this_vs_base'][stage]:.3f}")
    print(f"{'all but segment':16s} ratio {results['ratio_all_but_segment']:.3f}")
    out = REPO / "bench" / "results" / f"text_stage_cost-{results['date']}.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written {out}")


if __name__ == "__main__":
    main()

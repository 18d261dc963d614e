"""Do two cores give two processes of jieba-like work twice the throughput of one? A control for the builds.

Raw `jieba.lcut` over the online-shopping reviews in a process of its own, one alone, then two at once,
then one alone again. If each of the two takes about as long as one alone, the machine gives 2x to this
kind of work, and a partition phase slower than raw jieba per core is the build's own overhead; if they
take much longer, the cores share something (a cache, a busy neighbour) and no build could do better.

    python bench/two_cores.py [--data ../shared/data]      # results in bench/results/two_cores-<date>.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from build_throughput import raw_jieba_seconds, review_texts  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def _child(data: Path) -> None:
    _, texts = review_texts(data)
    print(raw_jieba_seconds(texts))  # after jieba's dictionary is loaded


def _at_once(count: int, data: Path) -> list[float]:
    command = [sys.executable, __file__, "--data", str(data), "--child"]
    children = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for _ in range(count)]
    return [round(float(child.communicate()[0].split()[-1]), 2) for child in children]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.data)
        return
    alone_before, pair, alone_after = _at_once(1, args.data), _at_once(2, args.data), _at_once(1, args.data)
    alone = (alone_before[0] + alone_after[0]) / 2
    results = {
        "date": dt.date.today().isoformat(), "cpus": os.cpu_count(), "load_average_at_end": os.getloadavg(),
        "alone_s": alone_before + alone_after, "two_at_once_s": pair,
        "each_of_two_vs_alone": round(sum(pair) / len(pair) / alone, 3),
    }
    print(json.dumps(results, indent=2))
    out = REPO / "bench" / "results" / f"two_cores-{results['date']}.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written {out}")


if __name__ == "__main__":
    main()

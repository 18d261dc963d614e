"""Segmentation engines side by side: raw `jieba.lcut`, our precise path (engine jieba), rjieba (engine rjieba).

    python bench/segment_engines.py [--data ../shared/data] [--limit 20000]

Over the online-shopping reviews and the TNEWS headlines (the first `--limit` texts of each), in one process,
the three cutters take turns on blocks of 1000 texts, timed in CPU seconds of this process, so that load
from other processes weighs on none of them.
Prints seconds, MB/s and speed relative to raw jieba, and the share of documents whose words equal
jieba's exactly; writes bench/results/segment_engines-<date>.json.
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
from collections import Counter
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import jieba

from pipeline.text.segment import SegmenterSpec, zh_cutter

RESULTS = Path(__file__).parent / "results"
BLOCK = 1000


def load_texts(data: Path, limit: int | None) -> dict[str, list[str]]:
    with zipfile.ZipFile(data / "comments/online_shopping_10_cats.zip") as archive:
        raw = archive.read(archive.namelist()[0]).decode("utf-8-sig")
    reviews = [row["review"] for row in csv.DictReader(io.StringIO(raw)) if row["review"]]
    with open(data / "news/tnews_unlabeled.json", encoding="utf-8") as lines:
        headlines = [json.loads(line)["sentence"] for line in lines]
    return {"online_shopping": reviews[:limit], "tnews": headlines[:limit]}


def compare(texts: list[str], cutters: dict[str, Callable[[str], list[str]]]) -> dict:
    seconds: Counter = Counter()
    identical: Counter = Counter()
    for start in range(0, len(texts), BLOCK):
        block = texts[start : start + BLOCK]
        words = {}
        for name, cut in cutters.items():
            began = time.process_time()
            words[name] = [cut(text) for text in block]
            seconds[name] += time.process_time() - began
        for name in cutters:
            identical[name] += sum(a == b for a, b in zip(words[name], words["raw_jieba"]))
    megabytes = sum(len(t.encode()) for t in texts) / 1e6
    return {
        "documents": len(texts),
        "megabytes": round(megabytes, 3),
        "engines": {
            name: {
                "seconds": round(seconds[name], 3),
                "mb_per_s": round(megabytes / seconds[name], 3),
                "speed_vs_raw_jieba": round(seconds["raw_jieba"] / seconds[name], 3),
                "identical_to_jieba": round(identical[name] / len(texts), 4),
            }
            for name in cutters
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data")
    parser.add_argument("--limit", type=int, default=20000, help="texts per data set (0: all)")
    args = parser.parse_args()

    jieba.setLogLevel(60)
    jieba.initialize()
    cutters = {
        "raw_jieba": jieba.lcut,
        "engine_jieba": zh_cutter(SegmenterSpec(hmm=True, user_dicts=(), engine="jieba")),
        "engine_rjieba": zh_cutter(SegmenterSpec(hmm=True, user_dicts=(), engine="rjieba")),
    }
    results = {}
    for name, texts in load_texts(args.data, args.limit or None).items():
        results[name] = compare(texts, cutters)
        print(f"\n{name}: {results[name]['documents']} documents, {results[name]['megabytes']} MB")
        for engine, figures in results[name]["engines"].items():
            print(f"  {engine:14s} {figures['seconds']:8.3f} s {figures['mb_per_s']:7.3f} MB/s "
                  f"{figures['speed_vs_raw_jieba']:6.2f}x jieba, identical {figures['identical_to_jieba']:.2%}")
    date = datetime.date.today().isoformat()
    out = RESULTS / f"segment_engines-{date}.json"
    out.write_text(json.dumps({
        "date": date,
        "machine": f"{platform.machine()}, {platform.python_version()}",
        "libraries": {"jieba": metadata.version("jieba"), "rjieba": metadata.version("rjieba")},
        "data_sets": results,
    }, indent=2) + "\n")
    print("written", out)


if __name__ == "__main__":
    main()

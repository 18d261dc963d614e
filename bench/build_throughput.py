"""Build throughput and memory on the public data, measured side by side in one run.

Prints, as ratios: raw `jieba.lcut` throughput on the same Chinese texts in one process; the full build's
throughput per core; 1 worker vs 2 workers; peak RSS (whole process tree) at 1x and 10x input.
Targets: build per core >= 0.8 x raw jieba; 2 workers >= 1.8 x 1 worker; RSS at 10x within 1.2 x of 1x.

    python bench/build_throughput.py [--data ../shared/data] [--repeat 10]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

import psutil
import yaml

REPO = Path(__file__).resolve().parents[1]


def chinese_texts(data: Path) -> list[str]:
    texts = [json.loads(line)["sentence"] for line in (data / "news" / "tnews_unlabeled.json").open(encoding="utf-8")]
    with zipfile.ZipFile(data / "comments" / "online_shopping_10_cats.zip") as archive:
        name = next(n for n in archive.namelist() if n.endswith(".csv"))
        import csv
        import io

        rows = csv.DictReader(io.TextIOWrapper(archive.open(name), encoding="utf-8-sig"))
        texts += [row["review"] or "" for row in rows]
    return texts


def raw_jieba_mb_per_s(texts: list[str]) -> float:
    import jieba

    jieba.setLogLevel(60)
    jieba.initialize()
    size = sum(len(t.encode()) for t in texts)
    start = time.perf_counter()
    for text in texts:
        jieba.lcut(text)
    return size / 1e6 / (time.perf_counter() - start)


def input_files(data: Path, scratch: Path, repeat: int) -> dict[str, Path]:
    """The inputs, each repeated `repeat` times into one file (the build's memory must not grow with it)."""
    scratch.mkdir(parents=True, exist_ok=True)
    files = {"tnews": data / "news" / "tnews_unlabeled.json",
             "shopping": data / "comments" / "online_shopping_10_cats.zip",
             "enwiki": data / "wiki" / "enwiki-pages-articles-excerpt.xml.bz2"}
    if repeat == 1:
        return files
    tnews = scratch / "tnews.jsonl"
    with tnews.open("w", encoding="utf-8") as out:
        for copy in range(repeat):
            for line in files["tnews"].open(encoding="utf-8"):
                record = json.loads(line)
                record["id"] = f"{record['id']}-{copy}"
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
    shopping = scratch / "shopping.csv"
    with zipfile.ZipFile(files["shopping"]) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".csv"))
        raw = archive.read(name).decode("utf-8-sig")
    header, body = raw.split("\n", 1)
    shopping.write_text(header + "\n" + body * repeat, encoding="utf-8")
    return {"tnews": tnews, "shopping": shopping, "enwiki": files["enwiki"]}


def config_for(files: dict[str, Path], run_dir: Path, workers: int) -> dict:
    shopping_format = "csv"
    return {
        "dataset": "bench", "run_dir": str(run_dir),
        "runner": {"workers": workers},
        "contracts": {"max_quarantined_shard_frac": 1.0, "max_quarantined_row_frac": 1.0},
        "sources": [
            {"name": "tnews", "kind": "news", "lang": "zh", "uri": str(files["tnews"]), "format": "jsonl",
             "fields": {"text": "sentence", "id": "id"}, "rows_per_partition": 10_000},
            {"name": "shopping", "kind": "comments", "lang": "zh", "uri": str(files["shopping"]),
             "format": shopping_format, "fields": {"text": "review", "label": "label"},
             "rows_per_partition": 10_000},
            {"name": "enwiki", "kind": "wiki", "lang": "en", "uri": str(files["enwiki"]), "format": "mediawiki",
             "pages_per_partition": 50},
        ],
    }


def input_megabytes(files: dict[str, Path]) -> float:
    total = 0
    for path in files.values():
        if path.suffix == ".zip":
            with zipfile.ZipFile(path) as archive:
                total += sum(info.file_size for info in archive.infolist())
        elif path.suffix == ".bz2":
            import bz2

            with bz2.open(path) as handle:
                total += sum(len(block) for block in iter(lambda: handle.read(1 << 20), b""))
        else:
            total += path.stat().st_size
    return total / 1e6


def timed_build(config: dict, scratch: Path, name: str) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB, summed over the process tree) of one `corpusflow build`."""
    path = scratch / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True))
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "flows.cli", "build", "--config", str(path)],
                               cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = [0.0]
    threading.Thread(target=_watch_rss, args=(process.pid, peak), daemon=True).start()
    _, stderr = process.communicate()
    if process.returncode:
        raise RuntimeError(f"build {name} failed:\n{stderr.decode()[-3000:]}")
    return time.perf_counter() - start, peak[0]


def _watch_rss(pid: int, peak: list[float]) -> None:
    try:
        root = psutil.Process(pid)
        while root.is_running() and root.status() != psutil.STATUS_ZOMBIE:
            tree = [root, *root.children(recursive=True)]
            total = sum(p.memory_info().rss for p in tree if p.is_running())
            peak[0] = max(peak[0], total / 1e6)
            time.sleep(0.2)
    except psutil.Error:
        return


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    from flows.servers import use_prefect_server

    use_prefect_server()
    scratch = Path(tempfile.mkdtemp(prefix="corpusflow-bench-"))
    try:
        jieba_rate = raw_jieba_mb_per_s(chinese_texts(args.data))
        one = input_files(args.data, scratch / "x1", 1)
        many = input_files(args.data, scratch / "x10", args.repeat)
        mb_one, mb_many = input_megabytes(one), input_megabytes(many)
        seconds_1w, rss_1w = timed_build(config_for(one, scratch / "run-1w", 1), scratch, "one-worker")
        seconds_2w, rss_2w = timed_build(config_for(one, scratch / "run-2w", 2), scratch, "two-workers")
        seconds_10x, rss_10x = timed_build(config_for(many, scratch / "run-10x", 2), scratch, "ten-times")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    per_core = mb_one / seconds_1w
    results = {
        "date": dt.date.today().isoformat(), "cpus": os.cpu_count(),
        "input_mb": round(mb_one, 2), "input_mb_repeated": round(mb_many, 2),
        "raw_jieba_mb_per_s": round(jieba_rate, 3),
        "build_1_worker_s": round(seconds_1w, 2), "build_2_workers_s": round(seconds_2w, 2),
        "build_per_core_mb_per_s": round(per_core, 3),
        "ratio_build_per_core_vs_raw_jieba": round(per_core / jieba_rate, 3),
        "ratio_2_workers_vs_1": round(seconds_1w / seconds_2w, 3),
        "peak_rss_mb_1x": round(rss_2w, 1), f"peak_rss_mb_{args.repeat}x": round(rss_10x, 1),
        f"ratio_rss_{args.repeat}x_vs_1x": round(rss_10x / rss_2w, 3),
        "build_repeated_s": round(seconds_10x, 2),
        "targets": {"ratio_build_per_core_vs_raw_jieba": ">= 0.8", "ratio_2_workers_vs_1": ">= 1.8",
                    f"ratio_rss_{args.repeat}x_vs_1x": "<= 1.2"},
    }
    for key, value in results.items():
        print(f"{key:40s} {value}")
    out = REPO / "bench" / "results" / f"build_throughput-{results['date']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"written {out}")


if __name__ == "__main__":
    main()

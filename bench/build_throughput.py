"""End-to-end build throughput on real reviews, against raw jieba, measured side by side in one run.

On the online-shopping reviews (10.6 MB of Chinese text, one CSV) and on N copies of them:
- raw `jieba.lcut` over the same texts in one process, before and after the rest, averaged (the reference: 1.00x);
- `corpusflow build` with 1 and with 2 workers, wall time of the whole command (server already up);
- from the Prefect run of each build: seconds from the command's start to the first partition task's start;
  the time after the text chain's last task (the last partition) ended, to the command's end, and its
  share of the build; within it, the span of the dedup tasks (buckets and resolution), of the writing
  tasks (shards written and validated) and of the finalize tasks (contracts to announce and pictures);
- peak RSS of the whole process tree, 1x vs Nx;
- with `--data-juicer PATH` (its `dj-process`, installed in a venv of its own: `pip install torch==2.13.0
  py-data-juicer==1.6.1 aiohttp`), data-juicer's recipe of the same kind of cleaning as a reference row:
  unicode, punctuation and whitespace normalisation, HTML, e-mail and link removal, traditional to
  simplified, a length filter and exact dedup, no segmentation, with np=1 and np=2.
Targets: 2 workers >= 1.3x raw jieba at 1x and >= 1.5x at 3x; time after the last partition <= 10 % of the
build at 3x; start-up to the first partition <= 3 s; RSS at Nx <= 1.2x of 1x.

    python bench/build_throughput.py [--data ../shared/data] [--repeat 3] [--data-juicer /venv/bin/dj-process]
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from datetime import datetime, timezone
from pathlib import Path

import psutil
import yaml

REPO = Path(__file__).resolve().parents[1]


def review_texts(data: Path) -> tuple[str, list[str]]:
    """The reviews CSV as text (header and rows) and its review column."""
    with zipfile.ZipFile(data / "comments" / "online_shopping_10_cats.zip") as archive:
        name = next(n for n in archive.namelist() if n.endswith(".csv"))
        raw = archive.read(name).decode("utf-8-sig")
    texts = [row["review"] or "" for row in csv.DictReader(io.StringIO(raw))]
    return raw, texts


def raw_jieba_seconds(texts: list[str]) -> float:
    import jieba

    jieba.setLogLevel(60)
    jieba.initialize()
    start = time.perf_counter()
    for text in texts:
        jieba.lcut(text)
    return time.perf_counter() - start


def write_copies(raw: str, copies: int, path: Path) -> Path:
    """`copies` copies of the reviews in one CSV (rows repeated: the dedup step sees them as duplicates)."""
    header, body = raw.split("\n", 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + "\n" + body * copies, encoding="utf-8")
    return path


def config_for(reviews: Path, run_dir: Path, workers: int) -> dict:
    return {
        "dataset": "bench", "run_dir": str(run_dir), "runner": {"workers": workers},
        "contracts": {"max_quarantined_shard_frac": 1.0, "max_quarantined_row_frac": 1.0},
        "sources": [{"name": "shopping", "kind": "comments", "lang": "zh", "uri": str(reviews), "format": "csv",
                     "fields": {"text": "review", "label": "label"}, "rows_per_partition": 10_000}],
    }


def timed_build(config: dict, scratch: Path, name: str) -> dict:
    """Wall seconds, peak tree RSS and the Prefect-side timings of one `corpusflow build`."""
    path = scratch / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True))
    started_at = datetime.now(timezone.utc)
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "flows.cli", "build", "--config", str(path)],
                               cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = [0.0]
    threading.Thread(target=_watch_rss, args=(process.pid, peak), daemon=True).start()
    _, stderr = process.communicate()
    wall = time.perf_counter() - start
    if process.returncode:
        raise RuntimeError(f"build {name} failed:\n{stderr.decode()[-3000:]}")
    return {"seconds": round(wall, 2), "peak_rss_mb": round(peak[0], 1), **_run_timings(started_at, wall)}


DATA_JUICER_OPS = [
    {"fix_unicode_mapper": None}, {"punctuation_normalization_mapper": None},
    {"whitespace_normalization_mapper": None}, {"clean_html_mapper": None}, {"clean_email_mapper": None},
    {"clean_links_mapper": None}, {"chinese_convert_mapper": {"mode": "t2s"}}, {"text_length_filter": {"min_len": 5}},
    {"document_deduplicator": {"lowercase": False, "ignore_non_character": False}},
]


def data_juicer_run(dj_process: str, texts: list[str], scratch: Path, processes: int) -> dict:
    """Wall seconds of data-juicer's recipe over the texts (JSON lines), and how many texts it kept."""
    work = scratch / f"data-juicer-np{processes}"
    work.mkdir(parents=True)
    dataset = work / "reviews.jsonl"
    dataset.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts), encoding="utf-8")
    recipe = {"project_name": "corpusflow-bench", "dataset_path": str(dataset), "np": processes, "text_keys": "text",
              "export_path": str(work / "out" / "kept.jsonl"), "open_tracer": False, "use_cache": False,
              "skip_op_error": False, "process": DATA_JUICER_OPS}
    (work / "recipe.yaml").write_text(yaml.safe_dump(recipe, allow_unicode=True))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_CACHE": str(work / "hf")}
    start = time.perf_counter()
    done = subprocess.run([dj_process, "--config", str(work / "recipe.yaml")], cwd=work, env=env,
                          capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode:
        raise RuntimeError(f"data-juicer np={processes} failed:\n{(done.stdout + done.stderr)[-3000:]}")
    kept = sum(1 for _ in (work / "out" / "kept.jsonl").open(encoding="utf-8"))
    return {"seconds": round(wall, 2), "kept": kept}


def _run_timings(started_at: datetime, wall: float) -> dict:
    """From the newest build run: start-up to the first partition, and the validation phase's share."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterStartTime, TaskRunFilter
    from prefect.client.schemas.filters import TaskRunFilterFlowRunId

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(start_time=FlowRunFilterStartTime(after_=started_at)))
        (run,) = [r for r in runs if r.name and client.read_flow(r.flow_id).name == "build-corpus"]
        of_run = TaskRunFilter(flow_run_id=TaskRunFilterFlowRunId(any_=[run.id]))
        tasks, page = [], None
        while page is None or len(page) == 200:  # the API serves at most 200 per request
            page = client.read_task_runs(task_run_filter=of_run, limit=200, offset=len(tasks))
            tasks += page
    partitions = [t for t in tasks if t.name.startswith("process-") and t.start_time]
    first_partition = min(t.start_time for t in partitions)
    chain_end = max(t.end_time for t in partitions)
    after_chain = wall - (chain_end - started_at).total_seconds()
    return {"startup_to_first_partition_s": round((first_partition - started_at).total_seconds(), 2),
            "after_last_partition_s": round(after_chain, 2), "after_last_partition_share": round(after_chain / wall, 3),
            **{f"{phase}_span_s": _span(tasks, prefixes) for phase, prefixes in GLOBAL_PHASES.items()}}


# Task run names of the global steps, by phase (Prefect names a run after its task unless told otherwise).
GLOBAL_PHASES = {
    "dedup": ("plan_dedup", "dedup-bucket-", "resolve_duplicates"),
    "writing": ("plan_writing", "write-", "assemble", "plan_validation", "validate-"),
    "finalize": ("render_data_docs", "apply_contracts", "write_manifest", "draw_pictures", "check_limits", "publish",
                 "announce", "attach_pictures"),
}


def _span(tasks: list, prefixes: tuple[str, ...]) -> float | None:
    """Seconds from the first start to the last end of the task runs whose name starts with one of `prefixes`."""
    ran = [t for t in tasks if t.name.startswith(prefixes) and t.start_time and t.end_time]
    return round((max(t.end_time for t in ran) - min(t.start_time for t in ran)).total_seconds(), 2) if ran else None


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
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--data-juicer", help="data-juicer's dj-process, for its reference row")
    args = parser.parse_args()
    from flows.servers import use_prefect_server

    use_prefect_server()
    raw, texts = review_texts(args.data)
    scratch = Path(tempfile.mkdtemp(prefix="corpusflow-bench-"))
    try:
        one = write_copies(raw, 1, scratch / "x1" / "shopping.csv")
        many = write_copies(raw, args.repeat, scratch / f"x{args.repeat}" / "shopping.csv")
        # raw jieba is timed before and after the builds and averaged: this machine's speed drifts in minutes
        jieba_before = raw_jieba_seconds(texts)
        builds = {
            "1x_1_worker": timed_build(config_for(one, scratch / "run-1w", 1), scratch, "one-worker"),
            "1x_2_workers": timed_build(config_for(one, scratch / "run-2w", 2), scratch, "two-workers"),
            f"{args.repeat}x_2_workers": timed_build(config_for(many, scratch / "run-nx", 2), scratch, "repeated"),
        }
        data_juicer = {f"np{n}": data_juicer_run(args.data_juicer, texts, scratch, n)
                       for n in (1, 2)} if args.data_juicer else {}
        jieba_after = raw_jieba_seconds(texts)
        jieba_s = (jieba_before + jieba_after) / 2
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    repeated = builds[f"{args.repeat}x_2_workers"]
    results = {
        "date": dt.date.today().isoformat(), "cpus": os.cpu_count(), "load_average_at_end": os.getloadavg(),
        "input_mb": round(sum(len(t.encode()) for t in texts) / 1e6, 2), "records": len(texts),
        "raw_jieba_s": round(jieba_s, 2), "raw_jieba_before_after_s": [round(jieba_before, 2), round(jieba_after, 2)],
        "builds": builds,
        "ratio_vs_raw_jieba": {name: round(jieba_s * (args.repeat if name.startswith(f"{args.repeat}x") else 1)
                                           / build["seconds"], 3) for name, build in builds.items()},
        "data_juicer_1x": data_juicer,
        "data_juicer_ratio_vs_raw_jieba": {n: round(jieba_s / run["seconds"], 3) for n, run in data_juicer.items()},
        "ratio_2_workers_vs_1": round(builds["1x_1_worker"]["seconds"] / builds["1x_2_workers"]["seconds"], 3),
        f"ratio_rss_{args.repeat}x_vs_1x": round(repeated["peak_rss_mb"] / builds["1x_2_workers"]["peak_rss_mb"], 3),
        "targets": {"1x_2_workers vs raw jieba": ">= 1.3", f"{args.repeat}x_2_workers vs raw jieba": ">= 1.5",
                    f"{args.repeat}x after_last_partition_share": "<= 0.10", "startup_to_first_partition_s": "<= 3",
                    f"ratio_rss_{args.repeat}x_vs_1x": "<= 1.2"},
    }
    print(json.dumps(results, indent=2))
    out = REPO / "bench" / "results" / f"build_throughput-{results['date']}.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written {out}")


if __name__ == "__main__":
    main()

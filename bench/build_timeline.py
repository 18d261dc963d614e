"""Where a build's wall time goes: a per-phase timeline from the run's task timestamps, and a profile.

    python bench/build_timeline.py [--data ../shared/data] [--repeat 3] [--engine jieba|rjieba] [--profile]
                                   [--baseline /path/to/a/checkout/of/other/code] [--served]

Builds the online-shopping reviews (10.6 MB, one CSV) at 1x and at `--repeat` times the rows with
2 workers, then rebuilds the 1x dataset with every partition cached, each as one `corpusflow build`
command (the local Prefect server already up). Raw `jieba.lcut` over the same texts in one process is
timed before and after the builds and averaged: every figure is also given as a ratio to it. With
`--baseline`, each case is built by that checkout's code too (its build first, then ours, alternating), and
the two builds' manifests are compared without the fields that name the code and the config's shape
(`same_output`): a speed change must not change the output. Their version ids (`same_version`) leave
the code version out but hash the config's shape: they differ when the config model gained a field.
With `--served`, 1x and `--repeat`x are then built again beside the warm pool that `corpusflow serve`
keeps for its runs (started for them, as a separate process), which the builds adopt: what a build costs
when start-up is paid once per served process (`1x_served`, `3x_served`).

The timeline comes from the Prefect API: the command's start, the flow runs' and every task run's start
and end, the command's end. Each instant of the build's wall time is given to the phase of a task running
then (partitions first, then shard writing and validation, dedup, planning, manifest/publish/pictures);
an instant with no task running is start-up (before the first flow), between tasks (inside the flow) or
the end of the flows (after the last task, until the command has exited). The partition phase's throughput is also given per
core, against raw jieba.

With `--profile`, py-spy samples the command's whole process tree (main process, fork server and workers)
when on CPU, and the samples are summed by process and by what they were doing: importing, the text
chain, Great Expectations, the global steps, Prefect and its client. The profiler takes CPU from the
build: its timings are not the figures. Results go to bench/results/build_timeline[-rjieba]-<date>.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from build_throughput import config_for, raw_jieba_seconds, review_texts, write_copies  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
WORKERS = 2
# Task families (a task's function name) by phase, in the order that claims an instant when several run;
# a family not named here counts among "other global steps". Older builds' families are kept (finalize,
# write_shards validated separately) so a baseline of older code is split the same way.
PHASES = [
    ("partitions", {"process_partition"}),
    ("shards and validation", {"plan_writing", "write_shards", "assemble", "plan_validation", "apply_contracts",
                               "validate_shards", "render_data_docs"}),
    ("dedup", {"plan_dedup", "dedup_bucket", "resolve_duplicates", "deduplicate"}),
    ("planning", {"plan_source", "check_inputs", "fetch_input"}),
    ("manifest, publish and pictures", {"write_manifest", "draw_pictures", "check_limits", "publish", "announce",
                                        "finalize", "attach_pictures"}),
]
# What a py-spy sample was doing: importing when any frame imports, else by the innermost frame that
# matches (py-spy shortens paths to the package's folder and file).
PROFILE_CATEGORIES = [
    ("great expectations", ("great_expectations/",)),
    ("text chain", ("text/", "dedup/", "sources/", "stages.py", "jieba/", "opencc", "py3langid", "rjieba")),
    ("global steps (arrow, shards, manifest, card)", ("pyarrow/", "build/", "shards.py", "storage.py", "card.py",
                                                      "plots.py", "matplotlib/", "versions.py")),
    ("prefect and its client", ("prefect/", "httpx/", "httpcore/", "anyio/", "pydantic/", "sqlalchemy/")),
]


def build_once(config: dict, scratch: Path, name: str, profile: bool, repo: Path = REPO) -> dict:
    """One `corpusflow build` of the code in `repo`: its wall seconds, version and timeline (and profile)."""
    path = scratch / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True))
    command = [sys.executable, "-m", "flows.cli", "build", "--config", str(path)]
    samples = scratch / f"{name}.spy"
    if profile:
        command = [str(Path(sys.executable).with_name("py-spy")), "record", "--subprocesses", "-r", "100",
                   "--format", "raw", "-o", str(samples), "--", *command]
    started_at = datetime.now(timezone.utc)
    start = time.perf_counter()
    done = subprocess.run(command, cwd=repo, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode:
        raise RuntimeError(f"build {name} failed:\n{(done.stdout + done.stderr)[-3000:]}")
    version = (Path(config["run_dir"]) / "datasets" / config["dataset"] / "LATEST").read_text().strip()
    manifest = json.loads((Path(config["run_dir"]) / "datasets" / config["dataset"] / version / "manifest.json").read_text())
    result = {"seconds": round(wall, 2), "version": version, "output": output_digest(manifest),
              **timeline(started_at, wall, str(path))}
    if profile:
        result["profile_share"] = profile_shares(samples)
    return result


# What a manifest holds about the code and the config's shape rather than the output: a version id
# changes with any change to the library's source (by design), so two codes' outputs compare without them.
CODE_FIELDS = ("version", "code_version", "config_hash")


# The pool `corpusflow serve` keeps for its runs (flows.workers.serving_workers), without its deployments.
SERVE_POOL = """
import signal, sys
from flows.workers import serving_workers
from pipeline.config import load_config
if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # ends through the `with`, which withdraws the offer
    with serving_workers(load_config(sys.argv[1])):
        print("serving", flush=True)
        signal.pause()
"""


@contextmanager
def served_pool(config: dict, scratch: Path) -> Iterator[None]:
    """While inside, a warm pool for `config` is offered to this user's builds, as `corpusflow serve` offers it."""
    path = scratch / "served.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True))
    server = subprocess.Popen([sys.executable, "-c", SERVE_POOL, str(path)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        if server.stdout.readline().strip() != "serving":
            raise RuntimeError(f"the served pool did not start (exit code {server.wait()})")
        yield
    finally:
        server.terminate()
        server.wait(timeout=60)


def output_digest(manifest: dict) -> str:
    """The manifest's digest without CODE_FIELDS: equal digests, the same shards, ledger and reports."""
    content = {key: value for key, value in manifest.items() if key not in CODE_FIELDS}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]


def timeline(started_at: datetime, wall: float, config_path: str) -> dict:
    flows, tasks = _run_records(started_at, config_path)
    ended_at = started_at + dt.timedelta(seconds=wall)
    spans = [(t.start_time, t.end_time, _phase(t)) for t in tasks if t.start_time and t.end_time]
    first_flow = min(f.start_time for f in flows)
    seconds: Counter = Counter()
    edges = sorted({started_at, ended_at, first_flow, *(s for s, _, _ in spans), *(e for _, e, _ in spans)})
    last_task_end = max(e for _, e, _ in spans)
    order = [phase for phase, _ in PHASES] + ["other global steps"]
    for left, right in zip(edges, edges[1:]):
        if left < started_at or right > ended_at:
            continue
        running = {phase for s, e, phase in spans if s <= left and e >= right}
        if running:
            phase = next(p for p in order if p in running)
        elif right <= first_flow:
            phase = "start-up"
        elif left >= last_task_end:
            phase = "end of the flows"
        else:
            phase = "between tasks"
        seconds[phase] += (right - left).total_seconds()
    partitions = [t for t in tasks if _phase(t) == "partitions" and t.start_time]
    first_partition = min(t.start_time for t in partitions)
    after_partitions = (ended_at - max(t.end_time for t in partitions)).total_seconds()
    return {
        "phases_s": {p: round(s, 2) for p, s in seconds.most_common()},
        "phases_share": {p: round(s / wall, 3) for p, s in seconds.most_common()},
        "startup_to_first_partition_s": round((first_partition - started_at).total_seconds(), 2),
        "after_last_partition_s": round(after_partitions, 2),
        "after_last_partition_share": round(after_partitions / wall, 3),
        "partitions": len(partitions),
        "tasks": len(tasks),
    }


def _run_records(started_at: datetime, config_path: str) -> tuple[list, list]:
    """The build's flow run (the one given `config_path`, started since `started_at`), the flow runs it
    started, and all their task runs: other builds on the same server are left out."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterStartTime

    with get_client(sync_client=True) as client:
        recent = FlowRunFilter(start_time=FlowRunFilterStartTime(after_=started_at))
        since = client.read_flow_runs(flow_run_filter=recent)
        flows = [f for f in since if f.parameters.get("config_path") == config_path]
        tasks = _task_runs(client, [f.id for f in flows])
        while children := [f for f in since if f.parent_task_run_id in {t.id for t in tasks} and f not in flows]:
            flows += children
            tasks += _task_runs(client, [f.id for f in children])
    subflows = {f.parent_task_run_id for f in flows}  # a nested flow's stand-in task spans the whole flow
    return flows, [t for t in tasks if t.id not in subflows]


def _task_runs(client, flow_run_ids: list) -> list:
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterFlowRunId

    of_runs = TaskRunFilter(flow_run_id=TaskRunFilterFlowRunId(any_=flow_run_ids))
    tasks, page = [], None
    while page is None or len(page) == 200:  # the API serves at most 200 per request
        page = client.read_task_runs(task_run_filter=of_runs, limit=200, offset=len(tasks))
        tasks += page
    return tasks


def _family(task) -> str:
    return task.task_key.rsplit("-", 1)[0]


def _phase(task) -> str:
    family = _family(task)
    return next((phase for phase, families in PHASES if family in families), "other global steps")


def profile_shares(samples: Path) -> dict:
    """Share of the on-CPU samples of every process by process (main or worker) and what it was doing."""
    counts: Counter = Counter()
    for line in samples.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        process = "worker" if "multiprocessing" in stack.split(";", 2)[1] else "main"
        counts[f"{process}: {_category(stack.split(';'))}"] += int(count)
    total = sum(counts.values()) or 1
    return {category: round(n / total, 3) for category, n in counts.most_common()}


def _category(frames: list[str]) -> str:
    if any("importlib._bootstrap" in frame for frame in frames):
        return "importing"
    for frame in reversed(frames):
        for category, markers in PROFILE_CATEGORIES:
            if any(marker in frame for marker in markers):
                return category
    return "other"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--engine", choices=["jieba", "rjieba"], default="jieba")
    parser.add_argument("--profile", action="store_true", help="sample every process with py-spy")
    parser.add_argument("--baseline", type=Path, help="a checkout of other code (e.g. a worktree of main) "
                        "to build each case with too, alternating, and compare")
    parser.add_argument("--served", action="store_true", help="then build 1x and Nx again (this code) beside the "
                        "warm pool `corpusflow serve` keeps, which the builds adopt")
    args = parser.parse_args()
    from flows.servers import use_prefect_server

    use_prefect_server()
    raw, texts = review_texts(args.data)
    scratch = Path(tempfile.mkdtemp(prefix="corpusflow-timeline-"))
    checkouts = {"this": REPO} | ({"baseline": args.baseline.resolve()} if args.baseline else {})
    builds: dict[str, dict] = {}

    def configured(input_csv: Path, run_dir: Path) -> dict:
        return config_for(input_csv, run_dir, WORKERS) | {"segment": {"engine": args.engine}}

    try:
        inputs = {1: write_copies(raw, 1, scratch / "x1" / "shopping.csv"),
                  args.repeat: write_copies(raw, args.repeat, scratch / f"x{args.repeat}" / "shopping.csv")}
        cases = [("1x", 1), (f"{args.repeat}x", args.repeat), ("1x_cached_rebuild", 1)]
        jieba_before = raw_jieba_seconds(texts)
        for case, copies in cases:
            for code, repo in checkouts.items():  # the baseline first, when given
                run_dir = scratch / f"run-{code}-{copies}x"
                config = configured(inputs[copies], run_dir)
                builds.setdefault(case, {})[code] = build_once(config, scratch, f"{case}-{code}", args.profile, repo)
        if args.served:
            served_cases = [("1x_served", 1), (f"{args.repeat}x_served", args.repeat)]
            with served_pool(configured(inputs[1], scratch / "served"), scratch):
                for case, copies in served_cases:
                    config = configured(inputs[copies], scratch / f"run-served-{copies}x")
                    builds[case] = {"this": build_once(config, scratch, case, args.profile)}
            cases += served_cases
        jieba_after = raw_jieba_seconds(texts)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    jieba_s = (jieba_before + jieba_after) / 2
    for case, copies in cases:
        for build in builds[case].values():
            build["ratio_vs_raw_jieba"] = round(jieba_s * copies / build["seconds"], 3)
            partition_s = build["phases_s"].get("partitions")
            if partition_s and "cached" not in case:
                build["partition_phase_per_core_vs_raw_jieba"] = round(jieba_s * copies / WORKERS / partition_s, 3)
        if "baseline" in builds[case]:
            this, baseline = builds[case]["this"], builds[case]["baseline"]
            builds[case]["speedup_vs_baseline"] = round(baseline["seconds"] / this["seconds"], 3)
            builds[case]["same_version"] = this["version"] == baseline["version"]
            builds[case]["same_output"] = this["output"] == baseline["output"]
    results = {
        "date": dt.date.today().isoformat(), "cpus": os.cpu_count(), "load_average_at_end": os.getloadavg(),
        "engine": args.engine, "workers": WORKERS, "records": len(texts),
        "input_mb": round(sum(len(t.encode()) for t in texts) / 1e6, 2),
        "code": {code: _commit(repo) for code, repo in checkouts.items()},
        "raw_jieba_s": round(jieba_s, 2), "raw_jieba_before_after_s": [round(jieba_before, 2), round(jieba_after, 2)],
        "builds": builds,
        "targets": {"1x vs raw jieba": ">= 1.0 (jieba), >= 2.0 (rjieba)", f"{args.repeat}x vs raw jieba": ">= 1.5",
                    "partition_phase_per_core_vs_raw_jieba": ">= 0.95", "startup_to_first_partition_s": "<= 1.5",
                    f"after_last_partition_share ({args.repeat}x)": "<= 0.10",
                    "1x_cached_rebuild seconds": "<= 5"},
    }
    print(json.dumps(results, indent=2))
    suffix = "" if args.engine == "jieba" else f"-{args.engine}"
    out = REPO / "bench" / "results" / f"build_timeline{suffix}-{results['date']}.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written {out}")


def _commit(repo: Path) -> str:
    done = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=repo, capture_output=True, text=True)
    return done.stdout.strip()


if __name__ == "__main__":
    main()

"""Idle footprint of the servers `corpusflow ui` starts, side by side in one run.

- the MLflow server as `corpusflow ui` starts it (`flows.servers.ensure_mlflow_ui`: one worker, job execution
  off), and the same command with MLflow's default job execution on (what it started before);
- the embedded Prefect server (`ensure_prefect_server`), for scale.
Each server is started, left idle for --settle seconds (the job consumers start after the health check
answers), then its whole process tree is measured: process count, summed RSS and summed PSS (PSS shares the
pages the processes have in common, so it does not count them once per process). Target: the UI's MLflow
server at most 3 processes and well under 1 GB idle.

    python bench/ui_server_footprint.py [--settle 20]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import date
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from flows.servers import ensure_mlflow_ui, ensure_prefect_server, free_port, stop_prefect_server  # noqa: E402

RESULTS = Path(__file__).parent / "results"
MB = 2**20


def tree_footprint(pid: int) -> dict[str, float]:
    leader = psutil.Process(pid)
    processes = [leader, *leader.children(recursive=True)]
    rss = pss = 0
    for process in processes:
        info = process.memory_full_info()
        rss, pss = rss + info.rss, pss + info.pss
    return {"processes": len(processes), "rss_mb": round(rss / MB), "pss_mb": round(pss / MB)}


def mlflow_as_corpusflow_ui(workdir: Path, settle: float) -> dict[str, float]:
    ensure_mlflow_ui(workdir)
    pid = json.loads((workdir / "mlflow-ui.json").read_text())["pid"]
    try:
        time.sleep(settle)
        return tree_footprint(pid)
    finally:
        os.killpg(pid, signal.SIGTERM)


def mlflow_with_job_execution(workdir: Path, settle: float) -> dict[str, float]:
    """The same command as ensure_mlflow_ui, with MLflow's default (job execution on)."""
    port = free_port()
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "true"}
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{workdir / 'mlflow.db'}", "--default-artifact-root",
         str(workdir / "mlartifacts")],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("the MLflow server with job execution did not come up") from None
                time.sleep(0.5)
        time.sleep(settle)
        return tree_footprint(server.pid)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def prefect_embedded(home: Path, settle: float) -> dict[str, float]:
    ensure_prefect_server(home)
    pid = json.loads((home / "prefect" / "server.json").read_text())["pid"]
    try:
        time.sleep(settle)
        return tree_footprint(pid)
    finally:
        stop_prefect_server(home)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settle", type=float, default=20.0, help="idle seconds before measuring")
    args = parser.parse_args()
    rows = {}
    with tempfile.TemporaryDirectory() as scratch:
        for name, measure in (("mlflow_corpusflow_ui", mlflow_as_corpusflow_ui),
                              ("mlflow_job_execution_on", mlflow_with_job_execution),
                              ("prefect_embedded", prefect_embedded)):
            workdir = Path(scratch) / name
            workdir.mkdir()
            rows[name] = measure(workdir, args.settle)
            print(name, rows[name], flush=True)
    ui, jobs = rows["mlflow_corpusflow_ui"], rows["mlflow_job_execution_on"]
    report = {"date": date.today().isoformat(), "settle_s": args.settle, "cpus": psutil.cpu_count(), "servers": rows,
              "ratios_job_execution_on_vs_ui": {key: round(jobs[key] / ui[key], 2) for key in ui}}
    print(f"job execution on vs corpusflow ui: {report['ratios_job_execution_on_vs_ui']} "
          "(target: the UI's server <= 3 processes, well under 1 GB)")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"ui_server_footprint-{date.today().isoformat()}.json").write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()

"""The build's worker pool: workers forked warm from a fork server that loaded the chain once, and served."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import yaml

from flows.workers import (SERVED_POOL_ENV, run_in_step_worker, run_in_worker, serving_workers, shutdown_workers,
                           start_workers, step_pool)
from pipeline.config import parse_config

REPO = Path(__file__).resolve().parents[1]


def in_worker(expression: str) -> object:
    """`expression` evaluated in a worker of the one-process pool (eval travels; a test function would not)."""
    return run_in_worker(1, eval, expression)


def test_a_worker_starts_with_the_chains_dictionaries_and_models_loaded() -> None:
    shutdown_workers()
    start_workers(1)  # no warm-up of its own: what it has, it was forked with
    try:
        cutters = in_worker("__import__('pipeline.text.segment').text.segment.zh_cutter.cache_info().currsize")
        models = in_worker("__import__('pipeline.text.langid').text.langid.identifier.cache_info().currsize")
        parent = in_worker("__import__('os').getppid()")
    finally:
        shutdown_workers()
    assert (cutters, models) == (1, 1)
    assert parent != os.getpid()  # forked from the pool's server, not from this threaded process


def test_a_worker_runs_under_the_callers_current_environment(monkeypatch) -> None:
    """Credentials and endpoints set after the pool started (a later build in one process) reach the work."""
    shutdown_workers()
    start_workers(1)
    try:
        before = in_worker("__import__('os').environ.get('AWS_ACCESS_KEY_ID')")
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "set-after-the-pool-started")
        monkeypatch.setenv("FSSPEC_S3_ENDPOINT_URL", "http://127.0.0.1:9")
        after = in_worker("__import__('os').environ.get('AWS_ACCESS_KEY_ID')")
        endpoint = in_worker("__import__('fsspec').config.conf.get('s3', {}).get('endpoint_url')")
    finally:
        shutdown_workers()
    assert before != "set-after-the-pool-started"
    assert (after, endpoint) == ("set-after-the-pool-started", "http://127.0.0.1:9")


def test_the_global_steps_run_in_workers_forked_with_their_libraries_imported() -> None:
    shutdown_workers()
    start_workers(1)
    try:
        pool = step_pool(1)
        imported = run_in_step_worker(1, eval, "sorted({'great_expectations', 'matplotlib.figure'} & set("
                                                "__import__('sys').modules))")
        parent = run_in_step_worker(1, eval, "__import__('os').getppid()")
        worker = run_in_step_worker(1, os.getpid)
        try:
            run_in_step_worker(1, int, "not a number")
        except ValueError:
            raised = True
        process = pool.process
    finally:
        shutdown_workers()
    assert imported == ["great_expectations", "matplotlib.figure"]  # before the worker was forked
    assert parent == process.pid and worker != process.pid  # forked by the steps' own process
    assert raised
    assert not process.is_alive() and not psutil.pid_exists(worker)  # shut down with the chain's pool


def test_a_steps_pool_never_used_ends_without_waiting_for_its_imports() -> None:
    """An unchanged rebuild starts the pool and needs none of it: the command must not wait for its imports."""
    shutdown_workers()
    start_workers(1)
    try:
        process = step_pool(1).process
        started = time.monotonic()
    finally:
        shutdown_workers()
    assert time.monotonic() - started < 1.5  # importing Great Expectations alone takes seconds
    assert not process.is_alive()


def test_no_worker_outlives_a_builder_killed_with_sigkill(tmp_path: Path) -> None:
    script = ("import os, time; from flows import workers\n"
              "workers.start_workers(1)\n"
              "pool = workers.step_pool(1)\n"
              "print(workers.run_in_worker(1, os.getpid), pool.process.pid, workers.run_in_step_worker(1, os.getpid),"
              " flush=True)\n"
              "time.sleep(60)\n")
    builder = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        pids = [int(pid) for pid in builder.stdout.readline().split()]
    finally:
        builder.kill()  # kill -9: no exit handler runs
        builder.wait()
    gone, alive = psutil.wait_procs([psutil.Process(pid) for pid in pids if psutil.pid_exists(pid)], timeout=30)
    assert len(pids) == 3 and not alive  # the chain's worker, the steps' process and its worker


def test_a_run_started_by_a_served_process_uses_its_warm_pool(tmp_path: Path) -> None:
    reviews = tmp_path / "reviews.csv"
    reviews.write_text("review\n很好\n", encoding="utf-8")
    config = parse_config({"run_dir": str(tmp_path / "run"), "runner": {"workers": 1}, "sources": [
        {"name": "reviews", "kind": "comments", "lang": "zh", "uri": str(reviews), "format": "csv",
         "fields": {"text": "review"}}]})
    run = ("import os; from flows import workers\n"
           "print(workers.run_in_worker(1, os.getpid))\n"
           "try:\n    workers.run_in_worker(1, int, 'not a number')\nexcept ValueError as error:\n    print('raised')\n"
           "print(workers.run_in_step_worker(1, os.getpid))\n"
           "print(len(workers._pools), len(workers._step_pools), workers._served_pool(2))")
    shutdown_workers()
    try:
        with serving_workers(config):
            # a flow run of `corpusflow serve` is a process of its own that inherits the environment
            done = subprocess.run([sys.executable, "-c", run], cwd=REPO, capture_output=True, text=True, timeout=120)
            served = {p.pid for p in psutil.Process().children(recursive=True)}
        assert SERVED_POOL_ENV not in os.environ
    finally:
        shutdown_workers()
    assert done.returncode == 0, done.stderr
    worker, raised, step_worker, pools = done.stdout.splitlines()
    assert int(worker) in served and int(step_worker) in served  # the served process's workers did the work
    assert worker != step_worker
    assert raised == "raised"  # the work's own exception, raised in the run
    assert pools == "0 0 None"  # the run started no pool; a run wanting another size would not use the served one


def test_a_build_beside_a_served_process_uses_its_warm_pool_and_starts_none(prefect_api: str, tmp_path: Path) -> None:
    """`corpusflow build` finds the pool `corpusflow serve` offers in CORPUSFLOW_HOME (not in its environment):
    the served workers do its partitions and validation, and the build's own process tree starts no pool."""
    reviews = tmp_path / "reviews.csv"
    texts = [f"第{i}件商品的质量很好，物流也快，客服回答问题很耐心，下次还会再来买。" for i in range(300)]
    reviews.write_text("review\n" + "\n".join(texts) + "\n", encoding="utf-8")
    config = {"dataset": "served", "run_dir": str(tmp_path / "run"), "runner": {"workers": 1},
              "sources": [{"name": "reviews", "kind": "comments", "lang": "zh", "uri": str(reviews), "format": "csv",
                           "fields": {"text": "review"}}]}
    config_path = tmp_path / "served.yaml"
    config_path.write_text(yaml.safe_dump(config, allow_unicode=True))
    shutdown_workers()
    try:
        with serving_workers(parse_config(config)) as offer:
            assert offer == Path(os.environ["CORPUSFLOW_HOME"]) / "pools" / "workers-1.json"
            assert offer.stat().st_mode & 0o777 == 0o600  # its authkey runs code in the pool: the user's alone
            served = [p for p in psutil.Process().children(recursive=True)]
            before = {p.pid: sum(p.cpu_times()[:2]) for p in served}
            environment = {k: v for k, v in os.environ.items() if k != SERVED_POOL_ENV}
            build = subprocess.Popen([sys.executable, "-m", "flows.cli", "build", "--config", str(config_path)],
                                     cwd=REPO, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True)
            started = set()
            while build.poll() is None:  # every process the build starts, while it runs
                started |= {p.pid for p in psutil.Process(build.pid).children(recursive=True)}
                time.sleep(0.05)
            output = build.stdout.read()
            worked = {p.pid: sum(p.cpu_times()[:2]) - before[p.pid] for p in served}
        assert not offer.exists()  # withdrawn with the pool
    finally:
        shutdown_workers()
    assert build.returncode == 0, output
    assert f"workers: the warm pool of `corpusflow serve` (pid {os.getpid()})" in output
    assert "version" in output
    assert sum(worked.values()) > 0.05, worked  # the chain, the dedup and the validation ran in served workers
    assert not started, started  # and the build started no process of its own: no fork server, no worker


def test_a_stale_or_foreign_offer_is_not_adopted(tmp_path: Path, monkeypatch) -> None:
    from flows import workers

    monkeypatch.setenv("CORPUSFLOW_HOME", str(tmp_path))
    monkeypatch.delenv(SERVED_POOL_ENV, raising=False)
    left_behind = tmp_path / "socket"
    left_behind.touch()  # a killed server's socket file: nothing listens on it
    with workers._serving(lambda: None) as chain, workers._serving(lambda: None) as steps:
        alive = {**chain, "steps": steps, "workers": 2, "code": workers.code_version(), "pid": os.getpid()}
        for offer in ({**alive, "address": str(left_behind)},  # its process is gone, its socket file is not
                      {**alive, "steps": {**steps, "authkey": "00" * 32}},  # another server on that socket
                      {**alive, "code": "0" * 16},  # another version of the code
                      {key: value for key, value in alive.items() if key != "steps"}):  # written by something else
            workers._publish(offer)
            assert workers.adopt_served_pool(2) is None and SERVED_POOL_ENV not in os.environ
        workers._publish(alive)
        assert workers.adopt_served_pool(3) is None  # another worker count looks for its own offer
        assert workers.adopt_served_pool(2) == os.getpid()
        assert workers._served_pool(2)["address"] == chain["address"]

"""Two builds of one dataset never run at once: the second waits or, with --no-wait, exits 2; a killed
holder's lease is taken over. Each first build holds the lease while its remote source, served here,
keeps it waiting."""

from __future__ import annotations

import http.server
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from pipeline import lease

REPO = Path(__file__).resolve().parents[1]
ARTICLES = [f"第{i}条新闻：今天上午，市政府召开新闻发布会，介绍全市交通建设和社区服务的最新进展。" for i in range(6)]


class _GatedFeed(http.server.BaseHTTPRequestHandler):
    """Serves one JSONL feed once `gate` is set: until then a build that fetches it holds its lease."""

    gate = threading.Event()
    body = "".join(json.dumps({"id": str(i), "content": t}, ensure_ascii=False) + "\n"
                   for i, t in enumerate(ARTICLES)).encode()

    def do_GET(self) -> None:  # noqa: N802 - the http.server interface
        self.gate.wait(120)
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *_: object) -> None:
        return


@pytest.fixture
def gated_config(prefect_api: str, tmp_path: Path) -> Iterator[tuple[Path, threading.Event]]:
    handler = type("Feed", (_GatedFeed,), {"gate": threading.Event()})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    config_path = tmp_path / "gated.yaml"
    # no contracts: Great Expectations' start-up is no part of what is tested here
    config_path.write_text(yaml.safe_dump({"run_dir": str(tmp_path / "run"), "runner": {"workers": 1},
                                           "contracts": {"enabled": False}, "sources": [
        {"name": "remote", "kind": "news", "lang": "zh", "uri": f"http://127.0.0.1:{server.server_port}/feed.jsonl",
         "format": "jsonl", "fields": {"text": "content", "id": "id"}}]}, allow_unicode=True))
    try:
        yield config_path, handler.gate
    finally:
        handler.gate.set()
        server.shutdown()


def _start_build(config_path: Path, log: Path, *options: str) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, "-m", "flows.cli", "build", "--config", str(config_path), *options],
                                cwd=REPO, env={**os.environ, "COLUMNS": "200"}, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


def _wait_for(condition, process: subprocess.Popen, log: Path, what: str, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert process.poll() is None, f"the build ended before {what}:\n{log.read_text()}"
        assert time.monotonic() < deadline, f"no {what} after {timeout_s} s:\n{log.read_text()}"
        time.sleep(0.2)


def _holds_both_locks(config_path: Path) -> bool:
    """The lease file names a holder that also took the Prefect concurrency limit."""
    holder = lease.read_holder(lease.lease_path(yaml.safe_load(config_path.read_text())["run_dir"], "demo"))
    return bool(holder and holder.prefect_lease)


def _cli_build(config_path: Path, *options: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows.cli", "build", "--config", str(config_path), *options],
                          cwd=REPO, capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"}, timeout=600)


@pytest.mark.slow
def test_a_second_build_waits_or_with_no_wait_exits_2(gated_config: tuple[Path, threading.Event],
                                                     tmp_path: Path) -> None:
    config_path, gate = gated_config
    first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"
    first = _start_build(config_path, first_log)
    _wait_for(lambda: _holds_both_locks(config_path), first, first_log, "lease")

    refused = _cli_build(config_path, "--no-wait")
    output = refused.stdout + refused.stderr
    assert refused.returncode == 2, output
    assert re.search(rf"dataset demo is being built: build \S+ of dataset demo, started \d\d:\d\d, pid {first.pid}",
                     refused.stdout), output
    assert "Traceback" not in output and len(refused.stdout.splitlines()) < 40, output

    second = _start_build(config_path, second_log)
    _wait_for(lambda: "waiting for build" in second_log.read_text(), second, second_log, "waiting line")
    assert f"pid {first.pid}" in second_log.read_text()
    gate.set()
    assert first.wait(timeout=300) == 0, first_log.read_text()
    assert second.wait(timeout=300) == 0, second_log.read_text()
    versions = [re.search(r"demo version (\w+)", log.read_text()).group(1) for log in (first_log, second_log)]
    assert versions[0] == versions[1], "the second built the same inputs after the first, into the same version"
    assert not lease.lease_path(tmp_path / "run", "demo").exists(), "released after publishing"


@pytest.mark.slow
def test_a_killed_builds_lease_is_taken_over(gated_config: tuple[Path, threading.Event], tmp_path: Path) -> None:
    config_path, gate = gated_config
    killed_log = tmp_path / "killed.log"
    killed = _start_build(config_path, killed_log)
    _wait_for(lambda: _holds_both_locks(config_path), killed, killed_log, "lease")
    os.killpg(killed.pid, signal.SIGKILL)  # the CLI, its flow and its workers: nothing releases anything
    killed.wait()
    assert lease.read_holder(lease.lease_path(tmp_path / "run", "demo")).pid == killed.pid, "left behind"
    gate.set()

    after = _cli_build(config_path)
    output = after.stdout + after.stderr
    assert after.returncode == 0, output
    assert re.search(rf"took over the lease of dataset demo from build \S+ of dataset demo, started \d\d:\d\d, "
                     rf"pid {killed.pid}: its process {killed.pid} is gone", output), output
    assert "waiting for" not in output, "the dead holder's Prefect slot was freed at once, not waited out"

"""The embedded defaults: a real local Prefect server (SQLite) and an MLflow UI, started on demand, reused.

Prefect's temporary in-process server loses task runs and each worker process would start its own, so the
CLI starts `prefect server start` once, detached, records where it listens, and later runs reuse it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

STARTUP_TIMEOUT_S = 90
STOP_TIMEOUT_S = 20


def corpusflow_home() -> Path:
    return Path(os.environ.get("CORPUSFLOW_HOME", Path.home() / ".corpusflow"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _wait_healthy(url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if _healthy(url):
            return
        if process.poll() is not None:
            raise RuntimeError(f"server exited with code {process.returncode}; see {log}")
        time.sleep(0.5)
    raise RuntimeError(f"server not healthy at {url} after {STARTUP_TIMEOUT_S} s; see {log}")


def _start_detached(command: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def ensure_prefect_server(home: Path | None = None) -> str:
    """URL of a healthy local Prefect API, starting `prefect server start` if none is recorded and up.

    A recorded server is reused only when its UI is as wanted (on or off) and calls the server's own API;
    one started otherwise (by an older corpusflow, whose UI called Prefect's default port) is replaced.
    """
    home = (home or corpusflow_home()) / "prefect"
    state = home / "server.json"
    want_ui = os.environ.get("PREFECT_UI_ENABLED", "true").lower() not in ("false", "0")
    if state.exists():
        api_url = json.loads(state.read_text())["api_url"]
        if _healthy(f"{api_url}/health"):
            if ui_api_url(api_url) == (api_url if want_ui else None):
                return api_url
            stop_prefect_server(home.parent)
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    # `--port` alone leaves the UI calling Prefect's default port: the UI reads its API URL from these settings.
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_UI_ENABLED": str(want_ui).lower(), "PREFECT_SERVER_API_HOST": "127.0.0.1",
           "PREFECT_SERVER_API_PORT": str(port), "PREFECT_UI_API_URL": api_url}
    env.pop("PREFECT_API_URL", None)
    log = home / "server.log"
    process = _start_detached(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)], log, env)
    _wait_healthy(f"{api_url}/health", process, log)
    state.write_text(json.dumps({"api_url": api_url, "pid": process.pid}))
    return api_url


def ui_api_url(api_url: str) -> str | None:
    """The API URL the server's UI calls (from the `/ui-settings` it serves); None when the UI is off."""
    try:
        with urllib.request.urlopen(f"{api_url.removesuffix('/api')}/ui-settings", timeout=5) as response:
            return json.loads(response.read())["api_url"]
    except (urllib.error.URLError, OSError, ValueError, KeyError):
        return None


def use_prefect_server(home: Path | None = None) -> str:
    """Point this process (and the processes it starts) at the local server; must run before flows run."""
    if os.environ.get("PREFECT_API_URL"):
        return os.environ["PREFECT_API_URL"]
    api_url = ensure_prefect_server(home)
    os.environ["PREFECT_API_URL"] = api_url
    refresh_prefect_settings()
    return api_url


def refresh_prefect_settings() -> None:
    """Prefect reads the environment into its settings when it is first imported; after that import, a
    changed PREFECT_* variable takes effect only once its global settings are read again."""
    context = sys.modules.get("prefect.context")
    if context is not None:
        context.refresh_global_settings_context()


def stop_prefect_server(home: Path | None = None) -> bool:
    """Stop the recorded server and wait until it has exited (it holds the SQLite database)."""
    state = (home or corpusflow_home()) / "prefect" / "server.json"
    if not state.exists():
        return False
    pid = json.loads(state.read_text())["pid"]
    state.unlink()
    return _stop_group(pid)


def _stop_group(pid: int) -> bool:
    """SIGTERM the process group a detached server leads, and wait until it has exited."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.2)
    return True


def _alive(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a child of this process lingers as a zombie until reaped
        return os.waitpid(pid, os.WNOHANG) == (0, 0)
    except ChildProcessError:
        return True


def ensure_mlflow_ui(run_dir: Path, port: int | None = None) -> str:
    """Start `mlflow server` (one worker, loopback only, no login: one user on one machine) over the run
    directory's SQLite store; returns its URL.

    A recorded server is reused only when it runs without job execution; one started by an older corpusflow
    (with MLflow's job runner and consumers, ~2 GB idle) is replaced.
    """
    run_dir = Path(run_dir).resolve()
    state = run_dir / "mlflow-ui.json"
    if state.exists():
        recorded = json.loads(state.read_text())
        if _healthy(f"{recorded['url']}/health"):
            if recorded.get("job_execution") is False:
                return recorded["url"]
            _stop_group(recorded["pid"])
    port = port or free_port()
    command = [
        sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--backend-store-uri", f"sqlite:///{run_dir / 'mlflow.db'}",
        "--default-artifact-root", str(run_dir / "mlartifacts"),
    ]
    # Without job execution the server is 2 processes and ~0.5 GB instead of 10 and ~2.4 GB (a huey job runner
    # and its consumers); corpusflow submits no server-side jobs.
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    log = run_dir / "mlflow-ui.log"
    process = _start_detached(command, log, env)
    url = f"http://127.0.0.1:{port}"
    _wait_healthy(f"{url}/health", process, log)
    state.write_text(json.dumps({"url": url, "pid": process.pid, "job_execution": False}))
    return url


def start_model_server(
    model_uri: str, tracking_uri: str, log: Path, port: int | None = None
) -> tuple[subprocess.Popen, str]:
    """`mlflow models serve` of a registered model on loopback, in this environment, in its own process group;
    returns the process and the server's URL once `/ping` answers (stop it with `stop_model_server`)."""
    port = port or free_port()
    env = {
        **os.environ, "MLFLOW_TRACKING_URI": tracking_uri, "MLFLOW_DISABLE_TELEMETRY": "true",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        # mlflow execs `uvicorn` by name: this interpreter's scripts directory goes first on PATH
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
    }
    # --env-manager local: the model runs with the packages installed here, no virtualenv built, nothing fetched
    command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri, "--env-manager", "local",
               "--host", "127.0.0.1", "--port", str(port)]
    process = _start_detached(command, log, env)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(f"{url}/ping", process, log)
    except BaseException:
        stop_model_server(process)
        raise
    return process, url


def stop_model_server(process: subprocess.Popen) -> None:
    """Stop the server's whole process group: mlflow's uvicorn child outlives a stopped mlflow process."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while _group_alive(process) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _group_alive(process):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _group_alive(process: subprocess.Popen) -> bool:
    process.poll()  # reaps the leader once it has exited: a zombie leader is not a running server
    try:
        os.killpg(process.pid, 0)
    except ProcessLookupError:
        return False
    return True

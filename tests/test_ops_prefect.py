"""Operations against a real local Prefect server (`prefect server start`, SQLite in a temporary home):
the failure automation calls a webhook on 127.0.0.1, deployments register with their cron schedules and
event trigger, a served deployment runs on its schedule, and the GPU job template is accepted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _wait_for(condition: Callable[[], Any], timeout: float, what: str, every: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@dataclass(frozen=True)
class PrefectServer:
    api_url: str
    log: Path

    def errors(self) -> str:
        """The server's logged errors, for a failure message: a broken server service fails silently."""
        lines = self.log.read_text(errors="replace").splitlines()
        return "\n".join(line for line in lines if "Error" in line or "ERROR" in line)[-3000:]


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    """One real server per test session (starting one costs seconds), pointed at by this process."""
    from flows.servers import ensure_prefect_server, stop_prefect_server

    home = tmp_path_factory.mktemp("corpusflow-home")
    previous_ui = os.environ.get("PREFECT_UI_ENABLED")
    os.environ["PREFECT_UI_ENABLED"] = "false"  # the API is all a test needs
    try:
        api_url = ensure_prefect_server(home)
    finally:
        if previous_ui is None:
            os.environ.pop("PREFECT_UI_ENABLED")
        else:
            os.environ["PREFECT_UI_ENABLED"] = previous_ui
    from prefect.settings import PREFECT_API_URL, temporary_settings

    previous_api = os.environ.get("PREFECT_API_URL")
    os.environ["PREFECT_API_URL"] = api_url  # for subprocesses
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    # The events worker is one per process, bound to the server it first sent to: flush it and let the
    # next event start one bound to this server (and after these tests, one bound to the previous again).
    EventsWorker.drain_all(timeout=5)
    with temporary_settings({PREFECT_API_URL: api_url}):
        yield PrefectServer(api_url, home / "prefect" / "server.log")
        APILogWorker.drain_all(timeout=5)  # send queued run logs while their server is still up
        EventsWorker.drain_all(timeout=5)
    if previous_api is None:
        os.environ.pop("PREFECT_API_URL")
    else:
        os.environ["PREFECT_API_URL"] = previous_api
    stop_prefect_server(home)


class _Receiver(BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []

    def do_POST(self) -> None:  # noqa: N802 - the name http.server calls
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        type(self).received.append({"path": self.path, "body": body.decode()})
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture()
def prefect_api(prefect_server: PrefectServer) -> str:
    return prefect_server.api_url


@pytest.fixture()
def webhook_receiver() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    received: list[dict[str, Any]] = []
    handler = type("Receiver", (_Receiver,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/corpusflow-alerts", received
    server.shutdown()


def test_failed_flow_run_reaches_the_webhook(prefect_api: str, webhook_receiver: tuple[str, list]) -> None:
    from prefect import flow

    from flows.deploy import FAILURE_AUTOMATION, ensure_failure_notification

    url, received = webhook_receiver
    automation_id = ensure_failure_notification(url)
    assert ensure_failure_notification(url) == automation_id  # re-running deploy updates, not duplicates

    @flow(name="ops-always-fails")
    def always_fails() -> None:
        raise ValueError("boom \"quoted\"\nsecond line")

    time.sleep(2)  # the triggers service loads new automations on a short loop
    state = always_fails(return_state=True)
    assert state.is_failed()
    _wait_for(lambda: received, 60, "the webhook call")
    payload = json.loads(received[0]["body"])
    assert received[0]["path"] == "/corpusflow-alerts"
    assert payload["flow"] == "ops-always-fails"
    assert payload["state"] == "Failed"
    assert "boom" in payload["message"]
    assert payload["text"].startswith("corpusflow: flow run ")
    from prefect.automations import Automation

    assert Automation.read(name=FAILURE_AUTOMATION).id == automation_id


def test_deploy_all_registers_schedules_pools_and_the_dataset_trigger(prefect_api: str, tmp_path: Path) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    from flows.deploy import CPU_POOL, GPU_POOL, TIMEZONE, deploy_all
    from flows.events import announce_dataset_version

    config_path = tmp_path / "config.yaml"
    result = deploy_all(str(config_path))
    assert result["deployments"] == ["build-corpus/nightly", "train-models/weekly-and-on-new-dataset"]
    assert result["automations"] == []  # no webhook configured
    with get_client(sync_client=True) as client:
        nightly = client.read_deployment_by_name("build-corpus/nightly")
        training = client.read_deployment_by_name("train-models/weekly-and-on-new-dataset")
        assert [(s.schedule.cron, s.schedule.timezone) for s in nightly.schedules] == [("0 2 * * *", TIMEZONE)]
        assert [(s.schedule.cron, s.schedule.timezone) for s in training.schedules] == [("0 4 * * 0", TIMEZONE)]
        assert (nightly.work_pool_name, training.work_pool_name) == (CPU_POOL, GPU_POOL)
        assert nightly.parameters == {"config_path": str(config_path.resolve()), "refresh": True}
        assert nightly.job_variables == {"working_dir": str(Path.cwd())}
        assert nightly.entrypoint == "flows.build_corpus.build_corpus"
        assert client.read_work_pool(GPU_POOL).concurrency_limit == 1

        # a new dataset version starts a training run for exactly that manifest
        assert announce_dataset_version("demo", "v2", "/data/demo/v2/manifest.json", previous_version="v1")
        assert not announce_dataset_version("demo", "v2", "/data/demo/v2/manifest.json", previous_version="v2")

        def triggered_runs() -> list:
            runs = client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[training.id])))
            return [r for r in runs if r.parameters.get("manifest_path") == "/data/demo/v2/manifest.json"]

        (run,) = _wait_for(triggered_runs, 60, "the run the dataset event triggers", every=1)
        assert run.parameters["config_path"] == str(config_path.resolve())


PING_FLOW = '''
from prefect import flow


@flow(name="ops-ping")
def ping(config_path: str) -> str:
    return "pong " + config_path
'''

SERVE_SCRIPT = '''
import sys
from datetime import timedelta
from flows.deploy import DeploymentSpec, serve

spec = DeploymentSpec(flow="ops_ping:ping", name="every-20-seconds", work_pool="unused-by-serve",
                      description="test", parameters={"config_path": sys.argv[1]}, interval=timedelta(seconds=20))
serve(sys.argv[1], specs=[spec])
'''


def test_served_deployment_runs_on_its_schedule(prefect_server: PrefectServer, tmp_path: Path) -> None:
    from prefect.client.orchestration import get_client

    (tmp_path / "ops_ping.py").write_text(PING_FLOW)
    # Runs every 20 s, not every few: on a busy 2-core machine a run's process can take longer than a
    # short interval to start, and the backlog of scheduled runs would then starve the manual run.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)]),
           "PREFECT_API_URL": prefect_server.api_url, "PREFECT_RUNNER_POLL_FREQUENCY": "2"}
    log = (tmp_path / "serve.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(SERVE_SCRIPT), "configs/demo.yaml"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        with get_client(sync_client=True) as client:
            deployment = _wait_for(
                lambda: _read_deployment(client, "ops-ping/every-20-seconds"), 60, "the served deployment")
            assert deployment.schedules[0].schedule.interval == timedelta(seconds=20)

            def completed_runs(auto_scheduled: bool) -> list:
                runs = client.read_flow_runs()
                return [r for r in runs if r.deployment_id == deployment.id and r.auto_scheduled == auto_scheduled
                        and r.state and r.state.is_completed()]

            def explained(timeout: AssertionError) -> AssertionError:
                runs = [(r.name, r.auto_scheduled, r.state and r.state.name) for r in client.read_flow_runs()
                        if r.deployment_id == deployment.id]
                served = (tmp_path / "serve.log").read_text(errors="replace")[-4000:]
                return AssertionError(f"{timeout}; runs of the deployment: {runs}\nserver errors:\n"
                                      f"{prefect_server.errors()}\nserve log:\n{served}")

            try:
                # a run started by hand shows the served process executes what the server hands it ...
                client.create_flow_run_from_deployment(deployment.id)
                (manual,) = _wait_for(lambda: completed_runs(False), 240, "the manual run to complete", every=1)
                assert manual.parameters == {"config_path": "configs/demo.yaml"}
                # ... and one the server's scheduler created shows the schedule works
                _wait_for(lambda: completed_runs(True), 240, "a scheduled run to complete", every=1)
            except AssertionError as timeout:
                raise explained(timeout) from None
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def _read_deployment(client: Any, name: str) -> Any:
    from prefect.exceptions import ObjectNotFound

    try:
        return client.read_deployment_by_name(name)
    except ObjectNotFound:
        return None


def test_gpu_job_template_is_accepted_by_the_server(prefect_api: str) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate

    template = json.loads((ROOT / "infra" / "k8s-gpu-job-template.json").read_text())
    with get_client(sync_client=True) as client:
        pool = client.create_work_pool(
            WorkPoolCreate(name="ops-k8s-gpu", type="kubernetes", base_job_template=template), overwrite=True)
        variables = pool.base_job_template["variables"]["properties"]
        assert variables["gpu_count"]["default"] == 1
        resources = pool.base_job_template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"][
            "containers"][0]["resources"]
        assert resources["limits"]["nvidia.com/gpu"] == "{{ gpu_count }}"


@pytest.mark.slow
def test_ray_runner_builds_the_same_dataset_version_as_the_local_runner(
    prefect_api: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sample build on a local Ray instance started by the test equals the default (thread) build."""
    import yaml

    from flows.build_corpus import build_corpus
    from pipeline.versions import load_manifest

    monkeypatch.chdir(ROOT)  # the demo config names its samples relative to the repository
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # Ray's worker processes import `pipeline` from here
    demo = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text(encoding="utf-8"))
    versions = {}
    for kind in ("local", "ray"):
        config = {**demo, "run_dir": str(tmp_path / kind), "runner": {"kind": kind, "workers": 2},
                  "train": {**demo.get("train", {}), "enabled": False}}
        config_path = tmp_path / f"{kind}.yaml"
        config_path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
        manifest = load_manifest(build_corpus(str(config_path)))
        versions[kind] = (manifest.version, sorted((s.path, s.sha256) for s in manifest.shards))
    assert versions["ray"] == versions["local"]

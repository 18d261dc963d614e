"""The shared stack lets in only who belongs, proved two ways.

Parsing infra/: compose interpolation (done here the way Compose does it, since Docker does not run here)
refuses to start without infra/.env, publishes ports on loopback unless a bind address is chosen, holds no
literal secret, and gives each service its login; the Kubernetes files stay cluster-internal and read Secrets.
Real servers on 127.0.0.1: a Prefect server with an auth string refuses anonymous API calls and accepts the CLI
with the client setting; an MLflow basic-auth server refuses an anonymous registry call, and a training run with
the worker account registers its models there. The embedded MLflow UI runs without job consumers.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
import yaml

from flows.infra import SECRETS, ensure_mlflow_user, init_env, read_env, rotate
from flows.servers import ensure_mlflow_ui, ensure_prefect_server, free_port, stop_prefect_server
from pipeline.config import RegistryConfig
from pipeline.errors import UserError
from pipeline.registry import RegistryAccessRefused, list_models

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infra"
COMPOSE_TEXT = (INFRA / "docker-compose.yml").read_text(encoding="utf-8")
REFERENCE = re.compile(r"\$\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")
SECRET_NAME = re.compile(r"PASSWORD|SECRET|AUTH_STRING|_KEY$")
LOOPBACK = "127.0.0.1"
STARTUP_TIMEOUT_S = 120


class MissingVariable(Exception):
    pass


def interpolate(value: object, env: dict[str, str]) -> object:
    """Compose's `${NAME}`, `${NAME:-default}`, `${NAME:?message}` and `$$` over a parsed document."""
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        present = env.get(name) if op and op.startswith(":") else (name in env and env[name])
        if present not in (None, False, ""):
            return env[name]
        if op and op.endswith("?"):
            raise MissingVariable(f"{name}: {arg}")
        return arg if op else ""

    return REFERENCE.sub(substitute, value.replace("$$", "\0")).replace("\0", "$")


def compose_with(env: dict[str, str]) -> dict:
    return interpolate(yaml.safe_load(COMPOSE_TEXT), env)


@pytest.fixture(scope="module")
def stack_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return read_env(init_env(tmp_path_factory.mktemp("infra") / ".env"))


def _services(env: dict[str, str]) -> dict[str, dict]:
    return compose_with(env)["services"]


def _environment(service: dict) -> dict[str, str]:
    return {key: str(value) for key, value in service.get("environment", {}).items()}


# ---- the compose file ------------------------------------------------------------------------------------


def test_the_stack_refuses_to_start_without_its_env_file() -> None:
    with pytest.raises(MissingVariable, match="corpusflow infra init-env"):
        compose_with({})
    required = {m["name"] for m in REFERENCE.finditer(COMPOSE_TEXT) if m["op"] == ":?"}
    assert required == set(SECRETS), "init-env must write exactly the secrets the compose file requires"


def test_published_ports_listen_on_loopback_unless_a_bind_address_is_chosen(stack_env: dict[str, str]) -> None:
    secrets_only = {name: stack_env[name] for name in SECRETS}
    for env, expected in ((secrets_only, LOOPBACK), (stack_env, LOOPBACK), ({**stack_env, "CORPUSFLOW_BIND_ADDRESS": "10.0.0.5"}, "10.0.0.5")):
        published = {name: s["ports"] for name, s in _services(env).items() if s.get("ports")}
        assert {"prefect-server", "mlflow", "minio"} <= published.keys()
        for name, ports in published.items():
            for port in ports:
                host_ip, host_port, container_port = str(port).split(":")
                assert host_ip == expected, f"{name} publishes {port}"
                assert host_port == container_port
    assert stack_env["CORPUSFLOW_BIND_ADDRESS"] == LOOPBACK


def test_no_secret_is_written_in_the_compose_file() -> None:
    document = yaml.safe_load(COMPOSE_TEXT)
    for name, service in document["services"].items():
        for key, value in service.get("environment", {}).items():
            if SECRET_NAME.search(key):
                assert re.fullmatch(REFERENCE.pattern, str(value)), f"{name}: {key} is a literal"
    for user, password in re.findall(r"://([\w-]+):([^@\s]+)@", COMPOSE_TEXT):
        assert password.startswith("${"), f"a literal password for {user} in a connection URL"
    for literal in ("corpusflow-secret", "POSTGRES_PASSWORD: prefect", "POSTGRES_PASSWORD: mlflow"):
        assert literal not in COMPOSE_TEXT


def test_every_service_asks_for_its_login(stack_env: dict[str, str]) -> None:
    services = _services(stack_env)
    prefect = _environment(services["prefect-server"])
    assert prefect["PREFECT_SERVER_API_AUTH_STRING"] == stack_env["PREFECT_API_AUTH_STRING"]
    assert prefect["PREFECT_SERVER_API_CSRF_PROTECTION_ENABLED"] == "true"
    assert stack_env["PREFECT_API_AUTH_STRING"].startswith("corpusflow:")

    mlflow = services["mlflow"]
    mlflow_env = _environment(mlflow)
    assert "--app-name=basic-auth" in mlflow["command"]
    assert mlflow_env["MLFLOW_AUTH_ADMIN_PASSWORD"] == stack_env["MLFLOW_ADMIN_PASSWORD"]
    assert mlflow_env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    auth_ini = mlflow_env["MLFLOW_AUTH_CONFIG_PATH"]
    mounted = {v.split(":")[1]: v.split(":")[0] for v in mlflow["volumes"] if v.startswith("./")}
    assert "admin_password" not in (INFRA / mounted[auth_ini]).read_text(encoding="utf-8").replace("# ", "#")

    clients = 0
    for name, service in services.items():
        env = _environment(service)
        if "PREFECT_API_URL" in env:
            clients += 1
            assert env["PREFECT_API_AUTH_STRING"] == stack_env["PREFECT_API_AUTH_STRING"], name
        if "MLFLOW_TRACKING_URI" in env:
            assert env["MLFLOW_TRACKING_USERNAME"] == "corpusflow-worker", name
            assert env["MLFLOW_TRACKING_PASSWORD"] == stack_env["MLFLOW_WORKER_PASSWORD"], name
    assert clients >= 3  # worker, gpu-worker, deploy


def test_minio_root_is_used_only_to_set_up_per_service_accounts(stack_env: dict[str, str]) -> None:
    services = _services(stack_env)
    root_user = _environment(services["minio"])["MINIO_ROOT_USER"]
    holders = {name for name, s in services.items() if stack_env["MINIO_ROOT_PASSWORD"] in json.dumps(s)}
    assert holders == {"minio", "minio-init"}
    keys = {name: _environment(s).get("AWS_ACCESS_KEY_ID") for name, s in services.items()}
    assert keys["worker"] == keys["gpu-worker"] == "corpusflow-worker" and keys["mlflow"] == "corpusflow-mlflow"
    assert root_user not in keys.values()

    init = " ".join(services["minio-init"]["command"])
    granted = dict(re.findall(r"grant (\S+) (\S+) ", init))
    buckets_of = {}
    for user, policy in granted.items():
        document = json.loads((INFRA / "minio" / f"{policy}.json").read_text(encoding="utf-8"))
        resources = [r for statement in document["Statement"] for r in statement["Resource"]]
        buckets_of[user] = {r.removeprefix("arn:aws:s3:::").split("/")[0] for r in resources}
    assert buckets_of == {"corpusflow-worker": {"corpusflow"}, "corpusflow-mlflow": {"mlflow"}}
    datasets_bucket = re.search(r"output_uri: s3://([\w-]+)/", (ROOT / "configs" / "production.yaml").read_text())
    if datasets_bucket:
        assert datasets_bucket[1] in buckets_of["corpusflow-worker"]
    artifacts_bucket = re.search(r"--artifacts-destination=s3://([\w-]+)/", " ".join(services["mlflow"]["command"]))
    assert artifacts_bucket and artifacts_bucket[1] in buckets_of["corpusflow-mlflow"]


def test_kubernetes_files_stay_in_the_cluster_and_read_secrets() -> None:
    cluster = yaml.safe_load((INFRA / "kuberay-cluster.yaml").read_text(encoding="utf-8"))
    assert cluster["spec"]["headGroupSpec"]["serviceType"] == "ClusterIP"
    containers = [cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]] + [
        group["template"]["spec"]["containers"][0] for group in cluster["spec"]["workerGroupSpecs"]]
    for container in containers:
        assert {"secretRef": {"name": "corpusflow-s3"}} in container["envFrom"]
        assert not [e for e in container.get("env", []) if SECRET_NAME.search(e["name"]) and "value" in e]
    template = json.loads((INFRA / "k8s-gpu-job-template.json").read_text(encoding="utf-8"))
    job = template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]["containers"][0]
    assert job["envFrom"] == [{"secretRef": {"name": "{{ secret_name }}"}}]
    defaults = template["variables"]["properties"]["env"]["default"]
    assert not [key for key in defaults if SECRET_NAME.search(key)]


# ---- the env file ----------------------------------------------------------------------------------------


def test_init_env_writes_distinct_random_secrets_for_its_owner_only(tmp_path: Path) -> None:
    path = init_env(tmp_path / ".env")
    assert path.stat().st_mode & 0o777 == 0o600
    values = read_env(path)
    assert set(SECRETS) <= values.keys()
    secret_values = [values[name].removeprefix("corpusflow:") for name in SECRETS]
    assert len(set(secret_values)) == len(SECRETS) and min(map(len, secret_values)) >= 32
    assert all(re.fullmatch(r"[\w-]+", value) for value in secret_values)  # safe inside URLs and compose
    with pytest.raises(UserError, match="exists"):
        init_env(path)
    assert read_env(init_env(path, force=True))["MINIO_ROOT_PASSWORD"] != values["MINIO_ROOT_PASSWORD"]


def test_rotating_one_secret_keeps_the_others_and_hand_made_settings(tmp_path: Path) -> None:
    path = init_env(tmp_path / ".env")
    path.write_text(path.read_text() + "CORPUSFLOW_BIND_ADDRESS=10.0.0.5\n")
    before = read_env(path)
    after = read_env(rotate(["MLFLOW_WORKER_PASSWORD"], path))
    assert after["MLFLOW_WORKER_PASSWORD"] != before["MLFLOW_WORKER_PASSWORD"]
    assert {k: v for k, v in after.items() if k != "MLFLOW_WORKER_PASSWORD"} == {
        k: v for k, v in before.items() if k != "MLFLOW_WORKER_PASSWORD"}
    assert path.stat().st_mode & 0o777 == 0o600
    with pytest.raises(UserError, match="NOT_A_SECRET"):
        rotate(["NOT_A_SECRET"], path)


def test_the_env_file_is_never_committed() -> None:
    ignored = subprocess.run(["git", "check-ignore", "-q", "infra/.env"], cwd=ROOT, check=False)
    assert ignored.returncode == 0


# ---- real servers on 127.0.0.1 ---------------------------------------------------------------------------


def _call(url: str, *, body: dict | None = None, auth: str | None = None, headers: dict | None = None) -> int:
    return _request(url, body=body, auth=auth, headers=headers)[0]


def _request(url: str, *, body: dict | None = None, auth: str | None = None,
             headers: dict | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=None if body is None else json.dumps(body).encode(),
                                     method="GET" if body is None else "POST",
                                     headers={"Content-Type": "application/json", **(headers or {})})
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_prefect_server_with_an_auth_string_refuses_anonymous_calls_and_accepts_the_cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    auth = f"corpusflow:{secrets.token_urlsafe(24)}"
    monkeypatch.setenv("PREFECT_SERVER_API_AUTH_STRING", auth)
    monkeypatch.setenv("PREFECT_SERVER_API_CSRF_PROTECTION_ENABLED", "true")
    monkeypatch.setenv("PREFECT_UI_ENABLED", "false")
    api = ensure_prefect_server(tmp_path)
    try:
        assert api.startswith("http://127.0.0.1:")
        assert _call(f"{api}/health") == 200  # the compose healthcheck needs no login
        assert _call(f"{api}/csrf-token?client=probe") == 401
        assert _call(f"{api}/csrf-token?client=probe", auth="corpusflow:wrong") == 401
        status, token = _request(f"{api}/csrf-token?client=probe", auth=auth)
        assert status == 200
        csrf = {"Prefect-Csrf-Token": json.loads(token)["token"], "Prefect-Csrf-Client": "probe"}
        assert _call(f"{api}/work_pools/filter", body={}, headers=csrf) == 401
        assert _call(f"{api}/work_pools/filter", body={}, auth=auth) == 403  # CSRF protection: no token, refused
        assert _call(f"{api}/work_pools/filter", body={}, auth=auth, headers=csrf) == 200

        client_env = {**os.environ, "PREFECT_API_URL": api, "PREFECT_API_AUTH_STRING": auth,
                      "PREFECT_HOME": str(tmp_path / "client")}
        for name in ("PREFECT_SERVER_API_AUTH_STRING", "PREFECT_SERVER_API_CSRF_PROTECTION_ENABLED"):
            client_env.pop(name)
        created = subprocess.run([sys.executable, "-m", "prefect", "work-pool", "create", "auth-probe", "--type", "process"],
                                 env=client_env, capture_output=True, text=True, timeout=180, check=False)
        assert created.returncode == 0, created.stdout + created.stderr
        listed = _request(f"{api}/work_pools/filter", body={}, auth=auth, headers=csrf)[1]
        assert "auth-probe" in {pool["name"] for pool in json.loads(listed)}
    finally:
        stop_prefect_server(tmp_path)


@pytest.fixture(scope="module")
def mlflow_auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """`mlflow server --app-name basic-auth` on loopback, admin password from the environment as in compose."""
    root = tmp_path_factory.mktemp("mlflow-auth")
    ini = root / "basic_auth.ini"
    ini.write_text((INFRA / "mlflow-auth.ini").read_text(encoding="utf-8").replace(
        "sqlite:////var/lib/mlflow-auth/basic_auth.db", f"sqlite:///{root / 'basic_auth.db'}"), encoding="utf-8")
    admin_password = secrets.token_urlsafe(24)
    port = free_port()
    env = {**os.environ, "MLFLOW_AUTH_CONFIG_PATH": str(ini), "MLFLOW_AUTH_ADMIN_USERNAME": "admin",
           "MLFLOW_AUTH_ADMIN_PASSWORD": admin_password, "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_urlsafe(24),
           "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_URI"):
        env.pop(name, None)
    with open(root / "server.log", "ab") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--app-name", "basic-auth", "--host", "127.0.0.1",
             "--port", str(port), "--workers", "1", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
             "--default-artifact-root", str(root / "artifacts")],
            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while _call_or_none(f"{url}/health") != 200:
        assert server.poll() is None, (root / "server.log").read_text()[-3000:]
        assert time.monotonic() < deadline, "the MLflow basic-auth server did not come up"
        time.sleep(0.5)
    try:
        yield {"url": url, "admin_password": admin_password}
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def _call_or_none(url: str) -> int | None:
    try:
        return _call(url)
    except (urllib.error.URLError, OSError):
        return None


Account = Callable[..., None]


@pytest.fixture()
def as_account(monkeypatch: pytest.MonkeyPatch) -> Account:
    """Sign this process's MLflow client in as `username` (None: anonymous)."""

    def use(username: str | None, password: str | None = None) -> None:
        for name, value in (("MLFLOW_TRACKING_USERNAME", username), ("MLFLOW_TRACKING_PASSWORD", password)):
            if value is None:
                monkeypatch.delenv(name, raising=False)
            else:
                monkeypatch.setenv(name, value)

    return use


def test_mlflow_basic_auth_refuses_an_anonymous_registry_call(mlflow_auth_server: dict[str, str],
                                                             as_account: Account) -> None:
    url = mlflow_auth_server["url"]
    as_account(None)
    with pytest.raises(RegistryAccessRefused, match="anonymously.*MLFLOW_TRACKING_USERNAME"):
        list_models(RegistryConfig(model_name="anything"), url)
    as_account("admin", "not-the-password")
    with pytest.raises(RegistryAccessRefused, match="as 'admin'"):
        list_models(RegistryConfig(model_name="anything"), url)
    as_account("admin", mlflow_auth_server["admin_password"])
    assert list_models(RegistryConfig(model_name="anything"), url) == []


@pytest.mark.slow
def test_a_training_run_with_the_worker_account_registers_its_models(
    mlflow_auth_server: dict[str, str], as_account: Account, prefect_api: str, tmp_path: Path
) -> None:
    from flows.train_models import train_models
    from helpers.training import tiny_train_config, write_dataset
    from pipeline.config import load_config, registered_model_name

    url = mlflow_auth_server["url"]
    worker_password = secrets.token_urlsafe(24)
    as_account("admin", mlflow_auth_server["admin_password"])
    assert ensure_mlflow_user(url, "corpusflow-worker", "first-password-123") == "created"
    assert ensure_mlflow_user(url, "corpusflow-worker", worker_password) == "updated"  # how a rotation lands

    manifest = write_dataset(tmp_path / "dataset", docs_per_split={"train": 120, "validation": 20, "test": 20})
    data = load_config(ROOT / "configs" / "demo.yaml").model_dump(mode="json")
    tiny = tiny_train_config(max_steps=6, checkpoint_every=6, log_every=3).model_dump(mode="json")
    data["run_dir"] = str(tmp_path / "run")
    data["train"].update(tokenizer=tiny["tokenizer"], model=tiny["model"], pretrain=tiny["pretrain"],
                         baseline_random_init=False)
    data["train"]["tasks"] = [{**data["train"]["tasks"][0], "epochs": 1}]
    data["registry"]["tracking_uri"] = url
    config_path = tmp_path / "train.yaml"
    config_path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")

    as_account("corpusflow-worker", worker_password)
    result = train_models(str(config_path), manifest_path=str(manifest), force=True)
    (task,) = load_config(config_path).train.tasks
    registry = RegistryConfig(model_name=registered_model_name(load_config(config_path).registry, task.name))
    assert result["tasks"][task.name]["registered_version"] == "1"
    (version,) = list_models(registry, url)
    assert {"candidate", "champion"} <= set(version["aliases"])
    assert version["tags"]["dataset_version"] == result["dataset_version"]

    as_account(None)
    with pytest.raises(RegistryAccessRefused):
        list_models(registry, url)


# ---- the embedded MLflow UI --------------------------------------------------------------------------------


HEALTHY_STUB = """
import http.server, sys
class Healthy(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(b"OK")
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Healthy).serve_forever()
"""


@pytest.mark.slow
def test_the_ui_mlflow_server_runs_without_job_consumers(tmp_path: Path) -> None:
    # A healthy server recorded the way an older corpusflow did (it started MLflow with the job runner) is
    # stopped and replaced, not reused.
    stub_port = free_port()
    stub = subprocess.Popen([sys.executable, "-c", HEALTHY_STUB, str(stub_port)], start_new_session=True)
    stub_url = f"http://127.0.0.1:{stub_port}"
    while _call_or_none(f"{stub_url}/health") != 200:
        assert stub.poll() is None
        time.sleep(0.1)
    state = tmp_path / "mlflow-ui.json"
    state.write_text(json.dumps({"url": stub_url, "pid": stub.pid}))

    url = ensure_mlflow_ui(tmp_path)
    pid = json.loads(state.read_text())["pid"]
    try:
        assert stub.poll() is not None and url != stub_url
        assert url.startswith("http://127.0.0.1:") and json.loads(state.read_text())["job_execution"] is False
        # with job execution on, an idle server is 10 processes (a job runner and 7 consumers beside uvicorn)
        processes = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
        commands = [" ".join(p.cmdline()) for p in processes]
        assert len(processes) <= 3, commands
        assert not [c for c in commands if "huey" in c or "job" in c.lower()], commands
        assert ensure_mlflow_ui(tmp_path) == url  # reused
    finally:
        os.killpg(pid, signal.SIGTERM)
        if stub.poll() is None:
            os.killpg(stub.pid, signal.SIGTERM)

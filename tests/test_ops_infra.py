"""The infra files parse and agree with each other and with the Python side (no Docker or Kubernetes runs
here): prefect.yaml is the rendering of flows/deploy.py, its entrypoints and pools exist, compose services
reach each other on ports they expose, and the job template only uses variables it defines."""

from __future__ import annotations

import ast
import importlib.metadata
import json
import re
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml

from flows.deploy import WORK_POOLS, render_prefect_yaml
from flows.events import DATASET_PUBLISHED
from prefect.schedules import Cron

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infra"
POOL_NAMES = {pool.name for pool in WORK_POOLS}


def _load_yaml(name: str) -> dict:
    return yaml.safe_load((INFRA / name).read_text(encoding="utf-8"))


def _header_comment(name: str) -> str:
    lines = (INFRA / name).read_text(encoding="utf-8").splitlines()
    header = []
    for line in lines:
        if not line.startswith("#"):
            break
        header.append(line)
    return "\n".join(header)


@pytest.mark.parametrize("name", ["prefect.yaml", "docker-compose.yml", "kuberay-cluster.yaml", "Dockerfile"])
def test_each_file_opens_with_how_to_start_it(name: str) -> None:
    assert re.search(r"^# (Start|Build)", _header_comment(name), flags=re.M), name


def test_prefect_yaml_is_rendered_from_the_python_specs() -> None:
    assert (INFRA / "prefect.yaml").read_text(encoding="utf-8") == render_prefect_yaml(), (
        "infra/prefect.yaml is stale: run `python -m flows.deploy infra/prefect.yaml`"
    )


def test_prefect_yaml_deployments_point_at_real_flows_pools_and_schedules() -> None:
    document = _load_yaml("prefect.yaml")
    deployments = document["deployments"]
    assert {d["name"] for d in deployments} == {"nightly", "weekly-and-on-new-dataset"}
    for deployment in deployments:
        path, function = deployment["entrypoint"].split(":")
        tree = ast.parse((ROOT / path).read_text(encoding="utf-8"))
        flows = {
            node.name for node in tree.body if isinstance(node, ast.FunctionDef)
            and any("flow" in ast.unparse(d) for d in node.decorator_list)
        }
        assert function in flows, f"{deployment['entrypoint']} is not a @flow function"
        assert deployment["work_pool"]["name"] in POOL_NAMES
        assert "config_path" in deployment["parameters"]
        for schedule in deployment["schedules"]:
            Cron(schedule["cron"], timezone=schedule["timezone"])  # raises on a bad cron string
            ZoneInfo(schedule["timezone"])
    training = next(d for d in deployments if d["name"] == "weekly-and-on-new-dataset")
    assert training["work_pool"]["name"] == "corpusflow-gpu"
    (trigger,) = training["triggers"]
    assert trigger["expect"] == [DATASET_PUBLISHED]
    assert trigger["parameters"]["manifest_path"] == "{{ event.payload.manifest_path }}"
    gpu_pool = next(p for p in WORK_POOLS if p.name == "corpusflow-gpu")
    assert gpu_pool.concurrency_limit == 1


def _container_ports(service: dict) -> set[int]:
    ports = {int(str(p).split(":")[-1]) for p in service.get("ports", [])}
    return ports | {int(p) for p in service.get("expose", [])}


def _strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def test_compose_services_reference_images_ports_and_each_other_consistently() -> None:
    compose = _load_yaml("docker-compose.yml")
    services = compose["services"]
    assert {"prefect-server", "prefect-db", "mlflow", "mlflow-db", "minio", "worker"} <= services.keys()
    built = {s["image"]: s["build"] for s in services.values() if "build" in s}
    for name, service in services.items():
        assert "image" in service, name
        image = service["image"]
        # a corpusflow image must be built by some service of this file, from the Dockerfile here
        if image.startswith("corpusflow-worker"):
            assert image in built, f"{name} runs {image}, which no service builds"
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown service {dependency}"
        for text in _strings(service.get("environment", {})) + _strings(service.get("command", [])):
            for host, port in re.findall(r"(?:://|@)([a-z][a-z0-9-]*):(\d+)", text):
                if host == "localhost":
                    assert int(port) in _container_ports(service), f"{name}: {text}"
                    continue
                assert host in services, f"{name} points at unknown host {host}: {text}"
                assert int(port) in _container_ports(services[host]), f"{name}: {host} does not expose {port}"
    host_ports = [str(p).split(":")[-2] for s in services.values() for p in s.get("ports", [])]  # [ip:]host:container
    assert len(host_ports) == len(set(host_ports)), "two services publish the same host port"
    for image, build in built.items():
        assert (ROOT / build["context"].replace("..", ".") / build["dockerfile"]).exists()
        assert image.split(":")[1] == build["args"]["VARIANT"], "image tag and Dockerfile variant differ"
    pools = {c[c.index("--pool") + 1] for s in services.values() if isinstance(c := s.get("command"), list) and "--pool" in c}
    assert pools == POOL_NAMES
    buckets = set(re.findall(r"local/([a-z0-9-]+)", " ".join(_strings(services["minio-init"]["command"]))))
    used = set(re.findall(r"s3://([a-z0-9-]+)", " ".join(_strings(compose))))
    assert used <= buckets, f"buckets used but never created: {used - buckets}"


def test_dockerfile_has_cpu_and_cuda_variants() -> None:
    text = (INFRA / "Dockerfile").read_text(encoding="utf-8")
    assert "ARG VARIANT=cpu" in text
    assert re.search(r"FROM .* AS base-cpu", text) and re.search(r"FROM nvidia/cuda:.* AS base-cuda", text)
    assert "FROM base-${VARIANT}" in text
    for copied in re.findall(r"^COPY (\S+) ", text, flags=re.M):
        assert (ROOT / copied).exists() or copied == "README.md", f"Dockerfile copies missing {copied}"


def test_k8s_job_template_requests_gpus_and_defines_every_variable_it_uses() -> None:
    template = json.loads((INFRA / "k8s-gpu-job-template.json").read_text(encoding="utf-8"))
    used = set(re.findall(r"{{\s*(\w+)\s*}}", json.dumps(template["job_configuration"])))
    defined = set(template["variables"]["properties"])
    assert used <= defined, f"placeholders without a variable: {used - defined}"
    container = template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["requests"]["nvidia.com/gpu"] == "{{ gpu_count }}"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "{{ gpu_count }}"
    assert "corpusflow-gpu" in template["variables"]["description"]


def test_kuberay_cluster_runs_the_worker_image_with_our_ray_version() -> None:
    cluster = _load_yaml("kuberay-cluster.yaml")
    assert cluster["kind"] == "RayCluster" and cluster["apiVersion"] == "ray.io/v1"
    assert cluster["spec"]["rayVersion"] == importlib.metadata.version("ray")
    head = cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert 10001 in {p["containerPort"] for p in head["ports"]}  # the ray:// client port
    images = {head["image"]} | {
        g["template"]["spec"]["containers"][0]["image"] for g in cluster["spec"]["workerGroupSpecs"]
    }
    compose_images = {s["image"] for s in _load_yaml("docker-compose.yml")["services"].values()}
    assert images <= compose_images

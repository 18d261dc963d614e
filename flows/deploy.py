"""Deployments, work pools and the failure notification: the one place that says what runs when, where.

`deployment_specs` is the single source of truth. From it:
- `deploy_all` registers the deployments with the running Prefect server (work pools, schedules, the event
  trigger, the failure automation); workers of the named pools then run them (`prefect worker start`);
- `serve` runs them all from this process instead, without work pools (a laptop or one VM);
- `render_prefect_yaml` writes infra/prefect.yaml for `prefect deploy --all` from a container image; a test
  keeps the checked-in file equal to the rendering.

The corpus is rebuilt nightly on the CPU pool. Training runs on the GPU pool weekly and whenever the build
announces a new dataset version (flows/events.py), so the two halves scale separately, and an unchanged
rebuild trains nothing. Flows are imported only when a deployment is built, so this module loads even when
a flow module does not (yet) import cleanly.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import yaml
from prefect import Flow
from prefect import serve as serve_deployments
from prefect.automations import Automation, CallWebhook, EventTrigger, Posture
from prefect.blocks.webhook import Webhook
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
from prefect.deployments.runner import EntrypointType, RunnerDeployment
from prefect.events import DeploymentEventTrigger
from prefect.exceptions import ObjectNotFound
from prefect.schedules import Cron, Interval, Schedule
from prefect.workers.process import ProcessWorker

from flows.events import DATASET_PUBLISHED, DATASET_RESOURCE_PREFIX
from flows.workers import serving_workers
from pipeline.config import load_config

TIMEZONE = "Asia/Shanghai"  # cron times are local to the team that runs the corpus, DST-safe
CPU_POOL = "corpusflow-cpu"
GPU_POOL = "corpusflow-gpu"
PRODUCTION_CONFIG = "configs/production.yaml"  # the config path inside the worker image (infra/Dockerfile)
IMAGE_WORKDIR = "/opt/corpusflow"
ALERT_WEBHOOK_ENV = "CORPUSFLOW_ALERT_WEBHOOK"
WEBHOOK_BLOCK = "corpusflow-failure-webhook"
FAILURE_AUTOMATION = "corpusflow-flow-run-failed"
FAILURE_EVENTS = ("prefect.flow-run.Failed", "prefect.flow-run.Crashed")
# The body the webhook receives; `text` makes it readable as-is by Slack/Mattermost-style incoming hooks.
# The state message can hold quotes and newlines, so it goes through tojson rather than into a string.
FAILURE_PAYLOAD = """{
  "text": "corpusflow: flow run {{ flow_run.name }} of {{ flow.name }} is {{ flow_run.state.name }}",
  "flow": "{{ flow.name }}",
  "flow_run": "{{ flow_run.name }}",
  "flow_run_id": "{{ flow_run.id }}",
  "state": "{{ flow_run.state.name }}",
  "message": {{ flow_run.state.message | tojson }},
  "url": "{{ flow_run | ui_url }}"
}"""


@dataclass(frozen=True)
class WorkPoolSpec:
    name: str
    description: str
    concurrency_limit: int | None = None  # runs at once across all workers of the pool


WORK_POOLS = (
    WorkPoolSpec(CPU_POOL, "Corpus builds: CPU-heavy, scale by adding workers or a Ray cluster."),
    # One training run per GPU: raise the limit with the number of GPUs behind the pool.
    WorkPoolSpec(GPU_POOL, "Training: one run per GPU.", concurrency_limit=1),
)


@dataclass(frozen=True)
class DeploymentSpec:
    """What a deployment runs (`flow` as "package.module:function"), when, and on which pool."""

    flow: str
    name: str
    work_pool: str
    description: str
    parameters: dict[str, Any]
    cron: str | None = None
    interval: timedelta | None = None
    on_dataset_published: bool = False  # also run when the build announces a new dataset version
    concurrency_limit: int | None = 1  # a second scheduled run waits rather than racing the first
    tags: tuple[str, ...] = field(default=("corpusflow",))

    @property
    def entrypoint(self) -> str:
        """The file-path form prefect.yaml uses: "flows/build_corpus.py:build_corpus"."""
        module, function = self.flow.split(":")
        return f"{module.replace('.', '/')}.py:{function}"

    def load_flow(self) -> Flow:
        module, function = self.flow.split(":")
        return getattr(importlib.import_module(module), function)

    def schedules(self) -> list[Schedule]:
        if self.cron:
            return [Cron(self.cron, timezone=TIMEZONE)]
        if self.interval:
            return [Interval(self.interval)]
        return []

    def triggers(self) -> list[DeploymentEventTrigger]:
        if not self.on_dataset_published:
            return []
        return [
            DeploymentEventTrigger(
                name=f"{self.name}: new dataset version",
                expect={DATASET_PUBLISHED},
                match={"prefect.resource.id": f"{DATASET_RESOURCE_PREFIX}*"},
                # train exactly the version that was announced, not whatever LATEST is when the run starts
                parameters={**self.parameters, "manifest_path": "{{ event.payload.manifest_path }}"},
            )
        ]


def deployment_specs(config_path: str) -> list[DeploymentSpec]:
    return [
        DeploymentSpec(
            flow="flows.build_corpus:build_corpus",
            name="nightly",
            work_pool=CPU_POOL,
            description="Corpus refresh: rebuild the dataset from its sources every night; inputs that did "
            "not change come from cache, documents keep the ids of the previous version, and a changed dataset "
            "is announced to training.",
            parameters={"config_path": config_path, "refresh": True},
            cron="0 2 * * *",
        ),
        DeploymentSpec(
            flow="flows.train_models:train_models",
            name="weekly-and-on-new-dataset",
            work_pool=GPU_POOL,
            description="Retrain, evaluate and register models weekly, and as soon as a new dataset version "
            "is published.",
            parameters={"config_path": config_path},
            cron="0 4 * * 0",
            on_dataset_published=True,
        ),
    ]


def to_runner_deployment(
    spec: DeploymentSpec, work_pool: str | None = None, job_variables: dict[str, Any] | None = None
) -> RunnerDeployment:
    """The spec as a Prefect deployment; without `work_pool` it is for `serve`, which runs it in-process."""
    return spec.load_flow().to_deployment(
        name=spec.name,
        description=spec.description,
        parameters=spec.parameters,
        schedules=spec.schedules(),
        triggers=spec.triggers(),
        concurrency_limit=spec.concurrency_limit,
        tags=list(spec.tags),
        work_pool_name=work_pool,
        job_variables=job_variables,
        # a module path works wherever the package is installed: this checkout, the image, a Ray node
        entrypoint_type=EntrypointType.MODULE_PATH,
    )


def ensure_work_pools(pools: tuple[WorkPoolSpec, ...] = WORK_POOLS) -> dict[str, str]:
    """Create missing pools as local process pools and apply the concurrency limits; returns name -> type.

    A pool that exists keeps its type and job template: in the compose stack or on Kubernetes the pools
    are created with their own type first (see infra/), and registering deployments must not undo that.
    """
    types = {}
    with get_client(sync_client=True) as client:
        for pool in pools:
            try:
                existing = client.read_work_pool(pool.name)
            except ObjectNotFound:
                existing = client.create_work_pool(
                    WorkPoolCreate(
                        name=pool.name,
                        type="process",
                        description=pool.description,
                        base_job_template=ProcessWorker.get_default_base_job_template(),
                        concurrency_limit=pool.concurrency_limit,
                    )
                )
            if existing.concurrency_limit != pool.concurrency_limit:
                client.update_work_pool(pool.name, WorkPoolUpdate(concurrency_limit=pool.concurrency_limit))
            types[pool.name] = existing.type
    return types


def ensure_failure_notification(webhook_url: str) -> UUID:
    """A Webhook block and an automation that calls it for every flow run that fails or crashes."""
    block_id = Webhook(url=webhook_url, method="POST").save(WEBHOOK_BLOCK, overwrite=True)
    automation = Automation(
        name=FAILURE_AUTOMATION,
        description="Tell the team when a flow run fails or crashes.",
        trigger=EventTrigger(
            expect=set(FAILURE_EVENTS),
            match={"prefect.resource.id": "prefect.flow-run.*"},
            posture=Posture.Reactive,
            threshold=1,
            within=timedelta(0),
        ),
        actions=[CallWebhook(block_document_id=block_id, payload=FAILURE_PAYLOAD)],
    )
    try:
        automation.id = Automation.read(name=FAILURE_AUTOMATION).id
    except ValueError:  # Automation.read raises ValueError when no automation has that name
        return automation.create().id
    automation.update()
    return automation.id


def deploy_all(
    config_path: str, webhook_url: str | None = None, specs: list[DeploymentSpec] | None = None
) -> dict[str, list[str]]:
    """Register pools, deployments (schedules, triggers) and, with a webhook URL, the failure notification.

    The webhook URL defaults to $CORPUSFLOW_ALERT_WEBHOOK. Returns what was registered, by kind.
    """
    config_path = str(Path(config_path).resolve())  # workers do not start in this directory
    pool_types = ensure_work_pools()
    registered = []
    for spec in specs or deployment_specs(config_path):
        # Process workers run flows in a temporary directory unless told otherwise; the config's run_dir is
        # relative to this one.
        job_variables = {"working_dir": str(Path.cwd())} if pool_types.get(spec.work_pool) == "process" else {}
        deployment = to_runner_deployment(spec, spec.work_pool, job_variables)
        deployment.apply()
        registered.append(deployment.full_name)
    result = {"work_pools": sorted(pool_types), "deployments": registered, "automations": []}
    webhook_url = webhook_url or os.environ.get(ALERT_WEBHOOK_ENV)
    if webhook_url:
        ensure_failure_notification(webhook_url)
        result["automations"].append(FAILURE_AUTOMATION)
    return result


def serve(config_path: str, specs: list[DeploymentSpec] | None = None) -> None:
    """Run the deployments' schedules and triggers from this process until interrupted (Ctrl-C)."""
    config_path = str(Path(config_path).resolve())
    with serving_workers(load_config(config_path)) as offered:  # one warm worker pool for every build run served
        if offered is not None:
            print(f"warm worker pool lent to the runs served and to your own builds: {offered}", flush=True)
        serve_deployments(*(to_runner_deployment(spec) for spec in specs or deployment_specs(config_path)))


TRIGGER_YAML_FIELDS = {"name", "expect", "match", "parameters", "posture", "threshold", "within"}
PREFECT_YAML_HEADER = """\
# Deployments of corpusflow for workers that run the corpusflow image (infra/Dockerfile).
#
# GENERATED from flows/deploy.py (deployment_specs) -- edit that, then regenerate:
#   python -m flows.deploy infra/prefect.yaml
# tests/test_ops_infra.py fails when this file and the Python specs disagree.
#
# Start (from the repository root, with PREFECT_API_URL pointing at the server):
#   prefect work-pool create corpusflow-cpu --type process         # or --type docker / kubernetes
#   prefect work-pool create corpusflow-gpu --type kubernetes \\
#       --base-job-template infra/k8s-gpu-job-template.json
#   prefect work-pool set-concurrency-limit corpusflow-gpu 1        # one training run per GPU
#   prefect --no-prompt deploy --all --prefect-file infra/prefect.yaml
#   prefect worker start --pool corpusflow-cpu                      # and one per GPU node for corpusflow-gpu
# Without containers, `corpusflow deploy` registers the same deployments from Python.
"""


def render_prefect_yaml(config_path: str = PRODUCTION_CONFIG) -> str:
    """infra/prefect.yaml, rendered from `deployment_specs` for workers that run the corpusflow image."""
    deployments = [_yaml_deployment(spec) for spec in deployment_specs(config_path)]
    document = {
        "name": "corpusflow",
        "prefect-version": "3.8.8",
        "build": None,  # the image is built by infra/Dockerfile, not by `prefect deploy`
        "push": None,
        "pull": [{"prefect.deployments.steps.set_working_directory": {"directory": IMAGE_WORKDIR}}],
        "deployments": deployments,
    }
    return PREFECT_YAML_HEADER + yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=100)


def _yaml_deployment(spec: DeploymentSpec) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": spec.name,
        "entrypoint": spec.entrypoint,
        "description": spec.description,
        "tags": list(spec.tags),
        "parameters": spec.parameters,
        "work_pool": {"name": spec.work_pool, "job_variables": {}},
        "concurrency_limit": spec.concurrency_limit,
        "schedules": [{"cron": spec.cron, "timezone": TIMEZONE, "active": True}] if spec.cron else [],
    }
    if spec.on_dataset_published:
        entry["triggers"] = [
            {"type": "event", "enabled": True, **trigger.model_dump(mode="json", include=TRIGGER_YAML_FIELDS)}
            for trigger in spec.triggers()
        ]
    return entry


if __name__ == "__main__":
    import sys

    Path(sys.argv[1]).write_text(render_prefect_yaml(), encoding="utf-8")

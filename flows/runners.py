"""The task runner a flow uses, chosen by the `runner` section of the config.

Flows take their runner from here so that the same flow code runs in threads on a laptop and on a Ray
cluster; only the config changes.
"""

from __future__ import annotations

from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from pipeline.config import RunnerConfig


def task_runner_for(runner: RunnerConfig) -> TaskRunner:
    """ThreadPoolTaskRunner for "local"; prefect-ray's RayTaskRunner for "ray".

    With `ray_address` unset, Ray starts a local instance sized to `workers` CPUs (the dashboard is off:
    it needs extra ports and packages and adds seconds to start-up); with an address it joins that cluster
    and the cluster decides the resources.
    """
    if runner.kind == "local":
        return ThreadPoolTaskRunner(max_workers=runner.workers)
    # Imported here: ray is an optional extra and costs seconds to import.
    from prefect_ray.task_runners import RayTaskRunner

    if runner.ray_address:
        return RayTaskRunner(address=runner.ray_address)
    return RayTaskRunner(init_kwargs={"num_cpus": runner.workers, "include_dashboard": False})

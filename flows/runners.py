"""The task runner of a build on Ray, chosen by the `runner` section of the config.

The same flow code runs on a laptop and on a Ray cluster; only the config changes. Locally (`kind: local`)
the build flow's own thread pool runs the tasks, which hand their work to the worker processes
(flows/workers.py): no runner is chosen for it.
"""

from __future__ import annotations

from prefect.task_runners import TaskRunner

from pipeline.config import RunnerConfig


def ray_task_runner(runner: RunnerConfig) -> TaskRunner:
    """prefect-ray's RayTaskRunner.

    With `ray_address` unset, Ray starts a local instance sized to `workers` CPUs (the dashboard is off:
    it needs extra ports and packages and adds seconds to start-up); with an address it joins that cluster
    and the cluster decides the resources.
    """
    # Imported here: ray is an optional extra and costs seconds to import.
    from prefect_ray.task_runners import RayTaskRunner

    if runner.ray_address:
        return RayTaskRunner(address=runner.ray_address)
    return RayTaskRunner(init_kwargs={"num_cpus": runner.workers, "include_dashboard": False})

"""Prefect task runners for the side-by-side fits: threads, a Dask cluster, or Ray (``RunnerConfig``).

The runner is opened around the jobs, inside the flow run, so a deployment run chooses it through its parameters
(a flow decorator's runner is fixed when the flow is defined).
"""

from __future__ import annotations

from typing import Any

from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner
from prefect.utilities.callables import get_call_parameters

from flows.config import RunnerConfig


def task_runner(config: RunnerConfig) -> TaskRunner:
    """A fresh (unopened) Prefect task runner for ``config``; a missing extra is a clear ``ImportError``."""
    if config.kind == "threads":
        return ThreadPoolTaskRunner(max_workers=config.workers)
    if config.kind == "dask":
        try:
            from prefect_dask import DaskTaskRunner
        except ImportError as exc:
            raise ImportError("runner kind 'dask' needs prefect-dask: pip install 'transferrec[dask]'") from exc
        if config.address:
            return DaskTaskRunner(address=config.address)
        return DaskTaskRunner(cluster_kwargs={"n_workers": config.workers, "threads_per_worker": 1,
                                              "processes": config.processes, "dashboard_address": None})
    try:
        from prefect_ray import RayTaskRunner
    except ImportError as exc:
        raise ImportError("runner kind 'ray' needs prefect-ray: pip install prefect-ray") from exc
    return RayTaskRunner(address=config.address) if config.address else RayTaskRunner()


def run_jobs(jobs: dict[str, tuple[Any, tuple, dict[str, Any]]], *, runner: RunnerConfig) -> dict[str, Any]:
    """Run Prefect tasks ``{key: (task, args, kwargs)}`` and return ``{key: result}``: submitted together to the
    task runner of ``runner``, or called one after the other when its kind is sequential."""
    if runner.kind == "sequential":
        return {key: task(*args, **kwargs) for key, (task, args, kwargs) in jobs.items()}
    with task_runner(runner) as opened:
        futures = {key: opened.submit(task, get_call_parameters(task.fn, args, kwargs))
                   for key, (task, args, kwargs) in jobs.items()}
        return {key: future.result() for key, future in futures.items()}

"""Prefect task runners for the side-by-side fits and the out-of-core parts: threads, a Dask cluster, or Ray
(``RunnerConfig``).

The runner is opened around the jobs, inside the flow run, so a deployment run chooses it through its parameters
(a flow decorator's runner is fixed when the flow is defined).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed
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


def run_jobs(jobs: dict[str, tuple[Any, tuple, dict[str, Any]]], *, runner: RunnerConfig,
             on_result: Callable[[str, Any], None] | None = None) -> dict[str, Any]:
    """Run Prefect tasks ``{key: (task, args, kwargs)}`` and return ``{key: result}``: submitted together to the
    task runner of ``runner``, or called one after the other when its kind is sequential. ``on_result(key,
    result)`` is called in this thread for each job: as it finishes on threads, when all have on a cluster."""
    if runner.kind == "sequential":
        done = {}
        for key, (task, args, kwargs) in jobs.items():
            done[key] = task(*args, **kwargs)
            if on_result is not None:
                on_result(key, done[key])
        return done
    with task_runner(runner) as opened:
        futures = {key: opened.submit(task, get_call_parameters(task.fn, args, kwargs))
                   for key, (task, args, kwargs) in jobs.items()}
        if on_result is not None and runner.kind == "threads":
            keys = {id(future): key for key, future in futures.items()}
            for future in as_completed(list(futures.values())):
                on_result(keys[id(future)], future.result())
        results = {key: future.result() for key, future in futures.items()}
    if on_result is not None and runner.kind != "threads":
        for key, result in results.items():
            on_result(key, result)
    return results


T = TypeVar("T")
#: The runner kinds that spread the out-of-core parts over a cluster; in process they run one at a time.
SPREADS_PARTS = ("dask", "ray")


@task(name="part", cache_policy=NO_CACHE, task_run_name="{label}-{index}")
def run_part(label: str, index: int, fn: Callable[..., T], args: tuple) -> T:
    """One part of an out-of-core stage (a batch to validate, a bucket of users to split): ``fn(*args)``."""
    return fn(*args)


class PartRunner:
    """The out-of-core stages' parts as Prefect tasks (a :class:`~data_contracts.batched.PartMapper`).

    On a Dask or Ray runner the parts are submitted to the cluster, ``workers`` at a time (the parts in memory at
    once), and the cluster is opened on the first part and closed with this runner. With threads or sequential they
    run one after the other in this process: polars already uses every core on one part, and one part is what
    memory then holds. Results come back in the order of the calls, so the outcome does not depend on where the
    parts ran.
    """

    def __init__(self, config: RunnerConfig) -> None:
        self.config = config
        self.spreads = config.kind in SPREADS_PARTS
        self.width = config.workers if self.spreads else 1
        self._runner: TaskRunner | None = None
        self._counts: dict[str, int] = {}

    def __enter__(self) -> PartRunner:
        return self

    def __reduce__(self) -> tuple[type[PartRunner], tuple[RunnerConfig]]:
        # Prefect ships the calling task's parameters (this runner among them) with every part it submits: a copy
        # elsewhere is a fresh, unopened runner of the same config (never used there)
        return PartRunner, (self.config,)

    def __exit__(self, *exc: object) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            runner.__exit__(None, None, None)

    def __call__(self, fn: Callable[..., T], calls: Sequence[tuple], label: str) -> list[T]:
        first = self._counts.get(label, 0)
        self._counts[label] = first + len(calls)
        if not self.spreads:
            return [run_part(label, first + n, fn, args) for n, args in enumerate(calls)]
        if self._runner is None:
            self._runner = task_runner(self.config).__enter__()
        futures = [self._runner.submit(run_part, {"label": label, "index": first + n, "fn": fn, "args": args})
                   for n, args in enumerate(calls)]
        return [future.result() for future in futures]

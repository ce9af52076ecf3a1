"""flows.runners.run_jobs: every job's result, and each reported as it finishes (the onboarding opens a baseline's
run then, while the others still train)."""

from __future__ import annotations

import threading
import time

import pytest
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows.config import RunnerConfig
from flows.runners import run_jobs


@task(cache_policy=NO_CACHE)
def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@pytest.mark.parametrize("kind", ["threads", "sequential"])
def test_each_job_is_reported_on_the_calling_thread_as_it_finishes(kind: str):
    heard: list[tuple[str, float, str]] = []

    @flow
    def jobs() -> dict[str, float]:
        return run_jobs({"slow": (nap, (1.5,), {}), "quick": (nap, (0.1,), {}), "middle": (nap, (0.6,), {})},
                        runner=RunnerConfig(kind=kind),
                        on_result=lambda key, result: heard.append((key, result, threading.current_thread().name)))

    caller = threading.current_thread().name
    assert jobs() == {"slow": 1.5, "quick": 0.1, "middle": 0.6}
    order = ["quick", "middle", "slow"] if kind == "threads" else ["slow", "quick", "middle"]
    assert heard == [(key, {"slow": 1.5, "quick": 0.1, "middle": 0.6}[key], caller) for key in order]

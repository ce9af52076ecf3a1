"""The start of every tracked flow: the MLflow store, the experiment and the flow's parent run."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from models.config import TrackingConfig
from tasks import tracking
from tasks.runtime import retry_transient, run_key


def resolved_tracking_uri(config: TrackingConfig) -> str:
    """The store a flow of ``config`` logs to: its ``tracking_uri``, else the default (:mod:`tasks.tracking`)."""
    return config.tracking_uri or tracking.default_tracking_uri()


@task(name="prepare-tracking", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[1, 3],
      retry_condition_fn=retry_transient)
def prepare_tracking(config: TrackingConfig, experiment: str, domain: str | None = None) -> tuple[str, str]:
    """Resolve the tracking URI, create the store's schema and the experiment (of ``domain``) once; return
    (uri, id)."""
    uri = resolved_tracking_uri(config)
    return uri, tracking.ensure_experiment(uri, experiment, domain=domain)


@contextmanager
def tracked_run(config: BaseModel, settings: TrackingConfig, experiment: str, run_name: str,
                tags: dict[str, Any]) -> Iterator[tracking.TrackingContext]:
    """The flow's parent run in ``experiment``, with the resolved ``config`` logged as params and as
    ``config.json``; marked FAILED with the error when the body raises, KILLED when the process is stopped
    (see :func:`tracking.open_run`). A run of the same settings that a killed process left RUNNING is closed
    first (:func:`tracking.close_abandoned_runs`)."""
    uri, experiment_id = prepare_tracking(settings, experiment, getattr(config, "target_domain", None))
    key = run_key(config)
    with tracking.open_run(uri, experiment_id, experiment, run_name,
                           tags={**tags, **tracking.owner_tags(key)}) as run:
        closed = tracking.close_abandoned_runs(uri, experiment_id, key, found_by=run.run_id)
        if closed:
            get_run_logger().warning("marked %d run(s) a killed process left RUNNING as KILLED: %s", len(closed),
                                     ", ".join(closed))
            run.set_tags({"closed_abandoned_runs": ",".join(closed)})
        payload = config.model_dump(mode="json")  # written in the background while the flow starts
        run.later(partial(run.log_params, tracking.flatten(payload)))
        run.later(partial(run.log_dict, payload, "config.json"))
        yield run

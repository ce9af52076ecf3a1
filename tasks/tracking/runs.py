"""Runs: the tracking store, experiments, runs and what is logged to them (:class:`TrackingContext`).

Runs are addressed by id through ``MlflowClient`` (MLflow's active run is thread-local, Prefect may run
tasks in worker threads). The default tracking store is SQLite in the working directory with artifacts
beside it (``./mlflow.db`` and ``./mlartifacts``); ``MLFLOW_TRACKING_URI`` overrides it.
"""


from __future__ import annotations

import fcntl
import json
import logging
import math
import os
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any

import mlflow
import polars as pl
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException

from models.selection.sources import slug

logger = logging.getLogger(__name__)


def default_tracking_uri(workdir: Path | None = None) -> str:
    """``MLFLOW_TRACKING_URI`` when set, else SQLite in ``workdir`` (the current directory by default)."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{(workdir or Path.cwd()).resolve() / 'mlflow.db'}"


def sqlite_dir(uri: str) -> Path | None:
    """Folder of a ``sqlite:///<path>`` store (4 slashes = absolute path), None for other stores."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri.removeprefix("sqlite:///")).resolve().parent


@cache
def _client(uri: str) -> mlflow.MlflowClient:
    folder = sqlite_dir(uri)
    if folder is None:
        return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    # Two processes that open a *new* SQLite store at once both run MLflow's schema migrations, and one fails
    # ("table experiments already exists"). The first to come creates the schema under a file lock; the
    # others wait, then find it there. (On an existing store concurrent writers are fine.)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f".{Path(uri).name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            created = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
            created.search_experiments(max_results=1)  # touches (and if needed creates) the tracking schema
            created.search_registered_models(max_results=1)  # and the registry's
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
    return created


def client(uri: str) -> mlflow.MlflowClient:
    """The client bound to ``uri`` (one per URI; also set as the process-wide URI for fluent calls)."""
    mlflow.set_tracking_uri(uri)
    return _client(uri)


def ensure_experiment(uri: str, name: str) -> str:
    """Id of experiment ``name``, created if missing (artifacts beside a SQLite store)."""
    c = client(uri)
    found = c.get_experiment_by_name(name)
    if found is not None:
        if found.lifecycle_stage == "deleted":
            c.restore_experiment(found.experiment_id)
        return found.experiment_id
    base = sqlite_dir(uri)
    location = (base / "mlartifacts" / slug(name)).as_uri() if base else None
    try:
        return c.create_experiment(name, artifact_location=location)
    except MlflowException:  # created concurrently by another process
        return c.get_experiment_by_name(name).experiment_id


def _clean_metrics(metrics: dict[str, float]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if v is not None and not math.isnan(float(v))}


def logged_model_id(model_uri: str | None) -> str | None:
    """``m-...`` of a logged model's URI ``models:/m-...``; None for anything else."""
    return model_uri.removeprefix("models:/") if model_uri and model_uri.startswith("models:/m-") else None


def log_metrics(uri: str, run_id: str, metrics: dict[str, float], *, step: int = 0,
                model_uri: str | None = None) -> None:
    """Log metrics in one batch (keys like ``test/ndcg_at_10``); with ``model_uri`` (a logged model's
    ``models:/m-...``) they are also the logged model's metrics (MLflow's model page shows them)."""
    now = int(time.time() * 1000)
    model_id = logged_model_id(model_uri)
    batch = [Metric(k, v, now, step, model_id=model_id) for k, v in _clean_metrics(metrics).items()]
    if batch:
        client(uri).log_batch(run_id, metrics=batch, synchronous=True)


def log_params(uri: str, run_id: str, params: dict[str, Any]) -> None:
    """Log params in batches (values stringified, cut at MLflow's 6000-character limit)."""
    items = [Param(k, str(v)[:6000]) for k, v in params.items()]
    for start in range(0, len(items), 100):
        client(uri).log_batch(run_id, params=items[start:start + 100], synchronous=True)


def set_tags(uri: str, run_id: str, tags: dict[str, Any]) -> None:
    """Set run tags."""
    client(uri).log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()], synchronous=True)


def log_history(uri: str, run_id: str, history: list[dict[str, float]], *, prefix: str = "curve/") -> None:
    """Per-epoch learning curves with step = epoch, as ``curve/train_loss``, ``curve/val_ndcg_at_10``...

    They get their own prefix so that ``val/...`` and ``test/...`` stay the final, comparable numbers.
    """
    now = int(time.time() * 1000)
    batch = []
    for entry in history:
        epoch = int(entry.get("epoch", 0))
        for key, value in entry.items():
            if key in ("epoch", "step") or value is None or math.isnan(value):
                continue
            batch.append(Metric(f"{prefix}{key.replace('/', '_')}", float(value), now, epoch))
    for start in range(0, len(batch), 500):
        client(uri).log_batch(run_id, metrics=batch[start:start + 500], synchronous=True)


def log_dict(uri: str, run_id: str, data: Any, artifact_file: str) -> None:
    """A JSON/YAML artifact."""
    client(uri).log_dict(run_id, data, artifact_file)


def log_text(uri: str, run_id: str, text: str, artifact_file: str) -> None:
    """A text artifact (Markdown, reports)."""
    client(uri).log_text(run_id, text, artifact_file)


def log_table(uri: str, run_id: str, table: pl.DataFrame, artifact_file: str) -> None:
    """A table artifact (MLflow wants pandas)."""
    client(uri).log_table(run_id, data=table.to_pandas(), artifact_file=artifact_file)


def start_run(uri: str, experiment_id: str, name: str, *, parent_id: str | None = None,
              tags: dict[str, Any] | None = None, started_seconds_ago: float = 0.0) -> str:
    """Create a run (a child when ``parent_id`` is given) and return its id.

    ``started_seconds_ago`` back-dates the start, for work done before the run is logged (training).
    """
    all_tags = {k: str(v) for k, v in (tags or {}).items()}
    if parent_id:
        all_tags["mlflow.parentRunId"] = parent_id
    start = int((time.time() - started_seconds_ago) * 1000)
    return client(uri).create_run(experiment_id, start_time=start, run_name=name, tags=all_tags).info.run_id


def end_run(uri: str, run_id: str, status: str = "FINISHED") -> None:
    """Mark a run FINISHED, FAILED or KILLED."""
    client(uri).set_terminated(run_id, status=status)


@contextmanager
def run_context(uri: str, experiment_id: str, name: str, *, parent_id: str | None = None,
                tags: dict[str, Any] | None = None, started_seconds_ago: float = 0.0) -> Iterator[str]:
    """A run that ends FINISHED, or FAILED with ``error.txt`` (message and traceback) when the block raises."""
    run_id = start_run(uri, experiment_id, name, parent_id=parent_id, tags=tags,
                       started_seconds_ago=started_seconds_ago)
    try:
        yield run_id
    except BaseException as exc:
        try:
            report = getattr(exc, "to_markdown", None)
            if callable(report):
                log_text(uri, run_id, report(), "contracts/violation.md")
            log_text(uri, run_id, f"{type(exc).__name__}: {exc}\n\n{traceback.format_exc()}", "error.txt")
            set_tags(uri, run_id, {"error": f"{type(exc).__name__}: {str(exc)[:4000]}"})
        finally:
            end_run(uri, run_id, "FAILED")
        raise
    end_run(uri, run_id, "FINISHED")


def dumps(data: Any) -> str:
    """JSON with numpy scalars converted."""
    return json.dumps(data, default=lambda o: o.item() if hasattr(o, "item") else str(o), indent=2)


@dataclass(frozen=True)
class TrackingContext:
    """Where a flow run logs (store URI, experiment, the run), and how: every call logs to this run."""

    uri: str
    experiment_id: str
    experiment_name: str
    run_id: str

    def log_params(self, params: dict[str, Any]) -> None:
        log_params(self.uri, self.run_id, params)

    def log_metrics(self, metrics: dict[str, float], *, step: int = 0, model_uri: str | None = None) -> None:
        log_metrics(self.uri, self.run_id, metrics, step=step, model_uri=model_uri)

    def set_tags(self, tags: dict[str, Any]) -> None:
        set_tags(self.uri, self.run_id, tags)

    def log_dict(self, data: Any, artifact_file: str) -> None:
        log_dict(self.uri, self.run_id, data, artifact_file)

    def log_text(self, text: str, artifact_file: str) -> None:
        log_text(self.uri, self.run_id, text, artifact_file)

    def log_table(self, table: pl.DataFrame, artifact_file: str) -> None:
        log_table(self.uri, self.run_id, table, artifact_file)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        log_artifact(self.uri, self.run_id, path, artifact_path)

    @contextmanager
    def child(self, name: str, *, tags: dict[str, Any] | None = None,
              started_seconds_ago: float = 0.0) -> Iterator[TrackingContext]:
        """A child run of this one that ends FINISHED, or FAILED when the block raises (:func:`run_context`)."""
        with run_context(self.uri, self.experiment_id, name, parent_id=self.run_id, tags=tags,
                         started_seconds_ago=started_seconds_ago) as child_id:
            yield replace(self, run_id=child_id)


@contextmanager
def open_run(uri: str, experiment_id: str, experiment_name: str, run_name: str, *,
             tags: dict[str, Any] | None = None) -> Iterator[TrackingContext]:
    """A flow's parent run as a :class:`TrackingContext` (FINISHED, or FAILED when the block raises)."""
    with run_context(uri, experiment_id, run_name, tags=tags) as run_id:
        yield TrackingContext(uri, experiment_id, experiment_name, run_id)


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dict -> ``{"a.b.c": value}`` (for logging a config as params)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def log_artifact(uri: str, run_id: str, path: Path, artifact_path: str | None = None) -> None:
    """Upload a local file to the run's artifacts."""
    client(uri).log_artifact(run_id, str(path), artifact_path)

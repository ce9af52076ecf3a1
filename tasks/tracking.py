"""Every MLflow call of transferrec lives here.

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
import tempfile
import time
import traceback
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import polars as pl
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema
from mlflow.types.schema import Array

from models.factors import FactorModel
from models.selection.profiles import DomainProfile
from models.selection.sources import slug
from tasks.serving import FACTORS_ARTIFACT


def experiment_name(domain: str) -> str:
    """The MLflow experiment of a target domain's onboardings: ``transferrec-<domain>``."""
    return f"transferrec-{slug(domain)}"


def registered_model_name(domain: str) -> str:
    """The registered model served for a target domain: ``transferrec-<domain>``."""
    return f"transferrec-{slug(domain)}"

logger = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
MODEL_ARTIFACT = "model"


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


# --------------------------------------------------------------------------- models and registry

SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec("string", "user_id")]),
    outputs=Schema([ColSpec("string", "user_id"), ColSpec(Array("string"), "item_ids")]),
    params=ParamSchema([ParamSpec("k", "long", 10)]),
)


def logged_model_id(model_uri: str | None) -> str | None:
    """``m-...`` of a logged model's URI ``models:/m-...``; None for anything else."""
    return model_uri.removeprefix("models:/") if model_uri and model_uri.startswith("models:/m-") else None


def log_factor_model(uri: str, run_id: str, model: FactorModel) -> str:
    """Log ``model`` as an MLflow pyfunc model of run ``run_id``; returns its model URI.

    The run is left open (its status is not changed). Log the model *before* the run's metrics: MLflow 3
    links every metric already on the run to the new model by reading each metric's history (a query per
    key, then the metrics written again): about half the time of logging a model after ~45 metrics. Pass the
    returned URI to :func:`log_metrics` to link the metrics in the same single write.
    """
    client(uri)
    with tempfile.TemporaryDirectory(prefix="transferrec-model-") as tmp:
        factors = model.save(Path(tmp) / FACTORS_ARTIFACT)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with mlflow.start_run(run_id=run_id, log_system_metrics=False) as active:
                info = mlflow.pyfunc.log_model(
                    name=MODEL_ARTIFACT,
                    python_model=str(Path(__file__).with_name("serving_entry.py")),
                    artifacts={FACTORS_ARTIFACT: str(factors)},
                    signature=SIGNATURE,
                    pip_requirements=["mlflow", "numpy", "pandas", "polars", "transferrec"],
                )
                run_status = active.info.status
    # start_run(run_id=...) ends the run on exit; restore the running state for the caller.
    if run_status == "RUNNING":
        client(uri).update_run(run_id, status="RUNNING")
    return info.model_uri


def load_factor_model(uri: str, model_uri: str) -> FactorModel:
    """Load the factors behind a logged/registered model (``models:/name/version``, ``models:/m-...``)."""
    client(uri)
    with tempfile.TemporaryDirectory(prefix="transferrec-load-") as tmp:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=tmp))
        found = next((p.parent for p in local.rglob("factors.npz")), None)
        if found is None:
            raise FileNotFoundError(f"{model_uri} holds no factors.npz")
        return FactorModel.load(found)


PROFILE_ARTIFACT = "profile"


def log_profile(uri: str, run_id: str, profile: DomainProfile) -> None:
    """Store a domain profile beside a source model (artifact folder ``profile/`` of its run)."""
    with tempfile.TemporaryDirectory(prefix="transferrec-profile-") as tmp:
        folder = profile.save(Path(tmp) / PROFILE_ARTIFACT)
        client(uri).log_artifacts(run_id, str(folder), PROFILE_ARTIFACT)


def load_profile(uri: str, run_id: str) -> DomainProfile:
    """The domain profile stored with the source model of run ``run_id``.

    Raises:
        FileNotFoundError: when the run holds no profile.
    """
    client(uri)
    with tempfile.TemporaryDirectory(prefix="transferrec-profile-") as tmp:
        try:
            local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=PROFILE_ARTIFACT, dst_path=tmp)
        except (MlflowException, OSError) as exc:
            raise FileNotFoundError(f"run {run_id} holds no domain profile: {exc}") from exc
        return DomainProfile.load(Path(local))


SOURCE_PREFIX = "transferrec-source-"


def source_catalogue(uri: str, *, with_stats: bool = True) -> list[dict[str, Any]]:
    """The newest version of every registered source model (with its profile's size and behaviour stats
    unless ``with_stats`` is False: that downloads each profile)."""
    c = client(uri)
    out = []
    for registered in c.search_registered_models(filter_string=f"name LIKE '{SOURCE_PREFIX}%'"):
        versions = c.search_model_versions(f"name = '{registered.name}'")
        if not versions:
            continue
        newest = max(versions, key=lambda v: int(v.version))
        entry: dict[str, Any] = {"registered_model": registered.name, "version": str(newest.version),
                                 "run_id": newest.run_id, "source": newest.tags.get("source"),
                                 "dataset": newest.tags.get("dataset"),
                                 "domains": newest.tags.get("source_domains", "").split(","),
                                 "time_safe_for": newest.tags.get("time_safe_for", newest.tags.get("target_domain")),
                                 "fingerprint": newest.tags.get("fingerprint")}
        if not with_stats:
            out.append(entry)
            continue
        try:
            stats = load_profile(uri, str(newest.run_id)).stats
            entry.update({k: int(stats[k]) for k in ("users", "items", "interactions")})
            entry["popularity_gini"] = stats["popularity_gini"]
        except FileNotFoundError:
            entry.update({"users": None, "items": None, "interactions": None, "popularity_gini": None})
        out.append(entry)
    return sorted(out, key=lambda e: e["registered_model"])


COMPARE_METRICS = ("test/ndcg_at_10", "val/ndcg_at_10", "test/lift_ndcg_at_10",
                   "test/lift_ndcg_at_10_vs_popularity_ci_low", "test/lift_ndcg_at_10_vs_popularity_ci_high")


def recent_onboardings(uri: str, experiment_name: str, *, limit: int = 20) -> list[dict[str, Any]]:
    """The newest onboarding (parent) runs of an experiment, newest first, with what tells them apart: status,
    source, family, mode, fraction, seed, transfer's test/val NDCG@10, the lift over the best baseline and its
    interval over popularity, the winner and whether it was promoted."""
    c = client(uri)
    experiment = c.get_experiment_by_name(experiment_name)
    if experiment is None:
        return []
    found = c.search_runs([experiment.experiment_id], filter_string="attributes.run_name LIKE 'onboard:%'",
                          order_by=["attributes.start_time DESC"], max_results=limit)
    rows = []
    for run in found:
        tags, metrics = run.data.tags, run.data.metrics
        rows.append({
            "run_id": run.info.run_id, "started": run.info.start_time, "status": run.info.status,
            "source": tags.get("chosen_source"), "family": tags.get("family", "mf"), "mode": tags.get("mode"),
            "fraction": tags.get("fraction"), "seed": tags.get("seed"), "winner": tags.get("winner"),
            "model_version": tags.get("model_version"), "promotion": tags.get("promotion"),
            **{key: metrics.get(key) for key in COMPARE_METRICS},
        })
    return rows


@dataclass(frozen=True)
class RegisteredVersion:
    """A registered model version."""

    name: str
    version: str
    run_id: str | None
    tags: dict[str, str]


def find_version(uri: str, name: str, *, tag: str, value: str) -> RegisteredVersion | None:
    """The newest version of ``name`` whose tag ``tag`` equals ``value`` (None when none)."""
    c = client(uri)
    try:
        versions = c.search_model_versions(f"name = '{name}'")
    except MlflowException:
        return None
    matching = [v for v in versions if v.tags.get(tag) == value and v.status == "READY"]
    if not matching:
        return None
    best = max(matching, key=lambda v: int(v.version))
    return RegisteredVersion(best.name, str(best.version), best.run_id, dict(best.tags))


def alias_version(uri: str, name: str, alias: str) -> RegisteredVersion | None:
    """The version behind ``name@alias``, or None."""
    c = client(uri)
    try:
        v = c.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None
    return RegisteredVersion(v.name, str(v.version), v.run_id, dict(v.tags))


def register_model(uri: str, name: str, model_uri: str, *, run_id: str, tags: dict[str, Any],
                   aliases: list[str], description: str = "") -> RegisteredVersion:
    """Register ``model_uri`` as a new version of ``name`` with tags and aliases, all or nothing.

    If tagging or aliasing fails, the new version is deleted again, so no half-registered version stays and
    aliases held by other versions are untouched.
    """
    c = client(uri)
    try:
        c.create_registered_model(name)
    except MlflowException:
        pass  # already exists
    # A logged model's URI (models:/m-<id>) names its model id too; a tracking server insists on getting it
    # (SQLite stores accept the source alone).
    model_id = logged_model_id(model_uri)
    version = c.create_model_version(name, source=model_uri, run_id=run_id, model_id=model_id,
                                     tags={k: str(v) for k, v in tags.items()}, description=description)
    try:
        for alias in aliases:
            c.set_registered_model_alias(name, alias, version.version)
    except Exception:
        c.delete_model_version(name, version.version)
        raise
    return RegisteredVersion(name, str(version.version), run_id, {k: str(v) for k, v in tags.items()})


def set_version_tags(uri: str, name: str, version: str, tags: dict[str, Any]) -> None:
    """Tag a model version (decisions and their evidence)."""
    c = client(uri)
    for key, value in tags.items():
        c.set_model_version_tag(name, version, key, str(value))


def set_alias(uri: str, name: str, alias: str, version: str) -> None:
    """Point ``name@alias`` at ``version``."""
    client(uri).set_registered_model_alias(name, alias, version)


def runs_table(uri: str, experiment_name: str, *, parent_id: str) -> pd.DataFrame:
    """The child runs of ``parent_id`` (for summaries and tests)."""
    client(uri)
    return mlflow.search_runs(experiment_names=[experiment_name],
                              filter_string=f"tags.mlflow.parentRunId = '{parent_id}'")


def dumps(data: Any) -> str:
    """JSON with numpy scalars converted."""
    return json.dumps(data, default=lambda o: o.item() if hasattr(o, "item") else str(o), indent=2)


@dataclass(frozen=True)
class TrackingContext:
    """Where a flow run logs: store URI, experiment and the flow's parent run."""

    uri: str
    experiment_id: str
    experiment_name: str
    run_id: str


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

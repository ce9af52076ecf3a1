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
import socket
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import Future
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
from tasks.runtime import interruption
from tasks.tracking.background import BACKGROUND, later

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


#: Experiment tag naming the domain (as the user wrote it) whose experiment it is.
DOMAIN_TAG = "transferrec.domain"


class NameCollision(ValueError):
    """Two spellings of a domain map to one experiment and registered model name."""


def ensure_experiment(uri: str, name: str, *, domain: str | None = None) -> str:
    """Id of experiment ``name``, created if missing (artifacts beside a SQLite store).

    With ``domain``, the experiment belongs to that domain as written (tag :data:`DOMAIN_TAG`; an untagged one is
    claimed): another spelling with the same name (``Garden`` and ``garden``, ``my garden`` and ``my-garden``)
    is refused, so two domains never share an experiment and a registered model.

    Raises:
        NameCollision: the experiment belongs to another spelling of the domain.
        MlflowException: the tracking server refused (e.g. no permission to create experiments).
    """
    c = client(uri)
    found = c.get_experiment_by_name(name)
    if found is None:
        base = sqlite_dir(uri)
        location = (base / "mlartifacts" / slug(name)).as_uri() if base else None
        tags = {DOMAIN_TAG: domain} if domain is not None else None
        try:
            return c.create_experiment(name, artifact_location=location, tags=tags)
        except MlflowException as error:
            if error.error_code != "RESOURCE_ALREADY_EXISTS":  # not a creation race: say what the server said
                raise
        found = c.get_experiment_by_name(name)  # created concurrently by another process
        if found is None:
            raise MlflowException(f"experiment {name!r} could not be created or found at {uri}")
    if found.lifecycle_stage == "deleted":
        c.restore_experiment(found.experiment_id)
    owner = found.tags.get(DOMAIN_TAG)
    if domain is not None and owner is not None and owner != domain:
        raise NameCollision(f"domain {domain!r} maps to the experiment and registered model {name!r}, which belong "
                            f"to domain {owner!r}: use that spelling, or a name that differs in letters or digits")
    if domain is not None and owner is None:
        c.set_experiment_tag(found.experiment_id, DOMAIN_TAG, domain)
    return found.experiment_id


def _clean_metrics(metrics: dict[str, float]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if v is not None and not math.isnan(float(v))}


def logged_model_id(model_uri: str | None) -> str | None:
    """``m-...`` of a logged model's URI ``models:/m-...``; None for anything else."""
    return model_uri.removeprefix("models:/") if model_uri and model_uri.startswith("models:/m-") else None


def _history_metrics(history: list[dict[str, float]], prefix: str, now: int) -> list[Metric]:
    batch = []
    for entry in history:
        epoch = int(entry.get("epoch", 0))
        for key, value in entry.items():
            if key in ("epoch", "step") or value is None or math.isnan(value):
                continue
            batch.append(Metric(f"{prefix}{key.replace('/', '_')}", float(value), now, epoch))
    return batch


#: Most entries MLflow takes in one ``log_batch`` (metrics, params and tags together), and most params (or tags).
MAX_BATCH, MAX_BATCH_PARAMS_TAGS = 1000, 100


def log_run_data(uri: str, run_id: str, *, metrics: dict[str, float] | None = None, step: int = 0,
                 model_uri: str | None = None, params: dict[str, Any] | None = None,
                 history: list[dict[str, float]] | None = None, history_prefix: str = "curve/",
                 tags: dict[str, Any] | None = None) -> None:
    """Metrics, params, per-epoch history and tags of a run in as few writes as MLflow takes (one for a model's
    child run): each store write costs about as much as a few dozen metrics in it.

    ``metrics``: keys like ``test/ndcg_at_10`` at ``step``; with ``model_uri`` (a logged model's ``models:/m-...``)
    they are also the logged model's metrics (MLflow's model page shows them). ``params``: values stringified, cut
    at MLflow's 6000-character limit. ``history``: per-epoch learning curves with step = epoch, as
    ``curve/train_loss``, ``curve/val_ndcg_at_10``... (their own prefix, so that ``val/...`` and ``test/...``
    stay the final, comparable numbers)."""
    now = int(time.time() * 1000)
    model_id = logged_model_id(model_uri)
    pending_metrics = [Metric(k, v, now, step, model_id=model_id) for k, v in _clean_metrics(metrics or {}).items()]
    pending_metrics += _history_metrics(history or [], history_prefix, now)
    pending_params = [Param(k, str(v)[:6000]) for k, v in (params or {}).items()]
    pending_tags = [RunTag(k, str(v)) for k, v in (tags or {}).items()]
    while pending_metrics or pending_params or pending_tags:
        cut = MAX_BATCH_PARAMS_TAGS
        tags_now, pending_tags = pending_tags[:cut], pending_tags[cut:]
        params_now, pending_params = pending_params[:cut], pending_params[cut:]
        cut = MAX_BATCH - len(tags_now) - len(params_now)
        metrics_now, pending_metrics = pending_metrics[:cut], pending_metrics[cut:]
        client(uri).log_batch(run_id, metrics=metrics_now, params=params_now, tags=tags_now, synchronous=True)


def log_metrics(uri: str, run_id: str, metrics: dict[str, float], *, step: int = 0,
                model_uri: str | None = None) -> None:
    """Log metrics in one batch (see :func:`log_run_data`)."""
    log_run_data(uri, run_id, metrics=metrics, step=step, model_uri=model_uri)


def log_params(uri: str, run_id: str, params: dict[str, Any]) -> None:
    """Log params in batches (see :func:`log_run_data`)."""
    log_run_data(uri, run_id, params=params)


def set_tags(uri: str, run_id: str, tags: dict[str, Any]) -> None:
    """Set run tags."""
    log_run_data(uri, run_id, tags=tags)


def log_history(uri: str, run_id: str, history: list[dict[str, float]], *, prefix: str = "curve/") -> None:
    """Per-epoch learning curves with step = epoch (see :func:`log_run_data`)."""
    log_run_data(uri, run_id, history=history, history_prefix=prefix)


@dataclass(frozen=True)
class DatasetRecord:
    """A dataset a run read, for MLflow's lineage (the run's Datasets, and the model version's source run).

    ``name``: e.g. ``target:train``, ``source:all-others``; ``context``: ``training``, ``validation``, ``test`` or
    ``source``; ``location``: where it was read from (a folder, an object-store URL); ``digest``: its stable
    fingerprint (:mod:`models.data.fingerprint`); ``frame``: the table when in memory (MLflow then shows its schema
    and row count).
    """

    name: str
    context: str
    location: str
    digest: str
    frame: pl.DataFrame | None = None


#: writes of a run's datasets tried when another run inserted the same dataset at the same moment
_DATASET_ATTEMPTS = 5


def log_datasets(uri: str, run_id: str, records: list[DatasetRecord]) -> None:
    """Log ``records`` as the run's inputs (``mlflow.log_input`` for a run addressed by id), in one write."""
    if not records:
        return
    import warnings

    from mlflow.data import from_polars
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import DatasetInput, InputTag

    inputs = []
    for record in records:
        with warnings.catch_warnings():  # "dataset source can be interpreted in multiple ways": a local folder
            warnings.simplefilter("ignore")
            try:
                source = resolve_dataset_source(record.location)
            except Exception:  # noqa: BLE001 - a location MLflow has no source type for (a tracking store)
                from mlflow.data.code_dataset_source import CodeDatasetSource

                source = CodeDatasetSource({"location": record.location})
            dataset = (from_polars(record.frame, source=source, name=record.name, digest=record.digest)
                       if record.frame is not None else MetaDataset(source, name=record.name, digest=record.digest))
        inputs.append(DatasetInput(dataset._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", record.context)]))
    # MLflow looks a dataset up in the experiment, then inserts it when missing: two runs logging the same data at
    # once (two refreshes of one domain) can both miss it, and the second insert breaks the experiment's unique
    # (name, digest). The write is one transaction, rolled back whole; written again, it finds the first run's row.
    for attempt in range(_DATASET_ATTEMPTS):
        try:
            client(uri).log_inputs(run_id, datasets=inputs)
            return
        except MlflowException as exc:
            text = str(exc).lower()
            if attempt == _DATASET_ATTEMPTS - 1 or not ("unique" in text or "duplicate" in text):
                raise
            time.sleep(0.05 * (attempt + 1))



#: Prefix of the curves logged while a fit trains (``live/<fit>/train_loss``, ``live/<fit>/val_ndcg_at_10``);
#: the finished fit's curves go to its own run under ``curve/`` (:func:`log_history`).
LIVE_PREFIX = "live/"


def live_curve(uri: str, run_id: str, label: str) -> Callable[[Any], None]:
    """An ``on_epoch`` for :func:`models.nets.training.fit_network`: each epoch's training loss and validation
    score on the run while the fit trains (step = epoch), so the MLflow UI shows the curves before the end.
    Written by a background thread (a fit does not wait on the store; :func:`end_run` waits for the writes): the
    epochs reported while a write waits its turn go with it, in one write (epochs of a fraction of a second each
    cost a write apiece otherwise, on the thread that logs the onboarding's other runs); a failed write is logged
    and never stops a fit."""
    key = f"{LIVE_PREFIX}{slug(label)}/"
    pending: list[Metric] = []
    guard = threading.Lock()

    def write() -> None:
        with guard:
            metrics = pending.copy()
            pending.clear()
        try:
            client(uri).log_batch(run_id, metrics=metrics, synchronous=True)
        except Exception as error:  # noqa: BLE001 - the store failing never stops a fit
            logger.warning("live curve of %s not logged: %s", label, error)

    def log(report: Any) -> None:
        now = int(time.time() * 1000)
        metrics = [Metric(f"{key}{name}", float(value), now, report.epoch)
                   for name, value in (("train_loss", report.loss), (f"val_ndcg_at_{report.k}", report.val_ndcg))
                   if not math.isnan(value)]
        with guard:
            queued = bool(pending)  # a write is waiting: these go with it
            pending.extend(metrics)
        if not queued and metrics:
            BACKGROUND.submit(write)

    return log


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
    """Mark a run FINISHED, FAILED or KILLED, once what was queued in the background (:func:`live_curve`,
    :func:`later`) is in."""
    BACKGROUND.flush()
    client(uri).set_terminated(run_id, status=status)


#: Tags on a flow's parent run naming the process that runs it and its settings (tasks.runtime.run_key): a
#: rerun of the same settings finds the run a killed process left RUNNING (:func:`close_abandoned_runs`).
HOST_TAG, PID_TAG, CONFIG_KEY_TAG = "transferrec.host", "transferrec.pid", "transferrec.config_key"


def owner_tags(config_key: str) -> dict[str, str]:
    """This process's :data:`HOST_TAG`, :data:`PID_TAG` and the run's :data:`CONFIG_KEY_TAG`."""
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid()), CONFIG_KEY_TAG: config_key}


def _process_gone(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, ValueError):
        return False  # another user's live process, or no pid recorded: leave it
    return False


def close_abandoned_runs(uri: str, experiment_id: str, config_key: str, *, found_by: str) -> list[str]:
    """Runs of the experiment left RUNNING by a process of this host that no longer exists (killed with
    SIGKILL, a lost machine) and started with the same settings: marked KILLED with a ``killed_note``, their
    RUNNING child runs too. A live run (another process running the same settings now) is left alone.
    Returns the ids of the parent runs closed."""
    c, host = client(uri), socket.gethostname()
    running = c.search_runs([experiment_id], f"attributes.status = 'RUNNING' and tags.`{CONFIG_KEY_TAG}` = "
                                             f"'{config_key}'")
    closed = []
    for run in running:
        tags = run.data.tags
        if run.info.run_id == found_by or tags.get(HOST_TAG) != host or not _process_gone(tags.get(PID_TAG, "")):
            continue
        note = (f"left RUNNING by process {tags.get(PID_TAG)} on {host}, which ended without closing it; marked "
                f"KILLED by run {found_by}")
        for each in [*_running_children(uri, experiment_id, run.info.run_id), run]:
            c.set_tag(each.info.run_id, "killed_note", note)
            c.set_terminated(each.info.run_id, status="KILLED")
        closed.append(run.info.run_id)
    return closed


@contextmanager
def run_context(uri: str, experiment_id: str, name: str, *, parent_id: str | None = None,
                tags: dict[str, Any] | None = None, started_seconds_ago: float = 0.0) -> Iterator[str]:
    """A new run (a child of ``parent_id`` when given) for the block, ended as :func:`closing_run` ends it."""
    run_id = start_run(uri, experiment_id, name, parent_id=parent_id, tags=tags,
                       started_seconds_ago=started_seconds_ago)
    with closing_run(uri, run_id, children_in=None if parent_id else experiment_id):
        yield run_id


@contextmanager
def closing_run(uri: str, run_id: str, *, children_in: str | None = None) -> Iterator[None]:
    """End run ``run_id`` after the block: FINISHED, once the writes queued for it in the background
    (:func:`later`) are in; FAILED with ``error.txt`` (message and traceback) when the block or one of those
    writes raised; KILLED when the process was stopped (a ``BaseException`` that is no error, or anything
    raised after a SIGINT or SIGTERM: :func:`tasks.runtime.interruption`). With ``children_in`` (the run's
    experiment id), a run that does not finish ends its child runs still RUNNING (those opened ahead of their
    results) the same way."""
    try:
        yield
        BACKGROUND.flush(raise_for=run_id)
    except BaseException as exc:
        try:
            BACKGROUND.flush(drop_for=run_id)
            report = getattr(exc, "to_markdown", None)
            if callable(report):
                log_text(uri, run_id, report(), "contracts/violation.md")
            log_text(uri, run_id, f"{type(exc).__name__}: {exc}\n\n{traceback.format_exc()}", "error.txt")
            set_tags(uri, run_id, {"error": f"{type(exc).__name__}: {str(exc)[:4000]}"})
        finally:
            stopped = not isinstance(exc, Exception) or interruption() is not None
            status = "KILLED" if stopped else "FAILED"
            if children_in is not None:
                try:
                    for child in _running_children(uri, children_in, run_id):
                        client(uri).set_terminated(child.info.run_id, status=status)
                except Exception as error:  # noqa: BLE001 - the run's own end comes first
                    logger.warning("child runs of %s not ended: %s", run_id, error)
            end_run(uri, run_id, status)
        raise
    end_run(uri, run_id, "FINISHED")


def _running_children(uri: str, experiment_id: str, run_id: str) -> list:
    """The child runs of ``run_id`` still RUNNING."""
    return client(uri).search_runs([experiment_id], f"attributes.status = 'RUNNING' and "
                                                    f"tags.mlflow.parentRunId = '{run_id}'")


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

    def log_datasets(self, records: list[DatasetRecord]) -> None:
        log_datasets(self.uri, self.run_id, records)

    def live_curve(self, label: str) -> Callable[[Any], None]:
        return live_curve(self.uri, self.run_id, label)

    def later(self, write: Callable[[], Any]) -> Future:
        """Run ``write`` on the tracking's background thread (:func:`later`); its error fails this run."""
        return later(write, owner=self.run_id)

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

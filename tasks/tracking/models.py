"""Logged models and the registry: factor models as MLflow pyfunc models, domain profiles, versions, aliases."""


from __future__ import annotations

import copy
import functools
import shutil
import tempfile
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import Model, ModelSignature
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema
from mlflow.types.schema import Array

from models.factors import FactorModel
from models.selection.profiles import DomainProfile
from tasks.serving import FACTORS_ARTIFACT
from tasks.tracking.names import MODEL_ARTIFACT, WEIGHTS_ARTIFACT
from tasks.tracking.runs import client, logged_model_id

SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec("string", "user_id")]),
    outputs=Schema([ColSpec("string", "user_id"), ColSpec(Array("string"), "item_ids"),
                    ColSpec(Array("double"), "scores"), ColSpec("boolean", "fallback")]),
    params=ParamSchema([ParamSpec("k", "long", 10)]),
)

#: The code a logged model runs (:mod:`tasks.serving` over :mod:`models.factors`), copied into it as
#: ``code_paths``: with :func:`serving_requirements` it serves in any environment, not only in this repository.
SERVING_CODE = ("models/__init__.py", "models/factors.py", "tasks/__init__.py", "tasks/serving.py")
#: The packages that code imports (pinned to the versions that logged the model).
SERVING_PACKAGES = ("mlflow", "numpy", "pandas", "polars")


@functools.cache
def _pinned() -> tuple[str, ...]:
    from importlib.metadata import version

    return tuple(f"{package}=={version(package)}" for package in SERVING_PACKAGES)


def serving_requirements() -> list[str]:
    """``SERVING_PACKAGES`` pinned to the installed versions (read once a process: every logged model asks)."""
    return list(_pinned())


def _stage_serving_code(folder: Path) -> list[str]:
    """Copy :data:`SERVING_CODE` under ``folder`` as packages; returns the ``code_paths`` (one per package)."""
    root = Path(__file__).resolve().parents[2]
    for relative in SERVING_CODE:
        target = folder / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(root / relative, target)
    return sorted({str(folder / Path(relative).parts[0]) for relative in SERVING_CODE})


def prepare_model_logging() -> None:
    """Build MLflow's map of installed packages to their modules now: a process's first servable model builds it
    to check the model's requirements against the environment (about half a second on 2 cores, reading every
    installed distribution's metadata), so a command builds it while Prefect's API starts, and the daemon
    (:mod:`flows.daemon`) before it forks. Where an MLflow version lacks the private call, nothing happens."""
    from mlflow.utils import requirements_utils

    build = getattr(requirements_utils, "_init_packages_to_modules_map", None)
    if build is not None:
        build()


def log_factor_model(uri: str, run_id: str, model: FactorModel) -> str:
    """Log ``model`` as an MLflow pyfunc model of run ``run_id``; returns its model URI.

    The run is addressed by id: the logged model is created in the run's experiment
    (``mlflow.initialize_logged_model``) and filled by ``Model.log(run_id=..., model_id=...)``, what
    ``mlflow.pyfunc.log_model`` calls for the active run; the run is neither made the thread's active run nor
    ended, so its status is not touched (``Model.log`` alone would put the model in the default experiment,
    under ``./mlruns``).

    Log the model *before* the run's metrics: MLflow 3 links every metric already on the run to the new model by
    reading each metric's history (a query per key, then the metrics written again): about half the time of
    logging a model after ~45 metrics. Pass the returned URI to :func:`log_metrics` to link the metrics in the
    same single write.
    """
    experiment_id = client(uri).get_run(run_id).info.experiment_id
    with tempfile.TemporaryDirectory(prefix="transferrec-model-") as tmp:
        factors = model.save(Path(tmp) / FACTORS_ARTIFACT)
        code_paths = _stage_serving_code(Path(tmp) / "code")
        # a known user (the first) when there is one: the example shows a personal answer
        example = pd.DataFrame({"user_id": [str(model.user_ids[0]) if len(model.user_ids) else "a-new-user"]})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            logged = mlflow.initialize_logged_model(name=MODEL_ARTIFACT, source_run_id=run_id,
                                                    experiment_id=experiment_id)
            info = Model.log(
                artifact_path=None,
                name=MODEL_ARTIFACT,
                flavor=mlflow.pyfunc,
                run_id=run_id,
                model_id=logged.model_id,
                python_model=str(Path(__file__).parents[1] / "serving_entry.py"),
                artifacts={FACTORS_ARTIFACT: str(factors)},
                signature=SIGNATURE,
                input_example=example,
                pip_requirements=serving_requirements(),
                code_paths=code_paths,
            )
    return info.model_uri


def log_weights(uri: str, run_id: str, model: FactorModel) -> str:
    """Keep ``model``'s weights on run ``run_id`` (artifact folder :data:`WEIGHTS_ARTIFACT`) without logging an
    MLflow model: no serving code, requirements or input example, one upload. Returns the folder's
    ``runs:/<run_id>/weights`` URI, which :func:`load_factor_model` reads."""
    with tempfile.TemporaryDirectory(prefix="transferrec-weights-") as tmp:
        folder = model.save(Path(tmp) / WEIGHTS_ARTIFACT)
        client(uri).log_artifacts(run_id, str(folder), WEIGHTS_ARTIFACT)
    return f"runs:/{run_id}/{WEIGHTS_ARTIFACT}"


def load_factor_model(uri: str, model_uri: str) -> FactorModel:
    """Load the factors behind a logged/registered model (``models:/name/version``, ``models:/m-...``) or kept
    weights (``runs:/<run id>/weights``, :func:`log_weights`)."""
    client(uri)
    with tempfile.TemporaryDirectory(prefix="transferrec-load-") as tmp:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=tmp))
        found = next((p.parent for p in local.rglob("factors.npz")), None)
        if found is None:
            raise FileNotFoundError(f"{model_uri} holds no factors.npz")
        return FactorModel.load(found)


#: Source models and profiles read in this process, by store, registered name, version and run (a version is
#: never changed once registered; a version number used again after a deletion names another run): a process that
#: onboards again (a warm flow, a data-efficiency curve, a worker) reads each source from the store once.
_SOURCES: OrderedDict[tuple[str, ...], tuple[FactorModel, DomainProfile]] = OrderedDict()
SOURCES_KEPT = 16


def load_source(uri: str, name: str, version: str, run_id: str) -> tuple[FactorModel, DomainProfile]:
    """The factors of registered source model ``name`` version ``version`` and the domain profile of its run
    ``run_id`` (:func:`load_factor_model`, :func:`load_profile`); the last :data:`SOURCES_KEPT` read are kept in
    this process, and each call gets its own copy of the arrays."""
    key = (uri, name, str(version), str(run_id))
    if key not in _SOURCES:
        _SOURCES[key] = (load_factor_model(uri, f"models:/{name}/{version}"), load_profile(uri, str(run_id)))
        while len(_SOURCES) > SOURCES_KEPT:
            _SOURCES.popitem(last=False)
    _SOURCES.move_to_end(key)
    model, profile = _SOURCES[key]
    return copy.deepcopy(model), copy.deepcopy(profile)


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

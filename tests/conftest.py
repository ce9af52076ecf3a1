"""Shared fixtures: quiet offline settings, a small synthetic dataset, and tmp MLflow stores."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from tasks.runtime import configure_environment, quiet_libraries


def pytest_configure(config: pytest.Config) -> None:
    # Before Prefect is imported anywhere: telemetry off, a Prefect home outside the repo.
    home = Path(os.environ.get("TRANSFERREC_TEST_PREFECT_HOME", "/tmp/transferrec-test-prefect"))
    os.environ.setdefault("PREFECT_HOME", str(home))
    configure_environment({"PREFECT_LOGGING_LEVEL": "WARNING"})
    quiet_libraries()


@pytest.fixture(scope="session")
def synthetic_dataset():
    """Four domains x 40 items, 300 users who share their taste across domains."""
    from models.synthetic import generate_multidomain

    return generate_multidomain(n_users=300, items_per_domain=40, interactions_per_domain=12.0, seed=0)


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory, synthetic_dataset) -> Path:
    """The synthetic dataset written as canonical Parquet tables."""
    from models.datasets import write_canonical_dir

    return write_canonical_dir(synthetic_dataset, tmp_path_factory.mktemp("synthetic") / "data")


@pytest.fixture(scope="session")
def _mlflow_template(tmp_path_factory) -> Path:
    """An MLflow SQLite store with its schema created once (migrations take seconds)."""
    from tasks import tracking

    db = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    tracking.ensure_experiment(f"sqlite:///{db}", "template")
    return db


@pytest.fixture
def mlflow_uri(tmp_path, _mlflow_template, monkeypatch) -> str:
    """A fresh MLflow store in this test's tmp dir (also exported as MLFLOW_TRACKING_URI)."""
    db = tmp_path / "mlflow.db"
    shutil.copy(_mlflow_template, db)
    uri = f"sqlite:///{db}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("TRANSFERREC_DATA_DIR", str(tmp_path / "cache"))  # checkpoints too stay in tmp
    monkeypatch.chdir(tmp_path)
    return uri


def _service_missing(name: str) -> str | None:
    """Why ``name`` (a tool some integration tests drive) is not usable here, or None."""
    import importlib.util

    if name == "playwright":
        return None if importlib.util.find_spec("playwright") else "the `browser` extra (playwright) is not installed"
    if name == "chromium":
        from flows.ui import chromium_path

        try:
            chromium_path()
        except FileNotFoundError as exc:
            return str(exc)
        return None
    if name == "postgres":
        import glob
        import shutil

        if not (shutil.which("initdb") or glob.glob("/usr/lib/postgresql/*/bin/initdb")):
            return "PostgreSQL's server (initdb, postgres) is not installed"
        return None if importlib.util.find_spec("psycopg") else "the `server` extra (psycopg) is not installed"
    if name == "moto":
        from pathlib import Path as _Path

        found = importlib.util.find_spec("moto") and (_Path(sys.executable).parent / "moto_server").exists()
        return None if found else "moto's S3 server (`moto[server]`, extra `dev`) is not installed"
    raise ValueError(f"unknown service {name!r}")


@pytest.fixture
def require_services():
    """``require_services("playwright", "chromium", ...)``: skip when one is missing -- or fail, when
    ``TRANSFERREC_REQUIRE_SERVICES=1`` (CI installs them all, so there a missing one is an error, not a skip)."""

    def check(*names: str) -> None:
        missing = [why for why in map(_service_missing, names) if why]
        if missing:
            message = "; ".join(missing)
            if os.environ.get("TRANSFERREC_REQUIRE_SERVICES") == "1":
                pytest.fail(f"required by TRANSFERREC_REQUIRE_SERVICES=1: {message}")
            pytest.skip(message)

    return check

"""Shared fixtures: quiet offline settings, a small synthetic dataset, and tmp MLflow stores."""

from __future__ import annotations

import os
import shutil
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

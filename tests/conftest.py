"""Shared fixtures: quiet offline settings, a small synthetic dataset, tmp MLflow stores, and the services
integration tests drive (a throw-away PostgreSQL cluster)."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from flows.services import free_port, stop_process
from tasks.runtime import configure_environment, quiet_libraries


def pytest_configure(config: pytest.Config) -> None:
    # Before Prefect is imported anywhere: telemetry off, a Prefect home outside the repo.
    home = Path(os.environ.get("TRANSFERREC_TEST_PREFECT_HOME", "/tmp/transferrec-test-prefect"))
    worker = os.environ.get("PYTEST_XDIST_WORKER")  # `make test` runs two pytest-xdist workers: a home each,
    if worker:  # or their first CLI runs would race to create one Prefect database
        home = home.with_name(f"{home.name}-{worker}")
    os.environ.setdefault("PREFECT_HOME", str(home))
    os.environ.setdefault("TRANSFERREC_NO_DAEMON", "1")  # a daemon of the developer's never runs the tests' commands
    configure_environment({"PREFECT_LOGGING_LEVEL": "WARNING"})
    quiet_libraries()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The slow tests first (stable otherwise): with two workers, the long integration tests then run beside the
    many short ones instead of alone at the end."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


class _Backwards:
    """A part mapper that hands out three parts at a time and runs each window's parts last first (as a cluster
    may finish them), returning the results in the calls' order."""

    width = 3

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, fn, calls, label):
        self.calls += len(calls)
        results = {n: fn(*calls[n]) for n in reversed(range(len(calls)))}
        return [results[n] for n in range(len(calls))]


@pytest.fixture
def backwards_mapper() -> _Backwards:
    """A :class:`~data_contracts.batched.PartMapper` that runs the parts out of order."""
    return _Backwards()


@pytest.fixture(scope="session")
def synthetic_dataset():
    """Four domains x 40 items, 300 users who share their taste across domains."""
    from models.data.synthetic import generate_multidomain

    return generate_multidomain(n_users=300, items_per_domain=40, interactions_per_domain=12.0, seed=0)


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory, synthetic_dataset) -> Path:
    """The synthetic dataset written as canonical Parquet tables."""
    from models.data.datasets import write_canonical_dir

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
        if postgres_bindir() is None:
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


def postgres_bindir() -> Path | None:
    """The folder of PostgreSQL's server binaries (initdb, postgres), or None when it is not installed."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(versions[-1]).parent if versions else None


@dataclass(frozen=True)
class Postgres:
    """A running cluster: connect as ``user``/``password`` on 127.0.0.1:``port``."""

    port: int
    user: str
    password: str

    def uri(self, database: str) -> str:
        return f"postgresql://{self.user}:{self.password}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.uri("postgres"), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.uri(name)


@pytest.fixture
def postgres(require_services) -> Iterator[Postgres]:
    """A fresh PostgreSQL cluster in a temporary folder (initdb, password auth on TCP), stopped and removed after.
    PostgreSQL refuses to run as root: as root the cluster belongs to the ``postgres`` system user."""
    require_services("postgres")
    bindir = postgres_bindir()
    assert bindir is not None
    as_root = os.geteuid() == 0
    root = Path(tempfile.mkdtemp(prefix="transferrec-pg-"))
    prefix: list[str] = []
    if as_root:
        owner = pwd.getpwnam("postgres")
        os.chmod(root, 0o700)
        os.chown(root, owner.pw_uid, owner.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    user, password = "transferrec", "pg-test-secret"
    pwfile = root / "pw"
    pwfile.write_text(password)
    if as_root:
        os.chown(pwfile, owner.pw_uid, owner.pw_gid)
    done = subprocess.run([*prefix, str(bindir / "initdb"), "-D", str(root / "data"), "-U", user,
                           f"--pwfile={pwfile}", "--auth-local=scram-sha-256", "--auth-host=scram-sha-256",
                           "--encoding=UTF8", "--no-sync"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    port = free_port()
    log = (root / "postgres.log").open("ab")
    server = subprocess.Popen([*prefix, str(bindir / "postgres"), "-D", str(root / "data"), "-p", str(port),
                               "-h", "127.0.0.1", "-k", str(root), "-c", "max_connections=200", "-c", "fsync=off"],
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    cluster = Postgres(port, user, password)
    try:
        import psycopg

        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, (root / "postgres.log").read_text()[-2000:]
            try:
                psycopg.connect(cluster.uri("postgres")).close()
                break
            except psycopg.OperationalError:
                assert time.monotonic() < deadline, "PostgreSQL did not accept connections within 60 s"
                time.sleep(0.3)
        yield cluster
    finally:
        stop_process(server, timeout=30, sig=signal.SIGINT)  # SIGINT: PostgreSQL's fast shutdown
        log.close()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def decisions_in_order():
    """``check(uri, name)``: each registered version's gate read the champion that the version before it left
    (the registry lock serialises champion decisions); returns the versions, oldest first."""
    import mlflow

    def check(uri: str, name: str) -> list:
        client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
        versions = sorted(client.search_model_versions(f"name='{name}'"), key=lambda v: int(v.version))
        champion = "none"
        for version in versions:
            assert version.tags["champion_before"] == champion, (version.version, version.tags)
            if version.tags["promotion"] == "promoted":
                champion = str(version.version)
        return versions

    return check

"""Services for integration tests: a throw-away PostgreSQL cluster on loopback."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from flows.services import free_port


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
        os.killpg(server.pid, signal.SIGINT)  # fast shutdown
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)
        log.close()
        shutil.rmtree(root, ignore_errors=True)

"""Services transferrec starts beside itself: `mlflow ui`, and the shared MLflow tracking server (PostgreSQL backend
store, an artifact root, basic auth) that teams use instead of the embedded SQLite store.

Process helpers start each service in its own process group, wait for its health check from *that* process, and
stop the whole group. Nothing here runs at import.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def mlflow_executable() -> str:
    """The ``mlflow`` of this installation (beside the running Python), else the one on PATH."""
    beside = Path(sys.executable).parent / "mlflow"
    return str(beside) if beside.exists() else "mlflow"


def start_mlflow(args: list[str], *, log: Path, env: dict[str, str] | None = None,
                 cwd: Path | None = None) -> subprocess.Popen:
    """Start ``mlflow <args>`` in its own process group (so :func:`stop_process` also stops its workers), with the
    job runner off (it spawns consumer processes that outlive the server and doubles the start-up time)."""
    full_env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **(env or {})}
    with log.open("ab") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen([mlflow_executable(), *args], stdout=out, stderr=subprocess.STDOUT, env=full_env,
                                cwd=cwd, start_new_session=True)


def wait_healthy(url: str, process: subprocess.Popen, *, timeout: float = 120.0, log: Path | None = None) -> None:
    """Wait until ``url/health`` answers 200 from *this* process (a port taken by someone else is caught by the
    process dying first); raise with the log's tail when it exits or the time is up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log else ""
            raise RuntimeError(f"mlflow exited with code {process.returncode} before it was healthy:\n{tail}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{url}/health did not answer within {timeout:.0f} s")


def stop_process(process: subprocess.Popen, *, timeout: float = 20.0, sig: int = signal.SIGTERM) -> None:
    """Send ``sig`` (SIGTERM) to the process group of a process started with ``start_new_session``, SIGKILL it
    if it lingers."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, sig)
        process.wait(timeout=timeout)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(timeout=timeout)


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children, their children...), read from ``/proc`` (Linux)."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
    found, frontier = [], [pid]
    while frontier:
        current = frontier.pop()
        kids = [p for p, parent in parents.items() if parent == current]
        found += kids
        frontier += kids
    return found


def process_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, ended but not yet reaped, does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


@dataclass(frozen=True)
class TrackingServer:
    """A shared MLflow tracking server: where runs and registry live (``backend_store_uri``, e.g.
    ``postgresql://mlflow:PW@db:5432/mlflow``), where artifacts go (``artifacts_destination``: a folder, or an
    ``s3://``/``gs://`` URL the server can write), the loopback/host address it listens on, and basic auth (a user
    store at ``auth_db_uri``; the admin password comes from ``MLFLOW_AUTH_ADMIN_PASSWORD``)."""

    backend_store_uri: str
    artifacts_destination: str
    host: str = "127.0.0.1"
    port: int = 5000
    workers: int = 1
    basic_auth: bool = True
    auth_db_uri: str | None = None
    state_dir: Path = Path(".transferrec-server")

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def auth_config(self, admin_username: str = "admin") -> str:
        """The basic-auth ini: everyone signed in may read (``READ``), the admin may do everything; users are
        kept in ``auth_db_uri`` (default: SQLite in ``state_dir``). No password is written here."""
        database = self.auth_db_uri or f"sqlite:///{(self.state_dir / 'basic_auth.db').resolve()}"
        return ("[mlflow]\ndefault_permission = READ\n"
                f"database_uri = {database}\nadmin_username = {admin_username}\n"
                "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
                # Without a credential cache every request re-hashes the password (PBKDF2): an onboarding makes
                # hundreds of requests. 60 s is MLflow's documented trade-off (a changed password may be accepted
                # by this worker for up to a minute).
                "auth_cache_ttl_seconds = 60\n")

    def command(self) -> list[str]:
        """``mlflow server ...`` arguments (without the executable)."""
        args = ["server", "--backend-store-uri", self.backend_store_uri, "--registry-store-uri",
                self.backend_store_uri, "--artifacts-destination", self.artifacts_destination, "--serve-artifacts",
                "--host", self.host, "--port", str(self.port), "--workers", str(self.workers)]
        return [*args, "--app-name", "basic-auth"] if self.basic_auth else args

    def environment(self) -> dict[str, str]:
        """What the server process needs on top of the caller's environment: the auth ini's path, a Flask secret
        (kept from the caller's ``MLFLOW_FLASK_SERVER_SECRET_KEY`` or made once per start). Raises when basic
        auth is on and ``MLFLOW_AUTH_ADMIN_PASSWORD`` is not set (MLflow has no default admin password)."""
        if not self.basic_auth:
            return {}
        password = os.environ.get("MLFLOW_AUTH_ADMIN_PASSWORD", "")
        if len(password) < 12:  # MLflow's own rule, checked before a server start that would die on it
            raise ValueError("basic auth needs an admin password of at least 12 characters in "
                             "MLFLOW_AUTH_ADMIN_PASSWORD (or start the server with --no-basic-auth)")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        ini = self.state_dir / "basic_auth.ini"
        ini.write_text(self.auth_config(os.environ.get("MLFLOW_AUTH_ADMIN_USERNAME", "admin")))
        return {"MLFLOW_AUTH_CONFIG_PATH": str(ini.resolve()),
                "MLFLOW_FLASK_SERVER_SECRET_KEY": os.environ.get("MLFLOW_FLASK_SERVER_SECRET_KEY")
                or secrets.token_hex(32)}

    def start(self, *, log: Path) -> subprocess.Popen:
        """Start the server (returns at once; see :func:`wait_healthy`)."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        return start_mlflow(self.command(), log=log, env=self.environment(), cwd=self.state_dir)

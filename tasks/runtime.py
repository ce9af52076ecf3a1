"""Process settings for running flows quietly and offline, applied by entry points (never at import)."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pydantic import BaseModel

QUIET_LOGGERS = ("pytorch_lightning", "lightning_fabric", "lightning.pytorch", "lightning",
                 "pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.seed")

ENV_DEFAULTS = {
    "DO_NOT_TRACK": "true",  # Prefect telemetry off (MLflow only accepts "true")
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "GX_ANALYTICS_ENABLED": "false",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # sentence-transformers' weight-loading bar
    "TRANSFORMERS_VERBOSITY": "error",
    "TOKENIZERS_PARALLELISM": "false",
    "PREFECT_LOGGING_LEVEL": "WARNING",
    "MLFLOW_LOGGING_LEVEL": "WARNING",
    # the temporary API's first start on a fresh Prefect home runs its database migrations: on a busy 2-core
    # machine that took longer than Prefect's default 20 s ("Timed out while attempting to connect")
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
}


def configure_environment(overrides: dict[str, str] | None = None) -> None:
    """Set telemetry-off and quiet defaults in ``os.environ`` (existing values win) before Prefect is imported."""
    for key, value in {**ENV_DEFAULTS, **(overrides or {})}.items():
        os.environ.setdefault(key, value)


_PRESTART: threading.Thread | None = None


def prestart_prefect_api() -> None:
    """Start Prefect's temporary API server (a subprocess; ~5-7 s) in the background, so that it comes up while
    this process imports torch, Lightning and MLflow (~8 s); :func:`await_prefect_api` joins it before the first
    flow call. Nothing happens when a Prefect server is configured (``PREFECT_API_URL``); any failure is left to
    the flow call, which starts the server itself."""
    global _PRESTART
    if os.environ.get("PREFECT_API_URL") or _PRESTART is not None:
        return

    def start() -> None:
        try:
            from prefect.settings import get_current_settings

            if get_current_settings().api.url:
                return
            from prefect.server.api.server import SubprocessASGIServer

            SubprocessASGIServer().start()
        except Exception:  # noqa: BLE001 - the flow call starts (and reports on) the server itself
            return

    _PRESTART = threading.Thread(target=start, name="prefect-api-prestart", daemon=True)
    _PRESTART.start()


def await_prefect_api(timeout: float = 120.0) -> None:
    """Wait for :func:`prestart_prefect_api` (no-op when it was not called)."""
    if _PRESTART is not None:
        _PRESTART.join(timeout)


def quiet_libraries() -> None:
    """Silence Lightning's banners, MLflow/GX info chatter and known-harmless warnings.

    Lightning sets its logger levels when imported, so it is imported here first.
    """
    import pytorch_lightning  # noqa: F401

    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    for name in ("mlflow", "great_expectations", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*LeafSpec.*is deprecated")
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=r".*is smaller than the logging interval.*")
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"(mlflow|sqlalchemy|great_expectations)")


def default_data_dir() -> Path:
    """``$TRANSFERREC_DATA_DIR`` or ``~/.cache/transferrec``."""
    env = os.environ.get("TRANSFERREC_DATA_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "transferrec"


def checkpoint_root(checkpoint_dir: Path | None, resume: bool) -> Path | None:
    """Where resumable checkpoints go (``<data cache>/checkpoints`` by default), or None without resume."""
    if not resume:
        return None
    return (checkpoint_dir or default_data_dir() / "checkpoints").expanduser()


def run_key(config: BaseModel) -> str:
    """A short hash of a flow config without its tracking part: a restarted run with the same settings gets
    the same key, hence the same checkpoint folder."""
    payload = config.model_dump_json(exclude={"tracking"})
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def clear_checkpoints(folder: Path | None) -> None:
    """Remove a finished run's checkpoint folder (each model removes its own when it finishes; this takes the
    emptied parent)."""
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)


class Stopwatch:
    """Wall time per named stage: ``with watch("fine_tune"): ...``; ``watch.seconds`` holds the totals."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - started


def git_commit(directory: Path | None = None) -> str:
    """The current git commit of ``directory`` (the package's checkout by default), or "unknown"."""
    where = directory or Path(__file__).resolve().parent.parent
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return done.stdout.strip() if done.returncode == 0 else "unknown"

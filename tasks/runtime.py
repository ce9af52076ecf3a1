"""Process settings for running flows quietly and offline, applied by entry points (never at import)."""

from __future__ import annotations

import contextvars
import hashlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from pydantic import BaseModel

QUIET_LOGGERS = ("pytorch_lightning", "lightning_fabric", "lightning.pytorch", "lightning",
                 "pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.seed",
                 # Prefect's event and log shippers, draining at exit: "Still processing items: N items
                 # remaining..." every 4 s when the API is slow, a second line under a one-line error
                 "EventsWorker", "APILogWorker")

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


#: Errors a retry cannot fix: the user's paths, permissions and values. I/O tasks retry everything else.
PERMANENT_ERRORS: tuple[type[BaseException], ...] = (FileNotFoundError, PermissionError, IsADirectoryError,
                                                    NotADirectoryError, ValueError)


def retry_transient(task: object, task_run: object, state: object) -> bool:
    """A Prefect ``retry_condition_fn``: retry unless the task failed with one of :data:`PERMANENT_ERRORS`
    (an unreadable folder or a name collision fails at once, with its own message)."""
    try:
        error = state.result(raise_on_failure=False)  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - the result cannot be read: retry, as without a condition
        return True
    return not isinstance(error, PERMANENT_ERRORS)


def command_environment(*, verbose: bool) -> dict[str, str]:
    """What a ``transferrec`` command sets over :data:`ENV_DEFAULTS`: Prefect's log level (quiet unless ``-v``;
    expected failures are reported once, without Prefect's tracebacks)."""
    return {"PREFECT_LOGGING_LEVEL": "INFO" if verbose else "CRITICAL"}


def configure_environment(overrides: dict[str, str] | None = None) -> None:
    """Set telemetry-off and quiet defaults in ``os.environ`` (existing values win) before Prefect is imported."""
    for key, value in {**ENV_DEFAULTS, **(overrides or {})}.items():
        os.environ.setdefault(key, value)


class Interrupted(BaseException):
    """The process was asked to stop (SIGINT or SIGTERM): raised in the main thread by :func:`handle_signals`'s
    handler. Not an ``Exception``, so no retry or broad ``except`` swallows it; not a ``KeyboardInterrupt``,
    which Lightning turns into ``sys.exit(1)``."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(f"interrupted by {signal.Signals(signum).name}")

    @property
    def exit_code(self) -> int:
        """128 + the signal number, as shells report it (130 for SIGINT, 143 for SIGTERM)."""
        return 128 + self.signum


_RECEIVED: list[int] = []  # the stop signals handle_signals' handler received, first first


def interruption() -> Interrupted | None:
    """The stop this process was asked for (its first SIGINT or SIGTERM), or None.

    The handler's :class:`Interrupted` is raised wherever the main thread is, and Python drops an exception
    raised inside a ``__del__`` ("Exception ignored in ..."): the run then unwinds through what the stop request
    made fail (a fit's ``FitStopped``). Whoever ends the run asks here rather than trusting the exception that
    reached it."""
    return Interrupted(_RECEIVED[0]) if _RECEIVED else None


def handle_signals() -> Callable[[], None]:
    """One path for SIGINT and SIGTERM (main thread only): ask every fit in the process to stop at its next
    batch (``models.nets.training.STOP``) and raise :class:`Interrupted` in the main thread, so the run unwinds:
    its MLflow run is marked KILLED, nothing is registered, and Prefect's temporary API server is stopped at
    exit. A second signal ends the process at once. Returns a function that puts the previous handlers back
    (for callers in a process that lives on, such as tests)."""
    previous = {each: signal.getsignal(each) for each in (signal.SIGINT, signal.SIGTERM)}

    def stop(signum: int, frame: object) -> None:
        from models.nets.training import STOP

        STOP.set()
        _RECEIVED.append(signum)
        for each in previous:
            signal.signal(each, signal.SIG_DFL)  # a second signal: the default action, at once
        raise Interrupted(signum)

    for each in previous:
        signal.signal(each, stop)

    def restore() -> None:
        _RECEIVED.clear()
        for each, handler in previous.items():
            signal.signal(each, handler)
        training = sys.modules.get("models.nets.training")  # imported only by commands that train
        if training is not None:
            training.STOP.clear()

    return restore


#: Set (to "1") beside PREFECT_API_URL when that URL is this process's temporary API server (see
#: :func:`prestart_prefect_api`), not a shared Prefect server: what needs a real server (cross-machine locks,
#: deployments) goes on without it.
TEMPORARY_API_ENV = "TRANSFERREC_TEMPORARY_API"


def shared_prefect_api() -> bool:
    """Whether ``PREFECT_API_URL`` names a shared Prefect server (not this run's temporary one)."""
    return bool(os.environ.get("PREFECT_API_URL")) and not os.environ.get(TEMPORARY_API_ENV)


@contextmanager
def flow_settings() -> Iterator[None]:
    """Prefect's settings for the flows this process runs: without a shared Prefect server
    (:func:`shared_prefect_api`), no flow-run heartbeats. A heartbeat tells a server that a run is alive, so
    that it can mark a crashed one; on an API that ends with this process nobody reads them, and every flow's end
    waits for the heartbeat thread's 1-s sleep (a trivial flow took 1.07 s with them and 0.08 s without)."""
    if shared_prefect_api():
        yield
        return
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield


#: The temporary API's server services that are off unless the environment turns them on: the task-run recorder,
#: the event persister and the automations' triggers work on every event a run emits (about 1.1 s of the server's
#: CPU per onboarding, on the cores the models train on: ``bench/time_to_model.py``). The temporary API is not
#: browsed (no UI) and holds no automations; it keeps each flow run, its states, logs and artifacts. A Prefect
#: server (``PREFECT_API_URL``) records task runs and events as it is configured to.
TEMPORARY_API_SERVICES = {"PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_ENABLED": "false",
                          "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_ENABLED": "false",
                          "PREFECT_SERVER_SERVICES_TRIGGERS_ENABLED": "false"}


def temporary_api_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The temporary API server's environment: ``environ`` (whose own settings win), the services of
    :data:`TEMPORARY_API_SERVICES` off, no UI, and Prefect's marks of an ephemeral server."""
    return {**TEMPORARY_API_SERVICES, **environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1",
            "PREFECT__SERVER_FINAL": "1"}


class _TemporaryApi:
    """Prefect's temporary API server, started as Prefect starts it (uvicorn over
    ``prefect.server.api.server:create_app``, UI off) but without importing Prefect's server in this process: its
    modules cost ~3.6 s of this process's time, which the imports of the command then waited for.

    It runs in a session of its own, so a Ctrl-C at the terminal (SIGINT to the foreground process group)
    reaches this process alone, which reports the run's end to the server and stops it at exit; without that the
    server died first and the engine spent about 80 s retrying it. On Linux it is also ended when this process
    dies (``PR_SET_PDEATHSIG``), so a killed run leaves no server behind."""

    def __init__(self) -> None:
        import importlib.util
        import socket

        with socket.socket() as probe:  # a free port
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        prefect_dir = Path(importlib.util.find_spec("prefect").origin).parent  # type: ignore[arg-type, union-attr]
        env = temporary_api_environment(os.environ)
        # its output goes to a file of its own, not the command's terminal: stopped while a run is cancelled, its
        # database pool logs the cancelled rollback with a traceback; a server that fails to start shows its tail
        self.log = tempfile.TemporaryFile()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--app-dir", str(prefect_dir.parent), "--factory",
             "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(self.port),
             "--log-level", "error", "--lifespan", "on"],
            env=env, start_new_session=True, stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent)
        self.url = f"http://127.0.0.1:{self.port}/api"
        self.owner = os.getpid()  # a process forked from this one (flows.daemon) uses the server, never stops it

    def wait(self, timeout: float) -> None:
        """Until the server answers its health check (in a forked process: at once, the owner waited).

        Raises:
            RuntimeError: it exited or did not answer within ``timeout`` seconds.
        """
        import urllib.error
        import urllib.request

        if os.getpid() != self.owner:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Prefect's temporary API server exited with code {self.process.returncode}"
                                   f"{self._tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"Prefect's temporary API server did not answer within {timeout:.0f} s{self._tail()}")

    def _tail(self, size: int = 2000) -> str:
        """The end of the server's output, for an error saying it did not come up."""
        self.log.seek(0, os.SEEK_END)
        self.log.seek(max(0, self.log.tell() - size))
        text = self.log.read().decode(errors="replace").strip()
        return f"; its output ends:\n{text}" if text else ""

    def stop(self) -> None:
        if os.getpid() == self.owner and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def die_with_parent() -> None:
    """In a forked child (before an exec, or a command the daemon forked): ask Linux to SIGTERM it when its parent
    dies (elsewhere: nothing)."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


_TEMPORARY: _TemporaryApi | None = None


def prestart_prefect_api() -> None:
    """Start Prefect's temporary API server (a subprocess; ~5-7 s) now, so that it comes up while this process
    imports torch, Lightning and MLflow (~8 s), and point Prefect at it (``PREFECT_API_URL``, with
    :data:`TEMPORARY_API_ENV`); :func:`await_prefect_api` waits for it before the first flow call. Call it before
    Prefect is imported (its settings are read then). Nothing happens when a Prefect server is configured
    (``PREFECT_API_URL``), when Prefect is already imported, or when it already ran; the server is stopped at
    exit."""
    global _TEMPORARY
    if os.environ.get("PREFECT_API_URL") or _TEMPORARY is not None or "prefect" in sys.modules:
        return
    import atexit

    _TEMPORARY = _TemporaryApi()
    atexit.register(_TEMPORARY.stop)
    os.environ["PREFECT_API_URL"] = _TEMPORARY.url
    os.environ[TEMPORARY_API_ENV] = "1"


def await_prefect_api(timeout: float | None = None) -> None:
    """Wait for :func:`prestart_prefect_api`'s server (no-op when it was not started); ``timeout`` defaults to
    ``PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS``."""
    if _TEMPORARY is not None:
        key = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"
        _TEMPORARY.wait(timeout or float(os.environ.get(key, ENV_DEFAULTS[key])))


def prefect_api_ended() -> bool:
    """Whether :func:`prestart_prefect_api`'s server has exited (False when none was started)."""
    return _TEMPORARY is not None and _TEMPORARY.process.poll() is not None


def freeze_heap() -> None:
    """Exempt every object alive now from Python's cyclic garbage collector (:func:`gc.freeze`): call it once the
    libraries are imported. They leave about 760,000 tracked objects (modules, classes, caches) and a few dozen
    unreachable ones, which stay. Without it, the first full collection of a command's flow walked them all
    (about half a second), and in a fork of the daemon it also wrote to each of them, copying the daemon's memory
    pages into the command's."""
    import gc

    gc.freeze()


def prefect_api_pid() -> int | None:
    """The process id of :func:`prestart_prefect_api`'s server (None when none was started)."""
    return None if _TEMPORARY is None else _TEMPORARY.process.pid


def stop_prefect_api() -> None:
    """Stop :func:`prestart_prefect_api`'s server now (no-op when it was not started, or in a forked process)."""
    if _TEMPORARY is not None:
        _TEMPORARY.stop()


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


def show_progress(stream: TextIO | None = None) -> None:
    """Every fit's per-epoch line (:data:`models.nets.training.progress`) on ``stream`` (stderr by default), so a
    long training is never silent; called once by the entry point."""
    from models.nets.training import progress

    if not any(getattr(handler, "transferrec_progress", False) for handler in progress.handlers):
        handler = logging.StreamHandler(stream or sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler.transferrec_progress = True  # type: ignore[attr-defined]
        progress.addHandler(handler)
    progress.setLevel(logging.INFO)
    progress.propagate = False  # once, whatever the root logger's handlers


def default_data_dir() -> Path:
    """``$TRANSFERREC_DATA_DIR`` or ``~/.cache/transferrec``."""
    env = os.environ.get("TRANSFERREC_DATA_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "transferrec"


def embedding_cache() -> Path:
    """Where item texts' MiniLM vectors are kept once computed (``<data cache>/embeddings``;
    :func:`models.data.text.embed_minilm`): an onboarding of a catalogue embedded before loads no text model."""
    return default_data_dir() / "embeddings"


def closed_form_cache() -> Path:
    """Where the closed-form recipe's ALS source fits are kept by the hash of their inputs
    (``<data cache>/closed-form``; :func:`models.transfer.closed_form.source_model`): an onboarding of data seen
    before skips that fit."""
    return default_data_dir() / "closed-form"


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


class _ProgressArtifact:
    """The flow run's Prefect progress artifact, created and moved off the caller's thread: each update is an API
    call (about 25 ms), and a stage should not wait for its page to move. Only the latest update is sent (an older
    one still pending is dropped); a daemon thread sends it, in the caller's context (the flow run it belongs to),
    and ends as soon as nothing is pending, so nothing outlives the flow. :meth:`wait` waits (bounded) for the
    last one."""

    def __init__(self, label: str) -> None:
        self.key = "progress-" + "".join(c if c.isalnum() else "-" for c in label.lower())[:80]
        self._context = contextvars.copy_context()
        self._lock = threading.Lock()
        self._idle = threading.Event()
        self._idle.set()
        self._pending: tuple[float, str] | None = None
        self._artifact: Any = None

    def move(self, percent: float, description: str) -> None:
        with self._lock:
            self._pending = (percent, description)
            if not self._idle.is_set():
                return  # the running sender picks it up
            self._idle.clear()
        threading.Thread(target=self._context.copy().run, args=(self._send_pending,), daemon=True,
                         name="transferrec-progress").start()

    def wait(self, timeout: float = 5.0) -> None:
        self._idle.wait(timeout)

    def _send_pending(self) -> None:
        while True:
            with self._lock:
                update, self._pending = self._pending, None
                if update is None:
                    self._idle.set()
                    return
            try:  # the page of the flow run; a tracking hiccup here never stops a run
                from prefect.artifacts import create_progress_artifact, update_progress_artifact

                if self._artifact is None:
                    self._artifact = create_progress_artifact(update[0], key=self.key, description=update[1])
                else:
                    update_progress_artifact(self._artifact, update[0], description=update[1])
            except Exception as error:  # noqa: BLE001 - e.g. no flow run context (a plain call)
                logging.getLogger(__name__).debug("progress artifact not updated: %s", error)


class Stopwatch:
    """Wall time per named stage: ``with watch("fine_tune"): ...``; ``watch.seconds`` holds the totals.

    With a ``label`` (and the flow's ``stages`` in order), each stage's start is also reported: a progress line
    (:data:`models.nets.training.progress`) and a Prefect progress artifact (key ``progress-<label>``) that
    moves with the stages, so the flow run's page shows how far it is (sent in the background:
    :class:`_ProgressArtifact`).
    """

    def __init__(self, label: str | None = None, stages: tuple[str, ...] = ()) -> None:
        self.seconds: dict[str, float] = {}
        self.label, self.stages = label, stages
        self.started = time.perf_counter()
        self._artifact = _ProgressArtifact(label) if label is not None else None

    def _report(self, stage: str) -> None:
        from models.nets.training import progress

        done = self.stages.index(stage) if stage in self.stages else len(self.seconds)
        total = max(len(self.stages), done + 1)
        progress.info(f"[{self.label}] {stage} (stage {done + 1}/{total}, {time.perf_counter() - self.started:.0f}s)")
        if self._artifact is not None:
            self._artifact.move(100.0 * done / total, f"{self.label}: {stage}")

    def finish(self) -> None:
        """Mark the progress artifact complete (waits, a few seconds at most, for it to be sent)."""
        if self._artifact is not None:
            self._artifact.move(100.0, f"{self.label}: done")
            self._artifact.wait()

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        if self.label is not None:
            self._report(stage)
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

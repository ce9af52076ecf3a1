"""A warm process for the command line: ``transferrec daemon start|stop|status``.

A ``transferrec`` process spends about 10 s importing torch, Lightning, Prefect and MLflow, and starting Prefect's
temporary API, before its command begins. The daemon does that once: it imports them, keeps one Prefect API up,
and forks a copy of itself for each command a ``transferrec`` process hands it over a Unix socket (the command's
arguments, working folder and environment, and its stdin, stdout and stderr). The copy runs the command as the
process would (:func:`flows.cli.main`), writing to the caller's terminal, and its exit code becomes the caller's.
Ctrl-C and SIGTERM reach the copy through the caller (:func:`forward`); a caller that dies takes its copy with it.

A command runs in its own process instead, as without a daemon, when no daemon answers on :func:`socket_path`;
when the daemon was started on other code (an upgrade or an edit since, :func:`code_key`); when the caller's
environment differs from the daemon's in what is read when those libraries are imported (:data:`IMPORT_TIME`:
Prefect's settings, thread counts); when it asks for verbose logs (Prefect's logging is set up when it is
imported); or under ``TRANSFERREC_NO_DAEMON=1``. This module imports only the standard library: the caller's
side runs before anything heavy is imported.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import select
import signal
import socket
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: Where the daemon listens: this variable, or ``daemon.sock`` in the data cache folder.
SOCKET_ENV = "TRANSFERREC_DAEMON_SOCKET"
#: ``1``: every command runs in its own process, daemon or not.
NO_DAEMON_ENV = "TRANSFERREC_NO_DAEMON"
#: The daemon ends after this many seconds without a command (``--idle-timeout``).
IDLE_TIMEOUT = 3600.0
#: Environment variables read when torch, Prefect, MLflow and the other libraries are imported (by prefix): a
#: caller whose values differ from the daemon's runs its command itself.
IMPORT_TIME = ("PREFECT_", "OMP_", "MKL_", "OPENBLAS_", "KMP_", "CUDA_", "PYTORCH_", "TORCH", "POLARS_", "HF_",
               "TRANSFORMERS_", "TOKENIZERS_", "GX_", "PYTHON", "LD_", "DO_NOT_TRACK", "MLFLOW_DISABLE_TELEMETRY")
#: Modules a command imports on its way (beyond ``flows.cli``), imported by the daemon before it forks.
PRELOAD = ("flows.cli.commands", "flows.onboard", "flows.curve", "flows.pretrain", "tasks.tracking",
           "prefect.flow_engine", "prefect.task_engine", "prefect.engine", "prefect.utilities.visualization",
           "mlflow.store.tracking.sqlalchemy_store", "mlflow.store.model_registry.sqlalchemy_store",
           "mlflow.store.tracking.sqlalchemy_workspace_store", "mlflow.store.model_registry.sqlalchemy_workspace_store",
           "mlflow.tracing.processor.otel", "mlflow.tracing.export", "mlflow.pyfunc.scoring_server",
           "mlflow.models.display_utils", "alembic.command", "alembic.config", "git", "sqlalchemy.dialects.sqlite",
           "implicit.cpu.als", "implicit.als", "threadpoolctl", "anyio._backends._asyncio", "pyarrow.pandas_compat",
           "PIL.PngImagePlugin", "opentelemetry.sdk.metrics")
_PACKAGES = ("flows", "tasks", "models", "data_contracts")
_HEADER = struct.Struct("!I")


def socket_path() -> Path:
    """``$TRANSFERREC_DAEMON_SOCKET``, or ``daemon.sock`` in the data cache folder."""
    env = os.environ.get(SOCKET_ENV)
    if env:
        return Path(env).expanduser()
    from tasks.runtime import default_data_dir

    return default_data_dir() / "daemon.sock"


def code_key(root: Path | None = None) -> str:
    """What the daemon's copy of the code is: the interpreter and every source file of the project's packages
    under ``root`` (default: this checkout or installation) by path, size and modification time, so that an
    upgrade or an edit is never run on the old code."""
    root = root or Path(__file__).resolve().parent.parent
    digest = hashlib.sha256(f"{sys.executable}\n{sys.version}\n".encode())
    for package in _PACKAGES:
        files = []
        for folder, dirs, names in os.walk(root / package):
            dirs[:] = [d for d in dirs if d != "__pycache__"]
            files += [os.path.join(folder, n) for n in names if n.endswith((".py", ".json", ".yml", ".yaml"))]
        for path in sorted(files):
            stat = os.stat(path)
            digest.update(f"{os.path.relpath(path, root)}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def _send(conn: socket.socket, message: dict[str, Any], fds: list[int] | None = None) -> None:
    data = json.dumps(message).encode()
    socket.send_fds(conn, [_HEADER.pack(len(data))], fds or [])
    conn.sendall(data)


def _exactly(conn: socket.socket, size: int) -> bytes | None:
    chunks, left = [], size
    while left:
        chunk = conn.recv(left)
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _receive(conn: socket.socket) -> tuple[dict[str, Any] | None, list[int]]:
    """One message (None: the other side closed), with the file descriptors passed beside it."""
    header, fds, _, _ = socket.recv_fds(conn, _HEADER.size, 3)
    rest = _exactly(conn, _HEADER.size - len(header)) if header else None
    data = _exactly(conn, _HEADER.unpack(header + rest)[0]) if rest is not None else None
    return (json.loads(data) if data is not None else None), fds


def _ask(message: dict[str, Any], timeout: float = 10.0) -> dict[str, Any] | None:
    """The daemon's answer to ``message``, or None when none answers."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(timeout)
            conn.connect(str(socket_path()))
            _send(conn, message)
            return _receive(conn)[0]
    except OSError:
        return None


def _command(argv: list[str]) -> str | None:
    """The command of ``argv`` (the first word that is not an option: the top-level options take no value)."""
    return next((word for word in argv if not word.startswith("-")), None)


def _std_fds() -> list[int]:
    """This process's stdin, stdout and stderr (``/dev/null`` in place of a closed one)."""
    fds = []
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            fd = os.open(os.devnull, os.O_RDWR)
        fds.append(fd)
    return fds


def forward(argv: list[str]) -> int | None:
    """Run the command ``argv`` in the daemon and return its exit code; None when it is to run in this process (no
    daemon, or the daemon cannot run it: then a one-line note on stderr says why). SIGINT, SIGTERM and SIGHUP
    received meanwhile are passed on to the command."""
    if os.environ.get(NO_DAEMON_ENV) == "1" or _command(argv) in (None, "daemon"):
        return None
    path = socket_path()
    if not path.exists():
        return None
    pids: list[int] = []  # the command's process, once the daemon has forked it
    early: list[int] = []  # a stop asked for before then

    def handler(signum: int, _frame: object) -> None:
        _pass_on(pids[0], signum) if pids else early.append(signum)

    previous = {each: signal.signal(each, handler) for each in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            try:
                conn.connect(str(path))
                _send(conn, {"run": argv, "cwd": os.getcwd(), "env": dict(os.environ), "key": code_key()},
                      _std_fds())
                reply, _ = _receive(conn)
            except OSError:
                reply = None
            if reply is None or "refused" in reply:
                if early:
                    sys.stderr.write(f"interrupted by {signal.Signals(early[0]).name}: stopped before it began\n")
                elif reply is not None:
                    sys.stderr.write(f"note: {reply['refused']}; running the command in this process\n")
                return 128 + early[0] if early else None
            pids.append(reply["pid"])
            for signum in early:
                _pass_on(pids[0], signum)
            done, _ = _receive(conn)
    finally:
        for each, before in previous.items():
            signal.signal(each, before)
    if done is None:  # the daemon died: its command is sent SIGTERM (by Linux too) and waited for
        _pass_on(pids[0], signal.SIGTERM)
        _wait_gone(pids[0], 20.0)
        sys.stderr.write("error: the transferrec daemon ended before the command did (the command was stopped)\n")
        return 1
    return int(done["exit"])


def _wait_gone(pid: int, timeout: float) -> None:
    """Until process ``pid`` has ended (SIGKILL after ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _pass_on(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM if signum == signal.SIGHUP else signum)


# ---------------------------------------------------------------------------------------------------- the daemon


def status() -> dict[str, Any] | None:
    """The running daemon's pid, start time, socket, commands served and running, or None."""
    return _ask({"status": True})


def stop(timeout: float = 30.0) -> bool:
    """Ask the running daemon to end (its running commands are stopped as by SIGTERM) and wait until it has
    (SIGKILL after ``timeout`` seconds); False when none answers."""
    answer = _ask({"stop": True})
    if answer is not None:
        _wait_gone(answer["pid"], timeout)
    return answer is not None


def start(run: Callable[[list[str]], int], *, foreground: bool = False, idle_timeout: float = IDLE_TIMEOUT) -> int:
    """Start the daemon, which runs each command handed to it as ``run(argv)`` in a fork of itself
    (``flows.cli.run_here``: the command as the console script runs it). One already running on this code is
    kept; one running on other code (started before an upgrade or an edit) is stopped and replaced. In the
    background, the call returns once it listens (its imports take about 10 s), with its output in ``daemon.log``
    beside the socket; ``foreground`` serves in this process until stopped."""
    running = status()
    if running is not None and running["key"] == code_key():
        sys.stdout.write(f"transferrec daemon: already running (pid {running['pid']}, {running['socket']})\n")
        return 0
    if running is not None:
        sys.stdout.write(f"transferrec daemon: pid {running['pid']} runs other code; replacing it\n")
        stop()
    if not hasattr(os, "fork") or not hasattr(socket, "AF_UNIX"):
        raise OSError("the transferrec daemon needs fork() and Unix sockets")
    path = socket_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    if foreground:
        _serve(path, run, idle_timeout, ready=None)
    read, write = os.pipe()
    if os.fork() == 0:
        os.close(read)
        os.setsid()
        log = os.open(path.with_suffix(".log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        for fd in (1, 2):
            os.dup2(log, fd)
        _serve(path, run, idle_timeout, ready=write)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        said = pipe.read().decode()
    if not said.startswith("ready"):
        why = said.strip() or f"see {path.with_suffix('.log')}"
        sys.stderr.write(f"error: the transferrec daemon did not start: {why}\n")
        return 1
    sys.stdout.write(f"transferrec daemon: {said.strip()}\n")
    return 0


def _serve(path: Path, run: Callable[[list[str]], int], idle_timeout: float, ready: int | None) -> None:
    """Become the daemon: import, start Prefect's API, listen on ``path``, fork a copy per command; never
    returns (the process ends when stopped, on SIGTERM or SIGINT, or after ``idle_timeout`` idle seconds)."""
    code = 1
    try:
        server = _Daemon(path, run, idle_timeout)
        message = f"ready (pid {os.getpid()}, {path}, ends after {idle_timeout:.0f} s idle)"
        if ready is not None:
            os.write(ready, message.encode())
            os.close(ready)
        else:
            sys.stdout.write(f"transferrec daemon: {message}\n")
            sys.stdout.flush()
        server.loop()
        code = 0
    except BaseException as exc:  # noqa: BLE001 - the daemon's end: said on the pipe or in its log, never raised
        if ready is not None:
            with contextlib.suppress(OSError):
                os.write(ready, f"{type(exc).__name__}: {exc}".encode())
        sys.stderr.write(f"transferrec daemon: {type(exc).__name__}: {exc}\n")
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


class _Daemon:
    def __init__(self, path: Path, run: Callable[[list[str]], int], idle_timeout: float) -> None:
        from tasks import runtime

        self.path, self.run, self.idle_timeout, self.key = path, run, idle_timeout, code_key()
        self.defaults = {**runtime.ENV_DEFAULTS, **runtime.command_environment(verbose=False)}  # a command's, no -v
        runtime.configure_environment(self.defaults)
        self.environment = _import_time(os.environ)
        before = dict(os.environ)
        runtime.prestart_prefect_api()
        self.api = {k: v for k, v in os.environ.items() if before.get(k) != v}  # the API's URL, when started here
        _preload()
        runtime.await_prefect_api()
        runtime.freeze_heap()  # each command (a fork) then neither walks nor copies what the daemon imported
        import threading

        if threading.active_count() != 1:  # a fork copies only the calling thread: nothing may run beside it
            raise RuntimeError(f"threads started by the imports: {[t.name for t in threading.enumerate()]}")
        self.started, self.served, self.stopping = time.time(), 0, False
        self.children: dict[int, socket.socket | None] = {}
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # a dead daemon's socket (start found none answering)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(path))
        os.chmod(path, 0o600)
        self.listener.listen(16)
        self.wake_read, wake_write = os.pipe()
        os.set_blocking(wake_write, False)
        signal.set_wakeup_fd(wake_write)  # a signal (a command's end: SIGCHLD) wakes the select
        signal.signal(signal.SIGCHLD, lambda *_: None)
        for each in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(each, lambda *_: setattr(self, "stopping", True))

    def loop(self) -> None:
        from tasks.runtime import prefect_api_ended

        idle_since = time.monotonic()
        try:
            while not self.stopping:
                watched = [self.listener, self.wake_read, *[c for c in self.children.values() if c is not None]]
                readable, _, _ = select.select(watched, [], [], 1.0)
                for ready in readable:
                    if ready is self.listener:
                        self._accept()
                    elif ready == self.wake_read:
                        os.read(self.wake_read, 512)
                    else:
                        self._caller_left(ready)
                self._reap()
                if prefect_api_ended():
                    sys.stderr.write("transferrec daemon: its Prefect API server ended; stopping\n")
                    break
                if self.children:
                    idle_since = time.monotonic()
                elif time.monotonic() - idle_since > self.idle_timeout:
                    break
        finally:
            self._end()

    def _accept(self) -> None:
        conn, _ = self.listener.accept()
        conn.settimeout(10)
        try:
            request, fds = _receive(conn)
        except (OSError, ValueError):
            conn.close()
            return
        if request is None:
            conn.close()
        elif "status" in request:
            _send(conn, {"pid": os.getpid(), "started": self.started, "socket": str(self.path), "served": self.served,
                         "running": len(self.children), "key": self.key, **self.api})
            conn.close()
        elif "stop" in request:
            _send(conn, {"pid": os.getpid()})
            conn.close()
            self.stopping = True
        else:
            refused = refusal(request, key=self.key, environment=self.environment, defaults=self.defaults)
            if refused:
                _send(conn, {"refused": refused})
                conn.close()
            else:
                self._fork(conn, request, fds)
        for fd in fds:
            os.close(fd)

    def _fork(self, conn: socket.socket, request: dict[str, Any], fds: list[int]) -> None:
        pid = os.fork()
        if pid == 0:
            env = request["env"] if request["env"].get("PREFECT_API_URL") else {**request["env"], **self.api}
            _child(self.run, request, fds, env=env, close_fds=[self.wake_read],
                   close=[self.listener, conn, *[c for c in self.children.values() if c is not None]])
        self.served += 1
        self.children[pid] = conn
        conn.settimeout(None)
        try:
            _send(conn, {"pid": pid})
        except OSError:
            self._caller_left(conn)

    def _caller_left(self, conn: socket.socket) -> None:
        """The caller of a running command closed its end (it died): the command is stopped as by SIGTERM."""
        for pid, each in self.children.items():
            if each is conn:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGTERM)
                conn.close()
                self.children[pid] = None

    def _reap(self) -> None:
        """Tell the callers of the commands that ended their exit codes (only the commands' processes are waited
        for: Prefect's API server is this process's child too)."""
        for pid in list(self.children):
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done, status = pid, 0
            if done == 0:
                continue
            conn = self.children.pop(pid)
            if conn is not None:
                code = os.waitstatus_to_exitcode(status)  # -N: ended by signal N, which shells report as 128 + N
                with contextlib.suppress(OSError):
                    _send(conn, {"exit": code if code >= 0 else 128 - code})
                conn.close()

    def _end(self) -> None:
        for pid in list(self.children):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        while self.children and time.monotonic() < deadline:
            self._reap()
            time.sleep(0.1)
        self.listener.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        from tasks.runtime import stop_prefect_api

        stop_prefect_api()


def refusal(request: dict[str, Any], *, key: str, environment: dict[str, str], defaults: dict[str, str]) -> str | None:
    """Why the daemon whose code is ``key`` and whose import-time ``environment`` it imported under (with the
    defaults a command sets, ``defaults``) cannot run ``request`` (a command handed to it), or None when it can."""
    if request.get("key") != key:
        return (f"the transferrec daemon (pid {os.getpid()}) runs other code (started before an upgrade or an "
                "edit); `transferrec daemon start` replaces it")
    argv = request["run"]
    command = _command(argv)
    top = argv[:argv.index(command)] if command is not None else argv
    if "-v" in top or "--verbose" in top:
        return "verbose logs (-v) are set up when Prefect is imported, which the daemon did without them"
    wanted = _import_time({**defaults, **request["env"]})
    differ = sorted(k for k in set(wanted) | set(environment) if wanted.get(k) != environment.get(k))
    if differ:
        return (f"this environment differs from the transferrec daemon's in {', '.join(differ[:4])}"
                f"{' ...' if len(differ) > 4 else ''} (read when the libraries are imported)")
    return None


def _import_time(env: Any) -> dict[str, str]:
    return {k: v for k, v in env.items() if k.startswith(IMPORT_TIME)}


def _preload() -> None:
    import importlib

    from tasks.runtime import quiet_libraries

    for name in PRELOAD:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    quiet_libraries()
    from models.evaluation.plots import load_backend
    from tasks import tracking

    load_backend()
    tracking.prepare_model_logging()


def _child(run: Callable[[list[str]], int], request: dict[str, Any], fds: list[int], *, env: dict[str, str],
           close: list[socket.socket], close_fds: list[int]) -> None:
    """In the forked copy: take the caller's terminal, folder and environment, run the command, end."""
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        for each in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(each, signal.SIG_DFL)
        for each in close:
            each.close()
        for fd in close_fds:
            os.close(fd)
        os.setsid()  # its own process group: the daemon stops it with its children
        from tasks.runtime import die_with_parent

        die_with_parent()  # a daemon that dies (killed outright) takes its commands along
        for target, fd in zip((0, 1, 2), fds, strict=False):
            os.dup2(fd, target)
        for fd in fds:
            if fd > 2:
                os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(env)
        sys.argv = [sys.argv[0], *request["run"]]
        code = run(request["run"])
    except BaseException as exc:  # noqa: BLE001 - the copy's end: one line on the caller's stderr
        with contextlib.suppress(Exception):
            sys.stderr.write(f"error: {type(exc).__name__}: {exc}\n")
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)

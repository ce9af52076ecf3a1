"""The tracking's background thread: writes a flow does not wait for (live curves, the selection's probe runs,
the model runs opened while the models are evaluated), in the order they were queued."""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from functools import partial
from typing import Any

#: Name (prefix) of the tracking's background thread.
BACKGROUND_THREAD = "transferrec-tracking"


class _BackgroundWriter:
    """The tracking's one background thread: writes run there in the order they were queued, each in the
    context (``contextvars``) of the code that queued it, so that a Prefect artifact still finds its flow run.

    Live curves (:func:`tasks.tracking.runs.live_curve`) and the writes a flow does not wait for
    (:meth:`tasks.tracking.runs.TrackingContext.later`: the selection's probe runs, the model runs opened while
    the models are evaluated) go there. MLflow's own
    asynchronous logging polls its queue once a second, and each run's end waited for that poll; this thread
    blocks until there is work. :meth:`flush` waits for what was queued (a no-op on the thread itself, where a
    queued write that ends a run must not wait for itself); an error of a write queued for a run is kept for
    that run and raised by ``flush(raise_for=run_id)``, which the run's end calls
    (:func:`tasks.tracking.runs.closing_run`)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._pending: list[Future] = []
        self._errors: dict[str, list[BaseException]] = {}

    def submit(self, write: Callable[[], Any], *, owner: str | None = None,
               context: contextvars.Context | None = None) -> Future:
        """Queue ``write`` (to run in ``context``, by default the caller's); with ``owner`` (a run id) its error is
        kept for that run's end."""
        context = context or contextvars.copy_context()
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=BACKGROUND_THREAD)
            self._pending = [f for f in self._pending if not f.done()]
            future = self._pool.submit(context.run, write)
            self._pending.append(future)
        if owner is not None:
            future.add_done_callback(lambda done: self._keep(owner, done))
        return future

    def _keep(self, owner: str, done: Future) -> None:
        error = None if done.cancelled() else done.exception()
        if error is not None:
            with self._lock:
                self._errors.setdefault(owner, []).append(error)

    def flush(self, *, raise_for: str | None = None, drop_for: str | None = None) -> None:
        """Wait for every queued write; then raise the first error kept for run ``raise_for``, or forget those
        of ``drop_for`` (a run that already failed)."""
        if threading.current_thread().name.startswith(BACKGROUND_THREAD):
            return
        with self._lock:
            pending, self._pending = self._pending, []
        wait(pending)
        with self._lock:
            errors = self._errors.pop(raise_for or drop_for or "", [])
        if raise_for is not None and errors:
            raise errors[0]


BACKGROUND = _BackgroundWriter()

#: The writes :func:`later` holds back in this context (:func:`held_writes`), None when it holds none.
_HELD: contextvars.ContextVar[list | None] = contextvars.ContextVar("transferrec_held_writes", default=None)


def later(write: Callable[[], Any], *, owner: str) -> Future:
    """Run ``write`` on the tracking's background thread (:class:`_BackgroundWriter`), after the writes queued
    before it (inside :func:`held_writes`, once that block ends); its error fails run ``owner`` when that run
    ends. Returns the future of its result."""
    held = _HELD.get()
    if held is None:
        return BACKGROUND.submit(write, owner=owner)
    placeholder: Future = Future()
    held.append((contextvars.copy_context(), write, owner, placeholder))
    return placeholder


@contextmanager
def held_writes() -> Iterator[None]:
    """Hold back the writes queued with :func:`later` in the block until it ends, raised or not: a flow holds
    those of the stages before its training, which hold the interpreter's lock most of the time, so that they are
    written while the models train (most of a fit runs in compiled code that lets other threads run)."""
    held: list = []
    token = _HELD.set(held)
    try:
        yield
    finally:
        _HELD.reset(token)
        for context, write, owner, placeholder in held:
            BACKGROUND.submit(partial(_run_into, placeholder, write), owner=owner, context=context)


def _run_into(placeholder: Future, write: Callable[[], Any]) -> Any:
    _HELD.set(None)  # in this write's own context: what it queues goes to the thread, the hold is over
    try:
        result = write()
    except BaseException as error:
        placeholder.set_exception(error)
        raise
    placeholder.set_result(result)
    return result

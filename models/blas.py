"""BLAS on one thread for the numeric fits, whichever runner runs them side by side.

OpenBLAS's thread count is one setting for the whole process, and some of its results depend on it in the last
bits (``Y'Y`` of a thin matrix, a linear solve, a scoring product): a fit that ran while the setting was
different would not reproduce. Every block under :func:`one_blas_thread` sees one thread, however many such blocks
overlap in threads: the first to enter sets it, the last to leave restores the process's own setting.

threadpoolctl lets only the first thread that ever limited OpenBLAS change it again (later threads' limits are
silently ignored), so a fit in a runner's worker thread would keep BLAS's threads; the setting is made here through
the library's own call instead, whichever thread enters first.
"""
from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

_LOCK = threading.Lock()
_state: dict = {"depth": 0, "restore": []}


def _set(lib: object, threads: int) -> None:
    real = getattr(lib, "_real_set_num_threads", None)  # OpenBLAS: past threadpoolctl's first-thread rule
    (real or lib.set_num_threads)(threads)


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """BLAS limited to one thread for the block (the fits bring their own threads: implicit's, the runner's)."""
    from threadpoolctl import ThreadpoolController

    with _LOCK:
        if _state["depth"] == 0:
            libs = ThreadpoolController().select(user_api="blas").lib_controllers
            _state["restore"] = [(lib, lib.get_num_threads()) for lib in libs]
            for lib in libs:
                _set(lib, 1)
        _state["depth"] += 1
    try:
        yield
    finally:
        with _LOCK:
            _state["depth"] -= 1
            if _state["depth"] == 0:
                for lib, threads in _state["restore"]:
                    _set(lib, threads)
                _state["restore"] = []

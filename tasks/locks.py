"""Locks around registry writes that must not interleave (see :func:`registry_lock`)."""

from __future__ import annotations

import fcntl
import hashlib
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

from tasks.runtime import default_data_dir, shared_prefect_api
from tasks.tracking import sqlite_dir

logger = logging.getLogger(__name__)


@contextmanager
def registry_lock(uri: str, key: str, *, timeout: float | None = None) -> Iterator[None]:
    """One writer at a time for ``key`` of a registry: a registered model's champion decision (reading the
    champion, deciding, moving the aliases), or the training of one source model version. Two runs of one domain
    at once (the nightly schedule and a data-landed event) thus decide one after the other, each on the champion
    the other left, and train a shared source once (the second finds it registered).

    A file lock beside the SQLite store (other stores: under the data cache) orders the processes of one machine;
    with a Prefect server (``PREFECT_API_URL``) the global concurrency limit ``transferrec-registry-<key>`` (limit
    1) orders runs on any machine. A holder that dies releases both.

    Raises:
        TimeoutError: the lock was not had within ``timeout`` seconds (None: wait while the holder lives).
    """
    folder = sqlite_dir(uri) or default_data_dir() / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(f"{uri}|{key}".encode()).hexdigest()[:16]
    with open(folder / f".decision-{digest}.lock", "w") as handle:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"another run held the registry lock of {key} for {timeout:.0f} s") from None
                time.sleep(0.2)
        try:
            if shared_prefect_api():
                with _prefect_limit(f"transferrec-registry-{key}", timeout):
                    yield
            else:
                yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def _prefect_limit(name: str, timeout: float | None) -> Iterator[None]:
    """One slot of the Prefect global concurrency limit ``name`` (created with limit 1 when missing)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.concurrency.sync import concurrency
    from prefect.exceptions import ObjectAlreadyExists

    with get_client(sync_client=True) as prefect_client:
        try:
            prefect_client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
        except ObjectAlreadyExists:
            pass
        except Exception:  # noqa: BLE001 - two runs creating it at once: one loses; the strict acquire below decides
            logger.debug("creating concurrency limit %s failed", name, exc_info=True)
    with concurrency(name, occupy=1, timeout_seconds=timeout, strict=True):
        yield

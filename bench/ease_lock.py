"""EASE's solve and the rest of the process: its wall, and the longest a Python thread waited meanwhile.

Usage:

    python bench/ease_lock.py [--items 2000,5000] [--columns 300]

For each catalogue size, a seeded gram of random interactions (8,000 users, 1 % density) is solved as the peers
solve it (``models.transfer.peers.ease_weights``: every column, as target-only EASE; and ``--columns`` of them,
as joint EASE keeps the target catalogue), while a thread of this process records a tick every millisecond;
the longest gap between ticks is how long every other thread (the other fits' Python, logging, progress, the
handler that ends a run on Ctrl-C) could not run. The same solve through scipy's ``cho_factor`` /
``cho_solve`` on one BLAS thread, which the peers used before, is timed the same way beside it.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def watched(solve: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds of ``solve()``, longest gap in seconds between a ticking thread's ticks meanwhile)."""
    ticks: list[float] = []
    stop = threading.Event()

    def tick() -> None:
        while not stop.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0.001)

    ticker = threading.Thread(target=tick)
    ticker.start()
    time.sleep(0.05)
    start = time.perf_counter()
    solve()
    end = time.perf_counter()
    stop.set()
    ticker.join()
    inside = [start, *(t for t in ticks if start <= t <= end), end]
    return end - start, float(np.diff(inside).max())


def scipy_solve(g: np.ndarray, l2: float, columns: int | None) -> np.ndarray:
    from scipy.linalg import cho_factor, cho_solve

    from models.blas import one_blas_thread

    n = g.shape[0] if columns is None else columns
    with one_blas_thread():
        return cho_solve(cho_factor(g + l2 * np.eye(g.shape[0]), overwrite_a=True, check_finite=False),
                         np.eye(g.shape[0], n), check_finite=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", default="2000,5000")
    parser.add_argument("--columns", type=int, default=300)
    args = parser.parse_args(argv)

    import torch

    from models.transfer.peers import ease_weights

    print(f"EASE solves (torch threads {torch.get_num_threads()}): wall s / longest wait of another thread s\n")
    print("| items | columns | peers (torch) | scipy, one BLAS thread |")
    print("|---|---|---|---|")
    for items in (int(float(n)) for n in args.items.split(",")):
        rng = np.random.default_rng(0)
        x = (rng.random((8000, items)) < 0.01).astype(np.float64)
        g = x.T @ x
        for columns in (None, min(args.columns, items)):
            ours = watched(lambda g=g, c=columns: ease_weights(g, 50.0, c))
            theirs = watched(lambda g=g, c=columns: scipy_solve(g, 50.0, c))
            print(f"| {items:,} | {'all' if columns is None else f'{columns:,}'} | {ours[0]:.2f} / {ours[1]:.3f} "
                  f"| {theirs[0]:.2f} / {theirs[1]:.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

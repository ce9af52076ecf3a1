"""EASE's solve and the rest of the process: its wall, and the longest a Python thread waited meanwhile.

Usage:

    python bench/ease_lock.py [--items 2000,5000] [--columns 300]

For each catalogue size, a seeded gram of random interactions (8,000 users, 1 % density) is solved as the peers
solve it (``models.transfer.peers.ease_weights``: every column, as target-only EASE; and ``--columns`` of them,
as joint EASE keeps the target catalogue), while a thread of this process records a tick every millisecond;
the longest gap between ticks is how long every other thread (the other fits' Python, logging, progress, the
handler that ends a run on Ctrl-C) could not run. The same solve through scipy's ``cho_factor`` /
``cho_solve`` on one BLAS thread, which the peers used before, is timed the same way beside it.

``--quality-cells`` also fits target-only and joint EASE with both solves on every cell of ``quality.py
--all-genres`` (or ``--genres``/``--seeds``) and counts the cells where every grid point's validation NDCG@10
and the kept model's test NDCG@10 are equal.
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
sys.path.insert(0, str(Path(__file__).resolve().parent))  # quality.py's genres


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


def scipy_weights(g: np.ndarray, l2: float, columns: int | None = None) -> np.ndarray:
    """EASE's weights as the peers solved them before (scipy, one BLAS thread)."""
    from scipy.linalg import cho_factor, cho_solve

    from models.blas import one_blas_thread

    n = g.shape[0] if columns is None else columns
    with one_blas_thread():
        p = cho_solve(cho_factor(g + l2 * np.eye(g.shape[0]), overwrite_a=True, check_finite=False),
                      np.eye(g.shape[0], n), check_finite=False)
    b = -p / np.diag(p[:n])[None, :]
    b[np.arange(n), np.arange(n)] = 0.0
    return b


def quality_cells(genres: list[str], seeds: list[int], fractions: list[float]) -> tuple[int, int]:
    """(cells where both solves give the same EASE and joint EASE, cells where they differ) on ML-1M."""
    from flows.config import DataConfig
    from models.config import SplitConfig
    from models.data.datasets import read_canonical_dir
    from models.evaluation.ranking import ndcg_at
    from models.split import split_with
    from models.transfer import peers
    from models.transfer.als import EncodedTrain
    from models.transfer.joint import JOINT, JointTrain
    from models.transfer.recipes import catalogue_ids, ranking_tasks
    from tasks.data import data_location

    data = read_canonical_dir(data_location(DataConfig()), "movielens-1m")
    ours, same, differ = peers.ease_weights, 0, 0
    for genre in genres:
        for fraction in fractions:
            for seed in seeds:
                split = split_with(data.interactions, data.items, domain=genre,
                                   config=SplitConfig(fraction=fraction, seed=seed))
                val, test = ranking_tasks(split, click_threshold=4.0)
                encoded = EncodedTrain.of(split.train, catalogue_ids(split))
                joint = JointTrain.of_split(data.interactions, data.items, split)
                scores = []
                try:
                    for weights in (ours, scipy_weights):
                        peers.ease_weights = weights  # fit_ease looks it up when called
                        fits = (peers.fit_ease(encoded, val), JOINT["joint-ease"](joint, val, seed=seed))
                        scores.append([([p["val_ndcg_at_10"] for p in f.grid], ndcg_at(f.model, test)) for f in fits])
                finally:
                    peers.ease_weights = ours
                same, differ = (same + 1, differ) if scores[0] == scores[1] else (same, differ + 1)
                print(f"{genre} {fraction} seed {seed}: {'same' if scores[0] == scores[1] else 'DIFFERENT'}",
                      file=sys.stderr, flush=True)
    return same, differ


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", default="2000,5000")
    parser.add_argument("--columns", type=int, default=300)
    parser.add_argument("--quality-cells", action="store_true", help="compare both solves on quality.py's cells")
    parser.add_argument("--genres", help="with --quality-cells: these genres (default: quality.py --all-genres)")
    parser.add_argument("--seeds", default="0,1,2")
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
            theirs = watched(lambda g=g, c=columns: scipy_weights(g, 50.0, c))
            print(f"| {items:,} | {'all' if columns is None else f'{columns:,}'} | {ours[0]:.2f} / {ours[1]:.3f} "
                  f"| {theirs[0]:.2f} / {theirs[1]:.3f} |", flush=True)
    if args.quality_cells:
        from quality import eligible_genres

        fractions = [0.05, 0.1, 0.3]
        genres = (args.genres.split(",") if args.genres
                  else eligible_genres("movielens-1m", None, fractions[0], 500))
        same, differ = quality_cells(genres, [int(x) for x in args.seeds.split(",")], fractions)
        print(f"\nML-1M cells ({len(genres)} genres x {fractions} x seeds {args.seeds}): target-only and joint EASE "
              f"the same with both solves in {same}, different in {differ}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

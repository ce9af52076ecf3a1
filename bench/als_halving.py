"""Successive halving for the ALS grids: what tuning on fewer iterations keeps and what it saves.

Usage (after `transferrec fetch movielens-1m`):

    python bench/als_halving.py                  # the development genres (where the rungs were chosen)
    python bench/als_halving.py --held-out       # the other genres of bench/quality.py --all-genres

For every (genre, fraction, seed) of ``bench/quality.py``'s grid, on the product's split, both ALS grids the
onboarding tunes (ALS on the target, :class:`models.transfer.als.AlsGrid`; joint ALS on the time-safe source
interactions plus the target's, :class:`models.transfer.joint.JointGrid`) are fitted point by point, scored on
validation at every candidate rung and at the end (ALS's iterations resume where they stopped, so one fit
gives every rung), and scored on test at the end. For each (rung, survivors) it prints how often halving keeps
the point the full grid keeps, the change in the kept model's test NDCG@10 (mean and worst over the runs, and
the runs where it is lower), and the seconds of the full grid and of halving (summed over the runs, from the
timed stretches between rungs). Joint ALS's recency step, which the product applies to the kept point, is left
out: the comparison is of the ALS points alone. The product's rungs are marked ``(default)``.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

#: The (rung, survivors) compared for each grid, besides the product's default.
CANDIDATES = {"als": ((3, 1), (3, 2), (3, 3), (5, 1), (5, 2), (5, 3), (8, 2)),
              "joint-als": ((2, 1), (2, 2), (3, 1), (3, 2), (4, 1), (4, 2), (5, 1))}


@dataclass
class Point:
    val: dict[int, float]  # validation NDCG@10 after each checkpoint's iterations
    seconds: dict[int, float]  # seconds of the stretch ending at each checkpoint
    test: float  # test NDCG@10 at the end


def fit_points(encoded, grid, checkpoints: list[int], val, test, seed: int) -> list[Point]:
    """Every point of ``grid`` fitted on ``encoded`` through ``checkpoints`` (the last: ``grid.iterations``)."""
    from models.evaluation.ranking import ndcg_at
    from models.transfer.als import AlsFit

    points = []
    for factors, regularization, alpha in grid.points():
        fit = AlsFit(encoded, factors=factors, regularization=regularization, alpha=alpha, seed=seed)
        done, scores, seconds = 0, {}, {}
        for checkpoint in checkpoints:
            started = time.perf_counter()
            fit.advance(checkpoint - done)
            seconds[checkpoint], done = time.perf_counter() - started, checkpoint
            model = fit.factor_model()
            scores[checkpoint] = ndcg_at(model, val)
        points.append(Point(scores, seconds, ndcg_at(model, test)))
    return points


def halving(points: list[Point], rung: int, survivors: int, end: int) -> tuple[int, float]:
    """The point halving keeps (ties: the earlier) and its seconds; rung ``end``: the full grid."""
    order = sorted(range(len(points)), key=lambda i: (-points[i].val[rung], i))
    alive = sorted(order[:survivors]) if rung < end else list(range(len(points)))
    kept = min(alive, key=lambda i: (-points[i].val[end], i))
    seconds = sum(s for p in points for c, s in p.seconds.items() if c <= rung)
    seconds += sum(s for i in alive for c, s in points[i].seconds.items() if c > rung)
    return kept, seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--held-out", action="store_true", help="the held-out genres instead of the development ones")
    parser.add_argument("--genres", help="these genres instead (comma-separated)")
    parser.add_argument("--fractions", default="0.05,0.1,0.3")
    parser.add_argument("--seeds", default="0,1,2")
    args = parser.parse_args(argv)
    from quality import DEVELOPMENT, eligible_genres  # bench/ is on sys.path when a script here runs

    from models.config import DataConfig, SplitConfig
    from models.data.datasets import read_canonical_dir
    from models.split import split_with
    from models.transfer.als import AlsGrid, EncodedTrain
    from models.transfer.joint import JointGrid, JointTrain
    from models.transfer.recipes import catalogue_ids, ranking_tasks
    from tasks.data import data_location
    from tasks.runtime import configure_environment, quiet_libraries

    configure_environment()
    quiet_libraries()
    fractions = [float(f) for f in args.fractions.split(",")]
    if args.genres:
        genres = args.genres.split(",")
    else:
        eligible = eligible_genres("movielens-1m", None, min(fractions), 500)
        genres = [g for g in eligible if (g in DEVELOPMENT) != args.held_out]
    data = read_canonical_dir(data_location(DataConfig()), "movielens-1m")
    grids = {"als": AlsGrid(), "joint-als": JointGrid().als}
    runs: dict[str, list[list[Point]]] = {name: [] for name in grids}
    for genre in genres:
        for fraction in fractions:
            for seed in (int(s) for s in args.seeds.split(",")):
                split = split_with(data.interactions, data.items, domain=genre,
                                   config=SplitConfig(fraction=fraction, seed=seed))
                val, test = ranking_tasks(split, click_threshold=4.0)
                trains = {"als": EncodedTrain.of(split.train, catalogue_ids(split)),
                          "joint-als": JointTrain.of_split(data.interactions, data.items, split).encoded}
                for name, grid in grids.items():
                    rungs = {r for r, _ in CANDIDATES[name]} | {grid.rung}
                    checkpoints = sorted(r for r in rungs if r < grid.iterations) + [grid.iterations]
                    runs[name].append(fit_points(trains[name], grid, checkpoints, val, test, seed))
                print(f"{genre} {fraction} seed {seed}", file=sys.stderr, flush=True)
    print(f"\ngenres: {', '.join(genres)}; fractions {args.fractions}; seeds {args.seeds}: {len(runs['als'])} runs\n")
    print("| grid | rung / survivors | same point as the full grid | mean test change | worst | runs lower on "
          "test | seconds (full grid) | seconds (halving) | share |\n|---|---|---|---|---|---|---|---|---|")
    for name, grid in grids.items():
        end = grid.iterations
        for rung, survivors in sorted({*CANDIDATES[name], (grid.rung, grid.survivors)}):
            same, changes, lower, full_s, halving_s = 0, [], 0, 0.0, 0.0
            for points in runs[name]:
                full, full_seconds = halving(points, end, len(points), end)
                kept, seconds = halving(points, rung, survivors, end)
                same += kept == full
                changes.append(points[kept].test / points[full].test - 1.0)
                lower += points[kept].test < points[full].test
                full_s, halving_s = full_s + full_seconds, halving_s + seconds
            mark = " (default)" if (rung, survivors) == (grid.rung, grid.survivors) else ""
            print(f"| {name} ({len(grid.points())} points, {end} iterations) | {rung} / {survivors}{mark} | "
                  f"{same}/{len(changes)} | {100 * sum(changes) / len(changes):+.2f}% | {100 * min(changes):+.2f}% | "
                  f"{lower} | {full_s:.1f} | {halving_s:.1f} | {halving_s / full_s:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The implicit-ALS baseline: tuned on its grid, a real learner on data with taste, popularity for cold users."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from models.data.synthetic import generate_multidomain
from models.evaluation.ranking import evaluate_model
from models.split import split_target_domain
from models.transfer.als import AlsGrid, fit_als, fit_als_once
from models.transfer.recipes import fit_popularity, ranking_tasks


@pytest.fixture(scope="module")
def split():
    data = generate_multidomain(n_users=300, items_per_domain=60, interactions_per_domain=20.0, taste_strength=3.0,
                                seed=2)
    return split_target_domain(data.interactions, data.items, domain="movies", fraction=1.0, seed=0)


def test_als_tunes_its_grid_and_learns_taste(split):
    val, test = ranking_tasks(split, click_threshold=4.0)
    grid = AlsGrid(factors=(8, 16), regularization=(0.1,), alpha=(1.0, 10.0), iterations=10)
    result = fit_als(split.train, split.catalogue, val, grid=grid, seed=0)
    assert len(result.grid) == 4 + grid.survivors  # every point at the rung, then the survivors at the end
    finished = [g for g in result.grid if g["iterations"] == grid.iterations]
    assert result.val_ndcg_at_10 == max(g["val_ndcg_at_10"] for g in finished)
    assert result.params in [{k: g[k] for k in ("factors", "regularization", "alpha", "iterations")}
                             for g in finished]
    # users' taste drives this data: ALS must beat popularity on held-out test interactions
    als = evaluate_model(result.model, test, ks=(10,)).metrics["ndcg_at_10"]
    popularity = evaluate_model(fit_popularity(split), test, ks=(10,)).metrics["ndcg_at_10"]
    assert als > popularity


def test_successive_halving_carries_the_best_points_at_the_rung_on_to_the_same_models_as_straight_fits(split):
    from models.transfer.als import EncodedTrain, fit_als_encoded

    val, _ = ranking_tasks(split, click_threshold=4.0)
    encoded = EncodedTrain.of(split.train, split.catalogue["item_id"].to_numpy().astype(object))
    grid = AlsGrid(factors=(4, 8), regularization=(0.1, 10.0), alpha=(1.0, 10.0), iterations=9, rung=3, survivors=3)
    result = fit_als(encoded, None, val, grid=grid, seed=1)
    at_rung, finished = result.grid[:8], result.grid[8:]
    assert [g["iterations"] for g in at_rung] == [3] * 8 and [g["iterations"] for g in finished] == [9] * 3
    point = ("factors", "regularization", "alpha")
    best_at_rung = sorted(range(8), key=lambda i: -at_rung[i]["val_ndcg_at_10"])[:3]
    assert [tuple(g[k] for k in point) for g in finished] == [tuple(at_rung[i][k] for k in point)
                                                              for i in sorted(best_at_rung)]
    # a survivor resumed at the rung is the model a straight fit of every iteration gives
    straight = fit_als_encoded(encoded, **{k: result.params[k] for k in point}, iterations=9, seed=1)
    np.testing.assert_array_equal(result.model.user_factors, straight.user_factors)
    np.testing.assert_array_equal(result.model.item_factors, straight.item_factors)
    # without a rung every point runs to the end, and the best of them is kept
    full = fit_als(encoded, None, val, grid=replace(grid, rung=0), seed=1)
    assert [g["iterations"] for g in full.grid] == [9] * 8
    assert full.val_ndcg_at_10 == max(g["val_ndcg_at_10"] for g in full.grid) >= result.val_ndcg_at_10


def test_users_without_a_vector_get_the_popular_items(split):
    items = split.catalogue["item_id"].to_numpy().astype(object)
    model = fit_als_once(split.train, items, factors=4, regularization=0.1, alpha=1.0, iterations=3, seed=0)
    assert model.user_factors.shape == (split.train["user_id"].n_unique(), 4)
    cold = model.recommend(np.array(["nobody"], dtype=object), k=5)[0]
    counts = dict(split.train.group_by("item_id").len().iter_rows())
    fifth = sorted(counts.values(), reverse=True)[4]
    assert all(counts.get(item, 0) >= fifth for item in cold)  # the five most popular (ties either way)


def test_the_factors_do_not_depend_on_the_thread_count(split):
    from models.transfer.als import EncodedTrain, fit_als_encoded

    encoded = EncodedTrain.of(split.train, split.catalogue["item_id"].to_numpy().astype(object))
    fits = [fit_als_encoded(encoded, factors=16, regularization=1.0, alpha=5.0, iterations=8, seed=3, threads=t)
            for t in (1, 2, 0)]
    for other in fits[1:]:
        np.testing.assert_array_equal(other.user_factors, fits[0].user_factors)
        np.testing.assert_array_equal(other.item_factors, fits[0].item_factors)


def test_overlapping_fits_keep_blas_on_one_thread_until_the_last_one_leaves():
    """OpenBLAS's thread count is process-wide: a fit leaving its block must not give the other fits still running
    their BLAS threads back (``Y'Y`` then changes in its last bits, and a tie in a ranking can flip)."""
    import threading

    from threadpoolctl import threadpool_limits

    from models.blas import one_blas_thread

    y = np.random.default_rng(0).standard_normal((4000, 32)).astype(np.float32)
    with threadpool_limits(1, "blas"):
        one_thread = y.T @ y
    if np.array_equal(y.T @ y, one_thread):
        pytest.skip("BLAS runs Y'Y alike on this machine's threads")
    entered, leave_first, first_left, seen = threading.Event(), threading.Event(), threading.Event(), []

    def first():
        with one_blas_thread():
            entered.set()
            leave_first.wait(10)
        first_left.set()

    thread = threading.Thread(target=first)
    thread.start()
    entered.wait(10)
    with one_blas_thread():
        leave_first.set()
        first_left.wait(10)
        seen.append(y.T @ y)  # the first block has left; this one is still running
    thread.join(10)
    assert first_left.is_set()
    np.testing.assert_array_equal(seen[0], one_thread)
    assert not np.array_equal(y.T @ y, one_thread)  # the process's own setting is back


def test_fits_starting_side_by_side_in_a_fresh_process_import_implicit_once():
    """The onboarding starts its fits in threads at once: the recipe's user step (implicit's compiled least
    squares) and an ALS fit (implicit's model) then import implicit's modules at the same moment, which without
    the one import lock stopped one of them on Python's module locks (_DeadlockError), nearly every time."""
    import subprocess
    import sys

    script = """
import threading
import numpy as np
from models.transfer.als import AlsFit, EncodedTrain
from models.transfer.recency import user_step

ids = np.array(["a", "b", "c"], dtype=object)
pairs = np.array([0, 1, 2, 0]), np.array([0, 1, 2, 1])
start, errors = threading.Barrier(2), []

def run(job):
    start.wait()
    try:
        job()
    except Exception as error:
        errors.append(repr(error))

jobs = [lambda: user_step(np.eye(3, 2), *pairs, np.ones(4), 3, l2=1.0),
        lambda: AlsFit(EncodedTrain(ids, ids, *pairs), factors=2, regularization=1.0, alpha=1.0, seed=0).advance(1)]
threads = [threading.Thread(target=run, args=(job,)) for job in jobs]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print(errors)
"""
    # a fresh interpreter: implicit not yet imported
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout

"""EASE and item-item kNN: their closed forms against textbook computations, and tuning on validation."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from scipy import sparse

from models.config import EvalConfig
from models.transfer.als import EncodedTrain
from models.transfer.peers import MAX_ITEMS, PeerTooLarge, ease_weights, fit_ease, fit_itemknn, gram, itemknn_weights
from models.transfer.recipes import catalogue_ids, ranking_tasks

X = sparse.csr_matrix(np.array([[1, 1, 0, 0], [1, 0, 1, 0], [0, 1, 1, 1], [1, 1, 1, 0], [0, 0, 1, 1]],
                               dtype=np.float32))
G = gram(X)


def test_ease_is_the_columnwise_ridge_regression_without_the_item_itself():
    """Column j of B solves min |x_j - X_{-j} b|^2 + l2 |b|^2 over the other items (Steck 2019, eq. 1-3)."""
    dense, l2 = X.toarray().astype(np.float64), 0.7
    b = ease_weights(G, l2)
    assert np.allclose(np.diag(b), 0.0)
    for j in range(dense.shape[1]):
        others = [i for i in range(dense.shape[1]) if i != j]
        a = dense[:, others]
        expected = np.linalg.solve(a.T @ a + l2 * np.eye(len(others)), a.T @ dense[:, j])
        np.testing.assert_allclose(b[others, j], expected, atol=1e-9)


def test_itemknn_is_cosine_similarity_with_the_k_nearest_kept():
    s = itemknn_weights(G, neighbours=4)
    # items 0 and 1: users {0,1,3} and {0,2,3}: 2 shared / sqrt(3 * 3)
    assert s[0, 1] == pytest.approx(2 / 3) and s[1, 0] == pytest.approx(2 / 3)
    # items 0 and 3: users {0,1,3} and {2,4}: nothing shared
    assert s[0, 3] == 0.0 and np.allclose(np.diag(s), 0.0)
    one = itemknn_weights(G, neighbours=1)  # item 1's nearest: item 0 (2/3 > 2/sqrt(12) > 1/sqrt(6))
    assert (one[:, 1] > 0).sum() == 1 and one[0, 1] == pytest.approx(2 / 3)


def test_peers_are_tuned_on_validation_and_score_like_every_model(games_split):
    from models.evaluation.ranking import evaluate_model

    val_task, test_task = ranking_tasks(games_split, click_threshold=EvalConfig().click_threshold)
    train = EncodedTrain.of(games_split.train, catalogue_ids(games_split))
    for fit, name in ((fit_ease, "l2"), (fit_itemknn, "neighbours")):
        result = fit(train, val_task)
        assert set(result.params) == {name} and len(result.grid) >= 3
        assert result.val_ndcg_at_10 == max(point["val_ndcg_at_10"] for point in result.grid)
        assert result.val_ndcg_at_10 == pytest.approx(evaluate_model(result.model, val_task, ks=(10,))
                                                      .metrics["ndcg_at_10"])
        assert 0.0 < evaluate_model(result.model, test_task, ks=(10,)).metrics["ndcg_at_10"] <= 1.0


def test_a_catalogue_too_large_for_dense_peers_is_refused_with_its_size():
    ids = np.arange(MAX_ITEMS + 1).astype(str).astype(object)
    big = EncodedTrain(np.array(["u"], dtype=object), ids, np.array([0]), np.array([0]))
    with pytest.raises(PeerTooLarge, match="10,001 items"):
        fit_ease(big, None)  # type: ignore[arg-type] - refused before any scoring


def test_ease_solved_for_some_columns_equals_those_columns_of_the_full_solution():
    np.testing.assert_allclose(ease_weights(G, 0.7, columns=2), ease_weights(G, 0.7)[:, :2], atol=1e-10)
    np.testing.assert_allclose(itemknn_weights(G, 4, columns=3), itemknn_weights(G, 4)[:, :3], atol=1e-12)


def test_ease_lets_the_other_threads_run_while_it_factorises_and_gives_the_same_weights_beside_them():
    """scipy's Cholesky held Python's lock for the whole call (four seconds at 5,000 items: bench/ease_lock.py):
    no other thread of the process ran meanwhile, the signal handler that ends a run on Ctrl-C among them. Here a
    thread ticks throughout the solve, and weights solved while other threads multiply matrices are those solved
    alone."""
    import threading
    import time

    import torch

    rng = np.random.default_rng(0)
    x = sparse.csr_matrix((rng.random((3000, 2000)) < 0.02).astype(np.float32))
    g = gram(x)
    alone = ease_weights(g, 50.0)
    ticks: list[float] = []
    stop = threading.Event()

    def tick() -> None:
        while not stop.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0.001)

    ticker = threading.Thread(target=tick)
    ticker.start()
    try:
        time.sleep(0.05)
        start = time.perf_counter()
        for _ in range(3):
            beside = ease_weights(g, 50.0)
        took = time.perf_counter() - start
    finally:
        stop.set()
        ticker.join()
    during = [t for t in ticks if start <= t <= start + took]
    gaps = np.diff([start, *during, start + took])
    # held for the whole call, one gap would span a solve (a third of ``took``)
    assert gaps.max() < took / 6, (gaps.max(), took)
    np.testing.assert_array_equal(beside, alone)

    busy = threading.Event()

    def multiply() -> None:
        a = torch.randn(600, 600, generator=torch.Generator().manual_seed(0))
        while not busy.is_set():
            a @ a

    other = threading.Thread(target=multiply)
    other.start()
    try:
        np.testing.assert_array_equal(ease_weights(g, 50.0), alone)
    finally:
        busy.set()
        other.join()


def _frame(pairs: list[tuple[str, str]]):
    import polars as pl

    return pl.DataFrame({"user_id": [u for u, _ in pairs], "item_id": [i for _, i in pairs]})


def test_joint_pairs_put_the_catalogue_first_and_the_source_only_items_after():
    from models.transfer.joint import JointTrain

    source = _frame([("a", "s2"), ("b", "s1"), ("b", "t1")])  # t1: a catalogue item also in the source rows
    joint = JointTrain.of(source, _frame([("a", "t2")]), np.array(["t1", "t2"], dtype=object))
    assert joint.n_catalogue == 2 and list(joint.encoded.item_ids) == ["t1", "t2", "s1", "s2"]
    assert list(joint.encoded.user_ids) == ["a", "b"] and len(joint.encoded.users) == 4


def test_another_datasets_pairs_join_the_target_under_its_ids_and_users_apart():
    """Another shop sells one of the target's three items (under another id, matched by its title key) and one of
    its own. Its interactions come over with the matched item under the target's id and its own item in a
    namespace, as are its users, other people with colliding ids. Where its users are the target's, they keep
    their ids and only what they did before their cutoff. Neither items nor users shared: nothing comes over."""
    import polars as pl

    from models.data.datasets import Dataset
    from models.selection.candidates import other_on_target
    from models.split import TargetSplit
    from models.transfer.alignment import SOURCE_NAMESPACE
    from models.transfer.joint import JointTrain

    items = pl.DataFrame({"item_id": ["o1", "o2"], "title": ["Heat (1995)", "Own Item (2001)"],
                          "domain": ["films", "films"]})
    other = Dataset("shop-b", pl.DataFrame({"user_id": ["u1", "u1", "u2"], "item_id": ["o1", "o2", "o1"],
                                            "rating": [5.0, 4.0, 3.0], "timestamp": [1, 2, 9]}), items)
    catalogue = pl.DataFrame({"item_id": ["t1", "t2", "t3"], "title": ["Heat (1995)", "Alien (1979)", "Up (2009)"]})
    moved = other_on_target(other, catalogue, item_match="title", shared_users=False)
    assert moved.columns == other.interactions.columns
    assert moved.sort("user_id", "item_id").select("user_id", "item_id").rows() == [
        (f"{SOURCE_NAMESPACE}u1", f"{SOURCE_NAMESPACE}o2"), (f"{SOURCE_NAMESPACE}u1", "t1"),
        (f"{SOURCE_NAMESPACE}u2", "t1")]
    assert other_on_target(other, catalogue, item_match="none", shared_users=False).is_empty()
    assert other_on_target(other, catalogue, item_match="none", shared_users=True).height == 3  # the same people

    train = pl.DataFrame({"user_id": ["u1", "u2"], "item_id": ["t2", "t3"], "rating": [4.0, 4.0],
                          "timestamp": [3, 3]})
    split = TargetSplit("films", train, train.clear(), train.clear(), catalogue.with_columns(domain=pl.lit("films")),
                        pl.DataFrame({"user_id": ["u1", "u2"], "cutoff": [5, 5]}), train.height)
    apart = JointTrain.of_other_dataset(moved, split, shared_users=False)
    assert apart.n_source == 3 and len(apart.encoded.user_ids) == 4  # two people of each shop
    assert list(apart.encoded.item_ids) == ["t1", "t2", "t3", f"{SOURCE_NAMESPACE}o2"] and apart.n_catalogue == 3
    same = other_on_target(other, catalogue, item_match="title", shared_users=True)
    joint = JointTrain.of_other_dataset(same, split, shared_users=True)
    assert joint.n_source == 2 and list(joint.encoded.user_ids) == ["u1", "u2"]  # u2's t1 came after its cutoff
    assert JointTrain.of_other_dataset(same, split, shared_users=True, time_safe=False).n_source == 3

    # the refit of a joint winner reads the same pairs with the target's whole (every part, not only training)
    from models.config import FineTuneConfig, ModelConfig, TrainConfig
    from models.evaluation.ranking import build_ranking_task
    from models.transfer.refit import WholeInMemory, refit_model

    later = pl.DataFrame({"user_id": ["u1"], "item_id": ["t3"], "rating": [5.0], "timestamp": [6]})
    whole = WholeInMemory(replace(split, test=later), later.clear(), split.catalogue, other=moved)
    assert whole.joint().n_source == 3 and len(whole.joint().encoded.users) == 6
    val = build_ranking_task(catalogue["item_id"].to_numpy(), later, train, click_threshold=4.0)
    model, params = refit_model("joint-ease", whole, val, seed=0, params={"l2": 10.0}, fits={}, source=None,
                                finetune=FineTuneConfig(), model=ModelConfig(), scratch=TrainConfig())
    assert list(model.item_ids) == ["t1", "t2", "t3"] and model.kind == "joint-ease" and params == {"l2": 10.0}


def test_the_joint_peers_score_the_target_catalogue_from_a_users_source_history():
    """Training users who watched source item s1 take target item t1, those who watched s2 take t2. A validation
    user with no target training interaction, only s2 in their source history, gets t2 first from both joint
    peers (a target-only model cannot tell them apart), and the models keep the target catalogue only."""
    from models.evaluation.ranking import build_ranking_task
    from models.transfer.joint import JointTrain, fit_joint_als, fit_joint_ease

    source, train = [], []
    for n in range(40):
        s, t = ("s1", "t1") if n % 2 else ("s2", "t2")
        source.append((f"u{n}", s))
        train.append((f"u{n}", t))
    train += [(f"u{n}", "t1") for n in range(1, 40, 2)][:5]  # t1 slightly more popular overall
    source.append(("new", "s2"))
    catalogue = np.array(["t1", "t2", "t3"], dtype=object)
    joint = JointTrain.of(_frame(source), _frame(train), catalogue)
    val = build_ranking_task(catalogue, _frame([("new", "t2")]).with_columns(rating=None, timestamp=0),
                             _frame(train).with_columns(rating=None, timestamp=0), click_threshold=4.0)
    for fit in (fit_joint_ease, fit_joint_als):
        result = fit(joint, val, seed=0)
        assert list(result.model.item_ids) == list(catalogue)
        assert result.model.kind == fit.__name__.removeprefix("fit_").replace("_", "-")
        assert result.val_ndcg_at_10 == pytest.approx(1.0), (fit.__name__, result.grid)


@pytest.mark.parametrize(("val", "winner"), [
    ({"transfer": 0.30, "popularity": 0.20, "joint-ease": 0.25, "ease": 0.10}, "transfer"),
    ({"transfer": 0.24, "popularity": 0.20, "joint-ease": 0.25, "joint-als": 0.26}, "joint-als"),
    ({"transfer": 0.20, "popularity": 0.20, "joint-ease": 0.20}, "popularity"),  # a tie is no win; popularity first
    ({"transfer": 0.21, "popularity": 0.20, "not-a-baseline": 0.90}, "transfer"),
])
def test_the_guard_registers_transfer_only_when_it_beats_every_baseline_on_validation(val, winner):
    from tasks.registry import guard

    chosen, why = guard(val)
    assert chosen == winner
    assert ("negative-transfer guard" in why) == (winner != "transfer")


def test_joint_als_takes_the_recency_step_where_validation_prefers_it(last_elsewhere):
    """Users of s10..s12 take t1, users of s20..s22 take t2. A validation user watched s10..s12 long ago and s20
    last. Joint ALS's own user vector (three old interactions against one) ranks t1 first; solved again with the
    recency step, what they did last decides and t2 (their validation item) comes first, so validation keeps the
    step and the params say so. Without the source interactions' times only ALS's own users are tried."""
    from dataclasses import replace

    from models.transfer.als import AlsGrid, fit_als_encoded
    from models.transfer.joint import JointGrid, fit_joint_als, recent_joint_users

    joint, val = last_elsewhere
    grid = JointGrid(als=AlsGrid(factors=(4,), regularization=(10.0,), alpha=(5.0,), iterations=10), recency=(0.0, 0.3))
    chosen = fit_joint_als(joint, val, grid=grid, seed=0)
    assert chosen.params["recency"] == 0.3 and chosen.val_ndcg_at_10 == pytest.approx(1.0)
    assert [point["recency"] for point in chosen.grid if "recency" in point] == [0.0, 0.3]
    plain = fit_joint_als(joint, val, grid=replace(grid, recency=(0.0,)), seed=0)
    assert plain.params["recency"] == 0.0 and plain.val_ndcg_at_10 < 1.0
    assert list(chosen.model.user_ids) == list(plain.model.user_ids)
    assert np.array_equal(chosen.model.item_factors, plain.model.item_factors)  # the step moves the users only
    # the kept users: one user step on the ALS items, source pairs at the recency confidence
    full = fit_als_encoded(joint.encoded, factors=4, regularization=10.0, alpha=5.0, iterations=10, seed=0)
    np.testing.assert_array_equal(chosen.model.user_factors, recent_joint_users(
        joint, full, recency=0.3, recency_alpha=grid.recency_alpha, alpha=5.0, l2=10.0))
    untimed = fit_joint_als(replace(joint, source_recency=None), val, grid=grid, seed=0)
    assert untimed.params["recency"] == 0.0

"""EASE and item-item kNN: their closed forms against textbook computations, and tuning on validation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse

from models.config import EvalConfig
from models.transfer.als import EncodedTrain
from models.transfer.peers import MAX_ITEMS, PeerTooLarge, ease_weights, fit_ease, fit_itemknn, itemknn_weights
from models.transfer.recipes import catalogue_ids, ranking_tasks

X = sparse.csr_matrix(np.array([[1, 1, 0, 0], [1, 0, 1, 0], [0, 1, 1, 1], [1, 1, 1, 0], [0, 0, 1, 1]],
                               dtype=np.float32))


def test_ease_is_the_columnwise_ridge_regression_without_the_item_itself():
    """Column j of B solves min |x_j - X_{-j} b|^2 + l2 |b|^2 over the other items (Steck 2019, eq. 1-3)."""
    dense, l2 = X.toarray().astype(np.float64), 0.7
    b = ease_weights(X, l2)
    assert np.allclose(np.diag(b), 0.0)
    for j in range(dense.shape[1]):
        others = [i for i in range(dense.shape[1]) if i != j]
        a = dense[:, others]
        expected = np.linalg.solve(a.T @ a + l2 * np.eye(len(others)), a.T @ dense[:, j])
        np.testing.assert_allclose(b[others, j], expected, atol=1e-9)


def test_itemknn_is_cosine_similarity_with_the_k_nearest_kept():
    s = itemknn_weights(X, neighbours=4)
    # items 0 and 1: users {0,1,3} and {0,2,3}: 2 shared / sqrt(3 * 3)
    assert s[0, 1] == pytest.approx(2 / 3) and s[1, 0] == pytest.approx(2 / 3)
    # items 0 and 3: users {0,1,3} and {2,4}: nothing shared
    assert s[0, 3] == 0.0 and np.allclose(np.diag(s), 0.0)
    one = itemknn_weights(X, neighbours=1)  # item 1's nearest: item 0 (2/3 > 2/sqrt(12) > 1/sqrt(6))
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

"""Known answers and an independent cross-check for the ranking metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from models.evaluation.metrics import (
    catalogue_coverage,
    item_self_information,
    per_user_metrics,
    per_user_novelty,
    ranking_metrics,
)


def test_perfect_ranking_scores_one():
    topk = np.array([[0, 1, 2, 3], [5, 4, 9, 8]])
    m = ranking_metrics(topk, [{0, 1}, {5}], k=2)
    assert m["ndcg_at_2"] == pytest.approx(1.0)
    assert m["recall_at_2"] == pytest.approx(1.0)
    assert m["hit_rate_at_2"] == pytest.approx(1.0)
    assert m["mrr_at_2"] == pytest.approx(1.0)
    assert m["map_at_2"] == pytest.approx(1.0)
    # user 2 has one relevant item, so precision@2 is 1/2 for that user
    assert m["precision_at_2"] == pytest.approx((1.0 + 0.5) / 2)


def test_no_hits_score_zero():
    m = ranking_metrics(np.array([[1, 2, 3]]), [{7, 8}], k=3)
    assert all(v == 0.0 for v in m.values())


def test_hand_computed_case():
    # ranking [a, b, c, d, e], relevant {b, e, z}; k = 5 -> hits at ranks 2 and 5
    m = ranking_metrics(np.array([[10, 11, 12, 13, 14]]), [{11, 14, 99}], k=5)
    dcg = 1 / math.log2(3) + 1 / math.log2(6)
    idcg = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert m["ndcg_at_5"] == pytest.approx(dcg / idcg)
    assert m["precision_at_5"] == pytest.approx(2 / 5)
    assert m["recall_at_5"] == pytest.approx(2 / 3)
    assert m["mrr_at_5"] == pytest.approx(1 / 2)
    assert m["map_at_5"] == pytest.approx((1 / 2 + 2 / 5) / 3)
    assert m["hit_rate_at_5"] == 1.0


def test_users_without_relevant_items_are_left_out():
    m = ranking_metrics(np.array([[1, 2], [3, 4]]), [{1}, set()], k=2)
    assert m["ndcg_at_2"] == pytest.approx(1.0)


def test_all_users_without_relevant_items_give_nan():
    m = ranking_metrics(np.array([[1, 2]]), [set()], k=2)
    assert math.isnan(m["ndcg_at_2"])


def test_per_user_metrics_rejects_short_rankings_and_empty_relevance():
    with pytest.raises(ValueError, match="users"):
        per_user_metrics(np.zeros((2, 3), dtype=bool), np.array([1, 1]), k=5)
    with pytest.raises(ValueError, match="relevant"):
        per_user_metrics(np.zeros((1, 3), dtype=bool), np.array([0]), k=3)


def test_matches_torchmetrics_on_random_rankings():
    """An independent implementation (torchmetrics' retrieval metrics) agrees to 1e-6."""
    from torchmetrics.functional.retrieval import (
        retrieval_hit_rate,
        retrieval_normalized_dcg,
        retrieval_precision,
        retrieval_recall,
        retrieval_reciprocal_rank,
    )

    rng = np.random.default_rng(0)
    n_items, k = 30, 10
    for _ in range(50):
        relevant = set(rng.choice(n_items, size=rng.integers(1, 8), replace=False).tolist())
        scores = rng.normal(size=n_items)
        ranking = np.argsort(-scores)
        ours = ranking_metrics(ranking[None, :], [relevant], k=k)
        target = torch.tensor([i in relevant for i in range(n_items)])
        preds = torch.tensor(scores)
        assert ours["ndcg_at_10"] == pytest.approx(float(retrieval_normalized_dcg(preds, target, top_k=k)), abs=1e-6)
        assert ours["precision_at_10"] == pytest.approx(float(retrieval_precision(preds, target, top_k=k)), abs=1e-6)
        assert ours["recall_at_10"] == pytest.approx(float(retrieval_recall(preds, target, top_k=k)), abs=1e-6)
        assert ours["hit_rate_at_10"] == pytest.approx(float(retrieval_hit_rate(preds, target, top_k=k)), abs=1e-6)
        assert ours["mrr_at_10"] == pytest.approx(float(retrieval_reciprocal_rank(preds, target, top_k=k)), abs=1e-6)


def test_catalogue_coverage_counts_distinct_recommended_items():
    topk = np.array([[0, 1, 2], [0, 1, 3]])
    assert catalogue_coverage(topk, n_items=8, k=2) == pytest.approx(2 / 8)  # {0, 1}
    assert catalogue_coverage(topk, n_items=8, k=3) == pytest.approx(4 / 8)  # {0, 1, 2, 3}
    assert catalogue_coverage(np.zeros((0, 3), dtype=int), n_items=8, k=3) == 0.0


def test_novelty_is_the_mean_self_information_of_the_top_k():
    counts = np.array([6, 2, 0, 0])  # p = (c + 1) / (8 + 4) = 7/12, 3/12, 1/12, 1/12
    info = item_self_information(counts)
    np.testing.assert_allclose(info, -np.log2(np.array([7, 3, 1, 1]) / 12))
    novelty = per_user_novelty(np.array([[0, 1], [2, 3]]), counts, k=2)
    np.testing.assert_allclose(novelty, [(info[0] + info[1]) / 2, info[2]])
    assert novelty[1] > novelty[0]  # unpopular recommendations are more novel

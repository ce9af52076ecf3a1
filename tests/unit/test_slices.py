"""Slices: known answers on hand-built users, items and rankings."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from models.evaluation.ranking import build_ranking_task
from models.evaluation.slices import head_items, item_slice_recall, sliced_means, user_slices
from models.factors import FactorModel

ITEMS = np.array(["i0", "i1", "i2", "i3"], dtype=object)


def frame(pairs: list[tuple[str, str]]) -> pl.DataFrame:
    return pl.DataFrame({"user_id": [u for u, _ in pairs], "item_id": [i for _, i in pairs],
                         "rating": [5.0] * len(pairs)})


# training counts: a 0, b 2, c 6; items: i0 6 times, i1 2, i2 0, i3 0
TRAIN = frame([("b", "i0"), ("b", "i1"), *[("c", "i0")] * 5, ("c", "i1")])
TEST = frame([("a", "i2"), ("b", "i3"), ("c", "i2"), ("c", "i0")])


def test_users_fall_into_activity_and_source_groups():
    task = build_ranking_task(ITEMS, TEST, TRAIN)
    masks = user_slices(task, TRAIN, np.array(["a", "c"], dtype=object))
    assert task.user_ids.tolist() == ["a", "b", "c"]
    assert masks["target_train:cold"].tolist() == [True, False, False]
    assert masks["target_train:light"].tolist() == [False, True, False]
    assert masks["target_train:warm"].tolist() == [False, False, True]
    assert masks["source:in_source"].tolist() == [True, False, True]
    means = sliced_means({"ndcg_at_10": np.array([0.0, 0.5, 1.0])}, masks, metrics=("ndcg_at_10",))
    assert means["source:in_source"] == {"users": 2.0, "ndcg_at_10": 0.5}
    assert means["target_train:light"]["ndcg_at_10"] == 0.5


def test_head_items_hold_the_requested_share_of_interactions():
    task = build_ranking_task(ITEMS, TEST, TRAIN)
    assert head_items(task, TRAIN, share=0.5).tolist() == [True, False, False, False]  # i0 holds 6 of 8
    assert head_items(task, TRAIN, share=0.8).tolist() == [True, True, False, False]


def test_item_recall_counts_retrieved_relevant_pairs_per_group():
    task = build_ranking_task(ITEMS, TEST, frame([]))
    # every user ranks i0 > i1 > i2 > i3 (biases only): top-1 is i0
    model = FactorModel(np.array([], dtype=object), ITEMS, np.zeros((0, 1), np.float32), np.zeros((4, 1), np.float32),
                        np.array([3.0, 2.0, 1.0, 0.0], dtype=np.float32))
    head = np.array([True, False, False, False])
    recall = item_slice_recall(model, task, head, k=1)
    # head pairs: (c, i0) retrieved -> 1/1; tail pairs: (a, i2), (b, i3), (c, i2) -> none in the top 1
    assert recall["head"] == {"pairs": 1.0, "item_recall_at_1": 1.0}
    assert recall["tail"] == {"pairs": 3.0, "item_recall_at_1": 0.0}
    assert item_slice_recall(model, task, head, k=3)["tail"]["item_recall_at_3"] == pytest.approx(2 / 3)

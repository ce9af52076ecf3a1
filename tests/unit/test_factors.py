"""FactorModel: id alignment, persistence and recommendations."""

from __future__ import annotations

import numpy as np

from models.factors import UNKNOWN_ITEM_SCORE, FactorModel, index_of, popularity_model


def model() -> FactorModel:
    return FactorModel(
        user_ids=np.array(["u1", "u2"], dtype=object),
        item_ids=np.array(["a", "b", "c"], dtype=object),
        user_factors=np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32),
        item_factors=np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]], dtype=np.float32),
        item_bias=np.array([0.0, 0.0, 0.1], dtype=np.float32),
    )


def test_index_of_marks_unknown_ids():
    assert index_of(np.array(["a", "b"], dtype=object), np.array(["b", "z", "a"], dtype=object)).tolist() == [1, -1, 0]


def test_aligned_zeroes_unknown_users_and_sinks_unknown_items():
    u, v, b = model().aligned(np.array(["u2", "nobody"], dtype=object), np.array(["c", "zzz"], dtype=object))
    np.testing.assert_array_equal(u[1], 0.0)
    assert b[1] == UNKNOWN_ITEM_SCORE and b[0] == np.float32(0.1)


def test_save_load_round_trip(tmp_path):
    m = model()
    back = FactorModel.load(m.save(tmp_path / "m"))
    np.testing.assert_array_equal(back.item_factors, m.item_factors)
    assert back.user_ids.tolist() == ["u1", "u2"] and back.kind == "mf"


def test_recommend_excludes_seen_items_and_serves_unknown_users_by_bias():
    m = model()
    assert m.recommend(np.array(["u1"], dtype=object), k=2) == [["a", "c"]]
    assert m.recommend(np.array(["u1"], dtype=object), k=2, exclude={"u1": {"a"}}) == [["c", "b"]]
    assert m.recommend(np.array(["stranger"], dtype=object), k=1) == [["c"]]


def test_popularity_ranks_by_count():
    pop = popularity_model(np.array(["x", "y", "z"], dtype=object), np.array([1, 10, 5]))
    assert pop.recommend(np.array(["anyone"], dtype=object), k=3) == [["y", "z", "x"]]

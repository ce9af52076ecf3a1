"""The target split is leakage-free and deterministic; source data is time-safe."""

from __future__ import annotations

import polars as pl
import pytest

from models.split import (
    sample_fraction,
    source_interactions,
    split_target_domain,
    temporal_user_split,
    time_safe_source,
)


def frame(rows):
    return pl.DataFrame(rows, schema=["user_id", "item_id", "timestamp"], orient="row")


def test_temporal_split_holds_out_each_users_latest_interactions():
    data = frame([("a", f"i{t}", t) for t in range(10)] + [("b", "x", 5), ("b", "y", 1)] + [("c", "z", 3)])
    earlier, later = temporal_user_split(data, holdout_ratio=0.2)
    assert later.filter(pl.col("user_id") == "a")["timestamp"].to_list() == [8, 9]
    assert later.filter(pl.col("user_id") == "b")["item_id"].to_list() == ["x"]  # the later of b's two
    assert "c" not in later["user_id"].to_list()  # a single interaction stays in training
    joined = earlier.join(later.group_by("user_id").agg(pl.col("timestamp").min().alias("first")), on="user_id")
    assert (joined["timestamp"] <= joined["first"]).all()
    assert earlier.height + later.height == data.height


def test_temporal_split_rejects_bad_ratio():
    with pytest.raises(ValueError, match="holdout_ratio"):
        temporal_user_split(frame([("a", "i", 1)]), holdout_ratio=1.0)


def test_sample_fraction_is_seeded_and_order_independent():
    data = frame([(f"u{u}", f"i{i}", i) for u in range(20) for i in range(10)])
    a = sample_fraction(data, fraction=0.3, seed=1)
    b = sample_fraction(data.reverse(), fraction=0.3, seed=1)
    c = sample_fraction(data, fraction=0.3, seed=2)
    assert a.height == 60
    assert a.equals(b)
    assert not a.equals(c)
    with pytest.raises(ValueError, match="fraction"):
        sample_fraction(data, fraction=0.0, seed=0)


def test_split_target_domain_never_trains_on_test(synthetic_dataset):
    split = split_target_domain(synthetic_dataset.interactions, synthetic_dataset.items, domain="games",
                                fraction=0.3, seed=0)
    key = ["user_id", "item_id", "timestamp"]
    assert split.train.join(split.test, on=key, how="semi").is_empty()
    assert split.val.join(split.test, on=key, how="semi").is_empty()
    assert split.train.join(split.val, on=key, how="semi").is_empty()
    assert set(split.test["item_id"]) <= set(split.catalogue["item_id"])
    # the test set does not depend on the scarcity sampling
    other = split_target_domain(synthetic_dataset.interactions, synthetic_dataset.items, domain="games",
                                fraction=0.8, seed=5)
    assert other.test.equals(split.test)
    assert other.cutoffs.equals(split.cutoffs)


def test_unknown_target_domain_is_named_in_the_error(synthetic_dataset):
    with pytest.raises(ValueError, match="garden"):
        split_target_domain(synthetic_dataset.interactions, synthetic_dataset.items, domain="garden",
                            fraction=0.1, seed=0)


def test_time_safe_source_drops_interactions_at_or_after_the_cutoff():
    source = frame([("a", "s1", 1), ("a", "s2", 5), ("a", "s3", 9), ("b", "s1", 100)])
    cutoffs = pl.DataFrame({"user_id": ["a"], "cutoff": [5]})
    kept = time_safe_source(source, cutoffs)
    assert kept.sort("timestamp")["timestamp"].to_list() == [1, 100]


def test_source_interactions_respect_target_cutoffs(synthetic_dataset):
    split = split_target_domain(synthetic_dataset.interactions, synthetic_dataset.items, domain="games",
                                fraction=0.3, seed=0)
    source = source_interactions(synthetic_dataset.interactions, synthetic_dataset.items,
                                 domains=["books", "music"], cutoffs=split.cutoffs)
    joined = source.join(split.cutoffs, on="user_id")
    assert (joined["timestamp"] < joined["cutoff"]).all()
    assert set(source["item_id"].str.split("-").list.first()) == {"books", "music"}


def test_too_little_target_data_is_a_clear_error(synthetic_dataset):
    from models.split import InsufficientDataError

    with pytest.raises(InsufficientDataError, match="validation set has 0 user.*raise the target fraction"):
        split_target_domain(synthetic_dataset.interactions, synthetic_dataset.items, domain="games",
                            fraction=0.005, seed=0)

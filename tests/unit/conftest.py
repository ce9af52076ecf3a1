"""Fixtures of the unit tests that need a trained source: the synthetic "games" target and a source model
of the three other domains (trained once per session, a few seconds)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from data_contracts.columns import ITEM_ID
from models.config import ModelConfig, SplitConfig, TrainConfig
from models.data.text import hashed_tfidf, item_texts
from models.nets.training import FitResult
from models.split import TargetSplit, split_target_domain
from models.transfer.init import ItemText
from models.transfer.recipes import catalogue_ids, train_source_model


@pytest.fixture(scope="session")
def games_split(synthetic_dataset) -> TargetSplit:
    cfg = SplitConfig(fraction=0.2)
    return split_target_domain(synthetic_dataset.interactions, synthetic_dataset.items, domain="games",
                               fraction=cfg.fraction, seed=0)


@pytest.fixture(scope="session")
def source_fit(synthetic_dataset, games_split) -> FitResult:
    return train_source_model(synthetic_dataset.interactions, synthetic_dataset.items,
                              domains=["books", "movies", "music"], cutoffs=games_split.cutoffs,
                              model=ModelConfig(dim=16), train=TrainConfig(max_epochs=15, batch_size=512),
                              seed=0)


@pytest.fixture(scope="session")
def games_text(synthetic_dataset, games_split, source_fit) -> ItemText:
    """Hashed TF-IDF item texts of the source model's items and of the games catalogue (their titles carry
    the synthetic taste words)."""
    items = synthetic_dataset.items

    def rows(ids: np.ndarray) -> pl.DataFrame:
        order = pl.DataFrame({ITEM_ID: pl.Series(ids, dtype=pl.String)}).with_row_index("_row")
        return order.join(items, on=ITEM_ID, how="left").sort("_row").drop("_row")

    source, target = hashed_tfidf(item_texts(rows(source_fit.model.item_ids)),
                                  item_texts(rows(catalogue_ids(games_split))))
    return ItemText(source=source, target=target)


@pytest.fixture
def last_elsewhere():
    """(joint pairs, validation task): users of s10..s12 take t1, users of s20..s22 take t2; the validation user
    ``new`` watched s10..s12 long ago and s20 last, and takes t2. Three old interactions against one say t1; what
    they did last says t2."""
    from models.evaluation.ranking import build_ranking_task
    from models.transfer.joint import JointTrain

    def frame(pairs: list[tuple[str, str]]) -> pl.DataFrame:
        return pl.DataFrame({"user_id": [u for u, _ in pairs], "item_id": [i for _, i in pairs]})

    source, train = [], []
    for n in range(40):
        group, target = ("s1", "t1") if n % 2 else ("s2", "t2")
        source += [(f"u{n}", f"{group}{k}", k) for k in range(3)]
        train.append((f"u{n}", target))
    source += [("new", f"s1{k}", k) for k in range(3)] + [("new", "s20", 100)]
    catalogue = np.array(["t1", "t2"], dtype=object)
    timed = pl.DataFrame({"user_id": [u for u, _, _ in source], "item_id": [i for _, i, _ in source],
                          "timestamp": [t for _, _, t in source]})
    joint = JointTrain.of(timed, frame(train), catalogue)
    val = build_ranking_task(catalogue, frame([("new", "t2")]).with_columns(rating=None, timestamp=0),
                             frame(train).with_columns(rating=None, timestamp=0), click_threshold=4.0)
    return joint, val

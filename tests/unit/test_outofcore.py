"""Training on a target bigger than memory: the split on disk, the shuffled pair file and its batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from models.config import FineTuneConfig, ModelConfig, SplitConfig, TrainConfig
from models.evaluation.ranking import evaluate_model
from models.split import InsufficientDataError, split_with
from models.transfer.outofcore import (
    DiskPairs,
    ShuffledBlocks,
    fine_tune_on_disk,
    sample_test_task,
    split_on_disk,
    write_pairs,
)
from models.transfer.recipes import fine_tune, ranking_tasks, train_source_model

TARGET = "games"


def pairs_file(tmp_path: Path, n: int) -> DiskPairs:
    path = tmp_path / "pairs.bin"
    np.stack([np.arange(n), np.arange(n) % 7], axis=1).astype(np.int32).tofile(path)
    return DiskPairs(path, n)


def test_each_epoch_reads_every_pair_once_in_a_new_order(tmp_path):
    blocks = ShuffledBlocks(pairs_file(tmp_path, 1_003), batch_size=64, seed=3, block_rows=250)
    epochs = []
    for _ in range(2):
        batches = list(blocks)
        assert len(batches) == len(blocks) == 4 * 4 + 1  # 4 blocks of 250 in 4 batches each, then 3 pairs
        users = np.concatenate([u.numpy() for u, _ in batches])
        items = np.concatenate([i.numpy() for _, i in batches])
        assert sorted(users) == list(range(1_003)) and (items == users % 7).all()  # pairs stay together
        epochs.append(users)
    assert not (epochs[0] == epochs[1]).all()
    again = [u.numpy() for u, _ in ShuffledBlocks(pairs_file(tmp_path, 1_003), batch_size=64, seed=3,
                                                  block_rows=250)]
    assert (np.concatenate(again) == epochs[0]).all()  # seeded


def test_pairs_are_encoded_shuffled_and_unknown_ids_dropped(tmp_path):
    frame = pl.DataFrame({"user_id": [f"u{i % 50}" for i in range(2_000)] + ["stranger"],
                          "item_id": [f"i{i % 13}" for i in range(2_000)] + ["i1"]})
    users = np.array([f"u{i}" for i in range(50)], dtype=object)
    items = np.array([f"i{i}" for i in range(13)], dtype=object)
    pairs = write_pairs(frame.lazy(), users, items, tmp_path / "p.bin", seed=0, batch_rows=300, block_rows=400)
    written = pairs.array()
    assert pairs.n == 2_000 and written.shape == (2_000, 2)
    expected = sorted(zip((np.arange(2_000) % 50).tolist(), (np.arange(2_000) % 13).tolist(), strict=True))
    assert sorted(map(tuple, written.tolist())) == expected
    assert not (written[:, 0] == np.arange(2_000) % 50).all()  # not in input order


@pytest.mark.parametrize("fraction", [1.0, 0.5])
def test_split_on_disk_matches_the_in_memory_split(tmp_path, synthetic_dataset, fraction, backwards_mapper):
    config = SplitConfig(fraction=fraction, seed=0, min_users=5)
    whole = split_with(synthetic_dataset.interactions, synthetic_dataset.items, domain=TARGET, config=config)
    disk = split_on_disk(synthetic_dataset.interactions.lazy(), synthetic_dataset.items, domain=TARGET,
                         config=config, workdir=tmp_path / "split", batch_rows=500, bucket_rows=700)
    assert len(list((tmp_path / "split" / "test").iterdir())) > 3  # several buckets of users

    def rows(frame: pl.DataFrame) -> pl.DataFrame:
        return frame.sort(pl.all())

    assert rows(disk.scan("test").collect()).equals(rows(whole.test))  # per-user rules: the same rows
    assert disk.sizes["train_full"] == whole.train_full_size
    if fraction == 1.0:
        assert rows(disk.scan("val").collect()).equals(rows(whole.val))
        assert rows(disk.scan("train").collect()).equals(rows(whole.train))
    else:  # the sample is drawn per bucket: the same share, other rows
        kept = disk.sizes["train"] + disk.sizes["val"]
        assert abs(kept - (whole.train.height + whole.val.height)) <= len(list((tmp_path / "split" / "test").iterdir()))
    # the buckets split out of order, three at a time (as on a cluster): the same parts, file for file
    spread = split_on_disk(synthetic_dataset.interactions.lazy(), synthetic_dataset.items, domain=TARGET,
                           config=config, workdir=tmp_path / "spread", batch_rows=500, bucket_rows=700,
                           mapper=backwards_mapper)
    assert backwards_mapper.calls == len(list((tmp_path / "split" / "test").iterdir()))
    assert spread.sizes == disk.sizes
    for part in ("train", "val", "test"):
        files = sorted(p.name for p in (tmp_path / "split" / part).iterdir())
        assert files == sorted(p.name for p in (tmp_path / "spread" / part).iterdir())
        for name in files:
            assert pl.read_parquet(tmp_path / "spread" / part / name).equals(
                pl.read_parquet(tmp_path / "split" / part / name))
    with pytest.raises(InsufficientDataError, match="fewer than the minimum 10000"):
        split_on_disk(synthetic_dataset.interactions.lazy(), synthetic_dataset.items, domain=TARGET,
                      config=SplitConfig(min_users=10_000), workdir=tmp_path / "again")


def test_fine_tune_on_disk_learns_like_in_memory(tmp_path, synthetic_dataset):
    data = synthetic_dataset
    config = SplitConfig(fraction=1.0, seed=0)
    whole = split_with(data.interactions, data.items, domain=TARGET, config=config)
    source = train_source_model(data.interactions, data.items, domains=["books", "movies"], cutoffs=whole.cutoffs,
                                model=ModelConfig(dim=16), train=TrainConfig.smoke()).model
    tune = FineTuneConfig(train=TrainConfig(max_epochs=6, patience=6, batch_size=128))
    memory = fine_tune(source, whole, config=tune, seed=0)
    disk_split = split_on_disk(data.interactions.lazy(), data.items, domain=TARGET, config=config,
                               workdir=tmp_path / "split", bucket_rows=1_000)
    disk = fine_tune_on_disk(source, disk_split, config=tune, seed=0, block_rows=700)
    assert disk.pairs.n == whole.train.height
    assert disk.fit.epochs_run == memory.epochs_run == 6
    assert disk.fit.initial_val_ndcg == pytest.approx(memory.initial_val_ndcg, abs=1e-6)  # the same init and val
    _, memory_test = ranking_tasks(whole, click_threshold=4.0)
    disk_test = sample_test_task(disk_split, users=None, seed=0)
    assert disk_test.n_users == memory_test.n_users
    ndcg = {name: evaluate_model(model, task, ks=(10,)).metrics["ndcg_at_10"]
            for name, model, task in (("memory", memory.model, memory_test), ("disk", disk.fit.model, disk_test))}
    assert disk.fit.best_val_ndcg > disk.fit.initial_val_ndcg  # it learnt
    assert ndcg["disk"] == pytest.approx(ndcg["memory"], abs=0.03), ndcg  # only the batch order differs


def test_ddp_ranks_get_equal_disjoint_shares(tmp_path, monkeypatch):
    """Under DDP every rank must run the same number of steps (else the gradient all-reduce waits for ever)."""
    pairs = pairs_file(tmp_path, 1_003)
    seen = []
    for rank in (0, 1):
        monkeypatch.setattr(ShuffledBlocks, "_world", staticmethod(lambda rank=rank: (rank, 2)))
        blocks = ShuffledBlocks(pairs, batch_size=64, seed=3, block_rows=250)
        batches = list(blocks)
        # the global batch of 64 is 32 a rank: 125 pairs of each block make 4 batches; the last block 1
        assert len(batches) == len(blocks) == 4 * 4 + 1
        assert max(len(u) for u, _ in batches) == 32
        seen.append(np.concatenate([u.numpy() for u, _ in batches]))
    assert len(seen[0]) == len(seen[1]) == 4 * 125 + 1
    assert not set(seen[0]) & set(seen[1])  # disjoint shares of one shuffled order
    assert len(set(seen[0]) | set(seen[1])) >= 1_003 - 4  # fewer than 2 pairs dropped a block


def test_joint_pairs_on_disk_are_the_in_memory_ones_and_bounded(tmp_path, synthetic_dataset):
    """Every other domain's interactions before each user's first target test interaction, plus the target's
    training ones: the same pairs over the same items as in memory; above the bound, refused with the count."""
    from models.split import source_interactions
    from models.transfer.joint import JointTrain
    from models.transfer.outofcore import joint_train_on_disk
    from models.transfer.peers import PeerTooLarge

    data, config = synthetic_dataset, SplitConfig(fraction=1.0, seed=0, min_users=5)
    whole = split_with(data.interactions, data.items, domain=TARGET, config=config)
    disk = split_on_disk(data.interactions.lazy(), data.items, domain=TARGET, config=config,
                         workdir=tmp_path / "split", batch_rows=500, bucket_rows=700)
    memory = JointTrain.of_split(data.interactions, data.items, whole)
    others = [d for d in data.items["domain"].unique().to_list() if d != TARGET]
    by_hand = source_interactions(data.interactions, data.items, domains=others, cutoffs=whole.cutoffs)
    assert len(memory.encoded.users) == by_hand.height + whole.train.height
    on_disk = joint_train_on_disk(data.interactions.lazy(), data.items, disk)

    def pairs(joint: JointTrain) -> list[tuple[str, str, float]]:  # each source pair with its recency
        e = joint.encoded
        recency = np.concatenate([joint.source_recency, np.full(len(e.users) - joint.n_source, -1.0)])
        return sorted(zip(e.user_ids[e.users], e.item_ids[e.items], recency.tolist(), strict=True))

    assert on_disk.n_catalogue == memory.n_catalogue and list(on_disk.encoded.item_ids) == list(memory.encoded.item_ids)
    assert pairs(on_disk) == pairs(memory)
    assert memory.source_recency.min() == 0.0 and memory.source_recency.max() > 1.0
    assert len(pairs(memory)) > whole.train.height  # the source interactions are in
    with pytest.raises(PeerTooLarge, match="source interactions are above"):
        joint_train_on_disk(data.interactions.lazy(), data.items, disk, max_pairs=10)


def test_the_pair_file_is_the_same_every_run(tmp_path, synthetic_dataset):
    """The joins that encode the pairs keep the rows' order: the same seed writes the same file (the fit that
    reads it reproduces); without ``maintain_order`` the streaming join reordered rows from run to run."""
    frame = synthetic_dataset.interactions.lazy()
    users = np.sort(synthetic_dataset.interactions["user_id"].unique().to_numpy()).astype(object)
    items = np.sort(synthetic_dataset.items["item_id"].to_numpy()).astype(object)
    written = {write_pairs(frame, users, items, tmp_path / f"p{run}.bin", seed=0, batch_rows=997).path.read_bytes()
               for run in range(4)}
    assert len(written) == 1

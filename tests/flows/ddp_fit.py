"""One scratch fit on the synthetic "games" target, in one process or under DDP, run as a script by
``test_ddp.py`` (Lightning's DDP launcher starts the other ranks by running this script again).

Usage:  python tests/flows/ddp_fit.py --devices N --strategy auto|ddp --out RESULT.json
Rank 0 writes the fit's validation curve and its test NDCG@10.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--strategy", default="auto")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    from models.config import ModelConfig, TrainConfig
    from models.data.synthetic import generate_multidomain
    from models.evaluation.ranking import evaluate_model
    from models.split import split_target_domain
    from models.transfer.recipes import ranking_tasks, train_scratch
    from tasks.runtime import configure_environment, quiet_libraries

    configure_environment()
    quiet_libraries()
    data = generate_multidomain(n_users=300, items_per_domain=40, interactions_per_domain=12.0, seed=0)
    split = split_target_domain(data.interactions, data.items, domain="games", fraction=1.0, seed=0)
    train = TrainConfig(max_epochs=6, patience=6, batch_size=64, n_negatives=0, lr=0.02, accelerator="cpu",
                        devices=args.devices, strategy=args.strategy)
    fit = train_scratch(split, model=ModelConfig(dim=16), train=train, seed=0, restore_best=False)
    if int(os.environ.get("LOCAL_RANK", "0")) == 0:
        _, test = ranking_tasks(split, click_threshold=4.0)
        args.out.write_text(json.dumps({
            "val": [e["val/ndcg_at_10"] for e in fit.history], "initial": fit.initial_val_ndcg,
            "test_ndcg_at_10": evaluate_model(fit.model, test, ks=(10,)).metrics["ndcg_at_10"],
            "steps": fit.history[-1]["step"]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Does the refit pay? A backtest at a cut date T.

Cut a dataset at the date T below which ``--before`` of the target domain's interactions lie. Onboard the
target on the data before T twice, with the same seed and settings (all of the target's data, ``fraction``
1): once serving the evaluated model (``--no-refit``), once serving the winner refitted on all of the target's
data before T. Then score both served models on the target's interactions after T. Each user's interactions
before T are excluded from their ranking. Users new after T are scored too: both models give them the
popularity fallback.

Datasets: ``retail`` (the seeded synthetic retail export, target ``garden``) and ``movielens-1m`` (a genre,
``--target-domain``, fetched first). Prints NDCG@10, P@10 and R@10 after T for both, with the users scored,
and writes ``bench/results/backtest-<dataset>.json``. Each dataset runs in a temporary tracking store;
MovieLens trains its source models there first, which takes minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import polars as pl

HERE = Path(__file__).resolve().parent


def cut(dataset, domain: str, before: float):
    """(data before T, the target's interactions from T on, T)."""
    from data_contracts.columns import DOMAIN, ITEM_ID, TIMESTAMP
    from models.data.datasets import Dataset

    target_items = dataset.items.filter(pl.col(DOMAIN) == domain).select(ITEM_ID)
    target = dataset.interactions.join(target_items, on=ITEM_ID, how="semi")
    t = int(target[TIMESTAMP].quantile(before, interpolation="lower"))
    early = dataset.interactions.filter(pl.col(TIMESTAMP) < t)
    # impressions are left out: they serve the off-policy CTR, not the ranking scored here
    return (Dataset(dataset.name, early, dataset.items, dataset.users, None),
            target.filter(pl.col(TIMESTAMP) >= t), t)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=("retail", "movielens-1m"), default="retail")
    parser.add_argument("--target-domain", help="default: garden (retail), Horror (movielens-1m)")
    parser.add_argument("--before", type=float, default=0.8, help="share of the target's interactions before T")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)

    from data_contracts.columns import ITEM_ID, USER_ID
    from flows.config import OnboardConfig
    from flows.onboard import onboard_domain_flow
    from models.config import DataConfig, SplitConfig, TrackingConfig
    from models.data.datasets import read_canonical_dir, write_canonical_dir
    from models.data.fetch import cached_dir
    from models.data.synthetic import generate_retail
    from models.evaluation.ranking import build_ranking_task, evaluate_model
    from tasks.runtime import configure_environment, default_data_dir, quiet_libraries
    from tasks.tracking import load_factor_model, registered_model_name

    configure_environment()
    quiet_libraries()
    if args.dataset == "retail":
        dataset, domain = generate_retail(seed=args.seed), args.target_domain or "garden"
    else:
        folder = cached_dir(args.data_dir or default_data_dir(), args.dataset)
        dataset, domain = read_canonical_dir(folder, args.dataset), args.target_domain or "Horror"
    early, late, t = cut(dataset, domain, args.before)
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="transferrec-backtest-") as tmp:
        data = write_canonical_dir(early, Path(tmp) / "data")
        uri = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        for refit in (False, True):
            summary = onboard_domain_flow(OnboardConfig(
                target_domain=domain, data=DataConfig(dataset=args.dataset, path=data),
                split=SplitConfig(fraction=1.0, seed=args.seed),
                tracking=TrackingConfig(tracking_uri=uri, refit=refit, checkpoint_dir=Path(tmp) / "ckpt")))
            served = load_factor_model(uri, f"models:/{registered_model_name(domain)}/{summary.model_version}")
            catalogue = early.items.filter(pl.col("domain") == domain)[ITEM_ID].to_numpy().astype(object)
            seen = early.interactions.join(pl.DataFrame({ITEM_ID: catalogue.astype(str)}), on=ITEM_ID, how="semi")
            task = build_ranking_task(catalogue, late, seen)
            scores = evaluate_model(served, task, ks=(10,)).metrics
            results["refit" if refit else "evaluated model"] = {
                "winner": summary.winner, "version": summary.model_version,
                **{m: scores[f"{m}_at_10"] for m in ("ndcg", "precision", "recall")}}
    users_after = late[USER_ID].n_unique()
    new_users = len(set(late[USER_ID]) - set(early.interactions[USER_ID]))
    print(f"{args.dataset}, target {domain}: T = {t} ({args.before:.0%} of the target's interactions before T); "
          f"after T: {late.height} interactions of {users_after} users ({new_users} new)\n"
          "| served model | winner | NDCG@10 | P@10 | R@10 |\n|---|---|---|---|---|")
    for name, row in results.items():
        print(f"| {name} | {row['winner']} | {row['ndcg']:.4f} | {row['precision']:.4f} | {row['recall']:.4f} |")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"backtest-{args.dataset}.json").write_text(json.dumps(
        {"dataset": args.dataset, "target": domain, "t": t, "before": args.before, "after_interactions": late.height,
         "after_users": users_after, "new_users": new_users, "served": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

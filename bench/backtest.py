"""Does the refit pay? A backtest at a cut date T.

Cut a dataset at the date T below which ``--before`` of the target domain's interactions lie. Onboard the
target on the data before T (all of the target's data, ``fraction`` 1). The registered version serves the
winner refitted on all of the target's data before T and names the evaluated model it was refitted from (tag
``evaluated_model``: what ``--no-refit`` would have served). Score both on the target's interactions after T.
Each user's interactions before T are excluded from their ranking. Users new after T are scored too: both
models give them the popularity fallback.

Several cuts (``--before 0.7,0.8,0.9``) and seeds (``--seeds 0,1,2``) give one row each, with the refit's
NDCG@10 lift over the evaluated model and its paired bootstrap 95 % interval (the product's own), over all
users after T and over the returning ones (those with interactions before T). ``--out-of-core`` onboards out
of core, where the refit streams the split's parts. ``--against-peers`` also serves the closed-form recipe and the
joint peers as the refit does (plain calls: tuned on the split of the data before T, fitted again on all of it)
and prints transfer's lift over each joint peer after T; with ``--transitions`` also the recipe blended with its
cross-domain transitions (``finetune.transitions``), and ``--peers-only`` skips the onboardings (and the source
models they train).

Datasets: ``retail`` (the seeded synthetic retail export, target ``garden``) and ``movielens-1m`` (a genre,
``--target-domain``, fetched first). Prints a table and writes ``bench/results/backtest-<dataset>.json``.
Each cut runs in a temporary tracking store; MovieLens trains its source models there first, which takes
minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
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


def served_against_peers(early, task, domain: str, returning: np.ndarray, seed: int,
                         transitions: bool = False) -> dict:
    """``--against-peers``: the closed-form recipe and the joint peers as the refit serves them (tuned on the
    split of the data before T, then refitted by :func:`models.transfer.refit.refit_model`), scored after T;
    transfer's paired lift over each peer, over all users after T and the returning ones. ``transitions``: also
    the recipe blended with its cross-domain transitions (``transfer+transitions``, with the weight validation
    chose)."""
    from dataclasses import replace

    from models.config import FineTuneConfig, ModelConfig, SplitConfig, TrainConfig
    from models.evaluation.ranking import evaluate_model
    from models.evaluation.uncertainty import paired_lift_interval
    from models.split import split_with
    from models.transfer.closed_form import ClosedFormGrid, fit_closed_form_transfer
    from models.transfer.joint import JointTrain, fit_joint_als, fit_joint_ease
    from models.transfer.recipes import ranking_tasks
    from models.transfer.refit import WholeInMemory, refit_model
    from models.transfer.transitions import TransitionGrid

    split = split_with(early.interactions, early.items, domain=domain, config=SplitConfig(fraction=1.0, seed=seed))
    val, _ = ranking_tasks(split, click_threshold=4.0)
    joint = JointTrain.of_split(early.interactions, early.items, split)
    whole = WholeInMemory(split, early.interactions, early.items)
    served, weights = {}, {}
    blended = replace(ClosedFormGrid(), transitions=TransitionGrid())
    fits = [("transfer", fit_closed_form_transfer), ("joint-als", fit_joint_als), ("joint-ease", fit_joint_ease)]
    if transitions:
        fits.append(("transfer+transitions", lambda *a, **k: fit_closed_form_transfer(*a, grid=blended, **k)))
    for name, fit in fits:
        tuned = fit(joint, val, seed=seed)
        recipe = name.startswith("transfer")
        params = {"recipe": "closed-form", **tuned.params} if recipe else tuned.params
        model, _ = refit_model("transfer" if recipe else name, whole, val, seed=seed, params=params, fits={},
                               source=None, finetune=FineTuneConfig(), model=ModelConfig(), scratch=TrainConfig(),
                               recipe_source=tuned.source if recipe else None)
        served[name] = (tuned.val_ndcg_at_10, model)
        weights[name] = tuned.params.get("transition_weight")
    scores = {name: (v, evaluate_model(model, task, ks=(10,)).per_user["ndcg_at_10"])
              for name, (v, model) in served.items()}
    out = {name: {"val_ndcg_at_10": v, "after_ndcg_at_10": float(per_user.mean()),
                  **({"transition_weight": weights[name]} if weights[name] is not None else {})}
           for name, (v, per_user) in scores.items()}
    for peer in ("joint-als", "joint-ease"):
        for label, mask in (("", slice(None)), ("returning_", returning)):
            lift = paired_lift_interval(scores["transfer"][1][mask], scores[peer][1][mask])
            out[peer][f"{label}transfer_lift"] = (lift.estimate, lift.low, lift.high)
    return out


def floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",")]


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=("retail", "movielens-1m"), default="retail")
    parser.add_argument("--target-domain", help="default: garden (retail), Horror (movielens-1m)")
    parser.add_argument("--before", type=floats, default=[0.8],
                        help="shares of the target's interactions before T, one cut each (e.g. 0.7,0.8,0.9)")
    parser.add_argument("--seeds", type=ints, default=[0], help="onboarding seeds, each cut onboarded with each")
    parser.add_argument("--out-of-core", action="store_true", help="onboard out of core (the refit streams)")
    parser.add_argument("--against-peers", action="store_true",
                        help="also serve the closed-form recipe and the joint peers (plain calls) and compare them "
                             "after T")
    parser.add_argument("--transitions", action="store_true",
                        help="with --against-peers: also serve the recipe blended with its cross-domain transitions")
    parser.add_argument("--peers-only", action="store_true",
                        help="with --against-peers: only that comparison (no onboarding, no source models)")
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)

    from mlflow import MlflowClient

    from data_contracts.columns import ITEM_ID, USER_ID
    from flows.config import OnboardConfig
    from flows.onboard import onboard_domain_flow
    from models.config import DataConfig, SplitConfig, TrackingConfig
    from models.data.datasets import read_canonical_dir, write_canonical_dir
    from models.data.fetch import cached_dir
    from models.data.synthetic import generate_retail
    from models.evaluation.ranking import build_ranking_task, evaluate_model
    from models.evaluation.uncertainty import paired_lift_interval
    from tasks.runtime import configure_environment, default_data_dir, quiet_libraries
    from tasks.tracking import EVALUATED_MODEL_TAG, load_factor_model, registered_model_name

    configure_environment()
    quiet_libraries()
    if args.dataset == "retail":
        dataset, domain = generate_retail(seed=0), args.target_domain or "garden"
    else:
        folder = cached_dir(args.data_dir or default_data_dir(), args.dataset)
        dataset, domain = read_canonical_dir(folder, args.dataset), args.target_domain or "Horror"
    rows: list[dict] = []
    peers: list[tuple[float, int, dict]] = []
    for before in args.before:
        early, late, t = cut(dataset, domain, before)
        catalogue = early.items.filter(pl.col("domain") == domain)[ITEM_ID].to_numpy().astype(object)
        seen = early.interactions.join(pl.DataFrame({ITEM_ID: catalogue.astype(str)}), on=ITEM_ID, how="semi")
        task = build_ranking_task(catalogue, late, seen)
        known = set(early.interactions[USER_ID])
        returning = np.array([u in known for u in task.user_ids])
        if args.against_peers:
            peers += [(before, seed, served_against_peers(early, task, domain, returning, seed, args.transitions))
                      for seed in args.seeds]
        if args.peers_only:
            continue
        with tempfile.TemporaryDirectory(prefix="transferrec-backtest-") as tmp:  # sources trained once per cut
            data = write_canonical_dir(early, Path(tmp) / "data")
            uri = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
            for seed in args.seeds:  # one onboarding: the version serves the refit and names its evaluated model
                checkpoints = None if args.out_of_core else Path(tmp) / "ckpt"
                tracking = TrackingConfig(tracking_uri=uri, checkpoint_dir=checkpoints)
                summary = onboard_domain_flow(OnboardConfig(
                    target_domain=domain, data=DataConfig(dataset=args.dataset, path=data),
                    split=SplitConfig(fraction=1.0, seed=seed), tracking=tracking, out_of_core=args.out_of_core))
                name = registered_model_name(domain)
                version = MlflowClient(uri).get_model_version(name, summary.model_version)
                served = {kind: (summary.winner, evaluate_model(load_factor_model(uri, model), task, ks=(10,)))
                          for kind, model in (("evaluated", version.tags[EVALUATED_MODEL_TAG]),
                                              ("refit", f"models:/{name}/{summary.model_version}"))}
                (winner, evaluated), (_, refitted) = served["evaluated"], served["refit"]
                lift = paired_lift_interval(refitted.per_user["ndcg_at_10"], evaluated.per_user["ndcg_at_10"])
                back = paired_lift_interval(refitted.per_user["ndcg_at_10"][returning],
                                            evaluated.per_user["ndcg_at_10"][returning])
                rows.append({
                    "before": before, "t": t, "seed": seed, "winner": winner, "after_interactions": late.height,
                    "after_users": task.n_users, "returning_users": int(returning.sum()),
                    **{f"{name}_{m}": result.metrics[f"{m}_at_10"] for name, (_, result) in served.items()
                       for m in ("ndcg", "precision", "recall")},
                    "lift": lift.estimate, "lift_low": lift.low, "lift_high": lift.high,
                    "returning_lift": back.estimate, "returning_lift_low": back.low,
                    "returning_lift_high": back.high})
    if rows:
        mode = "out of core" if args.out_of_core else "in memory"
        print(f"{args.dataset}, target {domain}, {mode}: NDCG@10, P@10 and R@10 after T of the served model, evaluated "
              "vs refit; lift = refit over evaluated NDCG@10 with its paired 95 % interval (all users after T, and "
              "those with interactions before T)\n"
              "| before T | seed | winner | after T: interactions, users (returning) | NDCG@10 | P@10 | R@10 | lift "
              "| lift, returning users |\n|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['before']:.0%} | {r['seed']} | {r['winner']} | {r['after_interactions']:,}, "
                  f"{r['after_users']:,} ({r['returning_users']:,}) | "
                  f"{r['evaluated_ndcg']:.4f} → {r['refit_ndcg']:.4f} | "
                  f"{r['evaluated_precision']:.4f} → {r['refit_precision']:.4f} | "
                  f"{r['evaluated_recall']:.4f} → {r['refit_recall']:.4f} | "
                  f"{r['lift']:+.1%} ({r['lift_low']:+.1%} .. {r['lift_high']:+.1%}) | "
                  f"{r['returning_lift']:+.1%} ({r['returning_lift_low']:+.1%} .. {r['returning_lift_high']:+.1%}) |")
        lifts = [r["lift"] for r in rows]
        above = sum(r["lift_low"] > 0 for r in rows)
        print(f"mean lift {np.mean(lifts):+.1%} over {len(rows)} cut(s) x seed(s); interval above zero in {above}, "
              f"lift below zero in {sum(x < 0 for x in lifts)}")
    if peers:
        print("\nserved after T, each tuned on the data before T and refitted on all of it (NDCG@10 after T; "
              "transfer's lift over each joint peer with its paired 95 % interval, all users and returning ones)\n"
              "| before T | seed | validation NDCG@10 transfer / joint ALS / joint EASE | after T transfer / joint ALS"
              " / joint EASE | transfer vs joint ALS (returning) | transfer vs joint EASE (returning) |"
              + (" after T, transfer with transitions |" if args.transitions else "") + "\n"
              "|---|---|---|---|---|---|" + ("---|" if args.transitions else ""))
        names = ("transfer", "joint-als", "joint-ease")
        for before, seed, out in peers:
            val = " / ".join(f"{out[n]['val_ndcg_at_10']:.4f}" for n in names)
            after = " / ".join(f"{out[n]['after_ndcg_at_10']:.4f}" for n in names)
            lifts = [" ".join(f"{'(' if key else ''}{e:+.1%} ({lo:+.1%} .. {hi:+.1%}){')' if key else ''}"
                              for key in ("", "returning_")
                              for e, lo, hi in [out[peer][f"{key}transfer_lift"]])
                     for peer in ("joint-als", "joint-ease")]
            blend = out.get("transfer+transitions")
            extra = (f" {blend['after_ndcg_at_10']:.4f} (validation {blend['val_ndcg_at_10']:.4f}, weight "
                     f"{blend['transition_weight']:g}) |" if blend else "")
            print(f"| {before:.0%} | {seed} | {val} | {after} | {lifts[0]} | {lifts[1]} |{extra}")
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = "-out-of-core" if args.out_of_core else ""
    (args.out / f"backtest-{args.dataset}{suffix}.json").write_text(json.dumps(
        {"dataset": args.dataset, "target": domain, "out_of_core": args.out_of_core, "rows": rows,
         "against_peers": [{"before": b, "seed": sd, **out} for b, sd, out in peers]}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Ideas to make transfer better, each measured on the product's split against the default fine-tune: fine-tuning
hyper-parameters, validated blends with a target-only or a joint peer, and item vectors solved in closed form on
frozen source user vectors: the network source's (not adopted) and an implicit-ALS source's (the closed-form
recipe, adopted). The ideas docs/benchmarks.md reports as tried.

Usage (after `bench/quality.py` has registered the genres' source models in bench/results/mlflow.db):

    python bench/transfer_variants.py --cells Horror:0.1:0 --hyper-parameters
    python bench/transfer_variants.py --blends --cells \
        Horror:0.1:0,Crime:0.1:0,Sci-Fi:0.1:0,Thriller:0.1:0,Adventure:0.1:0,Horror:0.3:1,Crime:0.3:1,Thriller:0.3:1
    python bench/transfer_variants.py --cells Horror:0.1:0,Crime:0.1:0 --closed-form
    python bench/transfer_variants.py --cells Horror,Crime,Thriller,Adventure --recipes

Every variant starts from the genre's ``all-others`` source (the newest registered version) and prints its
validation and test NDCG@10 next to the default fine-tune's.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
BLEND_WEIGHTS = tuple(round(0.1 * k, 1) for k in range(11))


def blend(a, b, weight: float, catalogue: np.ndarray):
    """``(1 - weight) * a + weight * b``, each model's scores divided by their spread over all its users (a
    factor model again: the factors side by side)."""
    from models.factors import FactorModel

    users = np.union1d(a.user_ids.astype(str), b.user_ids.astype(str)).astype(object)
    ua, va, ba = a.aligned(users, catalogue)
    ub, vb, bb = b.aligned(users, catalogue)
    sa, sb = np.std(ua @ va.T + ba) + 1e-9, np.std(ub @ vb.T + bb) + 1e-9
    return FactorModel(users, catalogue, np.hstack([ua * (1 - weight) / sa, ub * weight / sb]).astype(np.float32),
                       np.hstack([va, vb]).astype(np.float32),
                       ((1 - weight) * ba / sa + weight * bb / sb).astype(np.float32), kind="blend")


def network_item_step(source, split, catalogue: np.ndarray, points: list[tuple[float, float]]) -> list:
    """The closed-form recipe's item step (:func:`models.transfer.closed_form.item_step`) on the frozen user vectors
    of the network ``source`` instead of an ALS source's, one model per ``(alpha, l2)``."""
    from models.factors import FactorModel, index_of
    from models.transfer.als import TIE_BREAK
    from models.transfer.closed_form import item_step

    users = index_of(source.user_ids, split.train["user_id"].to_numpy().astype(object))
    items = index_of(catalogue, split.train["item_id"].to_numpy().astype(object))
    keep = (users >= 0) & (items >= 0)
    popularity = np.bincount(items[keep], minlength=len(catalogue))
    return [FactorModel(source.user_ids, catalogue, source.user_factors, vectors,
                        (TIE_BREAK * np.log1p(popularity)).astype(np.float32), kind="closed-form")
            for vectors in item_step(source.user_factors, users[keep], items[keep], len(catalogue), points)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", required=True, help="genre:fraction:seed,... (a genre alone: its nine cells, "
                                                           "fractions 0.05/0.1/0.3, seeds 0-2)")
    parser.add_argument("--hyper-parameters", action="store_true")
    parser.add_argument("--blends", action="store_true")
    parser.add_argument("--closed-form", action="store_true")
    parser.add_argument("--recipes", action="store_true", help="the fine-tune against the closed-form recipe, and "
                                                               "which the recipe margins keep")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)

    from mlflow import MlflowClient

    from models.config import DataConfig, FineTuneConfig, SplitConfig, target_train_defaults
    from models.data.datasets import read_canonical_dir
    from models.evaluation.ranking import evaluate_model
    from models.split import split_with
    from models.transfer.als import EncodedTrain
    from models.transfer.closed_form import fit_closed_form_transfer
    from models.transfer.joint import JointTrain, fit_joint_als, fit_joint_ease
    from models.transfer.peers import fit_ease
    from models.transfer.recipes import catalogue_ids, fine_tune, ranking_tasks
    from tasks import tracking
    from tasks.data import data_location
    from tasks.runtime import configure_environment, quiet_libraries

    configure_environment()
    quiet_libraries()
    data = read_canonical_dir(data_location(DataConfig()), "movielens-1m")
    uri = f"sqlite:///{(args.out / 'mlflow.db').resolve()}"
    client = MlflowClient(uri)
    recipes: list[tuple[float, float, float, float]] = []  # (fine-tune val, test, closed-form val, test)
    cells = [c if ":" in c else f"{c}:{f}:{s}" for c in args.cells.split(",")
             for f, s in ([(None, None)] if ":" in c else [(f, s) for f in (0.05, 0.1, 0.3) for s in (0, 1, 2)])]
    for cell in cells:
        genre, fraction, seed = cell.split(":")
        split = split_with(data.interactions, data.items, domain=genre,
                           config=SplitConfig(fraction=float(fraction), seed=int(seed)))
        val, test = ranking_tasks(split, click_threshold=4.0)
        catalogue = catalogue_ids(split)
        name = tracking.source_model_name("movielens-1m", genre, "all-others")
        version = max(int(v.version) for v in client.search_model_versions(f"name='{name}'"))
        source = tracking.load_factor_model(uri, f"models:/{name}/{version}")

        def score(model, val=val, test=test) -> str:
            return (f"val {evaluate_model(model, val).metrics['ndcg_at_10']:.4f}  "
                    f"test {evaluate_model(model, test).metrics['ndcg_at_10']:.4f}")

        transfer = fine_tune(source, split, config=FineTuneConfig(), seed=int(seed)).model
        print(f"{cell}  default fine-tune: {score(transfer)}", flush=True)
        if args.hyper_parameters:
            defaults = target_train_defaults()
            for label, mode, train in (("full mode", {"mode": "full"}, {}), ("lr 0.003", {}, {"lr": 0.003}),
                                       ("lr 0.03", {}, {"lr": 0.03}), ("l2 1e-4", {}, {"l2": 1e-4}),
                                       ("weight decay 1e-4", {}, {"weight_decay": 1e-4}),
                                       ("patience 6", {}, {"patience": 6}),
                                       ("random item init", {"item_init": "random"}, {})):
                config = FineTuneConfig(**mode, train=defaults.model_copy(update=train))
                print(f"  {label}: {score(fine_tune(source, split, config=config, seed=int(seed)).model)}", flush=True)
        if args.blends:
            joint = JointTrain.of_split(data.interactions, data.items, split)
            others = {"ease": fit_ease(EncodedTrain.of(split.train, catalogue), val).model,
                      "joint-ease": fit_joint_ease(joint, val).model,
                      "joint-als": fit_joint_als(joint, val, seed=int(seed)).model}
            for peer, model in others.items():
                tried = [(w, evaluate_model(blend(transfer, model, w, catalogue), val).metrics["ndcg_at_10"])
                         for w in BLEND_WEIGHTS]
                weight = max(tried, key=lambda t: t[1])[0]
                print(f"  {peer}: {score(model)}; blend at the validated weight {weight}: "
                      f"{score(blend(transfer, model, weight, catalogue))}", flush=True)
        if args.closed_form:
            points = [(a, l2) for a in (1.0, 5.0, 20.0, 80.0) for l2 in (1.0, 10.0, 100.0)]
            tried = list(zip(points, network_item_step(source, split, catalogue, points), strict=True))
            (a, l2), model = max(tried, key=lambda t: evaluate_model(t[1], val).metrics["ndcg_at_10"])
            print(f"  item step on the network source's users (alpha {a}, l2 {l2}, best on validation): "
                  f"{score(model)}", flush=True)
            recipe = fit_closed_form_transfer(JointTrain.of_split(data.interactions, data.items, split), val,
                                              seed=int(seed))
            print(f"  the closed-form recipe (ALS source; alpha {recipe.params['alpha']}, l2 {recipe.params['l2']}): "
                  f"{score(recipe.model)}", flush=True)
        if args.recipes:
            recipe = fit_closed_form_transfer(JointTrain.of_split(data.interactions, data.items, split), val,
                                              seed=int(seed))
            print(f"  the closed-form recipe: {score(recipe.model)}", flush=True)
            recipes.append((*(evaluate_model(m, task).metrics["ndcg_at_10"] for m in (transfer, recipe.model)
                              for task in (val, test)),))
    if recipes:
        print(recipe_margins(recipes))
    return 0


def recipe_margins(runs: list[tuple[float, float, float, float]]) -> str:
    """Per margin: how often the fine-tune is kept over the closed-form recipe (validation better by more than the
    margin), how often it then also tests better, and the mean test NDCG@10 of the recipe kept."""
    from models.transfer.closed_form import keeps_fine_tune

    lines = ["| margin | fine-tune kept | of those, better on test | mean test NDCG@10 of the recipe kept |",
             "|---|---|---|---|"]
    for margin in (0.0, 0.02, 0.05, 0.1, 0.25, float("inf")):
        kept = [r for r in runs if keeps_fine_tune(r[0], r[2], margin)]
        mean = np.mean([r[1] if keeps_fine_tune(r[0], r[2], margin) else r[3] for r in runs])
        label = "∞" if margin == float("inf") else f"{margin:.0%}"
        lines.append(f"| {label} | {len(kept)}/{len(runs)} | {sum(r[1] > r[3] for r in kept)} | {mean:.4f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())

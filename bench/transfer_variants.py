"""Ideas to make transfer better, each measured on the product's split against the default fine-tune: fine-tuning
hyper-parameters, validated blends with a target-only or a joint peer, and item vectors solved in closed form on
frozen source user vectors: the network source's (not adopted) and an implicit-ALS source's (the closed-form
recipe, adopted), and variants of that recipe (its users' recency step adopted, the others not). The ideas
docs/benchmarks.md reports as tried.

Usage (after `bench/quality.py` has registered the genres' source models in bench/results/mlflow.db):

    python bench/transfer_variants.py --cells Horror:0.1:0 --hyper-parameters
    python bench/transfer_variants.py --negatives --cells \
        Horror:0.05:0,Horror:0.1:0,Horror:0.3:0,Crime:0.05:0,Crime:0.1:0,Crime:0.3:0,\
        Thriller:0.05:0,Thriller:0.1:0,Thriller:0.3:0,Adventure:0.05:0,Adventure:0.1:0,Adventure:0.3:0
    python bench/transfer_variants.py --blends --cells \
        Horror:0.1:0,Crime:0.1:0,Sci-Fi:0.1:0,Thriller:0.1:0,Adventure:0.1:0,Horror:0.3:1,Crime:0.3:1,Thriller:0.3:1
    python bench/transfer_variants.py --cells Horror:0.1:0,Crime:0.1:0 --closed-form
    python bench/transfer_variants.py --cells Horror,Crime,Thriller,Adventure --recipes
    python bench/transfer_variants.py --recency --cells \
        Horror:0.05:0,Horror:0.1:0,Horror:0.3:0,Crime:0.05:0,Crime:0.1:0,Crime:0.3:0,\
        Thriller:0.05:0,Thriller:0.1:0,Thriller:0.3:0,Adventure:0.05:0,Adventure:0.1:0,Adventure:0.3:0
    python bench/transfer_variants.py --transitions --cells \
        Horror:0.05:0,Horror:0.1:0,Horror:0.3:0,Crime:0.05:0,Crime:0.1:0,Crime:0.3:0,\
        Thriller:0.05:0,Thriller:0.1:0,Thriller:0.3:0,Adventure:0.05:0,Adventure:0.1:0,Adventure:0.3:0
    python bench/transfer_variants.py --domain-weights --cells \
        Horror:0.05:0,Horror:0.1:0,Horror:0.3:0,Crime:0.05:0,Crime:0.1:0,Crime:0.3:0,\
        Thriller:0.05:0,Thriller:0.1:0,Thriller:0.3:0,Adventure:0.05:0,Adventure:0.1:0,Adventure:0.3:0
    python bench/transfer_variants.py --recipe-variants --cells \
        Horror:0.05:0,Horror:0.1:0,Horror:0.3:0,Crime:0.05:0,Crime:0.1:0,Crime:0.3:0,\
        Thriller:0.05:0,Thriller:0.1:0,Thriller:0.3:0,Adventure:0.05:0,Adventure:0.1:0,Adventure:0.3:0

Every variant of the fine-tune starts from the genre's ``all-others`` source (the newest registered version) and
prints its validation and test NDCG@10 next to the default fine-tune's. ``--recipe-variants`` alone needs no
registered source: it compares the closed-form recipe (its default grid) with

* ``user steps``: then one and two alternating steps on the joint pairs (each user's vector solved again on the
  source pairs at the source's confidence and the target's at the recipe's, then the catalogue's item step);
* ``item bias``: a per-item bias solved with the item vectors (a constant user feature ``c``, c in
  :data:`BIAS_FEATURES`, and the recipe's (alpha, l2) grid again), chosen on validation against the recipe;
* ``source grid``: the source model's factors and regularisation chosen on validation per onboarding
  (:data:`SOURCE_GRID`) instead of the fixed default;

and prints each one's mean validation and test NDCG@10 over the cells beside the recipe's and the joint peers'.
``--recency`` (no registered source either) does the same for the recipe's users' recency step: ``recency off``
(every source interaction alike, at the source model's confidence: the recipe before that step was adopted),
``recency r / a``, the step at the other points (``recency``, ``recency_alpha``) of :data:`RECENCY_GRID`, the joint
peers (the product's joint ALS takes the same step where validation prefers it), and joint ALS without the step
(``joint ALS, recency off``: the peer before it took the step) and with it always (``joint ALS, recent users``).
``--source-iterations`` (no registered source either) compares the recipe with the recipe whose source model is
fitted in fewer ALS iterations (:data:`SOURCE_ITERATIONS`). ``--transitions`` (no registered source either)
compares the recipe without its cross-domain transitions (``recipe``), with them (the default), with one of their
numbers changed (:data:`TRANSITION_VARIANTS`), the transitions alone, the target's own transitions alone (a
target-only sequential model) and the joint peers. ``--domain-weights`` (no registered source either) compares the
recipe with the recipe whose users' recency step weighs each source domain by its affinity to the target, at the
exponents of :data:`DOMAIN_WEIGHT_EXPONENTS` (:func:`domain_weight_variants`). ``--negatives`` compares the default
fine-tune (a full softmax over the target catalogue up to 1,024 items) with the same fine-tune on
:data:`SAMPLED_NEGATIVES` uniformly sampled negatives, and on the full softmax without each user's other training
items among its negatives (:func:`seen_masked`: the negatives the evaluation ranks against), and the recipe.
"""

from __future__ import annotations

import argparse
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
BLEND_WEIGHTS = tuple(round(0.1 * k, 1) for k in range(11))
#: The constant user feature of ``--recipe-variants``' item bias (its scale sets the bias's regularisation).
BIAS_FEATURES = (0.25, 0.5, 1.0, 2.0)
#: ``--recipe-variants``' source grid: (factors, regularization) of the recipe's source model.
SOURCE_GRID = ((64, 10.0), (64, 30.0), (128, 10.0), (128, 30.0))
#: ``--source-iterations``: the recipe's source model fitted in these ALS iterations (default 15).
SOURCE_ITERATIONS = (5, 8)
#: ``--recipe-variants``' recency points: (recency, recency_alpha) of the recipe's users' recency step.
RECENCY_GRID = ((2.0, 5.0), (5.0, 5.0), (10.0, 5.0), (2.0, 20.0), (10.0, 20.0), (10.0, 50.0), (20.0, 50.0))


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


#: ``--negatives``' sampled-softmax sizes (uniform negatives shared by a batch) against the default's full softmax.
SAMPLED_NEGATIVES = (64, 256)


@contextmanager
def seen_masked():
    """While open, the networks' full softmax leaves each pair's user's other training items out of its negatives,
    as the evaluation ranks only the items a user has not interacted with (by default every other item of the
    catalogue is a negative, a user's other positives included)."""
    import torch
    import torch.nn.functional as F

    from models.nets.lightning import RecommenderModule

    original = RecommenderModule.training_step

    def training_step(self, batch, batch_idx):
        users, items = batch
        if not hasattr(self, "_seen"):
            pairs_users, pairs_items = self.trainer.train_dataloader.dataset.tensors[:2]
            self._seen = torch.zeros(self.network.user_emb.num_embeddings, self.network.n_items, dtype=torch.bool)
            self._seen[pairs_users, pairs_items] = True
        others = self._seen[users]
        others[torch.arange(len(items)), items] = False
        loss = F.cross_entropy(self.network(users).masked_fill(others, float("-inf")), items)
        self._loss_sum = self._loss_sum + loss.detach() * len(users)
        self._loss_pairs += len(users)
        return loss

    RecommenderModule.training_step = training_step
    try:
        yield
    finally:
        RecommenderModule.training_step = original


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


def deduplicated(users: np.ndarray, items: np.ndarray, confidence: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each (user, item) pair once, at the confidence of its first row in (user, item) order."""
    order = np.lexsort((items, users))
    users, items, confidence = users[order], items[order], confidence[order]
    first = np.ones(len(users), dtype=bool)
    first[1:] = (users[1:] != users[:-1]) | (items[1:] != items[:-1])
    return users[first], items[first], confidence[first]


def recipe_variants(joint, val, test, seed: int) -> dict[str, tuple[float, float]]:
    """(validation, test) NDCG@10 of the closed-form recipe, its variants (module docstring) and the joint peers."""
    from dataclasses import replace

    from models.evaluation.ranking import ndcg_at
    from models.factors import FactorModel
    from models.transfer.als import fit_als_encoded
    from models.transfer.closed_form import ClosedFormGrid, fit_closed_form_transfer, item_step
    from models.transfer.recency import user_step

    grid = ClosedFormGrid()
    recipe = fit_closed_form_transfer(joint, val, grid=grid, seed=seed)
    out = {"recipe": (recipe.val_ndcg_at_10, ndcg_at(recipe.model, test))}
    encoded, n_catalogue, n_source = joint.encoded, joint.n_catalogue, joint.n_source
    target = slice(n_source, len(encoded.users))
    alpha, l2 = float(recipe.params["alpha"]), float(recipe.params["l2"])

    def model_of(user_factors, item_factors) -> FactorModel:
        return FactorModel(encoded.user_ids, encoded.item_ids[:n_catalogue], user_factors, item_factors,
                           recipe.model.item_bias, kind="transfer")

    # user steps: the recipe's source (the same fit) with the catalogue's solved vectors, then alternating steps
    source = fit_als_encoded(replace(encoded, users=encoded.users[:n_source], items=encoded.items[:n_source]),
                             factors=grid.factors, regularization=grid.regularization, alpha=grid.source_alpha,
                             iterations=grid.iterations, seed=seed)
    items = source.item_factors.copy()
    items[:n_catalogue] = recipe.model.item_factors
    confidence = np.concatenate([np.full(n_source, grid.source_alpha), np.full(len(encoded.users) - n_source, alpha)])
    pairs = deduplicated(encoded.users, encoded.items, confidence)  # repeats count once
    for step in (1, 2):
        users = user_step(items, *pairs, len(encoded.user_ids), l2=grid.regularization)
        items[:n_catalogue] = item_step(users, encoded.users[target], encoded.items[target], n_catalogue,
                                        [(alpha, l2)])[0]
        model = model_of(users, items[:n_catalogue].copy())
        out[f"user steps {step}"] = (ndcg_at(model, val), ndcg_at(model, test))
    # item bias: a constant user feature, its scale and the (alpha, l2) grid chosen on validation with the recipe
    best = (out["recipe"][0], recipe.model)
    points = [(a, w) for a in grid.alpha for w in grid.l2]
    for feature in BIAS_FEATURES:
        users = np.hstack([recipe.model.user_factors, np.full((len(encoded.user_ids), 1), feature, np.float32)])
        for vectors in item_step(users, encoded.users[target], encoded.items[target], n_catalogue, points):
            model = model_of(users, vectors)
            score = ndcg_at(model, val)
            best = (score, model) if score > best[0] else best
    out["item bias"] = (best[0], ndcg_at(best[1], test))
    # source grid: the source model's factors and regularisation chosen on validation
    tried = [fit_closed_form_transfer(joint, val, grid=replace(grid, factors=f, regularization=r), seed=seed)
             for f, r in SOURCE_GRID]
    chosen = max(tried, key=lambda t: t.val_ndcg_at_10)
    out["source grid"] = (chosen.val_ndcg_at_10, ndcg_at(chosen.model, test))
    return {**out, **joint_peers(joint, val, test, seed)}


def source_iteration_variants(joint, val, test, seed: int) -> dict[str, tuple[float, float]]:
    """(validation, test) NDCG@10 of the closed-form recipe and of the recipe whose source model is fitted in
    fewer ALS iterations (:data:`SOURCE_ITERATIONS`)."""
    from dataclasses import replace

    from models.evaluation.ranking import ndcg_at
    from models.transfer.closed_form import ClosedFormGrid, fit_closed_form_transfer

    default, out = ClosedFormGrid(), {}
    for iterations in (default.iterations, *SOURCE_ITERATIONS):
        fit = fit_closed_form_transfer(joint, val, grid=replace(default, iterations=iterations), seed=seed)
        out["recipe" if iterations == default.iterations else f"source iterations {iterations}"] = (
            fit.val_ndcg_at_10, ndcg_at(fit.model, test))
    return out


def fitted_joint_peers(joint, val, seed: int) -> dict:
    """Both joint peers tuned on ``val`` (their TunedResults by name)."""
    from models.transfer.joint import fit_joint_als, fit_joint_ease

    return {"joint-als": fit_joint_als(joint, val, seed=seed), "joint-ease": fit_joint_ease(joint, val, seed=seed)}


def joint_peers(joint, val, test, seed: int, fitted: dict | None = None) -> dict[str, tuple[float, float]]:
    """(validation, test) NDCG@10 of both joint peers (``fitted``: already tuned)."""
    from models.evaluation.ranking import ndcg_at

    return {name: (peer.val_ndcg_at_10, ndcg_at(peer.model, test))
            for name, peer in (fitted or fitted_joint_peers(joint, val, seed)).items()}


def recency_variants(joint, val, test, seed: int) -> dict[str, tuple[float, float]]:
    """(validation, test) NDCG@10 of the closed-form recipe, of the recipe without its users' recency step, at the
    other points of :data:`RECENCY_GRID`, of the joint peers (joint ALS chooses the same step on validation), and
    of joint ALS without the step and with it always."""
    from dataclasses import replace

    from models.evaluation.ranking import ndcg_at
    from models.transfer.closed_form import ClosedFormGrid, fit_closed_form_transfer
    from models.transfer.joint import JointGrid, fit_joint_als

    grid, out = ClosedFormGrid(), {}
    for recency, recency_alpha in ((grid.recency, grid.recency_alpha), (0.0, grid.recency_alpha), *RECENCY_GRID):
        point = fit_closed_form_transfer(joint, val, grid=replace(grid, recency=recency, recency_alpha=recency_alpha),
                                         seed=seed)
        name = ("recipe" if (recency, recency_alpha) == (grid.recency, grid.recency_alpha) else
                "recency off" if not recency else f"recency {recency:g} / {recency_alpha:g}")
        out[name] = (point.val_ndcg_at_10, ndcg_at(point.model, test))
    peers = fitted_joint_peers(joint, val, seed)
    out.update(joint_peers(joint, val, test, seed, peers))
    # the product's joint ALS chooses its users' recency step on validation; here without it and with it always
    for name, recency in (("joint ALS, recency off", 0.0), ("joint ALS, recent users", grid.recency)):
        forced = fit_joint_als(joint, val, grid=JointGrid(recency=(recency,)), seed=seed)
        out[name] = (forced.val_ndcg_at_10, ndcg_at(forced.model, test))
    return out


#: ``--transitions``' points: one field of the default TransitionGrid changed at a time.
TRANSITION_VARIANTS = (("window", 3), ("window", 50), ("decay", 3.0), ("popularity", 0.0), ("popularity", 1.0),
                       ("history", 10), ("history", 200), ("recency", 2.0), ("recency", 20.0))


def target_only_transitions(joint, grid, before):
    """The transitions of the target's training pairs alone (a target item after the earlier target items of the
    same user: what a target-only sequential model reads), scored on each user's target history: (n_users x
    n_catalogue), or None. Each pair is read twice, as history just after itself (so never its own transition) and
    as the target interaction."""
    from models.transfer.transitions import transition_scores

    target = slice(joint.n_source, len(joint.encoded.users))
    users, items = joint.encoded.users[target], joint.encoded.items[target]
    times = joint.timeline.times[target].astype(np.float64)
    return transition_scores(np.concatenate([users, users]), np.concatenate([items, items]),
                             np.concatenate([times + 0.5, times]), n_source=len(users),
                             n_users=len(joint.encoded.user_ids), n_items=joint.n_catalogue,
                             n_catalogue=joint.n_catalogue, grid=grid, before=before)


def transition_variants(joint, val, test, seed: int) -> dict[str, tuple[float, float]]:
    """(validation, test) NDCG@10 of the closed-form recipe without the transitions (``recipe``, the reference of
    the table), with them (the product's default), at the other points of :data:`TRANSITION_VARIANTS`, the
    transitions alone (a weight far above the recipe's), the target's own transitions alone (no source data), and
    the joint peers. Validation of the transitions is as of each user's validation period, as the product does."""
    from dataclasses import replace

    from models.evaluation.ranking import ndcg_at
    from models.transfer.closed_form import ClosedFormGrid, fit_closed_form_transfer
    from models.transfer.transitions import TransitionGrid, blended

    grid, out = ClosedFormGrid(), {}
    alone = fit_closed_form_transfer(joint, val, grid=replace(grid, transitions=None), seed=seed)
    out["recipe"] = (alone.val_ndcg_at_10, ndcg_at(alone.model, test))
    default = TransitionGrid()
    points = [("transitions (default)", default), *((f"{field} {value:g}", replace(default, **{field: value}))
                                                   for field, value in TRANSITION_VARIANTS),
              ("transitions alone", replace(default, weights=(1e6,)))]
    for name, transitions in points:
        fit = fit_closed_form_transfer(joint, val, grid=replace(grid, transitions=transitions), seed=seed)
        out[name] = (fit.val_ndcg_at_10, ndcg_at(fit.model, test))
    empty = replace(alone.model, user_factors=np.zeros((len(alone.model.user_ids), 0), np.float32),
                    item_factors=np.zeros((len(alone.model.item_ids), 0), np.float32),
                    item_bias=np.zeros(len(alone.model.item_ids), np.float32))
    scores = [target_only_transitions(joint, default, before) for before in (joint.timeline.validation, None)]
    out["target-only transitions alone"] = tuple(
        ndcg_at(blended(empty, s, 1.0, 1.0), task) if s is not None else float("nan")
        for s, task in zip(scores, (val, test), strict=True))
    out.update(joint_peers(joint, val, test, seed))
    return out


#: ``--domain-weights``: the exponents p of each source domain's affinity to the target (0: the recipe itself).
DOMAIN_WEIGHT_EXPONENTS = (1.0, 2.0, 4.0)


def domain_weight_variants(joint, val, test, seed: int, item_domains: dict) -> dict[str, tuple[float, float]]:
    """(validation, test) NDCG@10 of the closed-form recipe, and of the recipe whose users' recency step weighs
    each source interaction by its domain's affinity to the target (multi-source weighting by a selection
    signal): ``affinity_d`` = the share of domain d among the source interactions of the target's training users
    over its share among all source interactions; a pair's confidence ``w_d·(1 + c) - 1`` (``c``: the recipe's
    recency confidence), ``w_d = affinity_d^p`` scaled to a mean of one over the pairs (and clipped at zero),
    the carry-over's grid chosen on validation as the recipe's."""
    import itertools

    from models.evaluation.ranking import ndcg_at
    from models.transfer.closed_form import ClosedFormGrid, _carried_over, source_model
    from models.transfer.recency import recency_confidence, user_step

    grid = ClosedFormGrid()
    source = source_model(joint, grid, seed=seed)
    _, item_factors, _ = source.aligned(np.empty(0, dtype=object), joint.encoded.item_ids)
    domains, codes = np.unique(np.array([item_domains[i] for i in joint.encoded.item_ids]), return_inverse=True)
    users, items = joint.encoded.users[:joint.n_source], joint.encoded.items[:joint.n_source]
    in_target = np.zeros(len(joint.encoded.user_ids), dtype=bool)
    in_target[joint.encoded.users[joint.n_source:]] = True
    pair_domain = codes[items]
    overall = np.bincount(pair_domain, minlength=len(domains)) / len(pair_domain)
    among = np.bincount(pair_domain[in_target[users]], minlength=len(domains)) / max(1, in_target[users].sum())
    affinity = np.where(overall > 0, among / np.maximum(overall, 1e-12), 1.0)
    recency = recency_confidence(joint.source_recency, recency=grid.recency, alpha=grid.recency_alpha)
    points, out = list(itertools.product(grid.alpha, grid.l2)), {}
    for p in (0.0, *DOMAIN_WEIGHT_EXPONENTS):
        weight = affinity ** p
        weight = weight / weight[pair_domain].mean()
        confidence = np.maximum(weight[pair_domain] * (1.0 + recency) - 1.0, 0.0)
        user_factors = user_step(item_factors, users, items, confidence, len(joint.encoded.user_ids),
                                 l2=grid.regularization)
        scored = [(ndcg_at(model, val), model) for model in _carried_over(joint, user_factors, points)]
        best_val, best = max(scored, key=lambda t: t[0])
        out["recipe" if not p else f"domain weights p={p:g}"] = (best_val, ndcg_at(best, test))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", required=True, help="genre:fraction:seed,... (a genre alone: its nine cells, "
                                                           "fractions 0.05/0.1/0.3, seeds 0-2)")
    parser.add_argument("--hyper-parameters", action="store_true")
    parser.add_argument("--blends", action="store_true")
    parser.add_argument("--closed-form", action="store_true")
    parser.add_argument("--recipes", action="store_true", help="the fine-tune against the closed-form recipe, and "
                                                               "which the recipe margins keep")
    parser.add_argument("--recipe-variants", action="store_true", help="variants of the closed-form recipe (module "
                                                                       "docstring); needs no registered source")
    parser.add_argument("--recency", action="store_true", help="the closed-form recipe's users' recency step at other "
                                                                "points and without it; needs no registered source")
    parser.add_argument("--source-iterations", action="store_true", help="the closed-form recipe's source model "
                                                                         "fitted in fewer ALS iterations")
    parser.add_argument("--transitions", action="store_true", help="the recipe's cross-domain transitions at other "
                                                                    "points, alone, and the target's own transitions "
                                                                    "alone; needs no registered source")
    parser.add_argument("--domain-weights", action="store_true", help="the recipe's users' recency step with each "
                        "source domain weighted by its affinity to the target (module docstring)")
    parser.add_argument("--negatives", action="store_true", help="the fine-tune's negatives: sampled (uniform) "
                        "instead of the full softmax, and the full softmax without each user's other training items")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)
    fine_tunes = args.hyper_parameters or args.blends or args.closed_form or args.recipes or args.negatives

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
    variants: list[dict[str, tuple[float, float]]] = []
    cells = [c if ":" in c else f"{c}:{f}:{s}" for c in args.cells.split(",")
             for f, s in ([(None, None)] if ":" in c else [(f, s) for f in (0.05, 0.1, 0.3) for s in (0, 1, 2)])]
    for cell in cells:
        genre, fraction, seed = cell.split(":")
        split = split_with(data.interactions, data.items, domain=genre,
                           config=SplitConfig(fraction=float(fraction), seed=int(seed)))
        val, test = ranking_tasks(split, click_threshold=4.0)
        catalogue = catalogue_ids(split)
        item_domains = dict(zip(data.items["item_id"].to_list(), data.items["domain"].to_list(), strict=True))
        for wanted, measure in ((args.recipe_variants, recipe_variants), (args.recency, recency_variants),
                                (args.source_iterations, source_iteration_variants),
                                (args.transitions, transition_variants),
                                (args.domain_weights, partial(domain_weight_variants, item_domains=item_domains))):
            if wanted:
                variants.append(measure(JointTrain.of_split(data.interactions, data.items, split), val, test,
                                        int(seed)))
                print(cell, "  ".join(f"{k} {v:.4f}/{t:.4f}" for k, (v, t) in variants[-1].items()), flush=True)
        if not fine_tunes:
            continue
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
        if args.negatives:
            defaults, tried = target_train_defaults(), {"default": transfer}
            for n in SAMPLED_NEGATIVES:
                config = FineTuneConfig(train=defaults.model_copy(update={"n_negatives": n}))
                tried[f"{n} sampled negatives"] = fine_tune(source, split, config=config, seed=int(seed)).model
            with seen_masked():
                config = FineTuneConfig(train=defaults.model_copy(update={"n_negatives": 0}))
                tried["full softmax, seen items masked"] = fine_tune(source, split, config=config,
                                                                     seed=int(seed)).model
            tried["recipe"] = fit_closed_form_transfer(JointTrain.of_split(data.interactions, data.items, split), val,
                                                       seed=int(seed)).model
            variants.append({name: tuple(evaluate_model(model, task).metrics["ndcg_at_10"] for task in (val, test))
                             for name, model in tried.items()})
            print(cell, "  ".join(f"{k} {v:.4f}/{t:.4f}" for k, (v, t) in variants[-1].items()), flush=True)
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
    if variants:
        print(variant_table(variants))
    return 0


def variant_table(runs: list[dict[str, tuple[float, float]]]) -> str:
    """Each variant's mean validation and test NDCG@10 over the cells, its mean test lift over the recipe and over
    the better joint peer on test (where the runs have them), and the cells where it tests better than the recipe."""
    peers = "joint-als" in runs[0]
    peer = [max(run["joint-als"][1], run["joint-ease"][1]) for run in runs] if peers else []
    lines = ["| model | mean val NDCG@10 | mean test NDCG@10 | mean test lift vs the recipe | "
             + ("mean test lift vs the better joint peer | " if peers else "")
             + "cells better than the recipe on test |", "|---|---|---|---|" + ("---|" if peers else "") + "---|"]
    for name in runs[0]:
        val, test = (np.mean([run[name][k] for run in runs]) for k in (0, 1))
        over_recipe = np.mean([run[name][1] / run["recipe"][1] - 1 for run in runs])
        over_peer = (f" {np.mean([run[name][1] / p - 1 for run, p in zip(runs, peer, strict=True)]):+.1%} |"
                     if peers else "")
        better = sum(run[name][1] > run["recipe"][1] for run in runs)
        lines.append(f"| {name} | {val:.4f} | {test:.4f} | {over_recipe:+.1%} |{over_peer} {better}/{len(runs)} |")
    return "\n".join(lines)


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

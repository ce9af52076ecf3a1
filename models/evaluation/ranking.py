"""Full-ranking evaluation of factor models on a held-out set.

For every evaluated user (a user with at least one held-out interaction) the model scores **every item of
the target catalogue**; items the user interacted with in the data the model was given (train, and val when
evaluating test) are removed from the ranking; the top K are compared with the held-out items (any rating
counts as relevant). Metrics are defined in :mod:`models.evaluation.metrics`; CTR estimators in
:mod:`models.evaluation.ctr`.
Only the data a deployed model would have is excluded: training interactions dropped by the scarcity
sampling are neither excluded nor relevant.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import polars as pl
import torch

from data_contracts.columns import CLICKED, ITEM_ID, PROPENSITY, RATING, TIMESTAMP, USER_ID
from models.evaluation.ctr import IPS, SNIPS, CtrResult, OffPolicyResult, logged_slate_ctrs, off_policy_table
from models.evaluation.metrics import catalogue_coverage, per_user_metrics, per_user_novelty
from models.factors import FactorModel, index_of


@dataclass(frozen=True)
class Csr:
    """Per-row column lists (compressed sparse rows, no values)."""

    indptr: np.ndarray  # (rows + 1,) int64
    indices: np.ndarray  # (nnz,) int64

    def row(self, r: int) -> np.ndarray:
        """Columns of row ``r``."""
        return self.indices[self.indptr[r]:self.indptr[r + 1]]

    def lengths(self) -> np.ndarray:
        """Number of columns per row."""
        return np.diff(self.indptr)

    def entries(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(position in ``rows``, column) of every entry of the given rows, as int64 arrays."""
        starts, ends = self.indptr[rows], self.indptr[rows + 1]
        lengths = ends - starts
        row_ids = np.repeat(np.arange(len(rows)), lengths)
        # position of each entry: its row's start plus its offset within the row
        offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        return row_ids.astype(np.int64), self.indices[np.repeat(starts, lengths) + offsets].astype(np.int64)

    def dense(self, rows: np.ndarray, n_cols: int) -> torch.Tensor:
        """Bool mask (len(rows), n_cols) of the given rows."""
        mask = torch.zeros((len(rows), n_cols), dtype=torch.bool)
        row_ids, cols = self.entries(rows)
        if len(row_ids):
            mask[torch.from_numpy(row_ids), torch.from_numpy(cols)] = True
        return mask

    def contains(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Whether row ``rows[i]`` holds column ``cols[i, j]``: a bool array shaped like ``cols`` (len(rows), k),
        found by a sorted search over the rows' entries (no dense (rows x columns) mask)."""
        row_ids, entry_cols = self.entries(rows)
        width = int(max(cols.max(initial=0), entry_cols.max(initial=0))) + 1
        keys = np.sort(row_ids * width + entry_cols)
        wanted = np.arange(len(rows), dtype=np.int64)[:, None] * width + cols.astype(np.int64)
        if not len(keys):
            return np.zeros(cols.shape, dtype=bool)
        found = np.searchsorted(keys, wanted)
        return keys[np.minimum(found, len(keys) - 1)] == wanted


def csr_from_pairs(rows: np.ndarray, cols: np.ndarray, n_rows: int) -> Csr:
    """CSR from (row, col) pairs; duplicate pairs are kept once, columns sorted within a row."""
    if len(rows) == 0:
        return Csr(np.zeros(n_rows + 1, dtype=np.int64), np.zeros(0, dtype=np.int64))
    # one int64 key per pair, sorted and deduplicated: the (row, col) order of np.unique(axis=0). A sort and a
    # neighbour comparison, not np.unique: at 8 M pairs 0.1 s against 11 s for numpy 2.4's 1-d unique
    width = int(cols.max()) + 1
    keys = np.sort(rows.astype(np.int64) * width + cols.astype(np.int64))
    keys = keys[np.concatenate([[True], keys[1:] != keys[:-1]])]
    counts = np.bincount(keys // width, minlength=n_rows)
    return Csr(np.concatenate([[0], np.cumsum(counts)]).astype(np.int64), keys % width)


@dataclass(frozen=True)
class RankingTask:
    """What to rank for whom: evaluated users, the catalogue, the items to exclude and the relevant items."""

    user_ids: np.ndarray  # (users,) raw ids
    item_ids: np.ndarray  # (items,) raw ids = ranking columns
    exclude: Csr
    relevant: Csr
    impressions: Csr  # items shown to each user in the held-out period (for CTR)
    clicks: np.ndarray  # (impressions nnz,) bool, aligned with impressions.indices

    @property
    def n_users(self) -> int:
        """Number of evaluated users."""
        return len(self.user_ids)


def build_ranking_task(
    catalogue_ids: np.ndarray,
    holdout: pl.DataFrame,
    seen: pl.DataFrame,
    *,
    click_threshold: float = 4.0,
) -> RankingTask:
    """Build the ranking task of ``holdout`` (the users to evaluate and their relevant items).

    Args:
        catalogue_ids: the items to rank (target catalogue).
        holdout: held-out interactions; every user in it is evaluated.
        seen: interactions the model was given; their items are excluded from each user's ranking.
        click_threshold: an impression (a held-out rated item) counts as a click when ``rating >= threshold``.
    """
    items = np.asarray(catalogue_ids, dtype=object)
    # Only held-out items of the catalogue are relevant; users with none of them are not evaluated.
    holdout = holdout.filter(pl.col(ITEM_ID).is_in(pl.Series(items, dtype=pl.String).implode()))
    users = np.sort(holdout[USER_ID].unique().to_numpy()).astype(object)
    # only the evaluated users' seen items matter (the others' are dropped below): a validation sample of
    # 20,000 users at 10 M interactions looked up all 8 M training rows
    seen = seen.filter(pl.col(USER_ID).is_in(holdout[USER_ID].unique().implode()))

    def pairs(frame: pl.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        r = index_of(users, frame[USER_ID])
        c = index_of(items, frame[ITEM_ID])
        keep = (r >= 0) & (c >= 0)
        return r[keep], c[keep], keep

    relevant = csr_from_pairs(*pairs(holdout)[:2], len(users))
    exclude = csr_from_pairs(*pairs(seen)[:2], len(users))
    # Impressions keep each (user, item) once with its best rating.
    shown = holdout.group_by(USER_ID, ITEM_ID).agg(pl.col(RATING).max())
    r, c, keep = pairs(shown)
    clicked = (shown[RATING].to_numpy() >= click_threshold)[keep]
    order = np.lexsort((c, r))
    counts = np.bincount(r, minlength=len(users))
    impressions = Csr(np.concatenate([[0], np.cumsum(counts)]).astype(np.int64), c[order].astype(np.int64))
    return RankingTask(users, items, exclude, relevant, impressions, clicked[order])


#: The most scores (users x items) a batch of :func:`score_batches` holds: 512 MB of float32. Catalogues up to
#: 65,536 items keep batches of 2,048 users; at 200,000 items a batch of 2,048 took 1.6 GB.
MAX_SCORE_CELLS = 1 << 27


def score_batches(model: FactorModel, task: RankingTask, batch_size: int = 2048):
    """Yield ``(row_positions, scores)`` with scores (batch, items) of ``model`` on the task's catalogue, at most
    ``batch_size`` users and :data:`MAX_SCORE_CELLS` scores a batch."""
    batch_size = max(1, min(batch_size, MAX_SCORE_CELLS // max(len(task.item_ids), 1)))
    u, v, b = model.aligned(task.user_ids, task.item_ids)
    u_t, v_t, b_t = torch.from_numpy(u), torch.from_numpy(v), torch.from_numpy(b)
    for start in range(0, task.n_users, batch_size):
        rows = np.arange(start, min(start + batch_size, task.n_users))
        # the bias added inside the product: one pass over the scores instead of two (the same values on the
        # CPU as ``u @ v.T + b``; at 10 M interactions the second pass was a third of the evaluation)
        yield rows, torch.addmm(b_t, u_t[start:start + len(rows)], v_t.T)


def topk_hits(scores: torch.Tensor, rows: np.ndarray, exclude: Csr, relevant: Csr, k: int
              ) -> tuple[np.ndarray, np.ndarray]:
    """Top-k columns (after removing the ``exclude`` items) and their hit matrix against ``relevant`` for a
    batch of ``rows`` (a task's, or validation's). ``scores`` is changed in place (its excluded items set to
    -inf): no second (rows x items) tensor, no dense masks."""
    row_ids, cols = exclude.entries(rows)
    if len(row_ids):
        scores[torch.from_numpy(row_ids), torch.from_numpy(cols)] = float("-inf")
    k = min(k, scores.shape[1])
    top = torch.topk(scores, k=k, dim=1).indices.numpy()
    return top, relevant.contains(rows, top)


@dataclass(frozen=True)
class Evaluation:
    """Mean metrics plus the per-user values they came from (for confidence intervals and slices)."""

    metrics: dict[str, float]
    per_user: dict[str, np.ndarray]
    n_users: int
    ctr: CtrResult | None


def evaluate_model(
    model: FactorModel, task: RankingTask, *, ks: tuple[int, ...] = (10,), ctr_k: int | None = 3,
    batch_size: int = 2048,
) -> Evaluation:
    """Full-ranking metrics at every ``k`` in ``ks`` plus logged-slate CTR@``ctr_k`` (see module docs; ``None``:
    no CTR, whatever impressions the task has)."""
    return evaluate_models({"": model}, task, ks=ks, ctr_k=ctr_k, batch_size=batch_size)[""]


def evaluate_models(
    models: Mapping[str, FactorModel], task: RankingTask, *, ks: tuple[int, ...] = (10,), ctr_k: int | None = 3,
    batch_size: int = 2048,
) -> dict[str, Evaluation]:
    """:func:`evaluate_model` of several models on the same task, by name: one set of bootstrap resamples serves
    every model's CTR interval (:func:`models.evaluation.ctr.logged_slate_ctrs`)."""
    with_ctr = ctr_k is not None and task.impressions.indices.size > 0
    ranked = {name: _ranking_metrics(model, task, ks, batch_size, with_ctr) for name, model in models.items()}
    ctrs: dict[str, CtrResult] = {}
    if with_ctr and ranked:
        assert ctr_k is not None
        ctrs = logged_slate_ctrs({name: slates for name, (_, _, slates) in ranked.items()}, task.impressions.indptr,
                                 task.clicks, k=ctr_k)
    return {name: Evaluation({**metrics, **(ctrs[name].metrics() if name in ctrs else {})}, joined, task.n_users,
                             ctrs.get(name))
            for name, (metrics, joined, _) in ranked.items()}


def _ranking_metrics(model: FactorModel, task: RankingTask, ks: tuple[int, ...], batch_size: int,
                     slates: bool) -> tuple[dict[str, float], dict[str, np.ndarray], np.ndarray]:
    """(mean metrics, per-user metrics, the model's score of every impression when ``slates``) of one model."""
    max_k = min(max(ks), len(task.item_ids))
    n_relevant = task.relevant.lengths()
    per_user: dict[str, list[np.ndarray]] = {}
    slate_scores: list[np.ndarray] = []
    # popularity among the items the model was given (training for validation, training + validation for
    # test): the reference of novelty
    seen_counts = np.bincount(task.exclude.indices, minlength=len(task.item_ids))
    tops: list[np.ndarray] = []
    for rows, scores in score_batches(model, task, batch_size):
        if slates:  # scores of each user's impressions, for the CTR re-ranking (before topk_hits masks seen items)
            lengths = task.impressions.lengths()[rows]
            row_ids = np.repeat(np.arange(len(rows)), lengths)
            cols = task.impressions.indices[task.impressions.indptr[rows[0]]:task.impressions.indptr[rows[-1] + 1]]
            slate_scores.append(scores[torch.from_numpy(row_ids), torch.from_numpy(cols)].numpy())
        top, hits = topk_hits(scores, rows, task.exclude, task.relevant, max_k)
        if hits.shape[1] < max(ks):  # tiny catalogue: pad with misses
            hits = np.pad(hits, ((0, 0), (0, max(ks) - hits.shape[1])))
        for k in ks:
            for name, values in per_user_metrics(hits, n_relevant[rows], k).items():
                per_user.setdefault(f"{name}_at_{k}", []).append(values)
            per_user.setdefault(f"novelty_at_{k}", []).append(per_user_novelty(top, seen_counts, k))
        tops.append(top)
    joined = {name: np.concatenate(parts) for name, parts in per_user.items()}
    metrics = {name: float(values.mean()) for name, values in joined.items()}
    every_top = np.concatenate(tops) if tops else np.zeros((0, max_k), dtype=np.int64)
    metrics.update({f"coverage_at_{k}": catalogue_coverage(every_top, len(task.item_ids), k) for k in ks})
    return metrics, joined, np.concatenate(slate_scores) if slate_scores else np.zeros(0, dtype=np.float32)


def ndcg_at(model: FactorModel, task: RankingTask, k: int = 10) -> float:
    """Mean NDCG@``k`` of ``model`` on ``task``: what tuning, recipe choices and probes compare (the metric of
    :func:`evaluate_model`, without the logged-slate CTR and its bootstrap, which they never read)."""
    return evaluate_model(model, task, ks=(k,), ctr_k=None).metrics[f"ndcg_at_{k}"]


def test_period_impressions(impressions: pl.DataFrame, cutoffs: pl.DataFrame, catalogue_ids: np.ndarray
                            ) -> pl.DataFrame:
    """Impressions of catalogue items at or after each user's first test interaction (``cutoffs``: user_id,
    cutoff): the period the models are evaluated on; users without a test period are dropped."""
    items = pl.Series(np.asarray(catalogue_ids, dtype=object), dtype=pl.String).implode()
    return (impressions.filter(pl.col(ITEM_ID).is_in(items))
            .join(cutoffs, on=USER_ID, how="inner", validate="m:1")
            .filter(pl.col(TIMESTAMP) >= pl.col("cutoff")).drop("cutoff"))


def off_policy_by_model(models: dict[str, FactorModel], task: RankingTask, impressions: pl.DataFrame,
                        *, seed: int = 0) -> dict[str, dict[str, OffPolicyResult]]:
    """IPS and SNIPS CTR of each model's policy "show its top-1 item" (seen items excluded, as in the ranking),
    by model name, from logged impressions with a ``propensity`` column (see :mod:`models.evaluation.ctr`);
    impressions of users outside ``task`` are not used; empty for each model when no impression is usable. Each
    model's bootstrap draws only the impressions its policy would show
    (:func:`~models.evaluation.ctr.off_policy_table`)."""
    rows = index_of(task.user_ids, impressions[USER_ID])
    cols = index_of(task.item_ids, impressions[ITEM_ID])
    keep = (rows >= 0) & (cols >= 0)
    if not models or not keep.any():
        return {name: {} for name in models}
    chosen = {}
    for name, model in models.items():
        top1 = np.empty(task.n_users, dtype=np.int64)
        for batch_rows, scores in score_batches(model, task):
            top, _ = topk_hits(scores, batch_rows, task.exclude, task.relevant, 1)
            top1[batch_rows] = top[:, 0]
        chosen[name] = (cols[keep] == top1[rows[keep]]).astype(np.float64)
    propensity = impressions[PROPENSITY].to_numpy()[keep]
    clicks = impressions[CLICKED].to_numpy()[keep].astype(bool)
    return off_policy_table(chosen, propensity, clicks, estimators=(IPS, SNIPS), seed=seed)

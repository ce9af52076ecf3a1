"""Click-through-rate estimators from impression logs.

**Logged-slate CTR@K** (``ctr_at_K``): for every user, re-rank the items that user was actually shown
(their impressions) by the model's score and keep the top ``K`` (all of them when fewer were shown); the
estimate is the click share of the kept impressions, pooled over users (sum of clicks / sum of kept
impressions). It is reported next to

* ``ctr_logged``: the click share of all impressions (what the logged order achieved), and
* ``ctr_random_at_K``: the expected logged-slate CTR@K of a uniformly random re-ranking.

**IPS / SNIPS** (:func:`off_policy_ctr`), when the impressions carry the logging policy's propensity
``p0(i | u)`` (the probability the logged item was the one shown): the CTR the model's own policy would get
in the one-slot setting, ``IPS = mean(click * pi(i | u) / p0)``, and the self-normalised
``SNIPS = sum(click * w) / sum(w)`` with ``w = pi(i | u) / p0`` (a little biased, much less variance). Both
are unbiased/consistent only when the logging policy gave every item the new policy picks a non-zero chance,
and come with a bootstrap interval over impressions.

What the logged-slate number estimates: how well the model orders items a user was shown anyway. It does not
estimate the CTR of items the model would show that were never shown (no counterfactual correction). For
MovieLens the impressions are the user's held-out rated items and a click is ``rating >= 4``; most users have
few held-out ratings, so this number separates models only weakly: report it, never select on it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from models.evaluation.uncertainty import resample_counts, subset_resample_counts

ESTIMATOR = "logged-slate re-rank"


@dataclass(frozen=True)
class CtrResult:
    """A CTR estimate with its name and sample size."""

    k: int
    ctr_at_k: float
    ctr_logged: float
    ctr_random_at_k: float
    users: int
    impressions: int
    estimator: str = ESTIMATOR
    ci_low: float = float("nan")  # 95 % bootstrap interval of ctr_at_k, users resampled
    ci_high: float = float("nan")

    def metrics(self) -> dict[str, float]:
        """Flat metric dict (``ctr_at_K`` with its interval, ``ctr_logged``, ``ctr_random_at_K``)."""
        return {
            f"ctr_at_{self.k}": self.ctr_at_k,
            f"ctr_at_{self.k}_ci_low": self.ci_low,
            f"ctr_at_{self.k}_ci_high": self.ci_high,
            "ctr_logged": self.ctr_logged,
            f"ctr_random_at_{self.k}": self.ctr_random_at_k,
        }


def logged_slate_ctr(scores: np.ndarray, indptr: np.ndarray, clicks: np.ndarray, *, k: int) -> CtrResult:
    """Logged-slate CTR@k (see module docs).

    Args:
        scores: model score of every impression, grouped by user as given by ``indptr``.
        indptr: (users + 1,) offsets of each user's impressions.
        clicks: bool per impression.
        k: slate size.

    Raises:
        ValueError: when the arrays disagree in length or ``k < 1``.
    """
    return logged_slate_ctrs({"": scores}, indptr, clicks, k=k)[""]


def logged_slate_ctrs(scores: Mapping[str, np.ndarray], indptr: np.ndarray, clicks: np.ndarray, *,
                      k: int) -> dict[str, CtrResult]:
    """:func:`logged_slate_ctr` of several models on the same impressions, by name: the bootstrap draws depend
    only on the users, so one set of resamples serves every model's interval (each the interval its own call
    gives).

    Raises:
        ValueError: when the arrays disagree in length or ``k < 1``.
    """
    if k < 1:
        raise ValueError("k must be >= 1")
    if any(len(values) != len(clicks) for values in scores.values()) or indptr[-1] != len(clicks):
        raise ValueError("scores, clicks and indptr disagree")
    lengths = np.diff(indptr)
    users = lengths > 0
    kept = np.minimum(lengths, k)
    owner = np.repeat(np.arange(len(lengths)), lengths)
    rank = np.arange(len(clicks)) - indptr[owner]  # owner is sorted, so position in order - user's first row
    in_top = rank < kept[owner]
    top_clicks = {}
    for name, values in scores.items():
        # every user's impressions by descending score at once; ties keep the logged order (the position breaks
        # them)
        order = np.lexsort((np.arange(len(clicks)), -np.asarray(values, dtype=np.float64), owner))
        top_clicks[name] = np.bincount(owner[in_top], weights=clicks[order][in_top].astype(np.float64),
                                       minlength=len(lengths))
    intervals = _ratio_intervals(np.stack([top[users] for top in top_clicks.values()]),
                                 kept[users].astype(np.float64))
    clicks_per_user = np.add.reduceat(clicks.astype(np.float64), indptr[:-1][users]) if users.any() else np.zeros(0)
    random_clicks = (kept[users] * clicks_per_user / lengths[users]).sum()
    total_kept = kept[users].sum()
    return {name: CtrResult(
        k=k,
        ctr_at_k=float(top.sum() / total_kept) if total_kept else float("nan"),
        ctr_logged=float(clicks.mean()) if len(clicks) else float("nan"),
        ctr_random_at_k=float(random_clicks / total_kept) if total_kept else float("nan"),
        users=int(users.sum()),
        impressions=int(len(clicks)),
        ci_low=low,
        ci_high=high,
    ) for (name, top), (low, high) in zip(top_clicks.items(), intervals, strict=True)}


def _ratio_intervals(numerators: np.ndarray, denominator: np.ndarray, *, n_bootstrap: int = 1000,
                     confidence: float = 0.95, seed: int = 0) -> list[tuple[float, float]]:
    """Percentile-bootstrap interval of ``sum(numerators[j]) / sum(denominator)`` for each row ``j`` of
    ``numerators`` (rows, users), the users resampled (the same resamples for every row)."""
    if numerators.shape[1] == 0:
        return [(float("nan"), float("nan"))] * len(numerators)
    columns = np.column_stack([*numerators, denominator]).astype(np.float64)
    sums = np.concatenate([counts @ columns for counts in resample_counts(len(columns), n_bootstrap=n_bootstrap,
                                                                          seed=seed)])
    ratios = sums[:, :-1] / np.maximum(sums[:, -1:], 1e-12)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(ratios, tail, axis=0), np.quantile(ratios, 1.0 - tail, axis=0)
    return [(float(a), float(b)) for a, b in zip(low, high, strict=True)]


IPS, SNIPS = "IPS", "SNIPS"


@dataclass(frozen=True)
class OffPolicyResult:
    """An off-policy CTR estimate with its interval and sample size."""

    estimator: str
    ctr: float
    low: float
    high: float
    impressions: int
    effective_sample_size: float  # (sum w)^2 / sum w^2: how many impressions the weights are worth


def off_policy_ctr(target_probability: np.ndarray, logging_propensity: np.ndarray, clicks: np.ndarray, *,
                   estimator: str = SNIPS, n_bootstrap: int = 1000, confidence: float = 0.95,
                   seed: int = 0) -> OffPolicyResult:
    """IPS or SNIPS estimate of the CTR of a new policy from logged impressions (see the module docs).

    Args:
        target_probability: per impression, the probability the new policy shows the logged item to the user.
        logging_propensity: per impression, the probability the logging policy showed it (> 0).
        clicks: bool per impression.
        estimator: ``IPS`` or ``SNIPS``.

    Raises:
        ValueError: on mismatched lengths, non-positive propensities or an unknown estimator.
    """
    return off_policy_table({"": target_probability}, logging_propensity, clicks, estimators=(estimator,),
                            n_bootstrap=n_bootstrap, confidence=confidence, seed=seed)[""][estimator]


def off_policy_table(target_probabilities: dict[str, np.ndarray], logging_propensity: np.ndarray,
                     clicks: np.ndarray, *, estimators: tuple[str, ...] = (IPS, SNIPS), n_bootstrap: int = 1000,
                     confidence: float = 0.95, seed: int = 0) -> dict[str, dict[str, OffPolicyResult]]:
    """:func:`off_policy_ctr` of several policies and estimators on the same logged impressions, by policy name
    then estimator. A policy's bootstrap resamples the ``n`` impressions but draws only the counts of those it
    would show (:func:`~models.evaluation.uncertainty.subset_resample_counts`: exact, and the cost grows with
    them, not with ``n``), from the seed: one set serves both estimators, and each policy gets the interval its
    own call gives."""
    p0 = np.asarray(logging_propensity, dtype=np.float64)
    clicked = np.asarray(clicks, dtype=np.float64)
    names = list(target_probabilities)
    pi = np.stack([np.asarray(target_probabilities[name], dtype=np.float64) for name in names]) if names else None
    if pi is None or pi.shape[1] != len(p0) or len(p0) != len(clicked) or len(p0) == 0:
        raise ValueError("target probabilities, propensities and clicks must be non-empty and of one length")
    if (p0 <= 0).any():
        raise ValueError("logging propensities must be > 0 (an item the logger never shows cannot be weighted)")
    unknown = [name for name in estimators if name not in (IPS, SNIPS)]
    if unknown:
        raise ValueError(f"unknown estimator {unknown[0]!r}: use {IPS} or {SNIPS}")
    weights = pi / p0  # (policies, n)
    n = len(p0)
    tail = (1.0 - confidence) / 2.0
    out: dict[str, dict[str, OffPolicyResult]] = {}
    for index, policy in enumerate(names):
        w, total = weights[index], weights[index].sum()
        # an impression the policy would not show adds nothing to a resample's sums: only the others' counts are
        # drawn, from the seed, so a policy's interval is the one its own call gives whatever else is compared
        shown = np.flatnonzero(w)
        shown_weights = w[shown]
        shown_rewards = shown_weights * clicked[shown]
        resampled: dict[str, list[np.ndarray]] = {name: [] for name in estimators}
        # 25 resamples at a time: their counts take 200 bytes a shown impression
        for counts in subset_resample_counts(n, len(shown), n_bootstrap=n_bootstrap, seed=seed, batch=25):
            hits = counts @ shown_rewards  # each resample's sum, without gathering every drawn row
            if IPS in resampled:
                resampled[IPS].append(hits / n)
            if SNIPS in resampled:
                drawn_weight = counts @ shown_weights
                resampled[SNIPS].append(np.divide(hits, drawn_weight, out=np.zeros_like(hits),
                                                  where=drawn_weight > 0))
        points = {IPS: float((w * clicked).mean()), SNIPS: float((w * clicked).sum() / total) if total > 0 else 0.0}
        effective = float(total ** 2 / max((w ** 2).sum(), 1e-12))
        out[policy] = {}
        for name in estimators:
            values = np.concatenate(resampled[name])
            out[policy][name] = OffPolicyResult(
                estimator=name, ctr=points[name], low=float(np.quantile(values, tail)),
                high=float(np.quantile(values, 1.0 - tail)), impressions=n, effective_sample_size=effective)
    return out

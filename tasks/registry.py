"""Task that registers the onboarding's winner and moves ``champion`` only through the gate."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from models.config import EvalConfig
from models.evaluation.ranking import RankingTask, evaluate_model
from models.evaluation.uncertainty import clears_gate, paired_lift_interval
from tasks import tracking
from tasks.evaluation import ModelReport
from tasks.locks import registry_lock
from tasks.refit import Served

#: The models transfer must beat: the target-only popularity, implicit ALS, the same network from scratch, EASE
#: and item-item kNN, and the joint peers ALS and EASE retrained on the time-safe source data plus the target's
#: (models.transfer.joint). A peer the data is too large for, or a joint peer without the target dataset's own
#: source interactions (sources from another dataset or the catalogue), is absent from an onboarding.
BASELINES = ("popularity", "als", "scratch", "ease", "itemknn", "joint-als", "joint-ease")
METRIC = "ndcg_at_10"


def baselines(reports: dict[str, Any]) -> list[str]:
    """The baselines this onboarding has (in :data:`BASELINES` order)."""
    return [b for b in BASELINES if b in reports]


@dataclass(frozen=True)
class Registration:
    """What was registered and what the gate decided."""

    winner: str
    registered_model: str | None
    version: str | None
    aliases: list[str] = field(default_factory=list)
    promoted: bool = False
    reason: str = ""
    champion_before: str | None = None
    evidence: dict[str, float] = field(default_factory=dict)


def guard(val_ndcg: dict[str, float]) -> tuple[str, str]:
    """The negative-transfer guard on validation NDCG@10 by model: transfer wins when it beats every baseline
    present; else the best baseline (ties: popularity, the simplest). Returns ``(winner, why)``."""
    transfer = val_ndcg["transfer"]
    best_baseline = max(baselines(val_ndcg), key=lambda b: (val_ndcg[b], b == "popularity"))
    best = val_ndcg[best_baseline]
    if transfer > best:
        return "transfer", (f"transfer beats the best baseline ({best_baseline}) on validation: "
                            f"{transfer:.4f} > {best:.4f}")
    return best_baseline, (f"negative-transfer guard: transfer {transfer:.4f} does not beat {best_baseline} "
                           f"{best:.4f} on validation, so {best_baseline} is registered instead")


def choose_winner(reports: dict[str, ModelReport]) -> tuple[str, str]:
    """:func:`guard` on the reports' validation NDCG@10."""
    return guard({name: report.val.metrics[METRIC] for name, report in reports.items()})


def logged_models(reports: dict[str, ModelReport], which: str) -> tuple[str, ...]:
    """The models logged as servable MLflow models (``TrackingConfig.log_models``): every one (``"all"``) or the
    guard's winner alone (``"winner"``), the one a registration can serve (its refit is logged apart)."""
    return tuple(reports) if which == "all" else (choose_winner(reports)[0],)


@task(name="register-model", cache_policy=NO_CACHE)
def register_winner(
    reports: dict[str, ModelReport], domain: str, test_task: RankingTask, run: tracking.TrackingContext,
    evaluation: EvalConfig, *, margin: float, tags: dict[str, str], served: Served | None = None,
    datasets: list[tracking.DatasetRecord] | None = None,
) -> Registration:
    """Register the winner with alias ``challenger``; move ``champion`` only when it earns it.

    The winner is what the guard picks on validation: transfer when it beats every baseline, else the best
    baseline (a joint peer, say). ``champion`` moves to it when there is no champion yet, or when it beats the
    champion re-evaluated now on this run's test users: relative NDCG@10 lift above ``margin`` *and* its paired
    bootstrap 95 % interval above zero. Anything raised before the aliases are set leaves the registry as it was.

    With ``served`` (the winner refitted on all of the target's data, :mod:`tasks.refit`), the refit's weights are
    the version and its tags name the evaluated run and model that vouch for them. ``datasets`` (the run's
    lineage) are tagged on the version too, ``dataset:<name>`` = ``<digest> <location>``
    (:func:`tasks.tracking.dataset_tag`), so its page lists
    them. The gate always compares evaluated models: the champion's evaluated model when it was a refit (its
    own weights saw test periods).
    """
    log = get_run_logger()
    winner, why = choose_winner(reports)
    report = reports[winner]
    assert served is None or served.refit.winner == winner, "the refit must be of the guard's winner"
    name = tracking.registered_model_name(domain)
    with registry_lock(run.uri, name):  # one champion decision at a time per registered model
        champion = tracking.alias_version(run.uri, name, tracking.CHAMPION)
        evidence = {"challenger_val_ndcg_at_10": report.val.metrics[METRIC],
                    "challenger_test_ndcg_at_10": report.test.metrics[METRIC]}
        if champion is None:
            promote, reason = True, f"{why}; no champion yet"
        else:
            # a refit champion is judged by the model its evaluation measured (its weights saw test periods)
            current = tracking.load_factor_model(
                run.uri, champion.tags.get(tracking.EVALUATED_MODEL_TAG) or f"models:/{name}/{champion.version}")
            champion_eval = evaluate_model(current, test_task, ks=(10,), ctr_k=evaluation.ctr_k)
            lift = paired_lift_interval(report.test.per_user[METRIC], champion_eval.per_user[METRIC])
            evidence.update({"champion_test_ndcg_at_10": champion_eval.metrics[METRIC],
                             "lift_over_champion": lift.estimate, "lift_over_champion_ci_low": lift.low,
                             "lift_over_champion_ci_high": lift.high})
            promote = clears_gate(lift, margin)
            verdict = ("beats" if promote else
                       "does not beat" if lift.estimate <= margin else "is not distinguishable from")
            reason = (f"{why}; challenger {verdict} champion v{champion.version} on this run's test users: NDCG@10 "
                      f"{evidence['challenger_test_ndcg_at_10']:.4f} vs {champion_eval.metrics[METRIC]:.4f}, lift "
                      f"{lift.estimate:+.1%} (95 % CI {lift.low:+.1%} .. {lift.high:+.1%}; needs > {margin:.1%} with "
                      f"the interval above zero)")
        assert report.model_uri is not None, "the winner's model must be logged before registration"
        version_tags = {**tags, "winner": winner, "run_id": run.run_id,
                        "promotion": "promoted" if promote else "not-promoted", "promotion_reason": reason[:4000],
                        "champion_before": champion.version if champion else "none",
                        **{k: f"{v:.6f}" for k, v in evidence.items()}}
        if winner != "transfer":
            version_tags["guard"] = "negative-transfer"
        model_uri, model_run = report.model_uri, report.run_id or run.run_id
        if served is not None:  # users get the refit; the evaluated model stays what the numbers speak for
            model_uri, model_run = served.model_uri, served.run_id
            version_tags.update({"served": "refit on train+validation+test",
                                 tracking.EVALUATED_RUN_TAG: served.evaluated_run_id,
                                 tracking.EVALUATED_MODEL_TAG: served.evaluated_model_uri,
                                 **{f"refit_rows_{part}": str(n) for part, n in served.refit.rows.items()}})
        else:
            version_tags.update({"served": "evaluated model (trained on the training split)",
                                 tracking.EVALUATED_RUN_TAG: report.run_id or run.run_id,
                                 tracking.EVALUATED_MODEL_TAG: model_uri})
        version_tags.update({tracking.dataset_tag(d.name): f"{d.digest} {d.location}"[:4000]
                             for d in datasets or []})
        aliases = [tracking.CHALLENGER] + ([tracking.CHAMPION] if promote else [])
        version = tracking.register_model(run.uri, name, model_uri, run_id=model_run,
                                          tags=version_tags, aliases=aliases,
                                          description=f"{winner} model for domain {domain}: {reason}")
        run.set_tags({"registered_model": name, "model_version": version.version,
                                                "winner": winner, "promotion": version_tags["promotion"]})
    log.info("registered %s v%s (%s) aliases=%s: %s", name, version.version, winner, aliases, reason)
    return Registration(winner, name, version.version, aliases, promote, reason,
                        champion.version if champion else None, evidence)

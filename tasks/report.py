"""Task that writes the onboarding summary: a comparison table and the JSON the CLI prints."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict

from tasks import tracking
from tasks.evaluation import Analysis, ModelReport
from tasks.registry import METRIC, Registration, baselines
from tasks.selection import Selection

TABLE_COLUMNS = (("val NDCG@10", "val", "ndcg_at_10"), ("test NDCG@10", "test", "ndcg_at_10"),
                 ("P@10", "test", "precision_at_10"), ("R@10", "test", "recall_at_10"),
                 ("HR@10", "test", "hit_rate_at_10"), ("CTR@3", "test", "ctr_at_3"))


def comparison_markdown(reports: dict[str, ModelReport]) -> str:
    """A Markdown table of every model's headline metrics."""
    header = "| model | " + " | ".join(c[0] for c in TABLE_COLUMNS) + " |"
    lines = [header, "|---" * (len(TABLE_COLUMNS) + 1) + "|"]
    for name, report in reports.items():
        cells = []
        for _, stage, key in TABLE_COLUMNS:
            value = getattr(report, stage).metrics.get(key)
            cells.append("-" if value is None else f"{value:.4f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


CANDIDATE_COLUMNS = (("score", "score"), ("probe", "zero_shot_val_ndcg_at_10"), ("users", "user_coverage"),
                     ("items", "item_coverage"), ("text", "content_coverage"), ("support", "user_support"),
                     ("behaviour", "behaviour_distance"), ("fine-tuned val", "val_ndcg_at_10"),
                     ("fine-tuned test", "test_ndcg_at_10"))


def candidates_markdown(candidates: list[dict[str, Any]]) -> str:
    """The ranked candidates with their main signals (``-`` where a candidate was not fine-tuned)."""
    lines = ["| rank | candidate | " + " | ".join(c[0] for c in CANDIDATE_COLUMNS) + " |",
             "|---" * (len(CANDIDATE_COLUMNS) + 2) + "|"]
    for row in sorted(candidates, key=lambda r: r["rank"]):
        cells = ["-" if row.get(key) is None else f"{row[key]:.4f}" for _, key in CANDIDATE_COLUMNS]
        lines.append(f"| {row['rank']} | {row['name']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def lift_lines(found: dict[str, Any]) -> str:
    """One Markdown line per baseline: transfer's test NDCG@10 lift with its paired 95 % interval."""
    return "\n".join(f"- over {b}: {i.estimate:+.1%} (95 % CI {i.low:+.1%} .. {i.high:+.1%}, {i.n} users"
                     f"{'' if i.excludes(0.0) else '; not distinguishable from no lift'})"
                     for b, i in found["lift"].items())


def lifts(reports: dict[str, ModelReport]) -> dict[str, float]:
    """Relative NDCG@10 lift of transfer over the best baseline, on validation and on test."""
    out = {}
    for stage in ("val", "test"):
        transfer = getattr(reports["transfer"], stage).metrics[METRIC]
        best = max(getattr(reports[b], stage).metrics[METRIC] for b in baselines(reports))
        out[f"{stage}/lift_{METRIC}"] = transfer / best - 1.0 if best > 0 else float("nan")
    return out


class OnboardingSummary(BaseModel):
    """What an onboarding found and decided: the flows return it, the CLI prints it (``--json``: :meth:`to_json`),
    and ``summary.json`` on the run holds the same fields."""

    model_config = ConfigDict(frozen=True)

    mlflow_run_id: str
    experiment: str
    target_domain: str
    chosen_source: str
    selection_rationale: str
    transfer_recipe: dict[str, Any] = {}  # the recipe kept as transfer and both recipes' validation NDCG@10
    winner: str | None = None
    registered_model: str | None = None
    model_version: str | None = None
    alias: str | None = None
    aliases: list[str] = []
    promoted: bool = False
    promotion_reason: str = "registration disabled"
    metrics: dict[str, dict[str, float]] = {}  # model -> test metric -> value
    val_metrics: dict[str, dict[str, float]] = {}
    lift: dict[str, float] = {}  # e.g. test/lift_ndcg_at_10: over the best baseline
    lift_intervals: dict[str, dict[str, Any]] = {}  # baseline -> paired bootstrap interval of the test lift
    intervals: dict[str, dict[str, dict[str, Any]]] = {}  # model -> metric -> interval
    candidates: list[dict[str, Any]] = []
    slices: dict[str, Any] = {}
    off_policy_ctr: dict[str, Any] = {}
    split: dict[str, Any] = {}
    ctr_estimator: str | None = None
    timings_seconds: dict[str, float] = {}
    training: dict[str, dict[str, Any]] = {}  # model -> parameters, epochs, seconds
    table_markdown: str = ""
    lift_markdown: str = ""
    candidates_markdown: str = ""

    @property
    def recipe_line(self) -> str:
        """Which transfer recipe was kept and both validation scores (empty when only one was trained)."""
        return recipe_text(self.transfer_recipe) if self.transfer_recipe else ""

    def to_json(self) -> dict[str, Any]:
        """The summary as JSON-ready data, without the Markdown renderings."""
        return self.model_dump(mode="json", exclude={"table_markdown", "lift_markdown", "candidates_markdown"})

def recipe_text(recipe: dict[str, Any]) -> str:
    """``Transfer recipe: closed-form (validation NDCG@10: network 0.1066, closed-form 0.1219).``"""
    scores = ", ".join(f"{k.removesuffix('_val_ndcg_at_10').replace('_', '-')} {v:.4f}"
                       for k, v in recipe.items() if k.endswith("_val_ndcg_at_10"))
    return f"Transfer recipe: {recipe['recipe']} (validation NDCG@10: {scores})."


@task(name="summarize", cache_policy=NO_CACHE)
def summarize(
    reports: dict[str, ModelReport], selection: Selection, registration: Registration | None,
    run: tracking.TrackingContext, target_domain: str, split_summary: dict[str, Any], timings: dict[str, float],
    analysis: Analysis, recipe: dict[str, Any] | None = None,
) -> OnboardingSummary:
    """Log lifts (with ``analysis``'s intervals), the comparison table and the summary JSON to the parent run and
    as a Prefect artifact."""
    lift = lifts(reports)
    found, parent_intervals = analysis.intervals, analysis.parent_metrics
    slices, off_policy = analysis.slices, analysis.off_policy
    run.log_metrics({
        **lift, **parent_intervals, **{f"test/{k}": v for k, v in reports["transfer"].test.metrics.items()},
        **{f"val/{k}": v for k, v in reports["transfer"].val.metrics.items()},
        **{f"time/{k}": v for k, v in timings.items()},
    })
    table = comparison_markdown(reports)
    candidates = [
        {k: (v if not hasattr(v, "item") else v.item()) for k, v in row.items()}
        for row in selection.table.to_dicts()
    ]
    fields = {
        "mlflow_run_id": run.run_id,
        "experiment": run.experiment_name,
        "target_domain": target_domain,
        "chosen_source": selection.chosen,
        "selection_rationale": selection.rationale,
        "transfer_recipe": recipe or {},
        "winner": registration.winner if registration else None,
        "registered_model": registration.registered_model if registration else None,
        "model_version": str(registration.version) if registration else None,
        "alias": (tracking.CHAMPION if registration.promoted else tracking.CHALLENGER) if registration else None,
        "aliases": registration.aliases if registration else [],
        "promoted": registration.promoted if registration else False,
        "promotion_reason": registration.reason if registration else "registration disabled",
        "metrics": {name: report.test.metrics for name, report in reports.items()},
        "val_metrics": {name: report.val.metrics for name, report in reports.items()},
        "lift": lift,
        "lift_intervals": {b: i.as_dict() for b, i in found["lift"].items()},
        "intervals": {name: {m: i.as_dict() for m, i in metrics.items()} for name, metrics in found["metrics"].items()},
        "candidates": candidates,
        "slices": slices or {},
        "off_policy_ctr": off_policy or {"available": False, "why": "not computed"},
        "split": split_summary,
        "ctr_estimator": reports["transfer"].test.ctr.estimator if reports["transfer"].test.ctr else None,
        "timings_seconds": timings,
        "training": {name: {"trainable_parameters": r.fit.trainable_parameters, "epochs": r.fit.epochs_run,
                            "best_epoch": r.fit.best_epoch, "seconds": r.fit.seconds,
                            "init_seconds": r.fit.init_seconds, "resumed_from_epoch": r.fit.resumed_from_epoch}
                     for name, r in reports.items() if r.fit is not None},
    }
    sources = candidates_markdown(candidates)
    kept = f"{recipe_text(recipe)}\n\n" if recipe else ""
    markdown = (f"## Onboarding `{target_domain}`\n\nSource: **{selection.chosen}** ({selection.rationale}).\n\n"
                f"{kept}{sources}\n\n{table}\n\nLift of transfer over the best baseline (NDCG@10): validation "
                f"{lift['val/lift_ndcg_at_10']:+.1%}, test {lift['test/lift_ndcg_at_10']:+.1%}. Test lift with "
                f"paired bootstrap intervals (users resampled):\n\n{lift_lines(found)}\n\n"
                f"Registry: {fields['promotion_reason']}\n")
    summary = OnboardingSummary(**fields, table_markdown=table, lift_markdown=lift_lines(found),
                                candidates_markdown=sources)
    run.log_text(markdown, "summary.md")
    run.log_text(tracking.dumps(summary.to_json()), "summary.json")
    create_markdown_artifact(key="onboarding-summary", markdown=markdown, description=f"onboarding {target_domain}")
    return summary

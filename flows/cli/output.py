"""What the commands print: the onboarding summary, the compare table, JSON results, the MLflow UI hint."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def print_json(payload: dict[str, Any]) -> None:
    """One JSON object on one line (the last stdout line of a ``--json`` command)."""
    sys.stdout.write(json.dumps(payload, default=str) + "\n")


def print_summary(summary: Any, out: Any = sys.stdout) -> None:
    """The human-readable result of an onboarding (a :class:`tasks.report.OnboardingSummary`)."""
    lift = summary.lift
    lines = [
        f"Onboarded domain {summary.target_domain!r} (MLflow run {summary.mlflow_run_id})",
        f"Source: {summary.chosen_source}: {summary.selection_rationale}",
        *([summary.recipe_line] if summary.recipe_line else []),
        "",
        summary.candidates_markdown,
        "",
        summary.table_markdown,
        "",
        f"Lift of transfer over the best baseline (NDCG@10): validation {lift['val/lift_ndcg_at_10']:+.1%}, "
        f"test {lift['test/lift_ndcg_at_10']:+.1%}; test lift with paired bootstrap 95 % intervals:",
        summary.lift_markdown,
    ]
    if summary.registered_model:
        lines.append(f"Registered {summary.registered_model} v{summary.model_version} "
                     f"({summary.winner}) aliases {summary.aliases}: {summary.promotion_reason}")
    out.write("\n".join(lines) + "\n")


def compare_markdown(rows: list[dict[str, Any]]) -> str:
    """The runs of ``transferrec compare`` as a Markdown table."""
    def number(value: Any, fmt: str) -> str:
        return "-" if value is None else fmt.format(value)

    lines = ["| run | status | source | family | mode | fraction | seed | test NDCG@10 | val NDCG@10 | lift | "
             "lift vs popularity (95 % CI) | winner | version | promotion |", "|---" * 14 + "|"]
    for r in rows:
        ci = (f"{number(r['test/lift_ndcg_at_10_vs_popularity_ci_low'], '{:+.1%}')} .. "
              f"{number(r['test/lift_ndcg_at_10_vs_popularity_ci_high'], '{:+.1%}')}")
        lines.append(f"| {r['run_id'][:8]} | {r['status']} | {r['source'] or '-'} | {r['family']} | "
                     f"{r['mode'] or '-'} | {r['fraction'] or '-'} | {r['seed'] or '-'} | "
                     f"{number(r['test/ndcg_at_10'], '{:.4f}')} | "
                     f"{number(r['val/ndcg_at_10'], '{:.4f}')} | {number(r['test/lift_ndcg_at_10'], '{:+.1%}')} | "
                     f"{ci} | {r['winner'] or '-'} | {r['model_version'] or '-'} | {r['promotion'] or '-'} |")
    return "\n".join(lines)


def ui_hint(tracking_uri: str) -> str:
    """How to open the MLflow UI on this store (with the commands of this installation)."""
    bin_dir = Path(sys.executable).parent
    mlflow_cmd = bin_dir / "mlflow" if (bin_dir / "mlflow").exists() else "mlflow"
    ui_cmd = bin_dir / "transferrec" if (bin_dir / "transferrec").exists() else "transferrec"
    return (f"Compare the runs in the MLflow UI:\n  {ui_cmd} ui\n"
            f"  (= {mlflow_cmd} ui --backend-store-uri {tracking_uri} --port 5000)\n"
            f"  then open http://127.0.0.1:5000, experiment 'transferrec-<domain>', select the child runs, Compare")

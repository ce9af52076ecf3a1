"""Data-efficiency and time-to-quality: transfer vs scratch as the target data grows.

For each target fraction the curve records both models' test NDCG@10 and how long (wall seconds, epochs)
each needs to reach *scratch's best validation NDCG@10*: scratch by definition at its best epoch, transfer
possibly before any training (its initialisation already there) or never.
"""

from __future__ import annotations

from pathlib import Path

from models.evaluation.plots import figure, save

MONITOR = "val/ndcg_at_10"


def time_to_quality(history: list[dict[str, float]], *, initial: float, target: float, setup_seconds: float = 0.0,
                    monitor: str = MONITOR) -> tuple[float | None, int | None]:
    """``(seconds, epochs)`` until validation first reaches ``target``, or ``(None, None)`` if it never does.

    Args:
        history: per-epoch entries with ``epoch``, ``elapsed`` (seconds since the fit started) and ``monitor``.
        initial: validation score of the initial weights (checked before any epoch).
        target: the score to reach.
        setup_seconds: time spent before the fit (e.g. the transfer initialisation), added to every time.
    """
    if initial >= target:
        return setup_seconds, 0
    for entry in history:
        if entry.get(monitor, float("-inf")) >= target:
            return setup_seconds + float(entry["elapsed"]), int(entry["epoch"]) + 1
    return None, None


def plot_curve(rows: list[dict[str, float | str | None]], path: Path) -> Path:
    """Test NDCG@10 vs target fraction for transfer, scratch and popularity (log x axis), saved as PNG."""
    fractions = [float(r["fraction"]) for r in rows]
    fig, ax = figure()
    for key, label in (("transfer_test_ndcg_at_10", "transfer"), ("scratch_test_ndcg_at_10", "scratch"),
                       ("popularity_test_ndcg_at_10", "popularity")):
        ax.plot(fractions, [float(r[key]) for r in rows], marker="o", label=label)
    ax.set_xscale("log")
    ax.set_xlabel("share of the target's training data")
    ax.set_ylabel("test NDCG@10")
    ax.set_title(f"data efficiency: {rows[0]['target_domain']}" if rows else "data efficiency")
    return save(fig, ax, path, dpi=120)

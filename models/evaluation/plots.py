"""The plots an onboarding logs (PNG files; matplotlib's Agg canvas, imported when called).

Figures are made without pyplot (no global figure state), so a plot may be drawn on any thread.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def load_backend() -> None:
    """Import matplotlib's Agg canvas and load the fonts, layout and PNG writer the plots use, by drawing a small
    throw-away plot (about 0.6 s the first time in a process), so that the first real plot does not wait."""
    import io

    fig, ax = figure()
    ax.plot([0, 1], [0, 1], marker="o", label="a")
    ax.set_xlabel("K")
    ax.set_title("t")
    save(fig, ax, io.BytesIO())  # type: ignore[arg-type]


def figure(width: float = 6.0) -> tuple[Any, Any]:
    """A new (figure, axes) on an Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, 4))
    FigureCanvasAgg(fig)
    return fig, fig.subplots()


#: Room beside the axes for the legend, and below them for the x labels (two lines at most; inches).
LEGEND_INCHES = 1.45
BOTTOM_INCHES = 0.9


def save(fig: Any, ax: Any, path: Path, *, grid: bool = True, dpi: int = 110) -> Path:
    """Grid, the legend beside the axes, fixed margins, write ``path`` (PNG). A legend placed where it overlaps
    least ("best") and a tight layout measure every artist: together half of a plot's time, on the thread that
    also logs the onboarding's runs; beside the axes the legend never hides a line or a bar."""
    if grid:
        ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    width, height = fig.get_size_inches()
    fig.subplots_adjust(left=0.6 / width, right=1.0 - LEGEND_INCHES / width, top=1.0 - 0.4 / height,
                        bottom=BOTTOM_INCHES / height)
    fig.savefig(path, dpi=dpi)
    return path


def plot_learning_curves(histories: dict[str, list[dict[str, float]]], path: Path,
                         monitor: str = "val/ndcg_at_10") -> Path:
    """Validation NDCG@10 per epoch of each trained model (e.g. transfer vs scratch)."""
    fig, ax = figure()
    for name, history in histories.items():
        points = [(int(e["epoch"]), e[monitor]) for e in history if monitor in e]
        if points:
            ax.plot(*zip(*points, strict=True), marker="o", label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel(monitor)
    ax.set_title("learning curves")
    return save(fig, ax, path)


def plot_metric_at_k(metrics: dict[str, dict[str, float]], path: Path, metric: str = "ndcg") -> Path:
    """``metric``@K against K for each model (from keys such as ``ndcg_at_5``)."""
    fig, ax = figure()
    for name, values in metrics.items():
        ks = sorted(int(key.rsplit("_", 1)[1]) for key in values if key.startswith(f"{metric}_at_"))
        if ks:
            ax.plot(ks, [values[f"{metric}_at_{k}"] for k in ks], marker="o", label=name)
    ax.set_xlabel("K")
    ax.set_ylabel(f"test {metric}@K")
    return save(fig, ax, path)


def plot_slices(slices: dict[str, dict[str, dict[str, float]]], path: Path, metric: str = "ndcg_at_10") -> Path:
    """Grouped bars: ``metric`` of each model in each user slice (``slices[model][slice][metric]``)."""
    models = list(slices)
    names = sorted({s for per_model in slices.values() for s in per_model})
    width = 0.8 / max(len(models), 1)
    fig, ax = figure(max(6.0, 0.6 + 1.4 * len(names) + LEGEND_INCHES))
    for i, model in enumerate(models):
        xs = [j + i * width for j in range(len(names))]
        ax.bar(xs, [slices[model].get(s, {}).get(metric, 0.0) for s in names], width=width, label=model)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(names))])
    ax.set_xticklabels([name.replace(":", ":\n") for name in names])  # "target_train:\ncold": no rotation
    ax.set_ylabel(f"test {metric}")
    return save(fig, ax, path, grid=False)

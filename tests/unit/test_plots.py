"""The plots are real PNG files with the data drawn (one line or bar group per model)."""

from __future__ import annotations

from models.evaluation.plots import plot_learning_curves, plot_metric_at_k, plot_slices

PNG = b"\x89PNG\r\n\x1a\n"


def test_each_plot_writes_a_png(tmp_path):
    history = [{"epoch": 0, "val/ndcg_at_10": 0.1}, {"epoch": 1, "val/ndcg_at_10": 0.2}]
    paths = [
        plot_learning_curves({"transfer": history, "scratch": history[:1]}, tmp_path / "a.png"),
        plot_metric_at_k({"transfer": {"ndcg_at_5": 0.1, "ndcg_at_10": 0.2}, "popularity": {"ndcg_at_10": 0.1}},
                         tmp_path / "b.png"),
        plot_slices({"transfer": {"target_train:cold": {"ndcg_at_10": 0.2}},
                     "scratch": {"target_train:warm": {"ndcg_at_10": 0.1}}}, tmp_path / "c.png"),
    ]
    for path in paths:
        assert path.read_bytes()[:8] == PNG and path.stat().st_size > 2000

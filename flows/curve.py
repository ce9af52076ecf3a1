"""``data-efficiency-curve``: transfer vs scratch at growing shares of the target's training data."""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.config import CurveConfig
from models.split import InsufficientDataError
from models.transfer.recipes import ranking_tasks
from tasks import tracking
from tasks.curve import curve_point, log_curve, split_fractions
from tasks.data import check_target_domain, load_tables, validate_dataset
from tasks.runtime import checkpoint_root
from tasks.selection import log_selection, select_source
from tasks.setup import tracked_run
from tasks.sources import gather_sources
from tasks.training import fine_tune_source, fit_popularity_baseline, train_scratch_baseline


@flow(name="data-efficiency-curve")
def data_efficiency_flow(config: CurveConfig) -> dict[str, Any]:
    """Find or train the sources once, then for each fraction: split, select a source, fine-tune it, train
    scratch, measure; then log the table and the plot."""
    domain = config.target_domain
    name = tracking.curve_experiment_name(domain)
    check_target_domain(config.data, domain)
    with tracked_run(config, config.tracking, name, tracking.curve_run_name(domain),
                     tags={"target_domain": domain}) as run:
        dataset, data_fingerprint = validate_dataset(load_tables(config.data), config.data, domain, run)
        splits, skipped = split_fractions(dataset, domain, config.split, config.fractions)
        if not splits:
            raise InsufficientDataError(f"no fraction of {domain!r} leaves enough data: {skipped}")
        # The test period (and so each user's source cutoff) does not depend on the fraction: one set of sources.
        sources = gather_sources(dataset, data_fingerprint, domain, next(iter(splits.values())).cutoffs,
                                 config.split.test_ratio, config.sources, run.uri, triggered_by=run.run_id,
                                 checkpoints=checkpoint_root(config.tracking.checkpoint_dir, config.tracking.resume))
        rows = []
        for fraction, split in splits.items():
            val_task, test_task = ranking_tasks(split, click_threshold=config.evaluation.click_threshold)
            with run.child(tracking.curve_point_run_name(fraction), tags={"fraction": fraction}) as point_run:
                selection = select_source(sources, split, val_task, point_run, dataset=dataset.name,
                                          same_dataset=True, config=config.sources, finetune=config.finetune,
                                          selection=config.selection)
                log_selection(point_run, selection.table, selection.rationale, selection.chosen,
                              selection.decided_by)
                transfer = fine_tune_source(selection.chosen, selection.prepared[selection.chosen], split,
                                            config.finetune, config.split.seed)
                scratch = train_scratch_baseline(split, config.sources.model, config.scratch, config.split.seed,
                                                 family=config.finetune.family,
                                                 content=selection.prepared[selection.chosen].text.target)
                row = curve_point(split, fraction, selection.chosen, transfer, scratch,
                                  fit_popularity_baseline(split), test_task)
                point_run.log_metrics({k: float(v) for k, v in row.items()
                                       if isinstance(v, int | float) and not isinstance(v, bool)})
            rows.append(row)
        markdown = log_curve(rows, run, skipped)
    return {"mlflow_run_id": run.run_id, "experiment": name, "target_domain": domain, "points": rows,
            "skipped": skipped, "table_markdown": markdown, "tracking_uri": run.uri}

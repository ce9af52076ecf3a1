"""``onboard-domain``: validate, select a source, fine-tune, compare with baselines, register.

One flow for data in memory and data bigger than memory (``out_of_core``): the steps are the same, the data
backend (:mod:`flows.backends`) answers each.
"""

from __future__ import annotations

from functools import partial

from prefect import flow
from prefect.runtime import flow_run
from prefect.utilities.annotations import quote

from flows.backends import backend_for
from flows.config import OnboardConfig
from models.evaluation.plots import plot_learning_curves, plot_metric_at_k
from tasks import tracking
from tasks.data import check_target_domain, load_tables
from tasks.evaluation import ModelRuns, evaluate_models, log_analysis, log_model_runs, plot_later
from tasks.refit import log_refit
from tasks.registry import logged_models, register_winner
from tasks.report import OnboardingSummary, summarize
from tasks.runtime import Stopwatch, git_commit
from tasks.selection import settle_selection
from tasks.setup import tracked_run

#: The flow's stages in order (its progress lines and Prefect progress artifact count them).
STAGES = ("load", "validate", "split", "sources", "select", "train", "settle", "evaluate", "analyse", "refit",
          "log_register")


@flow(name="onboard-domain")
def onboard_domain_flow(config: OnboardConfig) -> OnboardingSummary:
    """Onboard ``config.target_domain``; returns the summary (metrics per model, chosen source, registry)."""
    domain = config.target_domain
    watch = Stopwatch(f"onboard {domain}", STAGES)
    tags = {**config.run_tags(), "git_commit": git_commit(), "prefect.flow_run_id": str(flow_run.id or "")}
    run_name = tracking.onboard_run_name(domain, config.split.fraction, config.split.seed,
                                         out_of_core=config.out_of_core)
    check_target_domain(config.data, domain)  # a mistyped domain stops here, before an experiment is made for it
    with (tracked_run(config, config.tracking, tracking.experiment_name(domain), run_name, tags) as run,
          backend_for(config, run) as backend):
        with tracking.held_writes():  # what these stages log is written while the models train
            with watch("load"):
                raw = load_tables(backend.data)
            with watch("validate"):
                data = backend.validate(raw)
            with watch("split"):
                target = backend.split(data)
            run.later(partial(run.log_params, {f"split.{k}": v for k, v in target.summary.items()}))
            with watch("sources"):
                sources = backend.sources(data, target)
                lineage = backend.lineage(target, sources)
                run.later(partial(run.log_datasets, lineage))
            with watch("select"):
                selection = backend.select(sources, target)
        runs = ModelRuns(run, tags, lineage)  # each model's child run, opened in the background once it is known
        with watch("train"):  # the finalists' fine-tunes and the baselines
            fits = backend.train(target, sources, selection, runs.open)
        with watch("settle"):
            selection = settle_selection(selection, fits.transfers, target.val_task, target.test_task, run,
                                         margin=config.selection.val_margin)
            fits = fits.settled(selection.chosen, target.val_task, config.finetune.recipe_margin)  # the recipe kept
            runs.open_all(fits.models(selection.chosen), fits.trained(selection.chosen), selection.chosen)
            plot_later(run, plot_learning_curves,
                       {name: fit.history for name, fit in fits.trained(selection.chosen).items()},
                       "learning_curves.png")
        with watch("evaluate"):
            reports = evaluate_models(fits.models(selection.chosen), fits.trained(selection.chosen),
                                      target.val_task, target.test_task, config.evaluation, fits.validation_models())
            plot_later(run, plot_metric_at_k, {name: report.test.metrics for name, report in reports.items()},
                       "ndcg_at_k.png")
        with watch("analyse"):  # intervals, slices, off-policy CTR: figures computed before the refit starts
            analysis = backend.analyse(data, target, reports, selection)
        with watch("refit"):  # the guard's winner on all of the target's data (what users will get): started
            # here, it trains while the models are logged, which does no arithmetic whose bits depend on BLAS's
            # thread count (the refit holds it at one)
            refitting = (backend.refit(reports, data, target, fits, selection)
                         if config.tracking.registry and config.tracking.refit else None)
        with watch("log_register"):
            # quote(): the reports and the analysis reach these tasks as they are (Prefect walks every other
            # argument for futures: tens of thousands of nested metrics, a tenth of a second of each flow)
            reports = log_model_runs(quote(reports), runs, config.child_run_params(selection.chosen, fits.tuned()),
                                     log_models=logged_models(reports, config.tracking.log_models),
                                     analysis=quote(analysis))
            log_analysis(quote(analysis), run)
            refit = None if refitting is None else refitting.result()
            registration = None
            if config.tracking.registry:
                served = None if refit is None else log_refit(refit, reports[refit.winner], run, tags, lineage)
                registration = register_winner(quote(reports), domain, target.test_task, run, config.evaluation,
                                               margin=config.tracking.promotion_margin,
                                               tags={**tags, "source": selection.chosen}, served=served,
                                               datasets=lineage)
        watch.finish()
        return summarize(quote(reports), quote(selection), registration, run, domain, target.summary, watch.seconds,
                         quote(analysis), fits.recipe)

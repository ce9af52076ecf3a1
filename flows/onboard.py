"""``onboard-domain``: validate, select a source, fine-tune, compare with baselines, register."""

from __future__ import annotations

from pathlib import Path

from prefect import flow
from prefect.runtime import flow_run

from flows.config import OnboardConfig
from flows.runners import run_jobs
from models.selection.sources import slug
from models.transfer.recipes import ranking_tasks
from tasks import tracking
from tasks.data import load_tables, split_target, validate_dataset
from tasks.evaluation import analyse_models, evaluate_models, log_model_runs, off_policy_ctr_report
from tasks.registry import register_winner
from tasks.report import OnboardingSummary, summarize
from tasks.runtime import Stopwatch, checkpoint_root, clear_checkpoints, git_commit, run_key
from tasks.selection import select_source, settle_selection
from tasks.setup import prepare_tracking
from tasks.sources import find_or_train_source, plan_sources, registered_sources
from tasks.training import fine_tune_source, fit_als_baseline, fit_popularity_baseline, train_scratch_baseline


def _under(root: Path | None, name: str) -> Path | None:
    return root / name if root is not None else None


@flow(name="onboard-domain")
def onboard_domain_flow(config: OnboardConfig) -> OnboardingSummary:
    """Onboard ``config.target_domain``; returns the summary (metrics per model, chosen source, registry).
    With ``config.out_of_core`` the out-of-core onboarding runs instead, as a subflow."""
    if config.out_of_core:
        from flows.onboard_large import onboard_large_domain_flow

        return onboard_large_domain_flow(config)
    watch = Stopwatch()
    domain, seed = config.target_domain, config.split.seed
    uri, experiment_id = prepare_tracking(config.tracking, tracking.experiment_name(domain))
    checkpoints = checkpoint_root(config.tracking.checkpoint_dir, config.tracking.resume)
    tags = {"target_domain": domain, "dataset": config.data.dataset, "fraction": config.split.fraction,
            "seed": seed, "mode": config.finetune.mode, "family": config.finetune.family, "git_commit": git_commit(),
            "prefect.flow_run_id": str(flow_run.id or "")}
    run_name = tracking.onboard_run_name(domain, config.split.fraction, seed)
    with tracking.open_run(uri, experiment_id, tracking.experiment_name(domain), run_name, tags=tags) as run:
        run.log_params(tracking.flatten(config.model_dump(mode="json")))
        run.log_dict(config.model_dump(mode="json"), "config.json")
        with watch("load"):
            raw = load_tables(config.data)
        with watch("validate"):
            dataset, data_fingerprint = validate_dataset(raw, config.data, domain, run)
        # a rerun of the same config on the same data finds (and resumes) the killed run's checkpoints
        run_checkpoints = checkpoints / f"{run_key(config)}-{data_fingerprint[:12]}" if checkpoints else None
        with watch("split"):
            split = split_target(dataset, domain, config.split)
            val_task, test_task = ranking_tasks(split, click_threshold=config.evaluation.click_threshold)
        run.log_params({f"split.{k}": v for k, v in split.summary().items()})
        with watch("sources"):
            same_dataset = config.sources.data is None
            if same_dataset:  # time-safe sources from the target's own dataset (shared users)
                source_data, source_fingerprint, cutoffs, hidden = dataset, data_fingerprint, split.cutoffs, domain
            elif not config.sources.registered_only:  # another dataset: same contracts, nothing hidden
                source_data, source_fingerprint = validate_dataset(load_tables(config.sources.data),
                                                                   config.sources.data, None, None)
                cutoffs, hidden = None, None
            if same_dataset or not config.sources.registered_only:
                specs = plan_sources(source_data, source_fingerprint, domain, config.split.test_ratio,
                                     config.sources, same_dataset=same_dataset)
                sources = {spec.name: find_or_train_source(source_data, cutoffs, spec, config.sources, hidden, uri,
                                                           triggered_by=run.run_id, checkpoints=checkpoints)
                           for spec in specs}
            else:  # the catalogue alone: registered models and profiles, no raw source data
                sources = registered_sources(uri, config.sources.data.dataset)
        with watch("select"):
            selection = select_source(sources, split, val_task, run, dataset=dataset.name, same_dataset=same_dataset,
                                      config=config.sources, finetune=config.finetune, selection=config.selection)
        with watch("train"):  # the finalists' fine-tunes and the baselines, side by side when parallel
            # the target catalogue's text embeddings are the same in every candidate
            content = selection.prepared[selection.chosen].text.target
            jobs = {}
            for name in selection.finalists(config.selection.top_k):
                jobs[f"transfer:{name}"] = (
                    fine_tune_source, (name, selection.prepared[name], split, config.finetune, seed),
                    {"checkpoint_dir": _under(run_checkpoints, f"transfer-{slug(name)}")})
            jobs["scratch"] = (train_scratch_baseline, (split, config.model, config.scratch, seed),
                               {"family": config.finetune.family, "content": content,
                                "checkpoint_dir": _under(run_checkpoints, "scratch")})
            jobs["als"] = (fit_als_baseline, (split, val_task, seed), {})
            done = run_jobs(jobs, runner=config.runner)
            fits = {key.removeprefix("transfer:"): value for key, value in done.items() if key.startswith("transfer:")}
            scratch, als = done["scratch"], done["als"]
            popularity = fit_popularity_baseline(split)
        with watch("settle"):
            selection = settle_selection(selection, fits, val_task, test_task, run,
                                         margin=config.selection.val_margin)
            transfer = fits[selection.chosen]
        with watch("evaluate"):
            reports = evaluate_models(
                {"transfer": transfer.model, "popularity": popularity, "als": als.model, "scratch": scratch.model},
                {"transfer": transfer, "scratch": scratch}, val_task, test_task, config.evaluation)
        with watch("log_register"):
            reports = log_model_runs(reports, run, config.child_run_params(selection.chosen, als.params), tags,
                                     log_models=("transfer", "popularity", "als", "scratch"))
            slices = analyse_models(reports, split, test_task, selection.prepared[selection.chosen].model.user_ids,
                                    run)
            off_policy = off_policy_ctr_report(reports, dataset.impressions, split, test_task, run)
            registration = None
            if config.tracking.registry:
                registration = register_winner(reports, domain, test_task, run, config.evaluation,
                                               margin=config.tracking.promotion_margin,
                                               tags={**tags, "source": selection.chosen})
        clear_checkpoints(run_checkpoints)
        return summarize(reports, selection, registration, run, domain, split.summary(), watch.seconds, slices,
                         off_policy)

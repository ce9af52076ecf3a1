"""``onboard-large-domain``: the onboarding for data bigger than memory (``OnboardConfig.out_of_core``).

The same pipeline as ``onboard-domain`` with every step that reads the interactions working batch by batch
on disk: batched validation, the split by buckets of users, sources trained on their time-safe interactions
and the target models fine-tuned or trained from shuffled pair files; the baselines (scratch, implicit ALS,
popularity) likewise. Selection ranks the sources by their zero-shot validation NDCG@10 alone (the in-memory
similarity signals read whole tables); evaluation, the MLflow child runs, registration through the gate and the
summary are the in-memory onboarding's, over seeded samples of ``evaluation.max_users`` users. Scratch files
live under ``<data dir>/work/<run id>`` and are removed at the end. What it cannot do yet is refused by the config
(``flows.config.OUT_OF_CORE_REFUSES``, each naming its option); user slices and off-policy CTR are not computed.
"""

from __future__ import annotations

import shutil

from prefect import flow
from prefect.runtime import flow_run

from flows.config import OnboardConfig
from tasks import tracking
from tasks.data import load_tables
from tasks.evaluation import evaluate_models, log_model_runs
from tasks.large import (
    als_large,
    batch_rows,
    fine_tune_large,
    popularity_large,
    probe_large_sources,
    sample_ranking_tasks,
    scratch_large,
    split_large,
    split_summary,
    train_large_sources,
    validate_large,
)
from tasks.registry import register_winner
from tasks.report import OnboardingSummary, summarize
from tasks.runtime import Stopwatch, default_data_dir, git_commit
from tasks.setup import prepare_tracking


@flow(name="onboard-large-domain")
def onboard_large_domain_flow(config: OnboardConfig) -> OnboardingSummary:
    """Onboard ``config.target_domain`` from data bigger than memory; returns the onboarding summary."""
    watch = Stopwatch()
    domain, seed, rows = config.target_domain, config.split.seed, batch_rows(config.data)
    data = config.data.model_copy(update={"batch_rows": rows})
    uri, experiment_id = prepare_tracking(config.tracking, tracking.experiment_name(domain))
    tags = {"target_domain": domain, "dataset": data.dataset, "fraction": config.split.fraction, "seed": seed,
            "mode": config.finetune.mode, "family": config.finetune.family, "git_commit": git_commit(),
            "out_of_core": "true", "prefect.flow_run_id": str(flow_run.id or "")}
    run_name = tracking.onboard_run_name(domain, config.split.fraction, seed, out_of_core=True)
    with tracking.open_run(uri, experiment_id, tracking.experiment_name(domain), run_name, tags=tags) as run:
        run.log_params(tracking.flatten(config.model_dump(mode="json")))
        run.log_dict(config.model_dump(mode="json"), "config.json")
        workdir = (data.data_dir or default_data_dir()) / "work" / run.run_id
        try:
            with watch("load"):
                raw = load_tables(data)
            with watch("validate"):
                tables = validate_large(raw, data, domain, run, workdir / "validated")
            with watch("split"):
                split = split_large(tables, domain, config.split, workdir / "split", rows)
                val_task, test_task = sample_ranking_tasks(split, config.evaluation.max_users, seed,
                                                           config.evaluation.click_threshold)
            run.log_params({f"split.{k}": v for k, v in
                                              split_summary(split, val_task, test_task).items()})
            with watch("sources"):
                sources = train_large_sources(tables, split, domain, config.sources, workdir / "sources", rows)
            with watch("select"):
                selection = probe_large_sources({name: fit.model for name, fit in sources.items()}, split, val_task,
                                                run, config.finetune, seed, rows)
            with watch("train"):
                transfer = fine_tune_large(selection.chosen, sources[selection.chosen].model, split,
                                           config.finetune, seed, rows)
                scratch = scratch_large(split, config.model, config.scratch, seed, rows)
                als = als_large(split, scratch, val_task, seed)
                popularity = popularity_large(split)
            with watch("evaluate"):
                reports = evaluate_models(
                    {"transfer": transfer.model, "popularity": popularity, "als": als.model,
                     "scratch": scratch.fit.model}, {"transfer": transfer, "scratch": scratch.fit}, val_task,
                    test_task, config.evaluation)
            with watch("log_register"):
                reports = log_model_runs(reports, run, config.child_run_params(selection.chosen, als.params),
                                         tags, log_models=("transfer", "popularity", "als", "scratch"))
                registration = None
                if config.tracking.registry:
                    registration = register_winner(reports, domain, test_task, run, config.evaluation,
                                                   margin=config.tracking.promotion_margin,
                                                   tags={**tags, "source": selection.chosen})
            return summarize(reports, selection, registration, run, domain,
                             split_summary(split, val_task, test_task), watch.seconds)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

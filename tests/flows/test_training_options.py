"""Fine-tuning options and resumable checkpoints through the real onboard-domain flow."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
import pytorch_lightning as pl_lightning

from flows.config import OnboardConfig, RunnerConfig
from flows.onboard import onboard_domain_flow
from models.config import FineTuneConfig, TrackingConfig
from models.data.datasets import read_canonical_dir
from models.data.fingerprint import fingerprint
from models.split import split_target_domain
from models.transfer.recipes import train_scratch
from tasks.registry import BASELINES
from tasks.runtime import run_key

TARGET = "games"


def child_runs(uri: str, parent: str) -> dict[str, dict]:
    mlflow.set_tracking_uri(uri)
    table = mlflow.search_runs(experiment_names=[f"transferrec-{TARGET}"])
    children = table[table["tags.mlflow.parentRunId"] == parent]
    return {row["tags.mlflow.runName"]: row for row in children.to_dict("records")}


def test_a_two_tower_adapter_onboarding_logs_what_it_trained(synthetic_dir: Path, mlflow_uri: str):
    base = OnboardConfig.smoke(TARGET, synthetic_dir, mlflow_uri)
    # the fine-tune's options are what is tested: the closed-form recipe stays out of the comparison
    config = base.model_copy(update={"finetune": FineTuneConfig(family="two-tower", mode="adapter", adapter_rank=2,
                                                                closed_form=False, train=base.finetune.train)})
    summary = onboard_domain_flow(config)

    dim = config.model.dim
    n_items = summary.split["catalogue_items"]
    # adapter mode: two rank-2 adapters (user and item side) and the item biases, nothing else
    assert summary.training["transfer"]["trainable_parameters"] == 2 * (dim * 2 + 2 * dim) + n_items
    runs = child_runs(mlflow_uri, summary.mlflow_run_id)
    transfer, scratch = runs["transfer"], runs["scratch"]
    assert (transfer["params.family"], transfer["params.mode"]) == ("two-tower", "adapter")
    assert scratch["params.family"] == "two-tower"
    assert transfer["metrics.fit/trainable_parameters"] < scratch["metrics.fit/trainable_parameters"]
    assert summary.metrics["transfer"]["ndcg_at_10"] > 0


class _Crash(pl_lightning.Callback):
    def on_train_epoch_end(self, trainer: pl_lightning.Trainer, module: pl_lightning.LightningModule) -> None:
        if trainer.current_epoch >= 1:
            raise RuntimeError("machine lost")


def test_a_rerun_resumes_a_killed_model_from_its_checkpoint(synthetic_dir: Path, mlflow_uri: str, tmp_path: Path):
    base = OnboardConfig.smoke(TARGET, synthetic_dir, mlflow_uri)
    checkpoints = tmp_path / "checkpoints"
    config = base.model_copy(update={"tracking": TrackingConfig(tracking_uri=mlflow_uri, checkpoint_dir=checkpoints),
                                     # the fine-tune's checkpoints are tested: it is the transfer model reported
                                     "finetune": base.finetune.model_copy(update={"closed_form": False})})
    # An earlier run of this very config died while training scratch: its checkpoint is where the flow looks.
    dataset = read_canonical_dir(synthetic_dir, "synthetic")
    folder = checkpoints / f"{run_key(config)}-{fingerprint(dataset)[:12]}" / "scratch"
    split = split_target_domain(dataset.interactions, dataset.items, domain=TARGET, fraction=config.split.fraction,
                                seed=config.split.seed)
    with pytest.raises(RuntimeError, match="machine lost"):
        train_scratch(split, model=config.model, train=config.scratch, seed=config.split.seed,
                      checkpoint_dir=folder, callbacks=[_Crash()])
    assert (folder / "last.ckpt").exists()

    summary = onboard_domain_flow(config)

    # epoch 0 was checkpointed; epoch 1 died before its checkpoint, so it runs again
    assert summary.training["scratch"]["resumed_from_epoch"] == 1
    assert summary.training["transfer"]["resumed_from_epoch"] is None
    scratch = child_runs(mlflow_uri, summary.mlflow_run_id)["scratch"]
    assert scratch["metrics.fit/resumed_from_epoch"] == 1
    assert not folder.parent.exists()  # a finished run leaves no checkpoints behind


def test_off_policy_ctr_comes_from_impressions_with_propensities(synthetic_dataset, mlflow_uri: str,
                                                                 tmp_path: Path):
    from models.data.datasets import write_canonical_dir
    from models.data.synthetic import generate_multidomain

    # the same synthetic world, now with a popularity-biased impression log of "games" (the last domain)
    logged = generate_multidomain(n_users=300, items_per_domain=40, interactions_per_domain=12.0, seed=0,
                                  impressions_per_user=10)
    assert logged.impressions is not None and logged.impressions["propensity"].min() > 0
    assert logged.interactions.equals(synthetic_dataset.interactions)  # the log is drawn on the side
    data = write_canonical_dir(logged, tmp_path / "data")
    n = logged.impressions.height

    summary = onboard_domain_flow(OnboardConfig.smoke(TARGET, data, mlflow_uri))

    found = summary.off_policy_ctr
    assert found["available"] and 0 < found["impressions"] <= n
    for name in ("transfer", *BASELINES):
        for estimator in ("IPS", "SNIPS"):
            result = found["models"][name][estimator]
            assert result["low"] <= result["ctr"] <= result["high"] and result["estimator"] == estimator
    transfer = child_runs(mlflow_uri, summary.mlflow_run_id)["transfer"]
    assert transfer["metrics.test/ctr_snips"] == pytest.approx(found["models"]["transfer"]["SNIPS"]["ctr"])



@pytest.mark.slow
def test_parallel_training_gives_the_same_models_as_sequential(synthetic_dir: Path, mlflow_uri: str):
    """Fine-tunes and baselines side by side in threads, and on a local Dask cluster (prefect-dask): every random
    stream is the fit's own, so the results do not depend on where or in which order the fits run."""
    base = OnboardConfig.smoke(TARGET, synthetic_dir, mlflow_uri)
    sequential = onboard_domain_flow(base.model_copy(update={"runner": RunnerConfig(kind="sequential")}))
    runners = {"threads": RunnerConfig(), "dask": RunnerConfig(kind="dask", workers=2),
               # worker processes: arguments and fitted models cross process boundaries pickled
               "dask-processes": RunnerConfig(kind="dask", workers=2, processes=True)}
    for kind, runner in runners.items():
        parallel = onboard_domain_flow(base.model_copy(update={"runner": runner}))
        for model in ("transfer", *BASELINES):
            assert parallel.metrics[model] == pytest.approx(sequential.metrics[model], abs=1e-9), (kind, model)
        assert "train" in parallel.timings_seconds


def test_task_runner_kinds():
    from prefect.task_runners import ThreadPoolTaskRunner
    from prefect_dask import DaskTaskRunner

    from flows.runners import task_runner

    assert isinstance(task_runner(RunnerConfig(workers=3)), ThreadPoolTaskRunner)
    remote = task_runner(RunnerConfig(kind="dask", address="tcp://10.0.0.5:8786"))
    assert isinstance(remote, DaskTaskRunner) and remote.address == "tcp://10.0.0.5:8786"
    local = task_runner(RunnerConfig(kind="dask", workers=2, processes=True))
    assert local.cluster_kwargs["n_workers"] == 2 and local.cluster_kwargs["processes"] is True
    try:
        import prefect_ray  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="prefect-ray"):
            task_runner(RunnerConfig(kind="ray"))

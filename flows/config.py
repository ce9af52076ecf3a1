"""One frozen config per flow, composed of the library's sub-configs (defaults live on the fields)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from data_contracts.settings import ContractRules
from models.config import (
    DataConfig,
    EvalConfig,
    FineTuneConfig,
    ModelConfig,
    SelectionConfig,
    SourcesConfig,
    SplitConfig,
    TrackingConfig,
    TrainConfig,
    target_train_defaults,
)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RunnerConfig(_Frozen):
    """Where the side-by-side fits (the finalists' fine-tunes and the baselines) run: Prefect's thread pool in this
    process (default; torch and implicit release the GIL), a Dask cluster (``prefect-dask``: a local one, or the
    scheduler at ``address``), Ray (``prefect-ray``: a local one, or the cluster at ``address``), or one after the
    other in the flow (sequential)."""

    kind: Literal["threads", "dask", "ray", "sequential"] = Field(
        "threads", description="threads in this process, a Dask cluster (extra `dask`), Ray (prefect-ray), or one "
                               "after the other")
    address: str | None = Field(None, description="Dask scheduler (tcp://host:8786) or Ray cluster (ray://host:10001)")
    workers: int = Field(4, ge=1, description="threads, or local Dask workers")
    processes: bool = Field(False, description="local Dask cluster: worker processes instead of threads (each "
                                               "needs PREFECT_API_URL of a real server; see the README)")


class PretrainConfig(_Frozen):
    """``pretrain-source``: train and register the source models of the domains other than ``exclude_domain``."""

    exclude_domain: str | None = Field(description="the target domain: its test period is hidden from the "
                                                   "sources; None: sources of this dataset for targets of another")
    data: DataConfig = DataConfig()
    split: SplitConfig = SplitConfig()
    sources: SourcesConfig = SourcesConfig()
    tracking: TrackingConfig = TrackingConfig()
    force: bool = Field(False, description="retrain even when a model with the same fingerprint is registered")

    @classmethod
    def smoke(cls, exclude_domain: str, path: Path, tracking_uri: str) -> PretrainConfig:
        return cls(exclude_domain=exclude_domain, data=DataConfig(dataset="synthetic", path=path),
                   split=SplitConfig.smoke(), sources=SourcesConfig.smoke(),
                   tracking=TrackingConfig(tracking_uri=tracking_uri))


#: Options the out-of-core backend (flows.backends.OutOfCore) cannot honour yet: field -> (unsupported(value), what).
#: Every other OnboardConfig field works on both backends; tests/unit/test_config_spine.py enumerates them all.
OUT_OF_CORE_REFUSES: dict[str, tuple[Any, str]] = {
    "sources.data": (lambda v: v is not None, "sources from another dataset"),
    "sources.registered_only": (bool, "the registered-source catalogue"),
    "sources.item_match": (lambda v: v not in ("auto", "id"), "matching items across catalogues"),
    "sources.shared_users": (lambda v: v is False, "sources whose users are other people"),
    "sources.embedder": (lambda v: v != "auto", "item-text embeddings"),
    "finetune.family": (lambda v: v != "mf", "the two-tower family"),
    "finetune.item_init": (lambda v: v == "content", "content initialisation of new items"),
    "data.on_violation": (lambda v: v != "fail", "the quarantine policy"),
    "selection.weights": (lambda v: v is not None, "selection signal weights (the zero-shot probe decides)"),
    "tracking.checkpoint_dir": (lambda v: v is not None, "resumable checkpoints"),
}
#: Options only the out-of-core onboarding has.
IN_MEMORY_REFUSES: dict[str, tuple[Any, str]] = {
    "evaluation.max_users": (lambda v: v is not None, "evaluation on a sample of users"),
    "data.bucket_rows": (lambda v: v is not None, "buckets of users for the split"),
}

#: The target's data settings that a source dataset (``sources.data``) takes unless it sets its own.
INHERITED_DATA_FIELDS = ("data_dir", *ContractRules.model_fields)


class OnboardConfig(_Frozen):
    """``onboard-domain``: transfer to ``target_domain``, compare with baselines, register the winner."""

    target_domain: str
    data: DataConfig = DataConfig()
    split: SplitConfig = SplitConfig()
    sources: SourcesConfig = SourcesConfig()
    finetune: FineTuneConfig = FineTuneConfig()
    selection: SelectionConfig = SelectionConfig()
    scratch: TrainConfig = Field(default_factory=target_train_defaults)
    evaluation: EvalConfig = EvalConfig()
    tracking: TrackingConfig = TrackingConfig()
    runner: RunnerConfig = RunnerConfig()
    out_of_core: bool = Field(False, description="data bigger than memory: read, validate, split and train batch by "
                                                 "batch on disk (batches of data.batch_rows; see flows.backends)")

    @model_validator(mode="before")
    @classmethod
    def _source_data_inherits(cls, data: object) -> object:
        """Sources from another dataset are read from the same cache and held to the same contract rules as the
        target's data, unless their own config says otherwise."""
        if not isinstance(data, dict):
            return data
        sources, target = data.get("sources"), data.get("data")
        if not isinstance(sources, dict) or not isinstance(sources.get("data"), dict):
            return data
        target = target.model_dump() if isinstance(target, DataConfig) else dict(target or {})
        inherited = {k: v for k, v in target.items() if k in INHERITED_DATA_FIELDS}
        return {**data, "sources": {**sources, "data": {**inherited, **sources["data"]}}}

    @model_validator(mode="after")
    def _backend_options(self) -> OnboardConfig:
        """Every option works on the backend the run uses, or the run is refused here, naming the option."""
        refused, backend = (OUT_OF_CORE_REFUSES, "out-of-core") if self.out_of_core else (IN_MEMORY_REFUSES,
                                                                                          "in-memory")
        found = []
        for path, (unsupported, what) in refused.items():
            value = self
            for part in path.split("."):
                value = getattr(value, part)
            if unsupported(value):
                found.append(f"{what} ({path}={value!r})")
        if found:
            raise ValueError(f"the {backend} onboarding does not support {'; '.join(found)}"
                             + (" yet (leave out --out-of-core to use it)" if self.out_of_core else
                                " (it is an --out-of-core option)"))
        return self

    @property
    def model(self) -> ModelConfig:
        """The architecture shared by source, transferred and scratch models."""
        return self.sources.model

    def run_tags(self) -> dict[str, Any]:
        """The tags of the onboarding's parent run and its child runs (what the MLflow search filters on)."""
        tags: dict[str, Any] = {"target_domain": self.target_domain, "dataset": self.data.dataset,
                                "fraction": self.split.fraction, "seed": self.split.seed,
                                "mode": self.finetune.mode, "family": self.finetune.family}
        return {**tags, "out_of_core": "true"} if self.out_of_core else tags

    def child_run_params(self, source: str, tuned: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """The params of each model's child run (what tells them apart in the MLflow compare view); ``tuned``:
        the hyper-parameters each tuned baseline chose on validation (``als``, ``ease``, ``itemknn``) and the
        transfer recipe kept (``transfer``)."""
        shared = {"target_domain": self.target_domain, "fraction": self.split.fraction, "seed": self.split.seed,
                  "dim": self.model.dim}
        finetune = self.finetune
        return {
            "transfer": {**shared, "model": "transfer", "source": source, "family": finetune.family,
                         "mode": finetune.mode, "item_init": finetune.item_init,
                         "content_init": finetune.content_init, "adapter_rank": finetune.adapter_rank,
                         "transferred_lr_scale": finetune.transferred_lr_scale,
                         **{f"train.{k}": v for k, v in finetune.train.model_dump().items()},
                         **{f"transfer.{k}": v for k, v in tuned.get("transfer", {}).items()}},
            "scratch": {**shared, "model": "scratch", "family": finetune.family,
                        **{f"train.{k}": v for k, v in self.scratch.model_dump().items()}},
            "popularity": {**shared, "model": "popularity"},
            **{name: {**shared, "model": name, **{f"{name}.{k}": v for k, v in params.items()}}
               for name, params in tuned.items() if name != "transfer"},
        }

    def pretrain(self) -> PretrainConfig:
        """The pretraining config of this onboarding's sources."""
        return PretrainConfig(exclude_domain=self.target_domain, data=self.data, split=self.split,
                              sources=self.sources, tracking=self.tracking)

    @classmethod
    def smoke(cls, target_domain: str, path: Path, tracking_uri: str) -> OnboardConfig:
        return cls(target_domain=target_domain, data=DataConfig(dataset="synthetic", path=path),
                   split=SplitConfig.smoke(), sources=SourcesConfig.smoke(), finetune=FineTuneConfig.smoke(),
                   scratch=TrainConfig.smoke(), tracking=TrackingConfig(tracking_uri=tracking_uri))


#: ``transferrec demo``: one MovieLens-1M genre onboarded as a new domain with 10 % of its training data (the
#: scarcity of a new domain, simulated). The demo command starts from this payload; its options override it.
DEMO = {"target_domain": "Horror", "split": {"fraction": 0.1}}  # data: the default, fetched MovieLens-1M


class CurveConfig(OnboardConfig):
    """``data-efficiency-curve``: an onboarding's settings, run at each of ``fractions`` of the target's
    training data (``split.fraction`` is ignored; registry settings are unused)."""

    fractions: tuple[float, ...] = (0.01, 0.05, 0.1, 0.3, 1.0)

    @classmethod
    def smoke(cls, target_domain: str, path: Path, tracking_uri: str,  # type: ignore[override]
              fractions: tuple[float, ...] = (0.3, 1.0)) -> CurveConfig:
        base = OnboardConfig.smoke(target_domain, path, tracking_uri)
        return cls(**dict(base), fractions=fractions)

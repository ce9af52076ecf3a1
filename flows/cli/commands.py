"""The commands: each takes the parsed arguments, runs, prints and returns the exit code. Heavy modules (torch,
Lightning, Prefect, MLflow) are imported inside the commands that need them."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

from flows.cli.output import compare_markdown, print_json, print_summary, ui_hint
from flows.cli.parser import resolve_config


def fetch(args: argparse.Namespace) -> int:
    from models.data.fetch import fetch_movielens
    from tasks.runtime import default_data_dir

    target = fetch_movielens(args.dataset, args.data_dir or default_data_dir(), source=args.source, path=args.path,
                             force=args.force)
    meta = (target / "SOURCE.json").read_text() if (target / "SOURCE.json").exists() else ""
    sys.stdout.write(f"{args.dataset} ready in {target}\n{meta}\n")
    return 0


def synthetic(args: argparse.Namespace) -> int:
    from models.data.synthetic import generate_retail, write_retail_export

    out = write_retail_export(generate_retail(n_customers=args.customers, seed=args.seed), args.out)
    sys.stdout.write(f"wrote a synthetic retail export to {out} (column map: {out / 'columns.yaml'})\n")
    return 0


def domains(args: argparse.Namespace) -> int:
    from models.data.datasets import read_canonical_dir
    from models.data.fetch import load_cached
    from tasks.runtime import default_data_dir

    data = resolve_config(args)
    location = data.url or data.path
    dataset = (read_canonical_dir(location, columns=data.columns) if location
               else load_cached(data.data_dir or default_data_dir(), data.dataset))
    sys.stdout.write(str(dataset.domains()) + "\n")
    return 0


def validate(args: argparse.Namespace) -> int:
    """``transferrec validate``: one table file (``--table``), or every table of a folder together."""
    data = resolve_config(args)
    if args.table is None:
        return _validate_folder(args, data)
    from data_contracts.conversion import convert_table
    from data_contracts.validation import validate_single_table
    from models.data.datasets import apply_column_map, is_object_store, read_table

    if data.batch_rows is not None:
        raise ValueError("--batch-rows validates a folder of tables (omit --table)")
    if is_object_store(args.path):
        raise ValueError("validate --table reads a local file; for an object-store folder omit --table")
    path = Path(args.path)
    frame = apply_column_map({args.table: read_table(path, args.format)}, data.columns)[args.table]
    known_items = None
    note = ""
    if args.items is not None:
        items, _ = convert_table("items", apply_column_map({"items": read_table(args.items)}, data.columns)["items"])
        known_items = items["item_id"] if items is not None else None
    elif args.table in ("interactions", "impressions"):
        note = "referential integrity not checked (pass --items to check that every item exists)"
    report = validate_single_table(args.table, frame, data.contract_settings(), known_items=known_items)
    if args.json:
        print_json({**report.to_dict(), "path": str(path), "note": note})
    if not report.success:
        sys.stderr.write(f"{path}: {args.table} contract v{report.suite_version} FAILED\n\n"
                         f"{report.to_markdown()}\n{note}\n")
        return 1
    if not args.json:
        _print_passed(path, [report])
        if note:
            sys.stdout.write(note + "\n")
    return 0


def _print_passed(path: Any, reports: list[Any]) -> None:
    for report in reports:
        sys.stdout.write(f"{path}: {report.table} contract v{report.suite_version} PASSED ({report.rows} rows, "
                         f"{report.checked_rules} rules, {len(report.warnings)} warning(s))\n")
        if report.warnings:
            sys.stdout.write(report.to_markdown())


def _validate_folder(args: argparse.Namespace, data: Any) -> int:
    from data_contracts.batched import validate_scans
    from data_contracts.contracts import ContractViolation
    from data_contracts.validation import validate_tables
    from models.data.datasets import is_object_store, read_tables

    location = args.path if is_object_store(args.path) else Path(args.path)
    raw = read_tables(location, data.columns, lazy=data.batch_rows is not None)
    settings = data.contract_settings()
    try:
        if data.batch_rows is None:
            reports = validate_tables(raw, settings).reports
        else:
            with tempfile.TemporaryDirectory(prefix="transferrec-validate-") as tmp:
                reports = validate_scans(raw, settings, workdir=Path(tmp), batch_rows=data.batch_rows).reports
    except ContractViolation as violation:
        if args.json:
            print_json({"path": str(location), "success": False, "tables": [r.to_dict() for r in violation.reports]})
        sys.stderr.write(f"{location}: data contracts FAILED\n\n"
                         + "\n".join(r.to_markdown() for r in violation.reports) + "\n")
        return 1
    if args.json:
        print_json({"path": str(location), "success": True, "tables": [r.to_dict() for r in reports]})
        return 0
    _print_passed(location, reports)
    return 0


def _prepare_while_the_api_starts(config: Any) -> None:
    """What the onboarding needs first and last, done while Prefect's temporary API starts (a fresh command
    otherwise waits for it idle when its own imports finish first): the tracking store opened (MLflow's SQL store,
    its import and schema check, about a second), MLflow's map of installed packages (read when the first
    servable model is logged, about half a second) and the plots' backend imported. A store that fails here is
    left to the flow, which reports it on its run."""
    from models.evaluation.plots import load_backend
    from tasks import tracking
    from tasks.setup import resolved_tracking_uri

    try:
        tracking.client(resolved_tracking_uri(config.tracking))
    except Exception:  # noqa: BLE001, S110 - the flow's prepare-tracking meets it again and reports it
        pass
    tracking.prepare_model_logging()
    load_backend()


def _ready_for_the_flow() -> None:
    """Once a flow command has imported what it runs: exempt what the imports left from the garbage collector
    (:func:`tasks.runtime.freeze_heap`), then wait for Prefect's temporary API (when this command started one)."""
    from tasks.runtime import await_prefect_api, freeze_heap

    freeze_heap()
    await_prefect_api()


def _run_onboard(config: Any) -> Any:
    from flows.onboard import onboard_domain_flow

    _prepare_while_the_api_starts(config)
    _ready_for_the_flow()
    return onboard_domain_flow(config)


def onboard(args: argparse.Namespace) -> int:
    summary = _run_onboard(resolve_config(args))
    if args.json:
        print_json(summary.to_json())
    else:
        print_summary(summary)
    return 0


def demo(args: argparse.Namespace) -> int:
    """The README's main job: fetch the demo's dataset when it is a fetchable one, then onboard."""
    from models.data.fetch import MOVIELENS, fetch_movielens
    from tasks.runtime import default_data_dir
    from tasks.tracking import default_tracking_uri

    config = resolve_config(args)
    if config.data.path is None and config.data.url is None and config.data.dataset in MOVIELENS:
        sys.stderr.write(f"[1/2] fetching {config.data.dataset} ...\n")
        fetch_movielens(config.data.dataset, config.data.data_dir or default_data_dir())
    sys.stderr.write(f"[2/2] onboarding {config.target_domain!r} with {config.split.fraction:.0%} of its training "
                     "data (source models are trained first when missing; a few minutes on 2 cores) ...\n")
    summary = _run_onboard(config)
    if args.json:
        print_json(summary.to_json())
        return 0
    print_summary(summary)
    sys.stdout.write("\n" + ui_hint(default_tracking_uri()) + "\n")
    return 0


def pretrain(args: argparse.Namespace) -> int:
    from flows.pretrain import pretrain_source_flow

    config = resolve_config(args)
    _ready_for_the_flow()
    result = pretrain_source_flow(config)
    if args.json:
        print_json(result)
    else:
        for s in result["sources"]:
            state = "trained" if s["trained_now"] else "reused"
            sys.stdout.write(f"{s['name']:>14}: {state} {s['registered_model']} v{s['version']}\n")
    return 0


def curve(args: argparse.Namespace) -> int:
    from flows.curve import data_efficiency_flow

    config = resolve_config(args)
    _ready_for_the_flow()
    result = data_efficiency_flow(config)
    if args.plot is not None:
        from models.evaluation.curve import plot_curve

        args.plot.parent.mkdir(parents=True, exist_ok=True)
        plot_curve(result["points"], args.plot)
    if args.json:
        print_json({k: v for k, v in result.items() if k != "table_markdown"})
    else:
        sys.stdout.write(result["table_markdown"] + "\n")
    return 0


def deployments(args: argparse.Namespace) -> int:
    from flows.deployments import prefect_yaml

    text = prefect_yaml(resolve_config(args))
    if args.write is None:
        sys.stdout.write(text)
    else:
        args.write.write_text(text)
        sys.stderr.write(f"wrote {args.write}: deploy with `prefect --no-prompt deploy --all`\n")
    return 0


def _prefect_api(command: str) -> str | None:
    from prefect.settings import PREFECT_API_URL

    api = PREFECT_API_URL.value() or None
    if api is None:
        sys.stderr.write(f"error: `transferrec {command}` needs a Prefect server: start one with "
                         "`prefect server start` and set PREFECT_API_URL (e.g. http://127.0.0.1:4200/api)\n")
    return api


def notify(args: argparse.Namespace) -> int:
    """Emit a data-landed event: its payload is what the refresh deployment's trigger puts into the config."""
    if _prefect_api("notify") is None:
        return 2
    from prefect.events import emit_event

    from flows import deployments as deployed

    event = emit_event(event=deployed.DATA_LANDED, resource={"prefect.resource.id": deployed.domain_resource(
        args.domain)}, payload=deployed.data_landed_payload(args.domain, args.path, args.columns))
    sys.stdout.write(f"emitted {deployed.DATA_LANDED} for {args.domain!r} ({event.id if event else 'queued'})\n")
    return 0


def serve(args: argparse.Namespace) -> int:
    config = resolve_config(args)
    api = _prefect_api("serve")
    if api is None:
        return 2
    from prefect import serve as serve_deployments

    from flows import deployments as deployed

    sys.stderr.write(f"serving {deployed.ONBOARD}, {deployed.REFRESH}, {deployed.PRETRAIN} for "
                     f"{config.target_domain!r} on {api} (stop with ^C)\n")
    serve_deployments(*deployed.build_deployments(config, schedules=not args.no_schedules))
    return 0


def trigger(args: argparse.Namespace) -> int:
    config = resolve_config(args)
    api = _prefect_api("trigger")
    if api is None:
        return 2
    from prefect.deployments import run_deployment

    from flows import deployments as deployed

    run = run_deployment(deployed.ONBOARD, parameters={"config": config.model_dump(mode="json")}, timeout=args.wait)
    url = f"{api.removesuffix('/api')}/runs/flow-run/{run.id}"
    state = run.state.type.value if run.state else "UNKNOWN"
    if args.json:
        print_json({"flow_run_id": str(run.id), "url": url, "state": state, "target_domain": config.target_domain})
    else:
        sys.stdout.write(f"flow run {run.id} ({state}): {url}\n")
    return 0 if not args.wait or state == "COMPLETED" else 1


def compare(args: argparse.Namespace) -> int:
    from tasks.tracking import default_tracking_uri, experiment_name, recent_onboardings

    rows = recent_onboardings(default_tracking_uri(), experiment_name(args.target_domain), limit=args.limit)
    if args.json:
        print_json({"target_domain": args.target_domain, "runs": rows})
    elif not rows:
        sys.stdout.write(f"no onboarding of {args.target_domain!r} in {default_tracking_uri()}\n")
    else:
        sys.stdout.write(compare_markdown(rows) + "\n")
    return 0


def sources(args: argparse.Namespace) -> int:
    from tasks.tracking import default_tracking_uri, source_catalogue

    catalogue = source_catalogue(default_tracking_uri())
    if args.json:
        print_json({"sources": catalogue})
        return 0
    for s in catalogue:
        sys.stdout.write(f"{s['registered_model']} v{s['version']}: {s['dataset']} {s['domains']} "
                         f"({s['users']} users, {s['items']} items, {s['interactions']} interactions; "
                         f"time-safe for {s['time_safe_for']})\n")
    return 0


def serve_model(args: argparse.Namespace) -> int:
    """``transferrec serve-model``: the registered model over HTTP (MLflow's scoring server, in this process) until
    Ctrl-C or SIGTERM; exit 1 when the model or alias is missing."""
    import mlflow
    import uvicorn

    from tasks.serving import scoring_app
    from tasks.tracking import default_tracking_uri, registered_model_name

    model_uri = f"models:/{registered_model_name(args.target_domain)}@{args.alias}"
    try:
        app = scoring_app(default_tracking_uri(), model_uri)
    except mlflow.exceptions.MlflowException as error:
        sys.stderr.write(f"error: cannot load {model_uri}: {str(error).splitlines()[0]}\n")
        return 1
    sys.stderr.write(f"serving {model_uri} at http://{args.host}:{args.port}/invocations "
                     '(POST {"dataframe_records": [{"user_id": "..."}], "params": {"k": 10}}); Ctrl-C stops\n')
    # uvicorn stops gracefully on SIGINT / SIGTERM (requests in flight finish), then raises the signal again:
    # here that ends the command with a line, not the run-unwinding handler of the flows
    for each in (signal.SIGINT, signal.SIGTERM):
        signal.signal(each, signal.default_int_handler)
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning", workers=1)
    except KeyboardInterrupt:
        pass
    sys.stderr.write(f"stopped serving {model_uri}\n")
    return 0


def recommend(args: argparse.Namespace) -> int:
    """``transferrec recommend``: exit 2 for an unreadable users file, 1 when the model or alias is missing."""
    import mlflow
    import polars as pl

    from models.data.datasets import DatasetFormatError, read_table
    from tasks.serving import recommend_with
    from tasks.tracking import default_tracking_uri, registered_model_name

    try:
        users = read_table(args.users)
    except DatasetFormatError as error:
        sys.stderr.write(f"error: {error}\n")
        return 2
    if "user_id" not in users.columns:
        sys.stderr.write(f"error: {args.users}: no user_id column (columns: {', '.join(users.columns)})\n")
        return 2
    model_uri = f"models:/{registered_model_name(args.target_domain)}@{args.alias}"
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


def ui(args: argparse.Namespace) -> int:
    from tasks.tracking import default_tracking_uri

    uri = default_tracking_uri()
    if args.snapshot is not None:
        return _snapshot(args, uri)
    os.execvp("mlflow", ["mlflow", "ui", "--backend-store-uri", uri, "--host", args.host, "--port", str(args.port),
                         "--workers", "1"])
    return 0  # not reached


def tracking_server(args: argparse.Namespace) -> int:
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


COMMANDS = {"fetch": fetch, "validate": validate, "synthetic": synthetic, "domains": domains, "pretrain": pretrain,
            "onboard": onboard, "demo": demo, "curve": curve, "serve": serve, "trigger": trigger, "notify": notify,
            "deployments": deployments, "compare": compare, "recommend": recommend, "serve-model": serve_model,
            "sources": sources, "tracking-server": tracking_server, "ui": ui}

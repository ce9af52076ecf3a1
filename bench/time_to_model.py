"""Time to model: one onboarding end to end, by stage, against the same work as plain Python functions.

Usage (after `transferrec fetch movielens-1m`; the first run trains and registers the source models into
``--out``'s MLflow store, untimed):

    python bench/time_to_model.py [--target-domain Horror] [--fraction 0.1] [--repeats 2] [--out bench/results]

Measures, with the source models already registered:

* ``cli``: `transferrec onboard ... --json` as a fresh process (imports, Prefect's temporary API, MLflow,
  the flow): wall time, and the flow's own stage timings from its JSON;
* ``daemon``: the same command as a fresh process while `transferrec daemon` runs (started after the ``cli``
  repeats, with the same environment; untimed): the command runs in a fork of the daemon, which imported the
  libraries and started Prefect's API once;
* ``flow``: the flow called again in this (warm) process, on the temporary API a command starts: stage
  timings, and the CPU seconds that API's server used during the call (the server's services follow the
  environment: ``PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_ENABLED=true`` and the like turn on what a command's
  temporary API leaves off, for all four columns);
* ``plain``: the same computations as plain function calls -- read the tables, the contracts' polars
  evaluator (great-expectations only runs when a rule fails, as in the flow), split, source weights from local
  files, selection (profiles, zero-shot probe, ranking), the fine-tune, the closed-form recipe and every
  baseline (threads, as in the flow), evaluation with the bootstrap intervals, slices, and the refit of the
  guard's winner on all of the target's data (what the flow serves) -- with no Prefect, no MLflow, no plots and
  no registry;
* start-up pieces: ``import flows.onboard``, and the first flow call of a fresh process (Prefect's
  temporary API server).

The flow and plain repeats alternate (a drift of the machine reaches both). Prints a table and writes
``time_to_model.json``. Overhead = (best wall - best plain total) / best plain total, for the fresh command and
the warm flow; for the warm flow also the median over the alternating (flow, plain) pairs, and the CPU seconds
each took (every thread of this process, and for the flow its API server's). Both drift from run to run on two
cores (thread pools that wait for work spin on them), so compare runs of one sitting.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

BIN = Path(sys.executable).parent


def timed_process(args: list[str], env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=1800)
    return time.perf_counter() - start, done


def through_the_daemon(onboard: list[str], env: dict[str, str], repeats: int) -> list[dict[str, Any]]:
    """``repeats`` runs of the command while `transferrec daemon` runs (started and stopped here, untimed)."""
    daemon = [str(BIN / "transferrec"), "daemon"]
    started = subprocess.run([*daemon, "start"], env=env, capture_output=True, text=True, timeout=300)
    assert started.returncode == 0 and "ready" in started.stdout, started.stderr[-2000:]
    runs = []
    try:
        for _ in range(repeats):
            wall, done = timed_process(onboard, env)
            assert done.returncode == 0 and "note:" not in done.stderr, done.stderr[-3000:]
            summary = json.loads(done.stdout.strip().splitlines()[-1])
            runs.append({"wall": wall, **summary["timings_seconds"],
                         "test_ndcg_at_10_transfer": summary["metrics"]["transfer"]["ndcg_at_10"]})
        served = json.loads(subprocess.run([*daemon, "status", "--json"], env=env, capture_output=True, text=True,
                                           timeout=60).stdout.strip().splitlines()[-1])["served"]
        assert served == repeats, f"the daemon ran {served} of the {repeats} commands"
    finally:
        subprocess.run([*daemon, "stop"], env=env, capture_output=True, timeout=120)
    return runs


def process_cpu(pid: int | None) -> float:
    """CPU seconds (user and system) process ``pid`` has used (Linux's /proc); NaN where it cannot be read."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def startup_costs(env: dict[str, str]) -> dict[str, float]:
    """Seconds to import the flow module, and to run a trivial flow in a fresh process (Prefect start-up)."""
    imports, _ = timed_process([sys.executable, "-c", "import flows.onboard"], env)
    bare, _ = timed_process([sys.executable, "-c", "pass"], env)
    trivial, done = timed_process([sys.executable, "-c", "from prefect import flow\nflow(lambda: 1)()"], env)
    assert done.returncode == 0, done.stderr[-2000:]
    return {"python": bare, "import_flows_onboard": imports - bare, "prefect_first_flow_call": trivial - bare}


def plain_pipeline(config: Any, sources_file: Path) -> dict[str, float]:
    """The onboarding's computations as plain calls (see the module docstring); seconds per stage."""
    from data_contracts.validation import validate_tables
    from models.blas import one_blas_thread
    from models.data.datasets import Dataset, read_raw_tables
    from models.data.fetch import cached_dir
    from models.evaluation.ranking import evaluate_models, ndcg_at
    from models.evaluation.slices import head_items, item_slice_recall, sliced_means, user_slices
    from models.evaluation.uncertainty import mean_intervals, paired_lift_intervals
    from models.factors import FactorModel
    from models.selection.candidates import prepare_source, target_profile
    from models.selection.profiles import DomainProfile
    from models.selection.similarity import PROBE, rank_candidates
    from models.split import split_with
    from models.transfer.als import EncodedTrain, fit_als
    from models.transfer.closed_form import fit_closed_form_transfer, keeps_fine_tune
    from models.transfer.joint import JOINT, JointTrain
    from models.transfer.peers import PEERS
    from models.transfer.recipes import fine_tune, fit_popularity, ranking_tasks, train_scratch, zero_shot_model
    from models.transfer.refit import WholeInMemory, refit_model
    from tasks.evaluation import HEADLINE
    from tasks.registry import BASELINES, METRIC, guard
    from tasks.runtime import closed_form_cache, default_data_dir, embedding_cache
    from tasks.selection import resolve_matching

    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[name] = now - clock
        clock = now

    data = config.data
    raw = read_raw_tables(cached_dir(data.data_dir or default_data_dir(), data.dataset))
    lap("load")
    valid = validate_tables(raw, data.contract_settings(config.target_domain)).tables
    dataset = Dataset(data.dataset, valid["interactions"], valid["items"], valid.get("users"),
                      valid.get("impressions"))
    lap("validate")
    split = split_with(dataset.interactions, dataset.items, domain=config.target_domain, config=config.split)
    val_task, test_task = ranking_tasks(split, click_threshold=config.evaluation.click_threshold)
    lap("split")
    # name -> (FactorModel, DomainProfile), from the folders their own save() wrote (arrays without pickle)
    sources = {folder.name: (FactorModel.load(folder / "model"), DomainProfile.load(folder / "profile"))
               for folder in sorted(sources_file.iterdir())}
    joint = JointTrain.of_split(dataset.interactions, dataset.items, split)  # in the flow's sources stage too
    lap("sources")
    item_match, shared_users = resolve_matching(config.sources, same_dataset=True)
    target = target_profile(split, dataset.name, config.sources.embedder, cache=embedding_cache())
    rows, prepared = [], {}
    for name, (model, profile) in sources.items():
        ready = prepare_source(model, profile, split, target, item_match=item_match, shared_users=shared_users,
                               embedder=config.sources.embedder)
        probe = ndcg_at(zero_shot_model(ready.model, split, ready.text, config=config.finetune), val_task)
        prepared[name] = ready
        rows.append({"name": name, **ready.signals, PROBE: probe})
    table, _, _ = rank_candidates(rows, config.selection.weights)
    chosen = str(table.row(0, named=True)["name"])
    lap("select")
    seed = config.split.seed
    encoded = EncodedTrain.of(split.train, split.catalogue["item_id"].to_numpy().astype(object))
    with ThreadPoolExecutor(max_workers=4) as pool:
        jobs = {
            "transfer": pool.submit(fine_tune, prepared[chosen].model, split, config=config.finetune, seed=seed,
                                    text=prepared[chosen].text),
            "scratch": pool.submit(train_scratch, split, model=config.model, train=config.scratch, seed=seed,
                                   family=config.finetune.family, content=prepared[chosen].text.target),
            "als": pool.submit(fit_als, encoded, None, val_task, seed=seed),
            **{kind: pool.submit(fit, encoded, val_task) for kind, fit in PEERS.items()},
            **{kind: pool.submit(fit, joint, val_task, seed=seed) for kind, fit in JOINT.items()},
            # its ALS source read back as the flow reads it (tasks.training.fit_closed_form)
            "closed-form": pool.submit(fit_closed_form_transfer, joint, val_task, seed=seed,
                                       cache=closed_form_cache()),
        }
        fits = {name: job.result() for name, job in jobs.items()}
    popularity = fit_popularity(split)
    lap("train")
    # the transfer recipe kept, as the flow keeps it (the fine-tune needs the margin on validation)
    network = ndcg_at(fits["transfer"].model, val_task)
    closed_form = fits["closed-form"]
    kept = not keeps_fine_tune(network, closed_form.val_ndcg_at_10, config.finetune.recipe_margin)
    transfer = closed_form.model if kept else fits["transfer"].model
    models = {"transfer": transfer, "popularity": popularity, "scratch": fits["scratch"].model,
              **{name: fits[name].model for name in ("als", *PEERS, *JOINT)}}
    as_validated = {"transfer": closed_form.val_model} if kept and closed_form.val_model is not None else {}
    val, test = (evaluate_models(scored, task, ks=config.evaluation.ks, ctr_k=config.evaluation.ctr_k)
                 for scored, task in (({**models, **as_validated}, val_task), (models, test_task)))
    # as the flow evaluates them (one resample set a task; the recipe validated as of the validation period)
    reports = {name: (val[name], test[name]) for name in models}
    lap("evaluate")
    mean_intervals({(name, m): test.per_user[m] for name, (_, test) in reports.items() for m in HEADLINE},
                   seed=seed)
    paired_lift_intervals(reports["transfer"][1].per_user[METRIC],
                          {b: reports[b][1].per_user[METRIC] for b in BASELINES}, seed=seed)
    masks = user_slices(test_task, split.train, prepared[chosen].model.user_ids)
    head = head_items(test_task, split.train)
    for name, (_, test) in reports.items():
        sliced_means(test.per_user, masks)
        item_slice_recall(models[name], test_task, head)
    lap("analyse")
    # the guard's winner refitted on all of the target's data, as the flow serves it (there it trains while the
    # models are logged)
    winner, _ = guard({name: val.metrics[METRIC] for name, (val, _) in reports.items()})
    kept = "network" if transfer is fits["transfer"].model else "closed-form"
    tuned = {"als": fits["als"].params, **{name: fits[name].params for name in (*PEERS, *JOINT)},
             "transfer": {"recipe": kept, **(closed_form.params if kept == "closed-form" else {})}}
    with one_blas_thread():
        refit_model(winner, WholeInMemory(split, dataset.interactions, dataset.items, text=prepared[chosen].text,
                                          family=config.finetune.family), val_task, seed=seed,
                    params=tuned.get(winner, {}),
                    fits={**({"transfer": fits["transfer"]} if kept == "network" else {}), "scratch": fits["scratch"]},
                    source=prepared[chosen].model, finetune=config.finetune, model=config.model,
                    scratch=config.scratch, recipe_source=closed_form.source if kept == "closed-form" else None)
    lap("refit")
    seconds["total"] = sum(seconds.values())
    seconds["test_ndcg_at_10_transfer"] = reports["transfer"][1].metrics["ndcg_at_10"]
    return {**seconds, "refit_winner": winner}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="movielens-1m")
    parser.add_argument("--target-domain", default="Horror")
    parser.add_argument("--fraction", type=float, default=0.1)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args(argv)
    out = args.out.resolve()
    store = out / "time_to_model"
    store.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{store / 'mlflow.db'}"
    prefect_home = Path(tempfile.mkdtemp(prefix="ttm-prefect-"))
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PREFECT_HOME": str(prefect_home),
           "TRANSFERREC_NO_DAEMON": "1", "TRANSFERREC_DAEMON_SOCKET": str(store / "daemon.sock"),
           **({"TRANSFERREC_DATA_DIR": str(args.data_dir)} if args.data_dir else {})}
    os.environ.update({k: v for k, v in env.items() if k in ("MLFLOW_TRACKING_URI", "PREFECT_HOME",
                                                           "TRANSFERREC_DATA_DIR")})
    onboard = [str(BIN / "transferrec"), "onboard", "--dataset", args.dataset, "--target-domain", args.target_domain,
               "--target-fraction", str(args.fraction), "--json"]

    # untimed: sources trained and registered, Prefect's home created
    _, warm = timed_process(onboard, env)
    assert warm.returncode == 0, warm.stderr[-3000:]

    result: dict[str, Any] = {"target_domain": args.target_domain, "fraction": args.fraction,
                              "startup": startup_costs(env), "cli": [], "flow": [], "plain": []}
    for _ in range(args.repeats):
        wall, done = timed_process(onboard, env)
        assert done.returncode == 0, done.stderr[-3000:]
        summary = json.loads(done.stdout.strip().splitlines()[-1])
        result["cli"].append({"wall": wall, **summary["timings_seconds"],
                              "test_ndcg_at_10_transfer": summary["metrics"]["transfer"]["ndcg_at_10"]})
    result["daemon"] = through_the_daemon(onboard, {**env, "TRANSFERREC_NO_DAEMON": "0"}, args.repeats)

    from tasks.runtime import (
        await_prefect_api,
        configure_environment,
        flow_settings,
        prefect_api_pid,
        prestart_prefect_api,
        quiet_libraries,
    )

    configure_environment({"PREFECT_LOGGING_LEVEL": "CRITICAL"})
    prestart_prefect_api()  # the temporary API a command starts (before Prefect is imported, as a command does)
    from flows.cli import build_parser, resolve_config
    from flows.onboard import onboard_domain_flow
    from tasks.tracking import load_factor_model, load_profile, source_catalogue

    quiet_libraries()
    await_prefect_api()
    config = resolve_config(build_parser().parse_args(onboard[1:-1] + (["--data-dir", str(args.data_dir)]
                                                                       if args.data_dir else [])))
    sources_file = store / "sources"
    with flow_settings():  # untimed: this process's first flow call
        onboard_domain_flow(config)
    for repeat in range(args.repeats):  # flow and plain interleaved: a drift of the machine reaches both
        start, cpu, api_cpu = time.perf_counter(), time.process_time(), process_cpu(prefect_api_pid())
        with flow_settings():  # as the command runs its flows
            summary = onboard_domain_flow(config)
        result["flow"].append({"wall": time.perf_counter() - start, **summary.timings_seconds,
                               "cpu": time.process_time() - cpu,
                               "api_server_cpu": process_cpu(prefect_api_pid()) - api_cpu})
        if repeat == 0:  # the plain path reads the same source weights and profiles from local files
            wanted = {c["name"] for c in summary.candidates}
            catalogue = [e for e in source_catalogue(uri, with_stats=False)
                         if e["time_safe_for"] == args.target_domain and e["source"] in wanted]
            assert {e["source"] for e in catalogue} == wanted, (wanted, catalogue)
            for e in catalogue:
                load_factor_model(uri, f"models:/{e['registered_model']}/{e['version']}").save(
                    sources_file / e["source"] / "model")
                load_profile(uri, e["run_id"]).save(sources_file / e["source"] / "profile")
        cpu = time.process_time()
        result["plain"].append({**plain_pipeline(config, sources_file), "cpu": time.process_time() - cpu})

    best = {kind: min(result[kind], key=lambda r: r["wall"] if "wall" in r else r["total"]) for kind in
            ("cli", "daemon", "flow", "plain")}
    plain_total = best["plain"]["total"]
    result["overhead_cli"] = best["cli"]["wall"] / plain_total - 1
    result["overhead_daemon"] = best["daemon"]["wall"] / plain_total - 1
    result["overhead_flow"] = best["flow"]["wall"] / plain_total - 1
    pairs = [f["wall"] / p["total"] - 1 for f, p in zip(result["flow"], result["plain"], strict=True)]
    result["overhead_flow_median_pair"] = statistics.median(pairs)
    flow_cpu, plain_cpu, api_cpu = (statistics.median(r[key] for r in result[kind]) for kind, key in
                                    (("flow", "cpu"), ("plain", "cpu"), ("flow", "api_server_cpu")))
    result["cpu_median"] = {"flow": flow_cpu, "api_server": api_cpu, "plain": plain_cpu}
    (out / "time_to_model.json").write_text(json.dumps(result, indent=2))

    from flows.onboard import STAGES as stages
    print(f"time to model: {args.dataset} {args.target_domain} at {args.fraction:.0%}, best of {args.repeats} "
          f"(seconds)\n")
    print("| stage | cli (fresh process) | cli (fresh process, daemon running) | flow (warm process) "
          "| plain functions |")
    print("|---|---|---|---|---|")
    for stage in stages:
        cells = [best[k].get(stage) for k in ("cli", "daemon", "flow", "plain")]
        print(f"| {stage} | " + " | ".join("-" if c is None else f"{c:.2f}" for c in cells) + " |")
    print(f"| **total** | **{best['cli']['wall']:.2f}** | **{best['daemon']['wall']:.2f}** | "
          f"**{best['flow']['wall']:.2f}** | **{plain_total:.2f}** |")
    print(f"\noverhead vs plain: fresh process {result['overhead_cli']:+.0%}, fresh process with the daemon "
          f"{result['overhead_daemon']:+.0%}, warm flow {result['overhead_flow']:+.0%} "
          f"(best of each; the median of the {len(pairs)} interleaved flow/plain pairs: "
          f"{result['overhead_flow_median_pair']:+.0%})")
    print(f"Prefect's temporary API server: {api_cpu:.2f} s of CPU per warm flow (median of {args.repeats})")
    print(f"CPU per onboarding (every thread of this process; median of {args.repeats}): warm flow "
          f"{flow_cpu:.2f} s and its API server {api_cpu:.2f} s, plain functions {plain_cpu:.2f} s: the flow's own "
          f"work {flow_cpu + api_cpu - plain_cpu:+.2f} s ({(flow_cpu + api_cpu) / plain_cpu - 1:+.0%})")
    print("start-up: " + ", ".join(f"{k} {v:.2f}s" for k, v in result["startup"].items()))
    print(f"transfer test NDCG@10: cli {best['cli']['test_ndcg_at_10_transfer']:.4f}, daemon "
          f"{best['daemon']['test_ndcg_at_10_transfer']:.4f}, plain "
          f"{best['plain']['test_ndcg_at_10_transfer']:.4f}; the plain refit: {best['plain']['refit_winner']}")
    print(f"wrote {out / 'time_to_model.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

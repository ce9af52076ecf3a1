"""Scale: a seeded synthetic target domain of 1 M, 3 M and 10 M interactions through validate -> split ->
fine-tune (one epoch) -> evaluate, wall time and peak memory per stage.

Usage:

    python bench/scale.py [--sizes 1e6,3e6,1e7] [--eval-users N] [--out bench/results]
    python bench/scale.py --out-of-core 1000000 [--sizes 1e6,1e7,3e7]   # data bigger than memory

Per size, users = interactions / 25 and items = interactions / 500 (at least 2,000): 40 k users and 2 k items
at 1 M, 400 k and 20 k at 10 M. Interactions: each user belongs to one of 64 taste clusters; items are drawn
from a long-tailed popularity (rank = items x U^3: the top 1 % of items get about a fifth of the draws)
over a cluster-specific permutation of the catalogue, mixed 50/50 with the global one; duplicates dropped;
timestamps uniform over a year; ratings 1-5. The source model knows every user (random 64-dim vectors:
the benchmark measures cost, not quality).

Each size runs in its own process (so its peak RSS is its own): the data is generated and written as Parquet
parts first (not timed), then the measured process reads the folder, validates it with the data contracts,
splits it (the target is 100 % of the domain), fine-tunes for one epoch (``--epochs``), and evaluates the
test task of every test user, or of a seeded sample of ``--eval-users N`` users (full ranking over the whole
catalogue either way: said in the output). In memory, one implicit ALS fit (64 factors, 15 iterations) on the
same training interactions is timed after the stages, as the yardstick of the fine-tune's wall (outside the
total). Prints a table with the growth factor of each stage per 10x data and writes ``scale.json``.

``--out-of-core BATCH_ROWS`` measures the pipeline for data bigger than memory instead: the tables are scanned
lazily and validated in batches (:mod:`data_contracts.batched`), the split runs bucket by bucket of users on
disk and the fine-tune reads its training pairs from a shuffled file (:mod:`models.transfer.outofcore`); it writes
``scale_out_of_core.json``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

DOMAIN = "new"


def generate(n: int, folder: Path, seed: int = 0, parts: int = 8,
             domains: tuple[str, ...] = (DOMAIN,), personal: float = 0.5, taste: float = 3.0) -> dict[str, int]:
    """Write the synthetic tables (see the module docstring) under ``folder``; returns the sizes. With several
    ``domains``, each gets ``n`` interactions over its own ``n / 500`` items from the same users, whose taste
    cluster holds across domains (each domain its own cluster orders): what a model of one domain learns about
    a user carries to the others. ``personal``: the share of a user's draws from its cluster's order;
    ``taste``: the exponent of those draws' ranks (rank = items x U^taste; larger: a cluster's favourites
    stand out more)."""
    import polars as pl

    rng = np.random.default_rng(seed)
    n_users, n_items, clusters = max(1000, n // 25), max(2000, n // 500), 64
    user_cluster = rng.integers(0, clusters, size=n_users)
    permutations = [np.stack([(rng if d == 0 else np.random.default_rng([seed, 1_000 + d])).permutation(n_items)
                              for _ in range(clusters)]) for d in range(len(domains))]
    # one part per block of users (disjoint, so dropping a part's duplicate pairs drops them all): a part at a
    # time in memory, at most ~10 M interactions (100 M at once took more than 24 GB)
    parts = max(parts, -(-n * len(domains) // 10_000_000))
    (folder / "interactions").mkdir(parents=True, exist_ok=True)
    written = 0
    for part in range(parts):
        low, high = n_users * part // parts, n_users * (part + 1) // parts
        wanted = n * (part + 1) // parts - n * part // parts
        draws = int(wanted * 1.3)  # duplicates (user, item) are dropped, then the first wanted kept
        frames = []
        for d in range(len(domains)):
            part_rng = np.random.default_rng([seed, part] if d == 0 else [seed, part, d])
            users = part_rng.integers(low, high, size=draws)
            uniform = part_rng.random(draws)
            ranks = (n_items * uniform ** 3).astype(np.int64)  # long tail: top 1 % of items ~21 %
            mine = part_rng.random(draws) < personal
            liked = (n_items * uniform ** taste).astype(np.int64)  # taste 3: the same bits as ranks
            items = d * n_items + np.where(mine, permutations[d][user_cluster[users], liked], ranks)
            frames.append(pl.DataFrame({
                "user_id": pl.Series(users).cast(pl.String).str.pad_start(7, "0").str.replace(r"^", "u"),
                "item_id": pl.Series(items).cast(pl.String).str.pad_start(6, "0").str.replace(r"^", "i"),
                "timestamp": 1_700_000_000 + part_rng.integers(0, 365 * 86400, size=draws),
                "rating": part_rng.integers(1, 6, size=draws).astype(np.float64),
            }).unique(subset=["user_id", "item_id"], keep="first", maintain_order=True).head(wanted))
            del users, uniform, ranks, mine, liked, items
        interactions = pl.concat(frames)
        interactions.write_parquet(folder / "interactions" / f"part-{part}.parquet")
        written += interactions.height
        del interactions, frames
    item_ids = pl.Series(np.arange(n_items * len(domains))).cast(pl.String).str.pad_start(6, "0").str.replace(r"^", "i")
    pl.DataFrame({"item_id": item_ids, "domain": np.repeat(np.array(domains), n_items),
                  "title": "Item " + item_ids, "genres": "x"}).write_parquet(folder / "items.parquet")
    user_ids = pl.Series(np.arange(n_users)).cast(pl.String).str.pad_start(7, "0").str.replace(r"^", "u")
    np.save(folder / "source_users.npy", user_ids.to_numpy().astype(str), allow_pickle=False)
    return {"interactions": written, "users": n_users, "items": n_items}


def rss_mb() -> float:
    """Peak RSS of this process so far: VmHWM of /proc/self/status (Linux). Not ``ru_maxrss``: a child process
    inherits its parent's peak through fork, so it reported the data generator's 3 GB as the 10 M run's floor."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux


class Laps:
    """Seconds and peak RSS after each stage, into ``out`` (``<stage>_s``, ``<stage>_rss_mb``)."""

    def __init__(self, out: dict[str, float]) -> None:
        self.out, self.clock = out, time.perf_counter()

    def __call__(self, name: str) -> None:
        now = time.perf_counter()
        self.out[f"{name}_s"], self.out[f"{name}_rss_mb"] = now - self.clock, rss_mb()
        self.clock = now


def measure(folder: Path, epochs: int, eval_users: int, seed: int = 0, *, accelerator: str = "cpu",
            strategy: str = "auto") -> dict[str, float]:
    """The measured pipeline (one process); seconds and peak RSS after each stage."""
    from dataclasses import replace

    import polars as pl

    from data_contracts.validation import ContractSettings, validate_tables
    from models.config import FineTuneConfig, SplitConfig, target_train_defaults
    from models.data.datasets import read_raw_tables
    from models.split import split_with
    from models.transfer.recipes import fine_tune, ranking_tasks

    out: dict[str, float] = {"rss_start_mb": rss_mb()}
    lap = Laps(out)

    raw = read_raw_tables(folder)
    lap("load")
    valid = validate_tables(raw, ContractSettings(min_target_interactions=1, target_domain=DOMAIN)).tables
    del raw
    lap("validate")
    split = split_with(valid["interactions"], valid["items"], domain=DOMAIN, config=SplitConfig(fraction=1.0))
    del valid
    if eval_users:  # a seeded sample of the test users (0: every one)
        users = np.sort(split.test["user_id"].unique().to_numpy())
        sample = np.random.default_rng(seed).choice(users, size=min(eval_users, len(users)), replace=False)
        split = replace(split, test=split.test.filter(pl.col("user_id").is_in(sample)))
    lap("split")
    source = _random_source(folder, seed)
    config = FineTuneConfig(train=target_train_defaults().model_copy(update={
        "max_epochs": epochs, "accelerator": accelerator, "strategy": strategy}))
    fit = fine_tune(source, split, config=config, seed=seed)
    out["epochs"] = fit.epochs_run
    lap("fine_tune")
    out["fine_tune_batch"], out["fine_tune_negatives"] = fit.batch_size, fit.n_negatives
    _, test_task = ranking_tasks(split, click_threshold=4.0)
    out = _finish(out, lap, fit.model, test_task)
    # the yardstick, after the measured stages (outside their total and peak memory): one implicit ALS fit of
    # 64 factors and 15 iterations on the same training interactions, on every core
    from models.transfer.als import fit_als_once

    started = time.perf_counter()
    fit_als_once(split.train, split.catalogue["item_id"].to_numpy(), factors=64, regularization=0.01, alpha=1.0,
                 iterations=15, seed=seed)
    out["als_reference_s"] = time.perf_counter() - started
    return out


def measure_out_of_core(folder: Path, epochs: int, eval_users: int, seed: int = 0, *, batch_rows: int,
                        accelerator: str = "cpu", strategy: str = "auto", dask_workers: int = 0) -> dict[str, float]:
    """The same pipeline for data bigger than memory: batched validation of lazy scans
    (:mod:`data_contracts.batched`), the split by user buckets on disk and the fine-tune over the pair file
    (:mod:`models.transfer.outofcore`); scratch files under ``folder / "work"``. ``dask_workers``: the validation
    batches and the split's buckets as Prefect tasks on a local Dask cluster of that many worker processes (the
    onboarding's ``--task-runner dask --dask-processes --runner-workers N``), 0: in this process."""
    from data_contracts.batched import validate_scans
    from data_contracts.validation import ContractSettings
    from models.config import FineTuneConfig, SplitConfig, target_train_defaults
    from models.data.datasets import read_raw_tables
    from models.transfer.outofcore import fine_tune_on_disk, sample_test_task, split_on_disk

    out: dict[str, float] = {"rss_start_mb": rss_mb(), "batch_rows": batch_rows, "dask_workers": dask_workers}
    lap = Laps(out)

    parts = None
    if dask_workers:  # the workers report their task runs to one temporary Prefect API (PREFECT_API_URL)
        from tasks.runtime import await_prefect_api, prestart_prefect_api

        prestart_prefect_api()
        await_prefect_api()
        from flows.config import RunnerConfig
        from flows.runners import PartRunner

        parts = PartRunner(RunnerConfig(kind="dask", workers=dask_workers, processes=True))
    work = folder / "work"
    scans = read_raw_tables(folder, lazy=True)
    lap("load")
    valid = validate_scans(scans, ContractSettings(min_target_interactions=1, target_domain=DOMAIN),
                           workdir=work / "validated", batch_rows=batch_rows, mapper=parts).tables
    lap("validate")
    split = split_on_disk(valid["interactions"], valid["items"].collect(), domain=DOMAIN,
                          config=SplitConfig(fraction=1.0), workdir=work / "split", batch_rows=batch_rows,
                          mapper=parts)
    if parts is not None:
        parts.__exit__(None, None, None)
    lap("split")
    source = _random_source(folder, seed)
    config = FineTuneConfig(train=target_train_defaults().model_copy(update={
        "max_epochs": epochs, "accelerator": accelerator, "strategy": strategy}))
    fit = fine_tune_on_disk(source, split, config=config, seed=seed, batch_rows=batch_rows).fit
    out["epochs"] = fit.epochs_run
    lap("fine_tune")
    return _finish(out, lap, fit.model, sample_test_task(split, users=eval_users or None, seed=seed))


def _finish(out: dict[str, float], lap: Laps, model, test_task) -> dict[str, float]:
    """Evaluate ``model`` on ``test_task`` as the last stage; totals and peak memory."""
    from models.evaluation.ranking import evaluate_model

    report = evaluate_model(model, test_task, ks=(10,))
    out["eval_users"] = test_task.n_users
    out["test_ndcg_at_10"] = report.metrics["ndcg_at_10"]
    lap("evaluate")
    out["total_s"] = sum(out[f"{s}_s"] for s in ("load", "validate", "split", "fine_tune", "evaluate"))
    out["peak_rss_mb"] = rss_mb()
    return out


def _random_source(folder: Path, seed: int):
    """A source model that knows every user (random 64-dim vectors: the benchmark measures cost, not quality)."""
    from models.factors import FactorModel

    source_users = np.load(folder / "source_users.npy", allow_pickle=False).astype(object)
    rng = np.random.default_rng(seed)
    return FactorModel(source_users, np.array(["s0", "s1"], dtype=object),
                       rng.normal(scale=0.1, size=(len(source_users), 64)).astype(np.float32),
                       rng.normal(scale=0.1, size=(2, 64)).astype(np.float32), np.zeros(2, dtype=np.float32))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1e6,3e6,1e7")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--eval-users", type=int, default=0, help="a seeded sample of N test users (0: every one)")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--accelerator", default="cpu", help="Lightning accelerator of the fine-tune (default cpu)")
    parser.add_argument("--strategy", default="auto", help="Lightning strategy, e.g. ddp (default auto)")
    parser.add_argument("--out-of-core", type=int, metavar="BATCH_ROWS", default=None,
                        help="the out-of-core pipeline (batched validation, split and pairs on disk) with batches "
                             "of BATCH_ROWS rows; default: the in-memory one")
    parser.add_argument("--dask-workers", type=int, default=0,
                        help="with --out-of-core: validation batches and split buckets as Prefect tasks on a local "
                             "Dask cluster of N worker processes (the parent's peak RSS then leaves out the workers')")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # internal: the measured child process
    args = parser.parse_args(argv)
    if args.measure:
        hardware = {"accelerator": args.accelerator, "strategy": args.strategy}
        if args.out_of_core:
            result = measure_out_of_core(args.measure, args.epochs, args.eval_users, batch_rows=args.out_of_core,
                                         dask_workers=args.dask_workers, **hardware)
        else:
            result = measure(args.measure, args.epochs, args.eval_users, **hardware)
        print(json.dumps(result))
        return 0

    results = []
    for size in (int(float(s)) for s in args.sizes.split(",")):
        with tempfile.TemporaryDirectory(prefix=f"scale-{size}-") as tmp:
            folder = Path(tmp)
            shape = generate(size, folder)
            done = subprocess.run([sys.executable, __file__, "--measure", str(folder), "--epochs", str(args.epochs),
                                   "--eval-users", str(args.eval_users), "--accelerator", args.accelerator,
                                   "--strategy", args.strategy, "--dask-workers", str(args.dask_workers),
                                   *(["--out-of-core", str(args.out_of_core)] if args.out_of_core else [])],
                                  capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(f"size {size} failed:\n{done.stderr[-4000:]}")
            row = {"size": size, **shape, **json.loads(done.stdout.strip().splitlines()[-1])}
            results.append(row)
            print(f"{size:>10,}: {row['total_s']:.1f} s, peak RSS {row['peak_rss_mb']:.0f} MB", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    name = "scale" if args.accelerator == "cpu" else f"scale_{args.accelerator}_{args.strategy}"
    name += "_out_of_core" if args.out_of_core else ""
    name += f"_dask{args.dask_workers}.json" if args.dask_workers else ".json"
    (args.out / name).write_text(json.dumps(results, indent=2))

    stages = ("load", "validate", "split", "fine_tune", "evaluate", "total")
    mode = f"out of core, batches of {args.out_of_core:,} rows" if args.out_of_core else "in memory"
    mode += f", parts on {args.dask_workers} Dask worker processes" if args.dask_workers else ""
    print(f"\nscale ({mode}; {args.accelerator}, strategy {args.strategy}): validate -> split -> fine-tune "
          f"({args.epochs} epoch) -> evaluate (test task of "
          f"{f'{args.eval_users:,} sampled users' if args.eval_users else 'every test user'}, full ranking); "
          "seconds, peak RSS of the process\n")
    print("| interactions | users | items | " + " | ".join(stages) + " | peak RSS MB |")
    print("|---|---|---|" + "---|" * (len(stages) + 1))
    for r in results:
        print(f"| {r['interactions']:,} | {r['users']:,} | {r['items']:,} | "
              + " | ".join(f"{r[f'{s}_s']:.1f}" for s in stages) + f" | {r['peak_rss_mb']:.0f} |")
    for r in results:
        if "als_reference_s" in r:
            print(f"{r['interactions']:,}: fine-tune {r['fine_tune_s']:.1f} s (batch {r['fine_tune_batch']:,}, "
                  f"{r['fine_tune_negatives']:,} negatives, {r['epochs']} epoch) against one implicit ALS fit "
                  f"(64 factors, 15 iterations) on the same training interactions {r['als_reference_s']:.1f} s")
    if len(results) >= 2:
        first, last = results[0], results[-1]
        ratio = last["interactions"] / first["interactions"]
        print(f"\ngrowth from {first['interactions']:,} to {last['interactions']:,} interactions (x{ratio:.1f}): "
              + ", ".join(f"{s} x{last[f'{s}_s'] / max(first[f'{s}_s'], 1e-9):.1f}" for s in stages)
              + f", peak RSS x{last['peak_rss_mb'] / first['peak_rss_mb']:.1f}")
    print(f"wrote {args.out / name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""One own-data onboarding, resolved from each way of starting it: the command line, the Python API, the
committed prefect.yaml's nightly trigger and `transferrec serve`'s trigger (both filled with the payload of
`transferrec notify data-landed`), with the training rows each config yields.

Usage:  python bench/entry_points.py [--customers 800]

Writes the synthetic retail export to a temporary folder, resolves the four configs, checks they are equal, and
for each prints split.fraction, the data fields and the training rows of the split (contracts and split run as
an onboarding runs them). The served deployments on a real Prefect server are exercised by
tests/integration/test_orchestration.py.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=800)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from data_contracts.validation import validate_tables
    from flows.cli import build_parser, resolve_config
    from flows.config import OnboardConfig
    from flows.deployments import data_landed_parameters, data_landed_payload
    from flows.deployments import fill_event_templates as fill
    from models.data.datasets import read_tables
    from models.data.synthetic import generate_retail, write_retail_export
    from models.split import split_with

    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        shop = write_retail_export(generate_retail(n_customers=args.customers), Path(tmp) / "shop")
        payload = data_landed_payload("garden", Path("shop"), Path("shop/columns.yaml"))
        nightly = next(d for d in yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]
                       if d["name"] == "nightly")
        served = resolve_config(build_parser().parse_args(["serve", "--target-domain", "Horror"]))
        configs = {
            "CLI: onboard --data shop --columns shop/columns.yaml --target-domain garden": resolve_config(
                build_parser().parse_args(["onboard", "--data", "shop", "--columns", "shop/columns.yaml",
                                           "--target-domain", "garden"])),
            "Python: OnboardConfig(target_domain=, data={path, columns})": OnboardConfig(
                target_domain="garden", data={"path": shop, "columns": shop / "columns.yaml"}),
            "prefect.yaml nightly trigger + data-landed event": OnboardConfig.model_validate(
                fill(nightly["triggers"][0]["parameters"], payload)["config"]),
            "serve (Horror) + data-landed event": OnboardConfig.model_validate(
                fill(data_landed_parameters(served), payload)["config"]),
        }
        print("| entry point | split.fraction | data.dataset | data.path | data.columns | training rows |")
        print("|---|---|---|---|---|---|")
        for name, config in configs.items():
            data = config.data
            valid = validate_tables(read_tables(data.path, data.columns), data.contract_settings("garden")).tables
            split = split_with(valid["interactions"], valid["items"], domain="garden", config=config.split)
            print(f"| {name} | {config.split.fraction} | {data.dataset} | {data.path} | "
                  f"{'mapped' if data.columns else 'none'} | {split.train.height:,} |")
        first = next(iter(configs.values()))
        equal = all(c == first for c in configs.values())
        print(f"\nall four configs equal: {equal}")
        return 0 if equal else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""Latency and throughput of `transferrec serve-model` (MLflow's scoring server over a registered model).

Starts the server on the registered model of ``--target-domain`` (alias ``--alias``) in the tracking store
``--tracking-uri`` (by default the one `make demo` writes: ``./mlflow.db``, Horror's champion), waits for
``/ping``, then, with keep-alive HTTP clients on the same machine:

* one user per request, ``--requests`` requests one after the other: p50 / p99 milliseconds;
* 100 users per request, a fifth as many requests: p50 / p99;
* 4 concurrent clients sending one-user requests for ``--seconds``: requests per second.

Users are drawn from the model's own users (and 10 % unknown ones, who get the popularity fallback). Prints a
table and writes ``bench/results/serve_latency.json``. Goal on 2 cores: p99 ≤ 50 ms for one user.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent


def _ask(connection: http.client.HTTPConnection, users: list[str], k: int) -> float:
    """Seconds for one request (the answer read and checked)."""
    body = json.dumps({"dataframe_records": [{"user_id": u} for u in users], "params": {"k": k}})
    started = time.perf_counter()
    connection.request("POST", "/invocations", body=body, headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    payload = response.read()
    seconds = time.perf_counter() - started
    if response.status != 200 or len(json.loads(payload)["predictions"]) != len(users):
        raise RuntimeError(f"bad answer {response.status}: {payload[:300]!r}")
    return seconds


def _percentiles(seconds: list[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1000
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)), "requests": len(ms)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tracking-uri", help="default: MLFLOW_TRACKING_URI, else ./mlflow.db")
    parser.add_argument("--target-domain", default="Horror")
    parser.add_argument("--alias", default="champion")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)

    from tasks.tracking import default_tracking_uri, load_factor_model, registered_model_name

    args.tracking_uri = args.tracking_uri or default_tracking_uri()
    model_uri = f"models:/{registered_model_name(args.target_domain)}@{args.alias}"
    known = [str(u) for u in load_factor_model(args.tracking_uri, model_uri).user_ids]
    rng = np.random.default_rng(0)

    def some_users(n: int) -> list[str]:
        return [f"unknown-{i}" if rng.random() < 0.1 else known[int(rng.integers(len(known)))] for i in range(n)]

    from flows.services import free_port

    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": args.tracking_uri}
    started = time.perf_counter()
    server = subprocess.Popen([str(BIN / "transferrec"), "serve-model", "--target-domain", args.target_domain,
                               "--alias", args.alias, "--port", str(port)], env=env, stderr=subprocess.PIPE,
                              text=True)
    try:
        while True:
            try:
                probe = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                probe.request("GET", "/ping")
                if probe.getresponse().status == 200:
                    break
            except OSError:
                if server.poll() is not None:
                    raise SystemExit(f"the server did not start: {server.communicate()[1][-2000:]}") from None
                time.sleep(0.2)
        ready = time.perf_counter() - started
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        for _ in range(20):  # warm-up
            _ask(connection, some_users(1), args.k)
        one = _percentiles([_ask(connection, some_users(1), args.k) for _ in range(args.requests)])
        hundred = _percentiles([_ask(connection, some_users(100), args.k)
                                for _ in range(max(args.requests // 5, 20))])
        counts = [0, 0, 0, 0]
        stop = time.perf_counter() + args.seconds

        def client(slot: int) -> None:
            own = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            local = np.random.default_rng(slot)
            while time.perf_counter() < stop:
                _ask(own, [known[int(local.integers(len(known)))]], args.k)
                counts[slot] += 1

        clients = [threading.Thread(target=client, args=(slot,)) for slot in range(4)]
        for thread in clients:
            thread.start()
        for thread in clients:
            thread.join()
    finally:
        server.terminate()
        server.communicate(timeout=60)
    result = {"model": model_uri, "users_known": len(known), "k": args.k, "start_to_ready_s": ready,
              "one_user": one, "hundred_users": hundred, "four_clients_requests_per_s": sum(counts) / args.seconds}
    print(f"| {model_uri} | p50 ms | p99 ms |\n|---|---|---|\n"
          f"| 1 user / request ({one['requests']} requests) | {one['p50_ms']:.1f} | {one['p99_ms']:.1f} |\n"
          f"| 100 users / request ({hundred['requests']} requests) | {hundred['p50_ms']:.1f} | "
          f"{hundred['p99_ms']:.1f} |\n\n4 concurrent clients, 1 user each: "
          f"{result['four_clients_requests_per_s']:.0f} requests/s; server ready {ready:.1f} s after start")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "serve_latency.json").write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""What recording impressions costs the request path, and what an idle request waits (issue 36).

    python -m benchmarks.online_load --bundle bundles/ml100k [--concurrency 16] [--seconds 40]
        [--out docs/results/online-load.json]

One head (`ray start --head`, stopped at the end), three applications from serve_configs/ranker.yaml: the
shipped app (impressions recorded), the same app with ``record_impressions: false`` under ``/quiet``, and the
empty app of benchmarks/empty_app.py under ``/empty``. serve_load.py's load generator (serve_harness.load)
drives them in alternating windows (``--rounds`` each; a shared machine's speed drifts): throughput and
p50/p99 of /recommend with impressions on against off and against the empty app; then one request at a time
(concurrency 1) for the idle latency. Every deployment asks for 0.1 CPU so that the three fit a 2-core head
(logical only)."""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import os
import time
from pathlib import Path

import httpx

from benchmarks.serve_harness import ROOT, bundle_users, load, serve_app, summary

PATHS = {"impressions on": "/recommend", "impressions off": "/quiet/recommend", "empty": "/empty/recommend"}


def tweak(config: dict) -> None:
    app = config["applications"][0]
    quiet = copy.deepcopy(app)
    quiet.update({"name": "quiet", "route_prefix": "/quiet"})
    quiet["args"]["record_impressions"] = False
    empty = {
        "name": "empty",
        "route_prefix": "/empty",
        "import_path": "benchmarks.empty_app:build",
        "args": {},
    }
    config["applications"] += [quiet, empty]
    for application in config["applications"][:2]:
        for d in application["deployments"]:
            d["ray_actor_options"] = {**d.get("ray_actor_options", {}), "num_cpus": 0.1}


def windows(url: str, bodies: list[dict], concurrency: int, seconds: float, rounds: int) -> dict:
    latencies: dict[str, list[float]] = {name: [] for name in PATHS}
    totals = {name: [0.0, 0] for name in PATHS}  # wall seconds, errors
    per_round = []
    for _ in range(rounds):
        rps = {}
        for name, path in PATHS.items():
            got = asyncio.run(
                load(f"{url}{path}", bodies, concurrency, seconds / rounds, latencies=latencies[name])
            )
            totals[name][0] += got["wall_s"]
            totals[name][1] += got["errors"]
            rps[name] = got["rps"]
        per_round.append({k: round(v, 1) for k, v in rps.items()})
    out = {name: summary(latencies[name], totals[name][1], totals[name][0]) for name in PATHS}
    on, off, empty = (out[n] for n in PATHS)
    return {
        **out,
        "on_vs_off_throughput": round(on["rps"] / off["rps"], 3),
        "on_vs_empty_throughput": round(on["rps"] / empty["rps"], 3),
        "on_vs_empty_p99": round(on["p99_ms"] / empty["p99_ms"], 3),
        "rounds": per_round,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=40, help="load per app, split over --rounds windows")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--idle-seconds", type=float, default=15, help="concurrency-1 load per app")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "bench" / "online-load.json")
    args = parser.parse_args()
    bodies = [{"user_id": u, "k": 20} for u in bundle_users(args.bundle)]
    result: dict = {"concurrency": args.concurrency, "seconds": args.seconds, "cpus": os.cpu_count()}
    with serve_app(args.bundle, args.out.parent / "online-load-work", tweak) as served:
        url = served["url"]
        for path in PATHS.values():  # every app answers, then a warm-up of each
            for _ in range(120):
                try:
                    if httpx.post(f"{url}{path}", json=bodies[0], timeout=5).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(1)
            asyncio.run(load(f"{url}{path}", bodies, args.concurrency, 5))
        result["loaded"] = windows(url, bodies, args.concurrency, args.seconds, args.rounds)
        print(json.dumps({k: v for k, v in result["loaded"].items() if k != "rounds"}, indent=2), flush=True)
        result["idle"] = windows(url, bodies, 1, args.idle_seconds, 1)
        print(json.dumps({k: result["idle"][k] for k in PATHS}, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

"""Fault script: ranking replicas killed (SIGKILL) under load; the share of requests that still succeed.

    python -m benchmarks.serve_faults --bundle bundles/ml100k [--seconds 60] [--kills 2] [--concurrency 8]
    [--split]

Deploys serve_configs/ranker.yaml on a head of its own with two replicas of the deployment that ranks,
drives /recommend with a closed loop, and every `seconds / (kills + 1)` seconds kills one of its replica
processes; Serve's controller starts a replacement. Shipped layout (in-process ranking): the killed replica
is an Ingress, and the requests it held are lost with it. ``--split`` (a separate Ranker deployment): the
killed replica is a Ranker, and the Ingress sends a read whose replica died to another one (`READ_RETRIES`).
Reports success rate (goal ≥ 99.9%), statuses, replacement time and the Ingress retry counter; writes
reports/bench/serve-faults.json (serve-faults-split.json with ``--split``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import time
from pathlib import Path

import httpx

from benchmarks.serve_harness import (
    ROOT,
    bundle_users,
    deployment,
    load,
    ranking_deployment,
    replica_processes,
    serve_app,
    split_ranker,
)


def fixed_replicas(config: dict, name: str) -> None:
    # min = max: a fixed count (the shipped config autoscales 2..2 already; this keeps the script explicit)
    deployment(config, name)["autoscaling_config"].update({"min_replicas": 2, "max_replicas": 2})


async def kill_replicas(head: dict, name: str, kills: int, every_s: float, log: list[dict]) -> None:
    """SIGKILL one replica of ``name`` every ``every_s`` seconds; record how long until two run again."""
    for n in range(kills):
        await asyncio.sleep(every_s)
        alive = await asyncio.to_thread(replica_processes, head, name)
        victim = alive[n % len(alive)]
        os.kill(victim["pid"], signal.SIGKILL)
        killed_at = time.perf_counter()
        print(f"[faults] killed {name} replica pid {victim['pid']} ({len(alive)} were running)", flush=True)
        replaced = None
        while time.perf_counter() - killed_at < every_s * 0.9:
            now = await asyncio.to_thread(replica_processes, head, name)
            if len(now) >= 2 and victim["pid"] not in {r["pid"] for r in now}:
                replaced = round(time.perf_counter() - killed_at, 1)
                break
            await asyncio.sleep(1)
        log.append({"pid": victim["pid"], "replaced_after_s": replaced})


def retries(url: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    found = re.search(r"^longtail_ranker_read_retries_total(?:\{[^}]*\})? ([0-9.e+]+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", type=Path, required=True)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--kills", type=int, default=2)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument(
        "--split", action="store_true", help="a separate Ranker deployment (its replicas are killed)"
    )
    ap.add_argument("--out", type=Path, default=ROOT / "reports" / "bench")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    bodies = [{"user_id": u, "k": 20} for u in bundle_users(args.bundle)]
    name = "Ranker" if args.split else "Ingress"

    def tweak(config: dict) -> None:
        if args.split:
            split_ranker(config)
        assert ranking_deployment(config) == name
        fixed_replicas(config, name)

    with serve_app(args.bundle, args.out / "faults-work", tweak) as served:
        url, head = served["url"], served["head"]
        while len(replica_processes(head, name)) < 2:
            time.sleep(1)
        asyncio.run(load(f"{url}/recommend", bodies, args.concurrency, 5))  # warm-up
        statuses: dict = {}
        kills: list[dict] = []

        async def run() -> dict:
            every = args.seconds / (args.kills + 1)
            result, _ = await asyncio.gather(
                load(f"{url}/recommend", bodies, args.concurrency, args.seconds, statuses),
                kill_replicas(head, name, args.kills, every, kills),
            )
            return result

        result = asyncio.run(run())
        retried = retries(url)
    ok = statuses.get(200, 0)
    total = sum(statuses.values())
    report = {
        "killed": name,
        "seconds": args.seconds,
        "concurrency": args.concurrency,
        "kills": kills,
        "load": result,
        "statuses": {str(k): v for k, v in statuses.items()},
        "success_rate": round(ok / max(total, 1), 5),
        "ingress_read_retries": retried,
        "goal_success_rate": 0.999,
    }
    report["goal_reached"] = report["success_rate"] >= 0.999
    (args.out / ("serve-faults-split.json" if args.split else "serve-faults.json")).write_text(
        json.dumps(report, indent=2)
    )
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

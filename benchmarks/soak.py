"""Soak: /recommend at 80% of measured peak throughput for 10 minutes; p99 and replica memory over time.

    python -m benchmarks.soak --bundle bundles/ml100k [--minutes 10] [--share 0.8] [--window 30]

Loopback only, bounded: deploys serve_configs/ranker.yaml on a head of its own (two replicas of the
deployment that ranks, fixed: the Ingress in the shipped layout, the Ranker with ``--split``), measures the
peak with a closed loop (16 clients, 20 s), then sends an open-loop stream at
`share` × peak for `minutes`. Every window it prints p50/p99/errors and the resident memory of the Ingress
(and Ranker) replicas. Goal: no error and no growth beyond 10% (median of the last third of the windows
vs the first third, warm-up left out; memory of each deployment's largest replica, and p99).
Writes reports/bench/soak.json and soak.png.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

import numpy as np

from benchmarks.serve_harness import (
    ROOT,
    bundle_users,
    deployment,
    load,
    paced_load,
    ranking_deployment,
    replica_processes,
    rss_mb,
    serve_app,
    split_ranker,
)

RANKERS = 2  # fixed for the soak: memory is followed per replica process, so the set must not change


def growth(first: float, last: float) -> float:
    return round((last - first) / max(first, 1e-9), 4)


def summarize(windows: list[dict]) -> dict:
    """Growth of memory (largest replica per deployment) and p99 from the first third of the windows to the
    last third (medians; the first window, warm-up, is left out): one 30-s window's p99 is noisy."""
    steady = windows[1:] if len(windows) > 3 else windows
    third = max(1, len(steady) // 3)
    head, tail = steady[:third], steady[-third:]

    def median(rows: list[dict], get) -> float:
        return float(np.median([get(w) for w in rows]))

    memory = {
        n: growth(
            median(head, lambda w, n=n: w["memory_mb"][n]), median(tail, lambda w, n=n: w["memory_mb"][n])
        )
        for n in windows[0]["memory_mb"]
    }
    out = {
        "errors": sum(w["errors"] for w in windows),
        "requests": sum(w["requests"] for w in windows),
        "memory_growth": memory,
        "p99_ms_first_third": median(head, lambda w: w["p99_ms"]),
        "p99_ms_last_third": median(tail, lambda w: w["p99_ms"]),
        "p99_ms_max": max(w["p99_ms"] for w in windows),
    }
    out["p99_growth"] = growth(out["p99_ms_first_third"], out["p99_ms_last_third"])
    out["goal_reached"] = max(*memory.values(), out["p99_growth"]) <= 0.10 and out["errors"] == 0
    return out


def plot(windows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [w["t_s"] / 60 for w in windows]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 5.5), sharex=True)
    top.plot(t, [w["p99_ms"] for w in windows], marker="o", label="p99")
    top.plot(t, [w["p50_ms"] for w in windows], marker=".", label="p50")
    top.set_ylabel("latency, ms")
    top.legend()
    top.grid(alpha=0.3)
    for name in windows[0]["memory_mb"]:
        bottom.plot(t, [w["memory_mb"][name] for w in windows], marker="o", label=f"{name} (largest replica)")
    bottom.set_ylabel("resident memory, MiB")
    bottom.set_xlabel("minutes")
    bottom.legend()
    bottom.grid(alpha=0.3)
    fig.suptitle("/recommend soak at a fixed rate")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", type=Path, required=True)
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--share", type=float, default=0.8)
    ap.add_argument("--window", type=float, default=30)
    ap.add_argument(
        "--split", action="store_true", help="a separate Ranker deployment (ranker_deployment: true)"
    )
    ap.add_argument("--out", type=Path, default=ROOT / "reports" / "bench")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    bodies = [{"user_id": u, "k": 20} for u in bundle_users(args.bundle)]
    ranking = "Ranker" if args.split else "Ingress"
    names = tuple(dict.fromkeys([ranking, "Ingress"]))  # the processes followed

    def fixed_replicas(config: dict) -> None:
        if args.split:
            split_ranker(config)
        assert ranking_deployment(config) == ranking
        deployment(config, ranking)["autoscaling_config"].update(
            {"min_replicas": RANKERS, "max_replicas": RANKERS}
        )

    with serve_app(args.bundle, args.out / "soak-work", fixed_replicas) as served:
        url, head = served["url"], served["head"]
        # the replica processes, listed once: `ray list actors` is a CLI that costs seconds of CPU
        procs = {name: replica_processes(head, name) for name in names}
        while len(procs[ranking]) < RANKERS:
            time.sleep(1)
            procs[ranking] = replica_processes(head, ranking)
        asyncio.run(load(f"{url}/recommend", bodies, 16, 10))  # warm-up
        peak = asyncio.run(load(f"{url}/recommend", bodies, 16, 20))
        rate = args.share * peak["rps"]
        print(
            f"[soak] peak {peak['rps']} req/s (p99 {peak['p99_ms']} ms); soaking at {rate:.1f} req/s "
            f"for {args.minutes} min",
            flush=True,
        )

        def on_window(row: dict) -> None:  # psutil reads only: microseconds, the load loop is not held up
            row["replicas_alive"] = {name: sum(rss_mb(r["pid"]) > 0 for r in p) for name, p in procs.items()}
            row["memory_mb"] = {
                name: round(max((rss_mb(r["pid"]) for r in p), default=0.0), 1) for name, p in procs.items()
            }
            print(
                f"[soak] {row['t_s']:>6.0f} s  {row['rps']:6.1f} req/s  p50 {row['p50_ms']:7.1f} ms  "
                f"p99 {row['p99_ms']:7.1f} ms  errors {row['errors']}  replicas {row['replicas_alive']}  "
                f"memory {row['memory_mb']} MiB",
                flush=True,
            )

        windows = asyncio.run(
            paced_load(f"{url}/recommend", bodies, rate, args.minutes * 60, args.window, on_window)
        )
    report = {
        "peak": peak,
        "rate": round(rate, 1),
        "minutes": args.minutes,
        "windows": windows,
        **summarize(windows),
    }
    (args.out / "soak.json").write_text(json.dumps(report, indent=2))
    plot(windows, args.out / "soak.png")
    print(json.dumps({k: v for k, v in report.items() if k != "windows"}, indent=2))


if __name__ == "__main__":
    main()

"""Serve benchmark: /recommend throughput and latency next to an empty deployment, event freshness,
new-item time-to-recommendable, and autoscaling of the ranker under sustained load.

    python -m benchmarks.serve_load --bundle bundles/ml100k [--concurrency 16] [--seconds 20]

Starts its own head (`ray start --head`, stopped at the end), deploys serve_configs/ranker.yaml with
the bundle plus benchmarks/empty_app.py as a second application, and drives both with the same
asyncio load generator in the same run, at the config's replica counts; the autoscaling phase then
redeploys the ranking deployment to scale from one replica. Writes reports/bench/serve.json and
serve-autoscaling.png.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from pathlib import Path

import httpx
import numpy as np
import yaml
from harness.ray_head import cli

from benchmarks.serve_harness import (
    ROOT,
    bundle_users,
    deployment,
    load,
    ranking_deployment,
    serve_app,
    split_ranker,
    summary,
)


def freshness(url: str, users: list[str], trials: int = 20) -> dict:
    """Seconds from an event's POST to the first /recommend that reflects it (its item is then excluded)."""
    times = []
    with httpx.Client(timeout=30) as http:
        for t in range(trials):
            user = users[t % len(users)]
            top = http.post(f"{url}/recommend", json={"user_id": user, "k": 1}).json()["items"][0]["item_id"]
            start = time.perf_counter()
            http.post(
                f"{url}/events",
                json={"event_id": f"bench-{time.time_ns()}", "user_id": user, "item_id": top, "type": "view"},
            ).raise_for_status()
            while top in [
                i["item_id"]
                for i in http.post(f"{url}/recommend", json={"user_id": user, "k": 20}).json()["items"]
            ]:
                pass
            times.append(time.perf_counter() - start)
    return {"p50_ms": round(float(np.median(times)) * 1000, 2), "max_ms": round(max(times) * 1000, 2)}


def new_item_time(url: str, trials: int = 5, checks: int = 8) -> dict:
    """Seconds from POST /items to the item being returned by `checks` consecutive /similar calls
    (spread over the ranker replicas)."""
    times = []
    with httpx.Client(timeout=30) as http:
        for t in range(trials):
            item = f"bench-item-{time.time_ns()}-{t}"
            start = time.perf_counter()
            http.post(
                f"{url}/items", json={"item_id": item, "text": f"a new film number {t} about space and love"}
            ).raise_for_status()
            ok = 0
            while ok < checks:
                ok = (
                    ok + 1
                    if http.get(f"{url}/items/{item}/similar", params={"k": 5}).status_code == 200
                    else 0
                )
            times.append(time.perf_counter() - start)
    return {"p50_s": round(float(np.median(times)), 3), "max_s": round(max(times), 3)}


def ranker_replicas(head: dict, name: str) -> int:
    status = yaml.safe_load(cli("serve", "status", "--address", head["dashboard"], env=head["env"]).stdout)
    states = status["applications"]["longtail"]["deployments"][name]["replica_states"]
    return int(states.get("RUNNING", 0))


def autoscaling(
    url: str, head: dict, name: str, bodies: list[dict], concurrency: int, load_s: float, idle_s: float
) -> list:
    """(seconds, running replicas of the ranking deployment ``name``, phase) while under load and then
    idle."""
    timeline: list[tuple[float, int, str]] = []
    start = time.time()

    async def watch(until: float, phase: str) -> None:
        while time.time() < until:
            timeline.append(
                (round(time.time() - start, 1), await asyncio.to_thread(ranker_replicas, head, name), phase)
            )
            await asyncio.sleep(2)

    async def run() -> None:
        until = time.time() + load_s
        await asyncio.gather(load(f"{url}/recommend", bodies, concurrency, load_s), watch(until, "load"))
        await watch(time.time() + idle_s, "idle")

    asyncio.run(run())
    return timeline


def interleaved(url: str, bodies: list[dict], concurrency: int, seconds: float, rounds: int) -> dict:
    """The empty app and /recommend in alternating windows (``rounds`` each, ``seconds`` in all per app): a
    shared machine's speed drifts over minutes, so back-to-back blocks would compare different machines.
    Totals over the rounds, and each round's throughput ratio."""
    latencies: dict[str, list[float]] = {"empty": [], "recommend": []}
    counts = {"empty": [0, 0.0, 0], "recommend": [0, 0.0, 0]}  # requests, seconds, errors
    per_round = []
    for _ in range(rounds):
        rps = {}
        for name, path in (("empty", "/empty/recommend"), ("recommend", "/recommend")):
            got = asyncio.run(
                load(f"{url}{path}", bodies, concurrency, seconds / rounds, latencies=latencies[name])
            )
            counts[name][0] += got["requests"]
            counts[name][1] += got["wall_s"]
            counts[name][2] += got["errors"]
            rps[name] = got["rps"]
        per_round.append(round(rps["recommend"] / rps["empty"], 3))
    out = {name: {**summary(latencies[name], counts[name][2], counts[name][1])} for name in latencies}
    return {
        **out,
        "throughput_ratio": round(out["recommend"]["rps"] / out["empty"]["rps"], 3),
        "p99_ratio": round(out["recommend"]["p99_ms"] / out["empty"]["p99_ms"], 3),
        "rounds": per_round,
    }


def redeploy(served: dict, change) -> None:
    """``serve deploy`` the running app's config again after ``change(config)``."""
    path = served["work"] / "serve.yaml"
    config = yaml.safe_load(path.read_text())
    change(config)
    path.write_text(yaml.safe_dump(config))
    head = served["head"]
    cli("serve", "deploy", str(path), "--address", head["dashboard"], env=head["env"])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=40, help="load per app, split over --rounds windows")
    parser.add_argument("--rounds", type=int, default=4, help="alternating empty / recommend windows")
    parser.add_argument("--ratio-only", action="store_true", help="only the throughput and p99 ratios")
    parser.add_argument("--config", type=Path, default=ROOT / "serve_configs" / "ranker.yaml")
    parser.add_argument(
        "--split", action="store_true", help="rank in a separate Ranker deployment (ranker_deployment: true)"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "bench")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    users = bundle_users(args.bundle)
    bodies = [{"user_id": u, "k": 20} for u in users]

    shipped = yaml.safe_load(args.config.read_text())
    if args.split:
        split_ranker(shipped)
    ranking = ranking_deployment(shipped)

    def tweak(config: dict) -> None:  # the shipped replica counts while throughput is measured
        if args.split:
            split_ranker(config)
        config["applications"].append(
            {
                "name": "empty",
                "route_prefix": "/empty",
                "import_path": "benchmarks.empty_app:build",
                "args": {},
            }
        )

    def scale_from_one(config: dict) -> None:
        """For the autoscaling phase only: from one replica (the shipped min of 2 is for rolling updates), to
        see it scale up and back. Measuring throughput while the replica count moves (it fell back to one
        in each idle window of the interleaving) made the ratio a figure of the autoscaler's delays."""
        deployment(config, ranking)["autoscaling_config"].update(
            {"min_replicas": 1, "upscale_delay_s": 3, "downscale_delay_s": 15}
        )

    results: dict = {
        "concurrency": args.concurrency,
        "seconds": args.seconds,
        "bundle": str(args.bundle),
        "cpus": os.cpu_count(),
        "config": str(args.config),
        "ranking_deployment": ranking,
        "split": args.split,
    }
    with serve_app(args.bundle, args.out / "serve-work", tweak, args.config) as served:
        url, head = served["url"], served["head"]
        for _ in range(120):
            try:
                if httpx.post(f"{url}/empty/recommend", json={}, timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        asyncio.run(load(f"{url}/recommend", bodies, args.concurrency, 5))  # warm-up
        asyncio.run(load(f"{url}/empty/recommend", bodies, args.concurrency, 5))
        results.update(interleaved(url, bodies, args.concurrency, args.seconds, args.rounds))
        print(
            json.dumps(
                {k: results[k] for k in ("empty", "recommend", "throughput_ratio", "p99_ratio", "rounds")},
                indent=2,
            )
        )
        if args.ratio_only:
            (args.out / "serve-ratio.json").write_text(json.dumps(results, indent=2))
            return
        results["event_freshness"] = freshness(url, users)
        results["new_item_time"] = new_item_time(url)
        print(json.dumps({k: results[k] for k in ("event_freshness", "new_item_time")}, indent=2))
        redeploy(served, scale_from_one)  # autoscaling settings change in place: no replica restarts
        for _ in range(60):  # start the autoscaling phase from one replica: idle until scaled down
            if ranker_replicas(head, ranking) == 1:
                break
            time.sleep(2)
        timeline = autoscaling(url, head, ranking, bodies, args.concurrency * 2, 60, 45)
        results["autoscaling"] = {
            "timeline": timeline,
            "replicas_at_start": timeline[0][1],
            "max_replicas_under_load": max(r for _, r, p in timeline if p == "load"),
            "replicas_at_end": timeline[-1][1],
        }
        print(json.dumps({k: v for k, v in results["autoscaling"].items() if k != "timeline"}))
    (args.out / "serve.json").write_text(json.dumps(results, indent=2))
    plot_timeline(timeline, ranking, args.out / "serve-autoscaling.png")
    print(f"wrote {args.out / 'serve.json'} and {args.out / 'serve-autoscaling.png'}")


def plot_timeline(timeline: list, name: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3))
    ax.step([t for t, _, _ in timeline], [r for _, r, _ in timeline], where="post")
    load_end = max((t for t, _, p in timeline if p == "load"), default=0)
    ax.axvspan(0, load_end, alpha=0.15, label="sustained load")
    ax.set(
        xlabel="seconds",
        ylabel=f"running {name} replicas",
        title=f"{name} autoscaling (the replicas that rank)",
    )
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()

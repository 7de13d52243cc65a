"""Where a /recommend request's CPU goes: CPU ms per request of every process on the head under load
(the proxy, each replica, Ray's daemons, the load generator), against the empty app under the same load,
and py-spy samples of the replicas that answer.

    python -m benchmarks.serve_profile --bundle bundles/ml100k [--config serve_configs/ranker.yaml]

Writes reports/bench/serve-profile.json (CPU ms per request by process group, and the hottest frames of
each profiled deployment, by inclusive and by own samples).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import yaml

from benchmarks.serve_harness import (
    ROOT,
    bundle_users,
    load,
    ranking_deployment,
    replica_processes,
    serve_app,
)


def group(proc: psutil.Process) -> str:
    """A process's role on the head: a Serve actor's class, a Ray daemon, or the load generator."""
    if proc.pid == os.getpid():
        return "load generator"
    try:
        title = " ".join(proc.cmdline())[:300]
    except psutil.Error:
        return "gone"
    for key in (
        "ServeReplica:longtail:Ingress",
        "ServeReplica:longtail:Ranker",
        "ServeReplica:longtail:Encoder",
        "ServeReplica:empty:Empty",
        "ProxyActor",
        "ServeController",
        "gcs_server",
        "raylet",
        "dashboard",
        "log_monitor",
        "runtime_env",
    ):
        if key in title:
            return key.replace("ServeReplica:", "")
    return "other ray" if "ray" in title else "other"


def cpu_times() -> dict[int, tuple[str, float]]:
    out = {}
    for proc in psutil.process_iter():
        try:
            times = proc.cpu_times()
            out[proc.pid] = (group(proc), times.user + times.system)
        except psutil.Error:
            continue
    return out


def cpu_per_request(url: str, bodies: list[dict], concurrency: int, seconds: float) -> dict:
    """CPU ms per answered request by process group over a closed-loop run of ``seconds``."""
    before = cpu_times()
    got = asyncio.run(load(url, bodies, concurrency, seconds))
    after = cpu_times()
    spent: dict[str, float] = collections.defaultdict(float)
    for pid, (name, t) in after.items():
        spent[name] += t - before.get(pid, (name, 0.0))[1]
    n = max(got["requests"], 1)
    by_group = {
        k: round(v / n * 1000, 2) for k, v in sorted(spent.items(), key=lambda kv: -kv[1]) if v > 0.01
    }
    return {
        "rps": got["rps"],
        "p50_ms": got["p50_ms"],
        "p99_ms": got["p99_ms"],
        "cpu_ms_per_request": by_group,
        "cpu_ms_total": round(sum(spent.values()) / n * 1000, 2),
    }


def py_spy(pids: list[int], seconds: float, out: Path) -> tuple[list[subprocess.Popen], list[Path]]:
    """Start py-spy on each pid (raw collapsed stacks, idle threads dropped); returns the processes and
    the files they write."""
    files = [out / f"pyspy-{pid}.txt" for pid in pids]
    procs = [
        subprocess.Popen(
            [
                str(Path(sys.executable).parent / "py-spy"),
                "record",
                "--pid",
                str(pid),
                "--duration",
                str(int(seconds)),
                "--rate",
                "200",
                "--format",
                "raw",
                "--output",
                str(f),
                "--nonblocking",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for pid, f in zip(pids, files, strict=True)
    ]
    return procs, files


def hottest(files: list[Path], top: int = 25) -> dict:
    """The frames with most samples, inclusive (anywhere on the stack) and own (innermost)."""
    inclusive: collections.Counter = collections.Counter()
    own: collections.Counter = collections.Counter()
    total = 0
    for f in files:
        if not f.exists():
            continue
        for line in f.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            frames = [fr.split(" (")[0] + " " + fr.split("/")[-1].rstrip(")") for fr in stack.split(";")]
            n = int(count)
            total += n
            own[frames[-1]] += n
            for frame in set(frames):
                inclusive[frame] += n
    share = lambda c: [(k, round(v / max(total, 1), 3)) for k, v in c.most_common(top)]  # noqa: E731
    return {"samples": total, "inclusive": share(inclusive), "own": share(own)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--config", type=Path, default=ROOT / "serve_configs" / "ranker.yaml")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "bench")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    bodies = [{"user_id": u, "k": 20} for u in bundle_users(args.bundle)]
    ranking = ranking_deployment(yaml.safe_load(args.config.read_text()))

    def add_empty(config: dict) -> None:
        config["applications"].append(
            {
                "name": "empty",
                "route_prefix": "/empty",
                "import_path": "benchmarks.empty_app:build",
                "args": {},
            }
        )

    results: dict = {"config": str(args.config), "concurrency": args.concurrency, "seconds": args.seconds}
    with serve_app(args.bundle, args.out / "profile-work", add_empty, args.config) as served:
        url, head = served["url"], served["head"]
        while httpx.post(f"{url}/empty/recommend", json={}, timeout=30).status_code != 200:
            time.sleep(1)
        for path in ("/recommend", "/empty/recommend"):
            asyncio.run(load(url + path, bodies, args.concurrency, 5))  # warm-up
        for name, path in (("empty", "/empty/recommend"), ("recommend", "/recommend")):
            results[name] = cpu_per_request(url + path, bodies, args.concurrency, args.seconds)
            print(name, json.dumps(results[name]), flush=True)
        profiled = {"Ingress": [p["pid"] for p in replica_processes(head, "Ingress")]}
        if ranking != "Ingress":
            profiled[ranking] = [p["pid"] for p in replica_processes(head, ranking)]
        for name, pids in profiled.items():
            procs, files = py_spy(pids, args.seconds * 0.75, args.out / "profile-work")
            asyncio.run(load(url + "/recommend", bodies, args.concurrency, args.seconds))
            for p in procs:
                p.wait(timeout=60)
            results[f"py-spy {name}"] = hottest(files)
            print(name, json.dumps(results[f"py-spy {name}"]["inclusive"][:15]), flush=True)
    (args.out / "serve-profile.json").write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out / 'serve-profile.json'}")


if __name__ == "__main__":
    main()

"""What the Serve scripts share: a deployed ranker app on its own head, load generators, replica processes.

Loopback only: every request goes to 127.0.0.1 on a port this harness picked.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import psutil
import pyarrow.parquet as pq
import yaml
from harness.ray_head import cli, free_port, ray_head

ROOT = Path(__file__).resolve().parents[1]


def bundle_users(bundle: Path) -> list[str]:
    """The users a bundle knows (request bodies draw from them)."""
    return sorted({str(u) for u in pq.read_table(bundle / "histories.parquet").column("user_id").to_pylist()})


@contextlib.contextmanager
def serve_app(
    bundle: Path,
    work: Path,
    tweak: Callable[[dict], None] | None = None,
    config_file: Path = ROOT / "serve_configs" / "ranker.yaml",
) -> Iterator[dict]:
    """``config_file`` (serve_configs/ranker.yaml) with ``bundle`` (`auth: none`, a fresh SQLite store unless
    ``tweak`` sets
    another) on a head of its own, edited by ``tweak(config)``; yields {"url", "head", "work"} once /healthz
    answers; `ray stop` at the end."""
    work.mkdir(parents=True, exist_ok=True)
    for stale in work.glob("state*"):
        shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
    port = free_port()
    config = yaml.safe_load(config_file.read_text())
    config["http_options"]["port"] = port
    app = config["applications"][0]
    app["args"].update(
        {
            "bundle": str(bundle.resolve()),
            "store": str(work / "state.sqlite"),
            "auth": "none",
            "create_store": True,
        }
    )
    if tweak is not None:
        tweak(config)
    (work / "serve.yaml").write_text(yaml.safe_dump(config))
    with ray_head(work, extra_env={"PYTHONPATH": str(ROOT)}) as head:
        cli("serve", "deploy", str(work / "serve.yaml"), "--address", head["dashboard"], env=head["env"])
        url = f"http://127.0.0.1:{port}"
        for _ in range(240):
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/healthz", timeout=5).status_code == 200:
                    break
            time.sleep(1)
        else:
            raise RuntimeError(f"{url} never became healthy")
        yield {"url": url, "head": head, "work": work}


def deployment(config: dict, name: str) -> dict:
    """The deployment ``name`` of the longtail application in a Serve config."""
    return next(d for d in config["applications"][0]["deployments"] if d["name"] == name)


def ranking_deployment(config: dict) -> str:
    """The deployment whose replicas rank: Ranker, or Ingress when it ranks in-process."""
    return "Ranker" if config["applications"][0]["args"].get("ranker_deployment") else "Ingress"


def split_ranker(config: dict) -> None:
    """The shipped in-process layout → a separate Ranker deployment (``ranker_deployment: true``), with the
    Ingress's ``ranker:`` knobs as its user_config and the Ingress's scaling: to compare the two layouts."""
    app = config["applications"][0]
    app["args"]["ranker_deployment"] = True
    ingress = deployment(config, "Ingress")
    knobs = ingress["user_config"].pop("ranker", None) or {}
    scaling = ingress.pop("autoscaling_config", None)
    ingress["num_replicas"] = 2
    ranker = {
        "name": "Ranker",
        "max_ongoing_requests": 32,
        "ray_actor_options": {"num_cpus": 0.25},
        "user_config": {**knobs, "max_batch_size": 16, "batch_wait_timeout_s": 0.002},
    }
    if scaling is not None:  # each Ranker call is an Ingress batch: one in flight per replica is busy
        ranker["autoscaling_config"] = {**scaling, "target_ongoing_requests": 1}
    else:
        ranker["num_replicas"] = 2
    app["deployments"].insert(1, ranker)


def summary(latencies: list[float], errors: int, wall: float) -> dict:
    lat = np.asarray(latencies) if latencies else np.zeros(1)
    return {
        "requests": len(latencies),
        "errors": errors,
        "rps": round(len(latencies) / wall, 1),
        "p50_ms": round(float(np.percentile(lat, 50)) * 1000, 2),
        "p99_ms": round(float(np.percentile(lat, 99)) * 1000, 2),
    }


async def load(
    url: str,
    bodies: list[dict],
    concurrency: int,
    seconds: float,
    statuses: dict | None = None,
    latencies: list[float] | None = None,
) -> dict:
    """Closed-loop load: ``concurrency`` clients post bodies back to back for ``seconds``. A transport
    error counts as a failed request; ``statuses`` (when given) collects the count per status code;
    ``latencies`` (when given) receives every request's seconds."""
    latencies = [] if latencies is None else latencies
    before = len(latencies)
    errors = 0
    deadline = time.perf_counter() + seconds

    async def client(seed: int) -> None:
        nonlocal errors
        rng = random.Random(seed)
        async with httpx.AsyncClient(timeout=30) as http:
            while time.perf_counter() < deadline:
                start = time.perf_counter()
                try:
                    code = (await http.post(url, json=rng.choice(bodies))).status_code
                except httpx.HTTPError as exc:
                    code = type(exc).__name__
                latencies.append(time.perf_counter() - start)
                errors += code != 200
                if statuses is not None:
                    statuses[code] = statuses.get(code, 0) + 1

    started = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(concurrency)))
    wall = time.perf_counter() - started
    return {**summary(latencies[before:], errors, wall), "wall_s": wall}


async def paced_load(
    url: str,
    bodies: list[dict],
    rate: float,
    seconds: float,
    window_s: float,
    on_window: Callable[[dict], None],
) -> list[dict]:
    """Open-loop load: requests start at ``rate`` per second whatever the latency (so a slow server meets
    a queue, as in production); every ``window_s`` the window's summary goes to ``on_window``."""
    rng, windows = random.Random(0), []
    latencies: list[float] = []
    errors = 0
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=256)) as http:

        async def one(body: dict) -> None:
            nonlocal errors
            start = time.perf_counter()
            try:
                ok = (await http.post(url, json=body)).status_code == 200
            except httpx.HTTPError:
                ok = False
            latencies.append(time.perf_counter() - start)
            errors += not ok

        begin = time.perf_counter()
        window_start, pending, sent = begin, set(), 0
        while (now := time.perf_counter()) < begin + seconds:
            due = int((now - begin) * rate) - sent
            for _ in range(due):
                task = asyncio.create_task(one(rng.choice(bodies)))
                pending.add(task)
                task.add_done_callback(pending.discard)
            sent += max(due, 0)
            if now - window_start >= window_s:
                row = {"t_s": round(now - begin, 1), **summary(latencies, errors, now - window_start)}
                windows.append(row)
                on_window(row)
                latencies, errors, window_start = [], 0, now
            await asyncio.sleep(0.002)
        await asyncio.gather(*pending)
    return windows


def replica_processes(head: dict, deployment_name: str) -> list[dict]:
    """Alive replica actors of a deployment: [{"actor_id", "pid", "name"}] (from `ray list actors`)."""
    out = cli(
        "ray",
        "list",
        "actors",
        "--address",
        head["dashboard"],
        "--format",
        "json",
        "--detail",
        "--filter",
        "state=ALIVE",
        "--limit",
        "1000",
        env=head["env"],
    ).stdout
    rows = json.loads(out[out.index("[") :])
    return [
        {"actor_id": r["actor_id"], "pid": r["pid"], "name": r.get("name", "")}
        for r in rows
        if r.get("class_name", "").endswith(f":{deployment_name}")
    ]


def rss_mb(pid: int) -> float:
    """Resident memory of one process, MiB (0 when it is gone)."""
    try:
        return psutil.Process(pid).memory_info().rss / 2**20
    except psutil.NoSuchProcess:
        return 0.0

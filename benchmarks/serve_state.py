"""The serving state's promises, measured on a deployed app (serve_configs/ranker.yaml, real HTTP):

    python -m benchmarks.serve_state --bundle bundles/ml100k [--only kill,replay,swap,stores]

- kill: a stream of 1000-event batches while the Ingress replica is SIGKILLed (twice); afterwards every
  acknowledged batch must be whole in the store and no unacknowledged batch half there (both counted).
- replay: 100 users with events are erased, then every event is sent again; resurrected users (any event
  stored again, or a personal list instead of cold start) must be 0.
- swap: 8 clients for 60 s while the bundle path is retrained into (a new version behind its symlink)
  and the config's `bundle_version` set to it and `serve deploy`ed, twice: requests answered 200 / total
  (goal 100%), responses whose header and body
  versions differ (mixed), and responses with an old version after a switch completed (stale; goal 0).
- stores: events/s ingested in batches of 100 (4 clients) and /recommend p50/p99 (8 clients), alone and
  together, with the SQLite store and with a PostgreSQL server this script starts (initdb in a temp dir).

Writes reports/bench/serve-state.json and serve-state-swap.png (answers per second by bundle version).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import sqlite3
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pyarrow.parquet as pq
import torch
import yaml
from harness.postgres_server import fresh_database, postgres_server
from harness.ray_head import cli

from benchmarks.serve_harness import ROOT, bundle_users, deployment, load, replica_processes, serve_app
from longtail.bundle import read_bundle, write_bundle


def catalog(bundle: Path) -> list[str]:
    return [str(i) for i in pq.read_table(bundle / "vocab.parquet").column("item_id").to_pylist()]


# ---- kill -9 the Ingress during a stream of batches ---------------------------------------------------
def kill_ingress(bundle: Path, work: Path, seconds: float = 40, kills: int = 2) -> dict:
    items = catalog(bundle)
    acked, unacked = set(), set()
    stop = threading.Event()
    with serve_app(bundle, work / "kill") as app:
        url = app["url"]

        def stream(client: int) -> None:
            rng, n = random.Random(client), 0
            with httpx.Client(timeout=30) as http:
                while not stop.is_set():
                    batch = f"c{client}b{n}"
                    n += 1
                    events = [
                        {
                            "event_id": f"{batch}-{i}",
                            "user_id": f"k{rng.randrange(500)}",
                            "item_id": rng.choice(items),
                            "type": "view",
                        }
                        for i in range(1000)
                    ]
                    try:
                        ok = http.post(url + "/events", json={"events": events}).status_code == 200
                    except httpx.HTTPError:
                        ok = False
                    (acked if ok else unacked).add(batch)

        threads = [threading.Thread(target=stream, args=(c,), daemon=True) for c in range(2)]
        for t in threads:
            t.start()
        killed = []
        for _ in range(kills):
            time.sleep(seconds / (kills + 1))
            victim = replica_processes(app["head"], "Ingress")[0]
            os.kill(victim["pid"], signal.SIGKILL)
            killed.append(victim["pid"])
            print(f"[state] killed Ingress pid {victim['pid']}", flush=True)
        time.sleep(seconds / (kills + 1))
        stop.set()
        for t in threads:
            t.join()
    conn = sqlite3.connect(work / "kill" / "state.sqlite")
    counts = dict(
        conn.execute("SELECT substr(event_id, 1, instr(event_id, '-') - 1), count(*) FROM events GROUP BY 1")
    )
    out = {
        "batches_acknowledged": len(acked),
        "acknowledged_whole": sum(counts.get(b, 0) == 1000 for b in acked),
        "batches_unacknowledged": len(unacked),
        "unacknowledged_absent": sum(counts.get(b, 0) == 0 for b in unacked),
        "unacknowledged_whole": sum(counts.get(b, 0) == 1000 for b in unacked),
        "half_there": sum(0 < counts.get(b, 0) < 1000 for b in acked | unacked),
        "ingress_kills": len(killed),
    }
    print(f"[state] kill: {out}", flush=True)
    return out


# ---- replay after erasure -----------------------------------------------------------------------------
def replay_after_erasure(bundle: Path, work: Path, users: int = 100) -> dict:
    items, known = catalog(bundle), bundle_users(bundle)
    rng = random.Random(0)
    erased = known[:users]  # bundle users: their trained history must stop counting too
    kept = [f"keep{i}" for i in range(users)]
    now = time.time()
    events = [
        {
            "event_id": f"r-{u}-{j}",
            "user_id": u,
            "item_id": rng.choice(items),
            "type": "view",
            "timestamp": now - 1000 + j,
        }
        for u in erased + kept
        for j in range(10)
    ]
    with serve_app(bundle, work / "replay") as app, httpx.Client(timeout=30) as http:
        url = app["url"]
        for start in range(0, len(events), 500):
            assert http.post(url + "/events", json={"events": events[start : start + 500]}).status_code == 200
        for u in erased:
            assert http.delete(url + "/users/" + u).status_code == 200
        replayed = {"stored": 0, "duplicates": 0, "erased": 0}
        for start in range(0, len(events), 500):
            got = http.post(url + "/events", json={"events": events[start : start + 500]}).json()
            replayed = {k: replayed[k] + got[k] for k in replayed}
        personal = sum(
            http.post(url + "/recommend", json={"user_id": u, "k": 10}).json()["strategy"] != "cold_start"
            for u in erased
        )
    conn = sqlite3.connect(work / "replay" / "state.sqlite")
    marks = ",".join("?" * len(erased))
    stored_again = conn.execute(
        f"SELECT count(DISTINCT user_id) FROM events WHERE user_id IN ({marks})", erased
    ).fetchone()[0]  # nosec B608
    out = {
        "users_erased": users,
        "events_replayed": len(events),
        **{f"replay_{k}": v for k, v in replayed.items()},
        "resurrected_users": max(stored_again, personal),
        "erased_users_with_events": stored_again,
        "erased_users_with_personal_lists": personal,
    }
    print(f"[state] replay: {out}", flush=True)
    return out


# ---- hot swap under load --------------------------------------------------------------------------
def new_version(source: Path, out: Path, seed: int) -> str:
    """A retrain into ``out`` (the bundle's files with the ranker's weights nudged: a new version)."""
    b = read_bundle(source)
    g = torch.Generator().manual_seed(seed)
    ranker = {
        k: v + 1e-4 * torch.randn(v.shape, generator=g) if v.is_floating_point() else v
        for k, v in b.ranker_state.items()
    }
    write_bundle(
        out,
        encoder_dir=b.encoder_dir,
        item_ids=b.item_ids,
        texts=b.texts,
        train_counts=b.train_counts,
        vectors=b.vectors,
        graph=b.graph,
        ranker_state=ranker,
        retriever_state=b.retriever_state,
        histories=b.histories,
        config=b.manifest.config.model_dump(),
        data=b.manifest.data,
        metrics=b.manifest.metrics,
        index_bytes=b.index_bytes,
    )
    return read_bundle(out).version


def hot_swap(bundle: Path, work: Path, seconds: float = 60, clients: int = 8) -> dict:
    live = work / "swap-bundles" / "live"
    live.parent.mkdir(parents=True, exist_ok=True)
    first = new_version(bundle, live, 0)
    users = bundle_users(bundle)
    log: list[tuple] = []
    stop = threading.Event()

    def client(n: int) -> None:
        rng = random.Random(n)
        with httpx.Client(timeout=60) as http:
            while not stop.is_set():
                try:
                    r = http.post(url + "/recommend", json={"user_id": rng.choice(users), "k": 10})
                    body = r.json().get("bundle_version") if r.status_code == 200 else None
                    log.append((time.time(), r.status_code, r.headers.get("x-longtail-bundle-version"), body))
                except httpx.HTTPError as exc:
                    log.append((time.time(), type(exc).__name__, None, None))

    def point_at_live(config: dict) -> None:
        config["applications"][0]["args"]["bundle"] = str(live)

    with serve_app(live, work / "swap", point_at_live) as app:
        url, head = app["url"], app["head"]
        threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
        began = time.time()
        for t in threads:
            t.start()
        switches = []
        for n in (1, 2):
            time.sleep(max(0.0, began + n * seconds / 3 - time.time() - 10))
            version = new_version(
                bundle, live, n
            )  # retrain into the served path (running replicas keep theirs)
            config = yaml.safe_load((work / "swap" / "serve.yaml").read_text())
            config["applications"][0]["args"]["bundle_version"] = version  # the one line a user changes
            (work / "swap" / "serve.yaml").write_text(yaml.safe_dump(config))
            started = time.time()
            cli(
                "serve",
                "deploy",
                str(work / "swap" / "serve.yaml"),
                "--address",
                head["dashboard"],
                env=head["env"],
            )
            while time.time() - started < 240:
                status = cli(
                    "serve", "status", "--address", head["dashboard"], env=head["env"], check=False
                ).stdout
                if (
                    "UPDATING" not in status
                    and httpx.get(url + "/healthz", timeout=30).json()["bundle_version"] == version
                ):
                    break
                time.sleep(0.5)
            switches.append(
                {
                    "version": version,
                    "deploy_at_s": round(started - began, 1),
                    "completed_at_s": round(time.time() - began, 1),
                }
            )
            print(f"[state] swap {n}: {switches[-1]}", flush=True)
        time.sleep(max(5.0, began + seconds - time.time()))
        stop.set()
        for t in threads:
            t.join()
    ok = sum(row[1] == 200 for row in log)
    mixed = sum(row[1] == 200 and row[2] != row[3] for row in log)
    stale = 0
    bounds = [*[began + s["deploy_at_s"] for s in switches[1:]], float("inf")]
    for s, until in zip(switches, bounds, strict=True):
        done = began + s["completed_at_s"]
        stale += sum(done < row[0] < until and row[2] != s["version"] for row in log)
    out = {
        "clients": clients,
        "seconds": round(log[-1][0] - began, 1),
        "requests": len(log),
        "answered_200": ok,
        "success_share": round(ok / max(len(log), 1), 5),
        "failed": {str(k): v for k, v in _count(r[1] for r in log if r[1] != 200).items()},
        "mixed_version_responses": mixed,
        "stale_after_switch": stale,
        "versions": [first, *(s["version"] for s in switches)],
        "switches": switches,
    }
    plot_swap(log, began, switches, out["versions"], ROOT / "reports" / "bench" / "serve-state-swap.png")
    print(f"[state] swap: {out}", flush=True)
    return out


def _count(values) -> dict:
    found: dict = {}
    for v in values:
        found[v] = found.get(v, 0) + 1
    return found


def plot_swap(log: list[tuple], began: float, switches: list[dict], versions: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.5))
    t = np.asarray([row[0] - began for row in log])
    bins = np.arange(0, t.max() + 1, 1.0)
    for version in versions:
        mask = np.asarray([row[2] == version and row[1] == 200 for row in log])
        ax.hist(t[mask], bins=bins, histtype="step", label=f"version {version[:8]}")
    failed = np.asarray([row[1] != 200 for row in log])
    if failed.any():
        ax.hist(t[failed], bins=bins, histtype="stepfilled", color="red", alpha=0.5, label="failed")
    for s in switches:
        ax.axvline(s["deploy_at_s"], color="grey", ls=":")
        ax.axvline(s["completed_at_s"], color="black", ls="--")
    ax.set(
        xlabel="seconds (dotted: serve deploy; dashed: switch complete)",
        ylabel="answers per second",
        title="Hot swap under load: answers by bundle version",
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---- ingest throughput and /recommend p99 per store ----------------------------------------------
async def ingest(url: str, items: list[str], clients: int, seconds: float, tag: str) -> dict:
    stored, errors, latencies = 0, 0, []
    deadline = time.perf_counter() + seconds

    async def one(c: int) -> None:
        nonlocal stored, errors
        rng, n = random.Random(c), 0
        async with httpx.AsyncClient(timeout=30) as http:
            while time.perf_counter() < deadline:
                n += 1
                batch = [
                    {
                        "event_id": f"{tag}-{c}-{n}-{i}",
                        "user_id": f"s{rng.randrange(2000)}",
                        "item_id": rng.choice(items),
                        "type": "view",
                    }
                    for i in range(100)
                ]
                start = time.perf_counter()
                r = await http.post(url + "/events", json={"events": batch})
                latencies.append(time.perf_counter() - start)
                if r.status_code == 200:
                    stored += r.json()["stored"]
                else:
                    errors += 1

    began = time.perf_counter()
    await asyncio.gather(*(one(c) for c in range(clients)))
    wall = time.perf_counter() - began
    return {
        "events_per_s": round(stored / wall, 1),
        "batch_p99_ms": round(float(np.percentile(latencies, 99)) * 1000, 1),
        "errors": errors,
    }


async def _together(url: str, items: list[str], bodies: list[dict], seconds: float, tag: str) -> list[dict]:
    """Ingest and /recommend load at the same time."""
    return await asyncio.gather(
        ingest(url, items, 4, seconds, tag), load(url + "/recommend", bodies, 8, seconds)
    )


def store_figures(bundle: Path, work: Path, seconds: float = 20) -> dict:
    items, users = catalog(bundle), bundle_users(bundle)
    bodies = [{"user_id": u, "k": 20} for u in users]
    out = {}
    with postgres_server() as server:
        for name in ("sqlite", "postgresql"):
            spec = str(work / name / "state.sqlite") if name == "sqlite" else fresh_database(server, "bench")

            def use_store(config: dict, spec=spec) -> None:
                config["applications"][0]["args"]["store"] = spec
                deployment(config, "Ingress")["num_replicas"] = 1

            with serve_app(bundle, work / name, use_store) as app:
                url = app["url"]
                asyncio.run(load(url + "/recommend", bodies, 8, 5))  # warm-up
                alone = asyncio.run(ingest(url, items, 4, seconds, f"{name}-a"))
                rec = asyncio.run(load(url + "/recommend", bodies, 8, seconds))

                mixed_ingest, mixed_rec = asyncio.run(_together(url, items, bodies, seconds, f"{name}-b"))
            out[name] = {
                "ingest_alone": alone,
                "recommend_alone": rec,
                "ingest_with_recommend": mixed_ingest,
                "recommend_with_ingest": mixed_rec,
            }
            print(f"[state] {name}: {out[name]}", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", type=Path, required=True)
    ap.add_argument("--only", default="kill,replay,swap,stores", help="comma-separated parts to run")
    ap.add_argument("--work", type=Path, default=ROOT / "reports" / "bench" / "serve-state-work")
    args = ap.parse_args()
    bundle = args.bundle.resolve()
    parts = set(args.only.split(","))
    path = ROOT / "reports" / "bench" / "serve-state.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    steps = {"kill": kill_ingress, "replay": replay_after_erasure, "swap": hot_swap, "stores": store_figures}
    for name, step in steps.items():
        if name in parts:
            results[name] = step(bundle, args.work)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(results, indent=2))
    with contextlib.suppress(Exception):
        print(json.dumps(results, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

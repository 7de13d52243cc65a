"""A request body sent as a flood of tiny chunks, against the HTTP app: time to its answer, and `/recommend`
p99 on the same app meanwhile.

    python -m benchmarks.body_flood --bundle bundles/ml100k [--pieces 50000] [--piece-bytes 10] [--live]

Three ways in, each with the same load of `/recommend` (4 clients, read token) beside the flood:
- ``direct``: the ASGI app driven with the pieces as ASGI messages (no network), as the review measured it;
- ``uvicorn``: ``create_app`` under uvicorn on a loopback port, the body sent chunk by chunk over a raw
  socket (each chunk paced so that uvicorn hands it on as its own message);
- ``--live``: the shipped serve config on a Ray head of its own (``serve_harness``), through Ray's proxy.
Writes ``OUT/body-flood.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import uvicorn

from benchmarks.serve_harness import bundle_users, load, serve_app
from longtail.serve.api import Limits, create_app
from longtail.serve.auth import Tokens
from longtail.serve.local import LocalRecommender
from longtail.serve.metrics import ServeMetrics
from longtail.serve.pooled_store import PooledStore
from longtail.store import open_store

READ = "bench-read-token"


def drive(app, pieces: int, piece: bytes) -> tuple[int, float]:
    """The body as ``pieces`` ASGI messages straight into ``app``: (status, seconds to the answer)."""
    sent, status = [0], [0]

    async def receive() -> dict:
        sent[0] += 1
        return {"type": "http.request", "body": piece, "more_body": sent[0] < pieces}

    async def send(message: dict) -> None:
        if message["type"] == "http.response.start":
            status[0] = message["status"]

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/events",
        "raw_path": b"/events",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json")],
        "http_version": "1.1",
        "scheme": "http",
        "server": ("127.0.0.1", 80),
        "client": ("127.0.0.1", 1),
        "root_path": "",
    }
    started = time.perf_counter()
    asyncio.run(app(scope, receive, send))
    return status[0], time.perf_counter() - started


def flood(port: int, pieces: int, piece: bytes, pace_s: float) -> dict:
    """A chunked POST /events of ``pieces`` chunks over a raw socket, each followed by ``pace_s`` of quiet;
    stops sending once an answer arrives. (status, chunks sent, seconds from the first chunk to the
    answer)."""
    with socket.create_connection(("127.0.0.1", port), timeout=120) as conn:
        conn.sendall(
            b"POST /events HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        chunk = b"%x\r\n%s\r\n" % (len(piece), piece)
        started, sent = time.perf_counter(), 0
        conn.setblocking(False)
        answer = b""
        for _ in range(pieces):
            try:
                conn.sendall(chunk)
            except (BlockingIOError, BrokenPipeError, ConnectionResetError):
                break
            sent += 1
            with contextlib.suppress(BlockingIOError):
                answer = conn.recv(4096)
                if answer:
                    break
            if pace_s:
                time.sleep(pace_s)
        conn.setblocking(True)
        if not answer:
            with contextlib.suppress(OSError):
                conn.sendall(b"0\r\n\r\n")
            answer = conn.recv(4096)
        seconds = time.perf_counter() - started
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/") else 0
    return {"status": status, "chunks_sent": sent, "seconds_to_answer": round(seconds, 3)}


def under_load(url: str, users: list[str], headers: dict, during) -> dict:
    """/recommend p50/p99 for 4 clients while ``during()`` runs in a thread, and ``during``'s result."""
    bodies = [{"user_id": u, "k": 20} for u in users]
    result: dict = {}
    worker = threading.Thread(target=lambda: result.update(during()))

    async def run() -> dict:
        worker.start()
        stats = await load_with_headers(url + "/recommend", bodies, headers, lambda: worker.is_alive())
        worker.join()
        return stats

    return {"flood": result, "recommend": asyncio.run(run())}


async def load_with_headers(url: str, bodies: list[dict], headers: dict, running) -> dict:
    latencies: list[float] = []
    errors = 0

    async def client(seed: int) -> None:
        nonlocal errors
        rng = np.random.default_rng(seed)
        async with httpx.AsyncClient(timeout=60, headers=headers) as http:
            while running():
                start = time.perf_counter()
                code = (await http.post(url, json=bodies[int(rng.integers(len(bodies)))])).status_code
                latencies.append(time.perf_counter() - start)
                errors += code != 200

    await asyncio.gather(*(client(i) for i in range(4)))
    lat = np.asarray(latencies or [0.0])
    return {
        "requests": len(latencies),
        "errors": errors,
        "p50_ms": round(float(np.percentile(lat, 50)) * 1e3, 1),
        "p99_ms": round(float(np.percentile(lat, 99)) * 1e3, 1),
    }


def in_process(bundle: Path, work: Path, pieces: int, piece: bytes, pace_s: float) -> dict:
    store = PooledStore(open_store(str(work / "state.sqlite"), create=True))
    metrics = ServeMetrics.open(work / "metrics")
    recommender = LocalRecommender.open(bundle, store, metrics)
    app = create_app(
        recommender, store, Tokens(b"bench-write-token", READ.encode()), Limits(), metrics=metrics
    )
    direct = {}
    for n in (pieces // 5, pieces):
        status, seconds = drive(app, n, piece)
        direct[str(n)] = {"status": status, "seconds": round(seconds, 3)}
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    url, headers = f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {READ}"}
    users = bundle_users(bundle)[:200]
    quiet = under_load(url, users, headers, lambda: (time.sleep(10), {})[1])
    loud = under_load(url, users, headers, lambda: flood(port, pieces, piece, pace_s))
    server.should_exit = True
    thread.join(30)
    recommender.encoder.stop()
    return {
        "direct": direct,
        "uvicorn": {
            "without_flood": quiet["recommend"],
            "with_flood": loud["recommend"],
            "flood": loud["flood"],
        },
    }


def live(bundle: Path, work: Path, pieces: int, piece: bytes, pace_s: float) -> dict:
    def open_reads(config: dict) -> None:  # `auth: none` (the harness's): the flood needs no token either
        config["applications"][0]["args"]["auth"] = "none"

    with serve_app(bundle, work / "live", open_reads) as app:
        port = int(app["url"].rsplit(":", 1)[1])
        users = bundle_users(bundle)[:200]
        asyncio.run(
            load(app["url"] + "/recommend", [{"user_id": u, "k": 20} for u in users], 4, 5)
        )  # warm-up
        quiet = under_load(app["url"], users, {}, lambda: (time.sleep(10), {})[1])
        loud = under_load(app["url"], users, {}, lambda: flood(port, pieces, piece, pace_s))
    return {"without_flood": quiet["recommend"], "with_flood": loud["recommend"], "flood": loud["flood"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=Path("reports/bench"))
    parser.add_argument("--pieces", type=int, default=50_000)
    parser.add_argument("--piece-bytes", type=int, default=10)
    parser.add_argument(
        "--pace-s", type=float, default=0.0002, help="quiet after each chunk (one ASGI message each)"
    )
    parser.add_argument(
        "--live", action="store_true", help="also through Ray Serve's proxy (starts a Ray head)"
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="longtail-body-flood-"))  # the store and metrics of the runs
    piece = b"x" * args.piece_bytes
    report = {
        "pieces": args.pieces,
        "piece_bytes": args.piece_bytes,
        "pace_s": args.pace_s,
        "limits": {
            "max_body_bytes": Limits().max_body_bytes,
            "max_body_messages": Limits().max_body_messages,
        },
        "in_process": in_process(args.bundle, work, args.pieces, piece, args.pace_s),
    }
    if args.live:
        report["live"] = live(args.bundle, work, args.pieces, piece, args.pace_s)
    shutil.rmtree(work, ignore_errors=True)
    (args.out / "body-flood.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

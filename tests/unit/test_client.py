"""The HTTP client against the real app: ``Client`` over real HTTP to ``create_app`` under uvicorn (a thread),
``AsyncClient`` over httpx's ASGI transport; its 503 retry against a server that answers 503 first."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import httpx
import pytest
import uvicorn
from pydantic import ValidationError

from longtail.client import (
    AsyncClient,
    BadRequest,
    Client,
    Conflict,
    NotFound,
    Unauthorized,
    Unavailable,
)
from longtail.serve.api import Limits, create_app
from longtail.serve.auth import Tokens
from longtail.serve.local import LocalRecommender
from longtail.serve.metrics import ServeMetrics
from longtail.serve.pooled_store import PooledStore
from longtail.store import open_store

WRITE, READ = "client-w", "client-r"


@pytest.fixture(scope="module")
def app(tiny_bundle, tmp_path_factory):
    work = tmp_path_factory.mktemp("client")
    store = PooledStore(open_store(str(work / "state.sqlite"), create=True, timeout_s=0.5), threads=2)
    metrics = ServeMetrics.open(work / "metrics")
    recommender = LocalRecommender.open(tiny_bundle, store, metrics)
    yield create_app(recommender, store, Tokens(WRITE.encode(), READ.encode()), Limits(), metrics=metrics)
    recommender.encoder.stop()
    store.close()


@pytest.fixture(scope="module")
def base_url(app):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def test_the_client_speaks_every_route_over_http(base_url):
    with Client(base_url, token=WRITE) as lt:
        health = lt.health()
        assert health.status == "ok" and health.catalog_items == 20
        before = lt.recommend("u0", k=5)
        assert before.strategy == "hybrid" and len(before.items) == 5
        assert before.bundle_version == health.bundle_version
        raw = httpx.post(
            f"{base_url}/recommend",
            json={"user_id": "u0", "k": 5},
            headers={"Authorization": f"Bearer {READ}"},
        ).json()
        assert [i.item_id for i in before.items] == [i["item_id"] for i in raw["items"]]

        top = before.items[0].item_id
        stored = lt.send_event(event_id="c-1", user_id="u0", item_id=top, type="view")
        assert (stored.stored, stored.duplicates) == (1, 0)
        again = {"event_id": "c-1", "user_id": "u0", "item_id": top, "type": "view"}
        assert lt.send_events([again]).duplicates == 1
        assert top not in {i.item_id for i in lt.recommend("u0", k=5).items}  # now seen

        added = lt.add_item("client-new", "A story of space number 5", {"year": 2026})
        assert added.added and lt.similar("client-new", k=3).items
        assert lt.recommend_text("space", k=4).strategy == "text"
        assert lt.erase_user("u0").events_deleted == 1
        assert "longtail_requests_total" in lt.metrics()


def test_errors_are_typed_and_carry_the_servers_message(base_url):
    with Client(base_url, token=READ) as reader, Client(base_url, token="wrong") as stranger:
        with pytest.raises(Unauthorized):
            stranger.recommend("u0")
        with pytest.raises(Unauthorized):  # the read token cannot write
            reader.send_event(event_id="c-2", user_id="u1", item_id="1", type="view")
        with pytest.raises(NotFound):
            reader.similar("no-such-item")
        with pytest.raises(BadRequest, match="timestamp"):
            Client(base_url, token=WRITE).send_event(
                event_id="c-3", user_id="u1", item_id="1", type="view", timestamp=time.time() * 1000
            )
    with Client(base_url, token=WRITE) as lt:
        lt.send_event(event_id="c-4", user_id="u1", item_id="1", type="view")
        with pytest.raises(Conflict):
            lt.send_event(event_id="c-4", user_id="u1", item_id="2", type="view")
        with pytest.raises(ValidationError):  # caught before the network
            lt.recommend("u1", k=0)


def test_the_async_client_gives_the_same_lists(app, base_url):
    async def lists():
        transport = httpx.ASGITransport(app=app)
        async with AsyncClient("http://app", token=READ, transport=transport) as lt:
            answers = await asyncio.gather(*(lt.recommend(u, k=5) for u in ("u2", "u3", "u4")))
            with pytest.raises(NotFound):
                await lt.similar("no-such-item")
            return [[i.item_id for i in a.items] for a in answers]

    with Client(base_url, token=READ) as lt:
        expected = [[i.item_id for i in lt.recommend(u, k=5).items] for u in ("u2", "u3", "u4")]
    assert asyncio.run(lists()) == expected


def test_a_503_is_retried_after_retry_after_then_raised():
    calls = []

    def busy_then_ok(request: httpx.Request) -> httpx.Response:
        calls.append(time.monotonic())
        if len(calls) < 3:
            return httpx.Response(503, json={"detail": "store busy"}, headers={"Retry-After": "0.2"})
        return httpx.Response(200, json={"status": "ok", "bundle_version": "v", "catalog_items": 1})

    with Client("http://x", retries=3, transport=httpx.MockTransport(busy_then_ok)) as lt:
        assert lt.health().status == "ok"
    assert len(calls) == 3 and calls[2] - calls[0] >= 0.39

    def always_busy(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, json={"detail": "rolling out"}, headers={"Retry-After": "0"})

    with (
        Client("http://x", retries=1, transport=httpx.MockTransport(always_busy)) as lt,
        pytest.raises(Unavailable, match="rolling out") as caught,
    ):
        lt.health()
    assert caught.value.retry_after == 0.0

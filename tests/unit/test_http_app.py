"""The HTTP app without Ray: ``create_app`` over an in-process recommender (the tiny bundle) and a real SQLite
store, driven with FastAPI's ``TestClient``. Validation, auth, body limits, status codes and headers.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from longtail.serve.api import Limits, create_app
from longtail.serve.auth import Tokens
from longtail.serve.local import LocalRecommender
from longtail.serve.metrics import ServeMetrics
from longtail.serve.pooled_store import PooledStore
from longtail.store import Retention, open_store

WRITE, READ = "w-token", "r-token"


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def served(tiny_bundle, tmp_path_factory):
    """(recommender, store, metrics) over the tiny bundle and a fresh SQLite store, shared by the module."""
    work = tmp_path_factory.mktemp("http")
    store = PooledStore(open_store(str(work / "state.sqlite"), create=True, timeout_s=0.5), threads=2)
    metrics = ServeMetrics.open(work / "metrics")
    recommender = LocalRecommender.open(tiny_bundle, store, metrics)
    yield recommender, store, metrics
    recommender.encoder.stop()
    store.close()


TOKENS = Tokens(WRITE.encode(), READ.encode())


def client_for(served, tokens: Tokens = TOKENS, **limits) -> TestClient:
    recommender, store, metrics = served
    return TestClient(create_app(recommender, store, tokens, Limits(**limits), metrics=metrics))


@pytest.fixture(scope="module")
def client(served) -> TestClient:
    return client_for(served)


def test_recommend_known_unknown_and_explained(client):
    r = client.post("/recommend", json={"user_id": "u0", "k": 5, "explain": True}, headers=bearer(READ))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["strategy"] == "hybrid" and len(body["items"]) == 5 and body["bundle_version"]
    assert (
        r.headers["x-longtail-bundle-version"] == body["bundle_version"] and r.headers["x-longtail-replica"]
    )
    assert all("contributions" in item["explanation"] for item in body["items"])
    cold = client.post("/recommend", json={"user_id": "never-seen", "k": 10}, headers=bearer(READ)).json()
    assert cold["strategy"] == "cold_start" and len(cold["items"]) == 10
    assert {i["reason"] for i in cold["items"]} == {"popular", "explore"}


@pytest.mark.parametrize(
    ("path", "body", "code"),
    [
        ("/recommend", {"k": 5}, 422),  # missing field
        ("/recommend", {"user_id": "u0", "k": "five"}, 422),  # wrong type
        ("/recommend", {"user_id": "u0", "k": 0}, 422),  # k <= 0
        ("/recommend", {"user_id": "u0", "k": 10**9}, 422),  # huge k
        ("/recommend", {"user_id": "u0", "k": 101}, 422),  # over max_k
        ("/recommend", {"user_id": "u0", "surprise": 1}, 422),  # unknown field
        ("/recommend", {"user_id": "u0", "tail_boost": 2}, 422),  # knob out of range
        ("/recommend/text", {"query": ""}, 422),
        ("/events", {"event_id": "x", "user_id": "u0", "item_id": "no-such-item", "type": "view"}, 422),
        (
            "/events",
            {"event_id": "x", "user_id": "u0", "item_id": "1", "type": "view", "timestamp": "soon"},
            422,
        ),
        ("/events", {"events": []}, 422),
        ("/events", {"event_id": "x", "user_id": "u0", "item_id": "1", "type": "view", "weight": -1}, 422),
        ("/items", {"item_id": "3", "text": "already there"}, 409),
        ("/items", {"item_id": "z", "text": ""}, 422),
    ],
)
def test_bad_requests_get_4xx_with_a_message(client, path, body, code):
    r = client.post(path, json=body, headers=bearer(WRITE))
    assert r.status_code == code, r.text
    assert r.json()["detail"]


def test_malformed_json_oversized_body_and_unknown_route(client):
    r = client.post(
        "/recommend", content=b'{"user_id": ', headers={"content-type": "application/json", **bearer(READ)}
    )
    assert r.status_code == 422 and r.json()["detail"]
    r = client.post(
        "/events", content=b"x" * 2_000_000, headers={"content-type": "application/json", **bearer(WRITE)}
    )
    assert r.status_code == 413 and "bytes" in r.json()["detail"]
    chunks = (b'{"pad": "' + b"x" * 100_000 for _ in range(20))  # no content-length: chunked, 2 MB
    r = client.post("/events", content=chunks, headers={"content-type": "application/json", **bearer(WRITE)})
    assert r.status_code == 413 and "bytes" in r.json()["detail"]
    assert client.get("/nowhere").status_code == 404


def _drive(app, pieces: int, piece: bytes) -> tuple[int, float]:
    """Send a body in ``pieces`` ASGI messages straight into the app; (status, seconds)."""
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


def test_a_flood_of_tiny_body_chunks_is_refused_fast_and_never_costs_quadratic_time(served):
    """50,000 messages of one or ten bytes: 413 (over the message cap) in well under a second; 9,000 (under
    it) are read in linear time. (The middleware's old ``body += piece`` took 4.1 s for 50,000 ten-byte
    messages here, 16 s for 60,000 in the review.)"""
    app = client_for(served, max_body_messages=10_000).app
    for piece in (b"x", b"x" * 10):
        status, seconds = _drive(app, 50_000, piece)
        assert status == 413 and seconds < 1.0, (piece, status, seconds)
        status, seconds = _drive(app, 9_000, piece)
        assert status in (401, 422) and seconds < 1.0, (piece, status, seconds)  # read whole, then refused
    wide = client_for(served, max_body_messages=10**6, max_body_bytes=10**7).app
    status, seconds = _drive(wide, 100_000, b"x" * 10)  # no cap in the way: still linear
    assert status in (401, 422) and seconds < 1.0, (status, seconds)


def test_writes_need_the_write_token(client):
    event = {"event_id": "auth-1", "user_id": "u0", "item_id": "1", "type": "view"}
    assert client.post("/events", json=event).status_code == 401
    assert client.post("/events", json=event, headers=bearer("wrong")).status_code == 401
    assert (
        client.post("/events", json=event, headers=bearer(READ)).status_code == 401
    )  # the read token can't write
    assert client.post("/items", json={"item_id": "q", "text": "t"}).status_code == 401
    assert client.delete("/users/u0").status_code == 401
    assert client.post("/users/erase", json={"user_id": "u0"}).status_code == 401
    assert client.post("/events", json=event, headers=bearer(WRITE)).status_code == 200


def test_an_anonymous_caller_learns_nothing_about_a_user(client):
    """A list of k ≥ catalog − |history| with seen items excluded is the complement of the history, and a
    personal list against the cold-start one tells whether an id exists or was erased: so without a token
    every /recommend is a 401, the same for a known, an unknown and an erased user."""
    client.post(
        "/events",
        json={"event_id": "anon-1", "user_id": "anon-erased", "item_id": "2", "type": "view"},
        headers=bearer(WRITE),
    )
    assert client.delete("/users/anon-erased", headers=bearer(WRITE)).status_code == 200
    answers = []
    for user in ("u0", "never-seen", "anon-erased"):
        for body in ({"user_id": user, "k": 20}, {"user_id": user, "k": 20, "exclude_seen": False}):
            r = client.post("/recommend", json=body)
            answers.append((r.status_code, r.json()["detail"]))
    assert {a for a in answers} == {answers[0]} and answers[0][0] == 401, answers
    full = client.post("/recommend", json={"user_id": "u0", "k": 20}, headers=bearer(READ))
    assert full.status_code == 200 and len(full.json()["items"]) >= 10  # the token holder may see it all


def test_reads_about_no_user_are_open_unless_protected(served):
    open_reads = client_for(served)
    assert open_reads.post("/recommend/text", json={"query": "A story of space", "k": 3}).status_code == 200
    assert open_reads.get("/items/3/similar", params={"k": 4}).status_code == 200
    assert open_reads.get("/healthz").status_code == 200
    protected = client_for(served, Tokens(WRITE.encode(), READ.encode(), protect_reads=True))
    assert protected.post("/recommend/text", json={"query": "space", "k": 3}).status_code == 401
    assert protected.get("/items/3/similar").status_code == 401
    assert protected.get("/items/3/similar", headers=bearer(READ)).status_code == 200
    assert protected.get("/metrics").status_code == 200  # aggregate counters stay scrapeable
    no_auth = client_for(served, Tokens())  # auth: none
    assert no_auth.post("/recommend", json={"user_id": "u0", "explain": True}).status_code == 200


def test_openapi_declares_the_bearer_scheme(client):
    spec = client.get("/openapi.json").json()
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert {
        "/recommend",
        "/recommend/text",
        "/events",
        "/items",
        "/users/{user_id}",
        "/users/erase",
        "/items/{item_id}/similar",
        "/healthz",
        "/metrics",
    } <= set(spec["paths"])
    assert spec["paths"]["/events"]["post"]["security"] == [{"HTTPBearer": []}]


def test_event_changes_the_next_list_is_idempotent_and_a_reused_id_is_a_conflict(client):
    read = bearer(READ)
    before = client.post("/recommend", json={"user_id": "u2", "k": 5}, headers=read).json()["items"]
    top = before[0]["item_id"]
    event = {"event_id": "ev-u2-1", "user_id": "u2", "item_id": top, "type": "purchase"}
    assert client.post("/events", json=event, headers=bearer(WRITE)).json() == {
        "stored": 1,
        "duplicates": 0,
        "erased": 0,
        "attributed": 1,  # u2 was just shown the item (matched by user, item and window)
    }
    again = client.post("/events", json={"events": [event]}, headers=bearer(WRITE))
    assert again.json() == {"stored": 0, "duplicates": 1, "erased": 0, "attributed": 0}
    reused = client.post("/events", json={**event, "item_id": before[1]["item_id"]}, headers=bearer(WRITE))
    assert reused.status_code == 409 and "ev-u2-1" in reused.json()["detail"]
    after = client.post("/recommend", json={"user_id": "u2", "k": 5}, headers=read).json()["items"]
    assert top not in [i["item_id"] for i in after]  # seen now, so excluded on the very next request


def test_timestamps_beyond_now_plus_the_skew_are_refused_by_field(client):
    """An event stamped in milliseconds (JavaScript's Date.now()) or by a clock in the future would sort as
    the user's newest forever, and one sent before an erasure would pass as sent after it."""
    now = time.time()
    base = {"user_id": "clock", "item_id": "4", "type": "view"}
    ms = client.post(
        "/events", json={**base, "event_id": "c-ms", "timestamp": now * 1000}, headers=bearer(WRITE)
    )
    assert (
        ms.status_code == 422 and "timestamp" in ms.json()["detail"] and "milliseconds" in ms.json()["detail"]
    )
    batch = {
        "events": [
            {**base, "event_id": "c-1", "timestamp": now},
            {**base, "event_id": "c-2", "timestamp": now + 3600},
        ]
    }
    late = client.post("/events", json=batch, headers=bearer(WRITE))
    assert late.status_code == 422 and "events[1].timestamp" in late.json()["detail"]
    assert (
        client.post("/recommend", json={"user_id": "clock"}, headers=bearer(READ)).json()["strategy"]
        == "cold_start"
    )
    skewed = client.post(
        "/events", json={**base, "event_id": "c-3", "timestamp": now + 60}, headers=bearer(WRITE)
    )
    assert skewed.json()["stored"] == 1  # within the allowed skew (300 s)


def test_an_erased_users_stamped_replays_are_refused_and_unstamped_events_start_a_new_history(client):
    """The rule for unstamped events: they are stamped on arrival, so after an erasure one is a new history
    (the user came back) unless its event_id was erased; stamped ones are refused when stamped before it."""
    w = bearer(WRITE)
    old = {"event_id": "er-1", "user_id": "er", "item_id": "2", "type": "view", "timestamp": 1000.0}
    client.post("/events", json=old, headers=w)
    assert client.delete("/users/er", headers=w).json() == {"user_id": "er", "events_deleted": 1}
    replay = client.post("/events", json={"events": [old, {**old, "event_id": "er-late"}]}, headers=w)
    assert replay.json() == {"stored": 0, "duplicates": 0, "erased": 2, "attributed": 0}
    unstamped_replay = {k: v for k, v in old.items() if k != "timestamp"}
    assert client.post("/events", json=unstamped_replay, headers=w).json()["erased"] == 1  # its id was erased
    back = client.post(
        "/events", json={"event_id": "er-new", "user_id": "er", "item_id": "5", "type": "view"}, headers=w
    )
    assert back.json() == {"stored": 1, "duplicates": 0, "erased": 0, "attributed": 0}
    listed = client.post(
        "/recommend",
        json={"user_id": "er", "k": 3, "exclude_seen": False, "explain": True},
        headers=bearer(READ),
    ).json()
    assert listed["strategy"] == "hybrid"
    because = {b["item_id"] for item in listed["items"] for b in item["explanation"]["because"]}
    assert because == {"5"}  # the bundle's history of the user stays unused


def test_new_item_is_recommendable_at_once(client):
    r = client.post(
        "/items", json={"item_id": "new-space", "text": "B story of space number 15"}, headers=bearer(WRITE)
    )
    assert r.status_code == 200 and r.json()["added"] and r.json()["catalog_items"] == 21
    assert (
        client.post(
            "/items", json={"item_id": "new-space", "text": "again"}, headers=bearer(WRITE)
        ).status_code
        == 409
    )
    similar = client.get("/items/new-space/similar", params={"k": 3})
    assert similar.status_code == 200 and len(similar.json()["items"]) == 3
    ranked = client.post(
        "/recommend", json={"user_id": "u1", "k": 21, "exclude_seen": False}, headers=bearer(READ)
    )
    assert "new-space" in [i["item_id"] for i in ranked.json()["items"]]
    assert client.get("/items/nope/similar").status_code == 404


def test_added_item_text_is_stored_as_import_composes_it(client, served):
    """HTML character references unescaped and whitespace collapsed, as `longtail data prepare` does; text
    of whitespace only is a 422 that stores nothing."""
    sent = {"item_id": "escaped", "text": "A  D&amp;D story of &quot;space&quot;&#39;s end\n"}
    assert client.post("/items", json=sent, headers=bearer(WRITE)).status_code == 200
    blank = client.post("/items", json={"item_id": "blank", "text": " \t "}, headers=bearer(WRITE))
    assert blank.status_code == 422 and "only whitespace" in blank.json()["detail"]
    stored = dict(served[1].store.items_missing_vectors("another-encoder"))
    assert stored["escaped"] == 'A D&D story of "space"\'s end' and "blank" not in stored


def test_an_item_beyond_the_stores_cap_is_a_507_naming_the_cap(served, tmp_path):
    recommender, _, metrics = served
    full = PooledStore(
        open_store(str(tmp_path / "full.sqlite"), create=True, retention=Retention(items=1)), 1
    )
    with TestClient(create_app(recommender, full, TOKENS, Limits(), metrics=metrics)) as capped:
        first = {"item_id": "cap-1", "text": "C story number 1"}
        assert capped.post("/items", json=first, headers=bearer(WRITE)).status_code == 200
        second = capped.post("/items", json={"item_id": "cap-2", "text": "C"}, headers=bearer(WRITE))
        assert second.status_code == 507 and "max_stored_items: 1" in second.json()["detail"]
    assert full.store.known_items(["cap-1", "cap-2"]) == {"cap-1"}
    full.close()


def test_a_locked_store_answers_503_with_retry_after_and_reads_go_on(client, served):
    _, store, _ = served
    conn = sqlite3.connect(store.store.path, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")  # another writer holds the lock
    try:
        event = {"event_id": "locked-1", "user_id": "u5", "item_id": "2", "type": "view"}
        r = client.post("/events", json=event, headers=bearer(WRITE))
        assert r.status_code == 503 and r.headers["retry-after"] == "1" and "retry" in r.json()["detail"]
        assert (
            client.post("/recommend", json={"user_id": "u5", "k": 3}, headers=bearer(READ)).status_code == 200
        )
    finally:
        conn.execute("ROLLBACK")
        conn.close()
    assert (
        client.post("/events", json=event, headers=bearer(WRITE)).json()["stored"] == 1
    )  # nothing half-stored


def test_a_slow_neighbour_search_does_not_stall_the_event_loop(served, monkeypatch):
    """Scoring the catalog for /items/{id}/similar runs in the pipeline's thread: /metrics (no pipeline work)
    answers while it runs."""
    from longtail.serve.live import LivePipeline

    slow = LivePipeline.similar

    def similar(self, item_id, k):
        time.sleep(0.8)
        return slow(self, item_id, k)

    monkeypatch.setattr(LivePipeline, "similar", similar)
    app = client_for(served).app

    async def both() -> float:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            slow_call = asyncio.create_task(c.get("/items/3/similar"))
            await asyncio.sleep(0.1)
            started = time.perf_counter()
            assert (await c.get("/metrics")).status_code == 200
            waited = time.perf_counter() - started
            assert (await slow_call).status_code == 200
            return waited

    assert asyncio.run(both()) < 0.5


def test_metrics_count_requests_by_route_and_status(client):
    def count(text: str) -> float:
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("longtail_requests_total{")
            and 'route="/healthz"' in line
            and 'status="200"' in line
        )

    before = count(client.get("/metrics").text)
    for _ in range(5):
        client.get("/healthz")
    assert count(client.get("/metrics").text) - before == 5


def test_every_documented_example_body_validates():
    """The request bodies of the README's curl examples parse as the app's schemas."""
    from longtail.serve.schemas import EventIn, ItemIn, RecommendRequest

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    bodies = [
        json.loads(line.split("-d '", 1)[1].rsplit("'", 1)[0])
        for line in readme.splitlines()
        if "-d '{" in line
    ]
    assert bodies
    for body in bodies:
        kind = EventIn if "event_id" in body else ItemIn if "text" in body else RecommendRequest
        kind.model_validate(body)


def test_lists_are_recorded_events_attributed_and_erasure_reaches_both(client, served):
    """A served list carries its recommendation_id and arm; an event naming it is attributed, one naming
    another user's list is not; KPIs count both; erasing the user deletes their impressions and
    attributions."""
    store = served[1].store
    w, r = bearer(WRITE), bearer(READ)
    mine = client.post("/recommend", json={"user_id": "loop-a", "k": 4}, headers=r).json()
    theirs = client.post("/recommend", json={"user_id": "loop-b", "k": 4}, headers=r).json()
    assert mine["recommendation_id"] != theirs["recommendation_id"] and mine["arm"] == "default"
    assert all(i["shelf"] in {"popular", "explore"} and i["bucket"] for i in mine["items"])
    clicked = mine["items"][1]["item_id"]
    event = {"user_id": "loop-a", "item_id": clicked, "type": "click", "position": 1}
    ok = client.post(
        "/events",
        json={**event, "event_id": "loop-1", "recommendation_id": mine["recommendation_id"]},
        headers=w,
    )
    assert ok.status_code == 200 and ok.json()["attributed"] == 1
    stolen = {
        **event,
        "event_id": "loop-2",
        "recommendation_id": theirs["recommendation_id"],
        "position": None,
    }
    assert client.post("/events", json=stolen, headers=w).json()["attributed"] == 0  # another user's list
    assert (
        client.post("/events", json={**event, "event_id": "loop-3", "position": 7}, headers=w).status_code
        == 422
    )
    metrics = client.get("/metrics").text
    assert 'longtail_impressions_total{arm="default",strategy="cold_start"}' in metrics
    assert "longtail_attributed_events_total{" in metrics
    before = store.online_rows(0.0)
    assert client.post("/users/erase", json={"user_id": "loop-a"}, headers=w).status_code == 200
    after = store.online_rows(0.0)
    assert after.users["default"] == before.users["default"] - 1
    assert sum(s[3] for s in after.slots) == sum(s[3] for s in before.slots) - 4  # loop-a's 4 slots
    assert sum(s[4] for s in after.slots) == sum(s[4] for s in before.slots) - 1  # and their attribution


def test_impressions_can_be_switched_off(served):
    recommender, store, metrics = served
    with TestClient(
        create_app(recommender, store, TOKENS, Limits(), metrics=metrics, record_impressions=False)
    ) as c:
        body = c.post("/recommend", json={"user_id": "quiet", "k": 3}, headers=bearer(READ)).json()
    assert "recommendation_id" not in body and body["items"]

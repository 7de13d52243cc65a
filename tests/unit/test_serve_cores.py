"""What a replica does without Serve: the encoder's backfill runs on its own, and a replica's store calls
hold a bounded number of PostgreSQL connections however many requests are in flight."""

from __future__ import annotations

import asyncio
import time

import httpx
import numpy as np
from harness.postgres_server import fresh_database

from longtail.serve.api import Limits, create_app
from longtail.serve.auth import Tokens
from longtail.serve.encoder_core import EncoderCore
from longtail.serve.local import LocalRecommender
from longtail.serve.metrics import ServeMetrics
from longtail.serve.pooled_store import PooledStore
from longtail.store import open_store


def test_items_added_through_another_encoder_are_encoded_without_any_request(tiny_bundle, tmp_path):
    """Mid-rollout an item is stored with the old bundle's vector only; the new encoder backfills it by
    itself within seconds (it used to wait for the next user's embed request)."""
    store = open_store(str(tmp_path / "s.sqlite"), create=True)
    core = EncoderCore(tiny_bundle, store)
    core.start_backfill(every_s=0.1)
    try:
        assert store.add_item("late", "B story of space", {}, "old-encoder", np.ones(4, np.float32))
        deadline = time.time() + 10
        while time.time() < deadline and not store.items_after(0, core.encoder_id):
            time.sleep(0.05)
        (item,) = store.items_after(0, core.encoder_id)
        assert item.item_id == "late" and item.vector.shape == (32,)  # the tiny encoder's own dimension
    finally:
        core.stop()


def test_a_replica_holds_at_most_its_store_threads_postgres_connections(tiny_bundle, tmp_path, postgres_url):
    import psycopg

    spec = fresh_database(postgres_url, "bounded_connections")
    store = PooledStore(open_store(spec, create=True), threads=2)
    recommender = LocalRecommender.open(tiny_bundle, store, ServeMetrics.open(tmp_path / "metrics"))
    app = create_app(recommender, store, Tokens(), Limits(), metrics=ServeMetrics.open(tmp_path / "metrics"))

    async def burst() -> list[int]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            events = [
                client.post(
                    "/events",
                    json={"event_id": f"e{i}", "user_id": f"u{i % 7}", "item_id": "1", "type": "view"},
                )
                for i in range(40)
            ]
            lists = [client.post("/recommend", json={"user_id": f"u{i}", "k": 5}) for i in range(20)]
            return [r.status_code for r in await asyncio.gather(*events, *lists)]

    assert set(asyncio.run(burst())) == {200}
    with psycopg.connect(spec, autocommit=True) as conn:
        (open_connections,) = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = 'bounded_connections' AND pid <> "
            "pg_backend_pid()"
        ).fetchone()
    # the pool's 2 threads, and the thread that opened the store and loaded the replica
    assert open_connections <= 3, open_connections
    recommender.encoder.stop()
    store.close()

"""The serving store's rules, run against both implementations: a SQLite file and a real PostgreSQL server.

Atomic batches, idempotent event ids (a reused id with another payload is a conflict), erasure that sticks
(replays and late events are refused), newest-N histories, item vectors per encoder, reads that never wait
for the write lock, and clear errors for a missing store or a locked one.
"""

from __future__ import annotations

import multiprocessing as mp
import sqlite3
import threading
import time
from collections.abc import Callable

import numpy as np
import pytest

from longtail.serve.sqlite_store import SqliteStore
from longtail.serve.store import (
    Event,
    EventConflict,
    EventsAdded,
    Store,
    StoreError,
    StoreUnavailable,
    open_store,
)
from tests.postgres_server import fresh_database

BACKENDS = ["sqlite", "postgresql"]
_count = iter(range(10**6))


@pytest.fixture(params=BACKENDS)
def spec(request, tmp_path) -> str:
    """A store location that does not exist yet (a file path, or a fresh database's URL)."""
    if request.param == "sqlite":
        return str(tmp_path / "state.sqlite")
    return fresh_database(request.getfixturevalue("postgres_url"), f"store_{next(_count)}")


def ev(event_id: str, user: str = "u", item: str = "a", t: float = 1.0, kind: str = "view", **kw) -> Event:
    return Event(event_id, user, item, kind, t, **kw)


def test_a_missing_store_is_an_error_not_a_new_empty_one(spec, tmp_path):
    with pytest.raises(StoreError, match="longtail store init"):
        open_store(spec)
    open_store(spec, create=True).add_events([ev("e1")])
    assert open_store(spec).histories(["u"], 10)["u"].items == ["a"]  # opens what exists
    not_a_store = tmp_path / "other.sqlite"
    sqlite3.connect(not_a_store).execute("CREATE TABLE x (y)")
    with pytest.raises(StoreError, match="not a longtail store"):
        SqliteStore(not_a_store)


def test_events_are_idempotent_and_ordered_by_time(spec):
    store = open_store(spec, create=True)
    assert store.add_events([ev("e1", item="b", t=2.0), ev("e2", item="a", t=1.0)]) == EventsAdded(2, 0, 0)
    assert store.add_events([ev("e1", item="b", t=2.0), ev("e3", user="v", item="c", t=0.0)]) == EventsAdded(1, 1, 0)
    reopened = open_store(spec)  # a new connection (another replica, or after a restart)
    got = reopened.histories(["u", "v", "nobody"], 10)
    assert got["u"].items == ["a", "b"] and got["v"].items == ["c"] and got["nobody"].items == []
    assert not got["u"].erased


def test_a_reused_event_id_with_another_payload_is_a_conflict_and_stores_nothing(spec):
    store = open_store(spec, create=True)
    store.add_events([ev("e1", item="a", t=1.0)])
    with pytest.raises(EventConflict, match="e1"):
        store.add_events([ev("e9", item="x"), ev("e1", item="OTHER", t=1.0)])
    assert store.histories(["u"], 10)["u"].items == ["a"]  # e9 was not stored either
    with pytest.raises(EventConflict):
        store.add_events([ev("n1", item="a"), ev("n1", item="b")])  # inside one batch too
    # resent without a timestamp (arrival time differs): the same event, a duplicate
    unstamped = ev("u1", t=100.0, stamped=False)
    store.add_events([unstamped])
    assert store.add_events([ev("u1", t=200.0, stamped=False)]) == EventsAdded(0, 1, 0)


def test_a_failing_batch_leaves_nothing_behind(spec):
    store = open_store(spec, create=True)
    batch = [ev(f"b{i}", item=str(i)) for i in range(999)] + [Event("bad", "u", None, "view", 1.0)]  # NOT NULL
    with pytest.raises(Exception, match=r"(?i)null"):
        store.add_events(batch)
    assert store.histories(["u"], 2000)["u"].items == []


def test_erasure_sticks_against_replays_and_late_events(spec):
    store = open_store(spec, create=True)
    sent = [ev("e1", item="a", t=10.0), ev("e2", item="b", t=20.0), ev("w1", user="w", t=5.0)]
    store.add_events(sent)
    before = time.time()
    assert store.erase_user("u") == 2
    assert store.histories(["u", "w"], 10)["u"].erased and store.histories(["u"], 10)["u"].items == []
    # at-least-once producer replays everything: nothing of u comes back, w's event is a duplicate
    assert store.add_events(sent) == EventsAdded(0, 1, 2)
    # an event sent before the erasure that arrives late (new id, old stamp; or an in-flight unstamped one)
    late = [ev("late", item="c", t=before - 1), ev("inflight", item="d", t=before - 0.001, stamped=False)]
    assert store.add_events(late) == EventsAdded(0, 0, 2)
    # the user comes back after the erasure: a new history, the bundle's stays unused
    assert store.add_events([ev("new", item="z", t=time.time() + 1)]) == EventsAdded(1, 0, 0)
    assert store.histories(["u"], 10)["u"].items == ["z"] and store.histories(["u"], 10)["u"].erased
    assert set(store.erased_users()) == {"u"}
    assert store.erase_user("a/b ?#") == 0  # any id is erasable, even one with no events


def test_histories_hold_the_newest_events_only(spec):
    store = open_store(spec, create=True)
    store.add_events([ev(f"e{i}", item=str(i), t=float(i), kind="purchase" if i == 9 else "view",
                         weight=2.0 if i == 8 else None) for i in range(10)])  # fmt: skip
    got = store.histories(["u"], 3)["u"]
    assert got.items == ["7", "8", "9"] and got.types == ["view", "view", "purchase"] and got.weights == [None, 2.0, None]


def test_items_and_vectors_per_encoder(spec):
    store = open_store(spec, create=True)
    assert store.add_item("n1", "first", {"genre": "x"}, "enc-A", np.array([1, 0], np.float32))
    assert store.add_item("n2", "second", {}, "enc-A", np.array([0, 1], np.float32))
    assert not store.add_item("n1", "again", {}, "enc-A", np.array([5, 5], np.float32))  # first copy kept
    items = store.items_after(0, "enc-A")
    assert [i.item_id for i in items] == ["n1", "n2"]
    assert items[0].fields == {"genre": "x"} and items[0].vector.tolist() == [1.0, 0.0]
    assert [i.item_id for i in store.items_after(items[0].seq, "enc-A")] == ["n2"]
    assert store.known_items(["n2", "zz"]) == {"n2"}
    # a new bundle's encoder (another dimension): the items wait for its vectors, none are mixed in
    assert store.items_after(0, "enc-B") == []
    assert store.items_missing_vectors("enc-B") == [("n1", "first"), ("n2", "second")]
    assert store.add_vectors("enc-B", {"n2": np.ones(3, np.float32)}) == 1
    assert store.add_vectors("enc-B", {"n2": np.zeros(3, np.float32)}) == 0
    assert [(i.item_id, i.vector.tolist()) for i in store.items_after(0, "enc-B")] == [("n2", [1.0, 1.0, 1.0])]
    assert store.items_missing_vectors("enc-B") == [("n1", "first")]


def hold_write_lock(spec: str) -> tuple[Callable[[], None], threading.Event]:
    """Another client holding the write lock (an open write transaction); returns its release."""
    release, held = threading.Event(), threading.Event()

    def hold() -> None:
        if spec.startswith("postgresql"):
            import psycopg

            with psycopg.connect(spec) as conn, conn.transaction():
                conn.execute("LOCK TABLE events, erased_users IN EXCLUSIVE MODE")  # plain SELECTs still pass
                held.set()
                release.wait(30)
        else:
            conn = sqlite3.connect(spec, isolation_level=None)
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO events (event_id, user_id, item_id, type, timestamp) VALUES ('x', 'h', 'a', 'v', 1)")
            held.set()
            release.wait(30)
            conn.execute("ROLLBACK")

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    held.wait(30)

    def done() -> None:
        release.set()
        thread.join(30)

    return done, held


def test_reads_never_wait_for_a_writer_and_a_locked_store_is_unavailable(spec):
    store: Store = open_store(spec, create=True, timeout_s=0.5)
    store.add_events([ev("e1")])
    store.add_item("n1", "t", {}, "enc", np.ones(2, np.float32))
    release, _ = hold_write_lock(spec)
    try:
        started = time.perf_counter()
        assert store.histories(["u"], 10)["u"].items == ["a"]
        assert store.known_items(["n1"]) == {"n1"}
        assert len(store.items_after(0, "enc")) == 1
        assert time.perf_counter() - started < 0.4  # none waited for the lock
        with pytest.raises(StoreUnavailable, match="retry"):
            store.add_events([ev("e2")])
        with pytest.raises(StoreUnavailable):
            store.erase_user("u")
    finally:
        release()
    assert store.add_events([ev("e2")]).stored == 1  # usable again once the lock is gone


def _writer(spec: str, start: int) -> None:
    store = open_store(spec)
    for i in range(start, start + 50):
        store.add_events([ev(f"e{i}", t=float(i))])


def test_concurrent_writers_in_other_processes_lose_nothing(spec):
    open_store(spec, create=True)
    procs = [mp.get_context("spawn").Process(target=_writer, args=(spec, s)) for s in (0, 50, 100)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert all(p.exitcode == 0 for p in procs)
    assert len(open_store(spec).histories(["u"], 1000)["u"].items) == 150

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
from harness.postgres_server import fresh_database

from longtail.store import (
    Event,
    EventConflict,
    EventsAdded,
    Impression,
    Retention,
    Store,
    StoreError,
    StoreFull,
    StoreUnavailable,
    Tracking,
    open_store,
)
from longtail.store.sqlite import SqliteStore

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
    assert store.add_events([ev("e1", item="b", t=2.0), ev("e3", user="v", item="c", t=0.0)]) == EventsAdded(
        1, 1, 0
    )
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
    batch = [ev(f"b{i}", item=str(i)) for i in range(999)] + [
        Event("bad", "u", None, "view", 1.0)
    ]  # NOT NULL
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
    store.add_events(
        [
            ev(
                f"e{i}",
                item=str(i),
                t=float(i),
                kind="purchase" if i == 9 else "view",
                weight=2.0 if i == 8 else None,
            )
            for i in range(10)
        ]
    )
    got = store.histories(["u"], 3)["u"]
    assert (
        got.items == ["7", "8", "9"]
        and got.types == ["view", "view", "purchase"]
        and got.weights == [None, 2.0, None]
    )


def test_a_user_keeps_their_newest_events_within_the_retention(spec):
    store = open_store(spec, create=True, retention=Retention(events_per_user=3))
    store.add_events([ev(f"e{i}", item=str(i), t=float(i)) for i in range(5)] + [ev("v1", user="v", t=1.0)])
    store.add_events([ev("late", item="old", t=0.5)])  # older than the kept three: kept out at once
    store.add_events([ev("e9", item="9", t=9.0)])  # the newest displaces the oldest kept
    everything = open_store(spec)  # the command line's view: every stored row
    assert everything.histories(["u", "v"], 100)["u"].items == ["3", "4", "9"]
    assert everything.histories(["v"], 100)["v"].items == ["a"]  # another user's events are left alone
    assert sum(len(rows) for table, rows in everything.dump(1000) if table == "events") == 4  # deleted


def test_an_item_beyond_the_cap_is_refused_and_nothing_is_stored(spec):
    vector = np.ones(4, dtype=np.float32)
    store = open_store(spec, create=True, retention=Retention(items=2))
    assert store.add_item("i1", "one", {}, "enc", vector) and store.add_item("i2", "two", {}, "enc", vector)
    assert not store.add_item("i1", "again", {}, "enc", vector)  # a known id is no new item, full or not
    with pytest.raises(StoreFull, match="max_stored_items: 2"):
        store.add_item("i3", "three", {}, "enc", vector)
    assert store.known_items(["i1", "i2", "i3"]) == {"i1", "i2"}
    assert [i.item_id for i in store.items_after(0, "enc")] == ["i1", "i2"]
    with pytest.raises(ValueError, match="events_per_user"):
        Retention(events_per_user=0)


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
    assert [(i.item_id, i.vector.tolist()) for i in store.items_after(0, "enc-B")] == [
        ("n2", [1.0, 1.0, 1.0])
    ]
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
            conn.execute(
                "INSERT INTO events (event_id, user_id, item_id, type, timestamp) VALUES ('x', 'h', 'a', "
                "'v', 1)"
            )
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


# ---- PostgreSQL under concurrency (real races, forced by table locks another client holds) -----------------
def _waiting_on(url: str, table: str, n: int, timeout: float = 10.0) -> None:
    """Block until ``n`` sessions wait for a lock on ``table``."""
    import psycopg

    deadline = time.time() + timeout
    with psycopg.connect(url, autocommit=True) as conn:
        while time.time() < deadline:
            waiting = conn.execute(
                "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
                "WHERE NOT l.granted AND c.relname = %s",
                (table,),
            ).fetchone()[0]
            if waiting >= n:
                return
            time.sleep(0.02)
    raise AssertionError(f"{n} sessions never waited on {table}")


def test_one_event_id_in_two_concurrent_batches_is_stored_once_without_an_error(postgres_url):
    """Two replicas get the same event at once: both look it up (absent), then both insert. The later one
    used to fail with UniqueViolation (a 500); it now runs again and finds a duplicate."""
    import psycopg

    spec = fresh_database(postgres_url, f"race_{next(_count)}")
    open_store(spec, create=True)
    results: list = []

    def add() -> None:
        try:
            results.append(open_store(spec).add_events([ev("same", item="a", t=5.0)]))
        except Exception as err:
            results.append(err)

    with psycopg.connect(spec) as blocker, blocker.transaction():
        blocker.execute("LOCK TABLE events IN SHARE MODE")  # lookups pass, inserts wait
        threads = [threading.Thread(target=add) for _ in range(2)]
        for t in threads:
            t.start()
        _waiting_on(spec, "events", 2)  # both looked the id up and wait to insert it
    for t in threads:
        t.join(30)
    assert sorted(results, key=repr) == [EventsAdded(0, 1, 0), EventsAdded(1, 0, 0)], results
    assert open_store(spec).histories(["u"], 10)["u"].items == ["a"]


def test_a_history_read_sees_an_erasure_whole_or_not_at_all(postgres_url):
    """histories() reads the erasure table, then the events. An erasure committing between the two used to
    show as 'not erased, no events' (so the bundle's history of the user came back); one snapshot now."""
    import psycopg

    spec = fresh_database(postgres_url, f"snapshot_{next(_count)}")
    store = open_store(spec, create=True)
    store.add_events([ev("e1", user="x", item="a"), ev("e2", user="x", item="b", t=2.0)])
    got: list = []
    with psycopg.connect(spec) as eraser:
        with eraser.transaction():
            eraser.execute(
                "LOCK TABLE events IN ACCESS EXCLUSIVE MODE"
            )  # the reader's second statement waits
            reader = threading.Thread(target=lambda: got.append(open_store(spec).histories(["x"], 10)["x"]))
            reader.start()
            _waiting_on(spec, "events", 1)  # it has read erased_users already
            eraser.execute("DELETE FROM events WHERE user_id = 'x'")  # what erase_user writes, committed now
            eraser.execute("INSERT INTO erased_users VALUES ('x', 10.0)")
        reader.join(30)
    (seen,) = got
    assert (seen.erased, seen.items) == (False, ["a", "b"])  # the state before the erasure, whole
    after = store.histories(["x"], 10)["x"]
    assert (after.erased, after.items) == (True, [])  # and after it


def test_a_store_url_with_a_password_is_refused_and_remote_servers_need_tls():
    from longtail.store.postgres import connection_options

    with pytest.raises(StoreError, match="PGPASSWORD"):
        open_store("postgresql://app:hunter2@db.internal:5432/longtail")
    assert connection_options("postgresql://app@db.internal/longtail")["sslmode"] == "require"
    assert (
        connection_options("postgresql://app@db.internal/longtail?sslmode=verify-full")["sslmode"]
        == "verify-full"
    )
    assert "sslmode" not in connection_options("postgresql://app@127.0.0.1:5432/longtail")
    assert "sslmode" not in connection_options("postgresql://app@localhost/longtail")


# ---- migration ---------------------------------------------------------------------------------------------
SCHEMA_1 = """
CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL UNIQUE, user_id TEXT NOT
NULL,
    item_id TEXT NOT NULL, type TEXT NOT NULL, timestamp REAL NOT NULL);
CREATE INDEX events_by_user ON events (user_id, timestamp, seq);
CREATE TABLE items (seq INTEGER PRIMARY KEY AUTOINCREMENT, item_id TEXT NOT NULL UNIQUE, text TEXT NOT NULL,
    fields TEXT NOT NULL, vector BLOB NOT NULL);
CREATE TABLE erased_users (user_id TEXT PRIMARY KEY, erased_at REAL NOT NULL);
"""


def write_schema1_store(path) -> None:
    """A store as the first longtail wrote it (no meta table, one vector per item, no tombstones)."""
    conn = sqlite3.connect(path)
    conn.executescript(SCHEMA_1)
    conn.executemany(
        "INSERT INTO events (event_id, user_id, item_id, type, timestamp) VALUES (?, ?, ?, ?, ?)",
        [("e1", "u", "a", "view", 1.0), ("e2", "u", "b", "click", 2.0), ("g1", "gone", "a", "view", 1.0)],
    )
    conn.execute(
        "INSERT INTO items (item_id, text, fields, vector) VALUES ('n1', 'new', '{}', ?)",
        (np.ones(2, np.float32).tobytes(),),
    )
    conn.execute("DELETE FROM events WHERE user_id = 'gone'")
    conn.execute("INSERT INTO erased_users VALUES ('gone', 50.0)")
    conn.commit()
    conn.close()


def test_an_older_store_is_refused_with_the_migration_and_migrated_keeping_everything(tmp_path, postgres_url):
    from longtail.store.migrate import migrate

    old = tmp_path / "old.sqlite"
    write_schema1_store(old)
    with pytest.raises(StoreError, match="longtail store migrate"):
        open_store(str(old))
    with pytest.raises(StoreError, match="longtail store migrate"):
        open_store(str(old), create=True)  # never silently re-created either
    done = migrate(str(old), str(tmp_path / "new.sqlite"))
    assert done.source_schema == 1 and done.rows["events"] == 2 and done.rows["erased_users"] == 1
    new = open_store(str(tmp_path / "new.sqlite"))
    assert new.histories(["u"], 10)["u"].items == ["a", "b"] and new.erased_users() == {"gone": 50.0}
    assert new.add_events([ev("g2", user="gone", t=40.0)]).erased == 1  # still erased: sent before, refused
    assert new.items_missing_vectors("enc") == [("n1", "new")]  # re-encoded by the serving encoder
    assert new.add_events([ev("e3", item="c", t=3.0)]).stored == 1  # sequences go on after the copied rows
    # in place: the old file kept aside
    again = migrate(str(old), str(old))
    assert (
        again.backup is not None
        and again.backup.is_file()
        and open_store(str(old)).histories(["u"], 9)["u"].items == ["a", "b"]
    )


def _everything(store: Store) -> dict:
    rows: dict = {}
    for table, chunk in store.dump(chunk=2):
        rows.setdefault(table, []).extend(chunk)
    return rows


def test_sqlite_to_postgres_and_back_keeps_events_items_vectors_and_erasures(tmp_path, postgres_url):
    from longtail.store.migrate import migrate

    source = open_store(str(tmp_path / "a.sqlite"), create=True)
    source.add_events([ev("e1", weight=2.0), ev("e2", item="b", t=2.0, stamped=False), ev("x1", user="x")])
    source.add_item("n1", "new", {"k": 1}, "enc-A", np.array([1, 2], np.float32))
    source.add_vectors("enc-B", {"n1": np.ones(3, np.float32)})
    source.erase_user("x")
    pg = fresh_database(postgres_url, f"migrate_{next(_count)}")
    now = time.time()
    source.add_impressions([shown("L1", "u", now, ("a", "model", "head"), ("b", "tail", "tail"))])
    assert source.add_events([ev("e3", item="b", t=now + 5.0, recommendation_id="L1")]).attributed == 1
    assert migrate(str(tmp_path / "a.sqlite"), pg).rows == {
        "events": 3,
        "items": 1,
        "item_vectors": 2,
        "erased_users": 1,
        "erased_events": 1,
        "impressions": 1,
        "impression_items": 2,
        "attributions": 1,
    }
    with pytest.raises(StoreError, match="not empty"):
        migrate(str(tmp_path / "a.sqlite"), pg)
    migrate(pg, str(tmp_path / "b.sqlite"))
    everything = _everything(source)
    assert _everything(open_store(pg)) == everything == _everything(open_store(str(tmp_path / "b.sqlite")))
    on_pg = open_store(pg)
    assert on_pg.add_events([ev("x1", user="x", t=1e9)]).erased == 1  # a replay of an erased event: refused
    assert on_pg.add_item("n2", "more", {}, "enc-A", np.zeros(2, np.float32))  # serial columns go on
    assert [i.item_id for i in on_pg.items_after(0, "enc-A")] == ["n1", "n2"]
    with pytest.raises(StoreError, match="exists"):
        migrate(pg, str(tmp_path / "a.sqlite"))


def shown(rid: str, user: str, at: float, *slots: tuple[str, str, str], arm: str = "A") -> Impression:
    return Impression(rid, user, at, arm, "v1", "hybrid", "{}", tuple(slots))


def test_events_are_attributed_to_the_list_they_came_from_and_nowhere_else(spec):
    store = open_store(spec, create=True, tracking=Tracking(window_s=100.0, early_s=5.0, keep_s=None))
    store.add_impressions(
        [
            shown("L1", "u", 1000.0, ("a", "model", "head"), ("b", "tail", "tail"), ("n", "new", "new")),
            shown("L2", "v", 1000.0, ("a", "model", "head")),
        ]
    )
    cases = {  # event → attributed?
        ev("clicked", item="b", t=1050.0, recommendation_id="L1", position=1): True,
        ev("other-users-list", item="a", t=1050.0, recommendation_id="L2"): False,
        ev("not-in-the-list", item="c", t=1050.0, recommendation_id="L1"): False,
        ev("expired", item="a", t=1101.0, recommendation_id="L1"): False,
        ev("before-it-was-shown", item="a", t=990.0, recommendation_id="L1"): False,
        ev("wrong-position", item="a", t=1050.0, recommendation_id="L1", position=1): False,
        ev("unknown-list", item="a", t=1050.0, recommendation_id="L9"): False,
        ev("no-id-matched", item="n", t=1060.0): True,
        ev("no-id-too-late", user="v", item="a", t=1200.0): False,
    }
    for event, expected in cases.items():
        assert store.add_events([event]).attributed == int(expected), event.event_id
    assert store.add_events([ev("clicked", item="b", t=1050.0, recommendation_id="L1")]).attributed == 0
    assert store.engagement(0.0, ("tail", "new")) == {"b": (1, 1), "n": (1, 1)}
    rows = store.online_rows(0.0)
    assert rows.lists == {"A": 2} and rows.users == {"A": 2}
    assert rows.slots == [
        ("A", "model", "head", 2, 0),
        ("A", "new", "new", 1, 1),
        ("A", "tail", "tail", 1, 1),
    ]
    assert rows.first_engagement == [("A", 60.0)] and rows.engaged_by_type == {"view": 2}


def test_erasure_and_age_remove_impressions_and_attributions(spec):
    store = open_store(spec, create=True, tracking=Tracking(window_s=100.0, keep_s=1000.0))
    now = time.time()
    store.add_impressions(
        [shown("L1", "u", now, ("a", "model", "head")), shown("L2", "v", now, ("a", "tail", "tail"))]
    )
    store.add_events([ev("e1", item="a", t=now + 1, recommendation_id="L1"), ev("e2", user="v", t=now + 1)])
    assert store.item_activity(now) == {"a": 2} and store.item_activity(now + 2) == {}  # the live trend
    store.erase_user("u")
    assert store.item_activity(now) == {"a": 1}
    rows = store.online_rows(0.0)
    assert rows.lists == {"A": 1} and rows.slots == [("A", "tail", "tail", 1, 1)]
    store.add_impressions([shown("L3", "w", now, ("a", "model", "head"))])
    store.add_impressions([shown("old", "w", now - 2000.0, ("a", "model", "head"))])  # past keep_s: pruned
    assert store.online_rows(0.0).lists == {"A": 2}


def _as_schema_2(spec: str) -> None:
    """Turn a fresh store of the current schema into one of schema 2 (no impression tables)."""
    drop = ["DROP TABLE impression_items", "DROP TABLE attributions", "DROP TABLE impressions"]
    if spec.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(spec, autocommit=True) as conn:
            for statement in drop:
                conn.execute(statement)
            conn.execute("UPDATE longtail_meta SET value = '2' WHERE key = 'schema_version'")
        return
    conn = sqlite3.connect(spec)
    for statement in drop:
        conn.execute(statement)
    conn.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()


def test_a_schema_2_store_is_refused_then_migrated_with_its_events(spec, tmp_path, postgres_url):
    from longtail.store.migrate import migrate

    open_store(spec, create=True).add_events([ev("e1"), ev("e2", item="b", t=2.0)])
    _as_schema_2(spec)
    with pytest.raises(StoreError, match="migrate"):
        open_store(spec)
    target = str(tmp_path / "v3.sqlite") if spec.startswith("postgresql://") else spec  # SQLite: in place
    done = migrate(spec, target)
    assert done.source_schema == 2 and done.rows["events"] == 2 and done.rows["impressions"] == 0
    new = open_store(target)
    assert new.histories(["u"], 10)["u"].items == ["a", "b"]
    now = time.time()
    new.add_impressions([shown("L1", "u", now, ("c", "tail", "tail"))])
    assert new.add_events([ev("e3", item="c", t=now + 1, recommendation_id="L1")]).attributed == 1

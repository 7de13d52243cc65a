"""The SQLite store: idempotent events, ordered histories, erasure, items; durable across reopen."""

from __future__ import annotations

import multiprocessing as mp

import numpy as np

from longtail.serve.store import Event, SqliteStore


def test_events_are_idempotent_and_ordered_by_time(tmp_path):
    store = SqliteStore(tmp_path / "s.sqlite")
    added = store.add_events([Event("e1", "u", "b", "view", 2.0), Event("e2", "u", "a", "view", 1.0)])
    assert added == (2, 0)
    assert store.add_events([Event("e1", "u", "zzz", "view", 9.0), Event("e3", "v", "c", "click", 0.0)]) == (1, 1)
    reopened = SqliteStore(tmp_path / "s.sqlite")  # a new connection (another replica, or after a restart)
    assert reopened.histories(["u", "v", "nobody"]) == {"u": (False, ["a", "b"]), "v": (False, ["c"]),
                                                       "nobody": (False, [])}  # fmt: skip


def test_erase_deletes_events_and_marks_the_user(tmp_path):
    store = SqliteStore(tmp_path / "s.sqlite")
    store.add_events([Event("e1", "u", "a", "view", 1.0), Event("e2", "w", "a", "view", 1.0)])
    assert store.erase_user("u") == 1
    assert store.histories(["u", "w"]) == {"u": (True, []), "w": (False, ["a"])}
    store.add_events([Event("e3", "u", "b", "view", 5.0)])  # a new history after erasure
    assert store.histories(["u"]) == {"u": (True, ["b"])}


def test_items_round_trip_in_arrival_order(tmp_path):
    store = SqliteStore(tmp_path / "s.sqlite")
    assert store.add_item("n1", "first", {"genre": "x"}, np.array([1, 0], np.float32))
    assert store.add_item("n2", "second", {}, np.array([0, 1], np.float32))
    assert not store.add_item("n1", "again", {}, np.array([5, 5], np.float32))  # first copy kept
    items = store.items_after(0)
    assert [i.item_id for i in items] == ["n1", "n2"]
    assert items[0].fields == {"genre": "x"} and items[0].vector.tolist() == [1.0, 0.0]
    assert [i.item_id for i in store.items_after(items[0].seq)] == ["n2"]
    assert store.known_items(["n2", "zz"]) == {"n2"}


def _writer(path: str, start: int) -> None:
    store = SqliteStore(path)
    for i in range(start, start + 50):
        store.add_events([Event(f"e{i}", "u", "a", "view", float(i))])


def test_concurrent_writers_in_other_processes_lose_nothing(tmp_path):
    path = str(tmp_path / "s.sqlite")
    SqliteStore(path)
    procs = [mp.get_context("spawn").Process(target=_writer, args=(path, s)) for s in (0, 50, 100)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert all(p.exitcode == 0 for p in procs)
    assert len(SqliteStore(path).histories(["u"])["u"][1]) == 150

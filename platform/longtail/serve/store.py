"""The serving state store: user events, items added at run time, and erased users.

``Store`` is the interface every replica uses; ``SqliteStore`` implements it on one SQLite file in WAL
mode (a real file: writes are committed with ``synchronous=FULL`` before the route replies, so a crash or
a restart of the whole app loses nothing that was acknowledged). On a multi-node cluster a networked
store (Postgres, Redis) implements the same six methods.

Tables:
    events(seq, event_id UNIQUE, user_id, item_id, type, timestamp)   idempotent on event_id
    items(seq, item_id UNIQUE, text, fields JSON, vector BLOB float32)  catalog growth, in arrival order
    erased_users(user_id, erased_at)   the bundle's history of these users is no longer used
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    user_id TEXT NOT NULL,
    item_id TEXT NOT NULL,
    type TEXT NOT NULL,
    timestamp REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_user ON events (user_id, timestamp, seq);
CREATE TABLE IF NOT EXISTS items (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    item_id TEXT NOT NULL UNIQUE,
    text TEXT NOT NULL,
    fields TEXT NOT NULL,
    vector BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS erased_users (
    user_id TEXT PRIMARY KEY,
    erased_at REAL NOT NULL
);
"""


@dataclass(frozen=True)
class Event:
    event_id: str
    user_id: str
    item_id: str
    type: str
    timestamp: float


@dataclass(frozen=True)
class StoredItem:
    seq: int
    item_id: str
    text: str
    fields: dict
    vector: np.ndarray  # (d,) float32


class Store(Protocol):
    """What the Serve replicas need from durable state."""

    def add_events(self, events: list[Event]) -> tuple[int, int]:
        """Store events atomically; returns (added, duplicates). Duplicate ``event_id``s are ignored."""
        ...

    def histories(self, user_ids: list[str]) -> dict[str, tuple[bool, list[str]]]:
        """Per user: (erased, item ids of the stored events oldest first)."""
        ...

    def erase_user(self, user_id: str) -> int:
        """Delete the user's events and mark their bundle history erased; returns events deleted."""
        ...

    def add_item(self, item_id: str, text: str, fields: dict, vector: np.ndarray) -> bool:
        """Store a new item; False when ``item_id`` is already stored (nothing changes)."""
        ...

    def items_after(self, seq: int) -> list[StoredItem]:
        """Items stored after sequence number ``seq``, in order."""
        ...

    def known_items(self, item_ids: list[str]) -> set[str]:
        """The subset of ``item_ids`` that were added through the store."""
        ...


class SqliteStore:
    """``Store`` on a SQLite file in WAL mode; one connection per thread, safe across processes."""

    def __init__(self, path: str | Path, busy_timeout_ms: int = 10_000) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.busy_timeout_ms = busy_timeout_ms
        self._local = threading.local()
        self._connection().executescript(SCHEMA)

    def _connection(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=self.busy_timeout_ms / 1000, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_ms)}")
            self._local.conn = conn
        return conn

    def _connect(self, write: bool = True) -> _Transaction:
        return _Transaction(self._connection(), "BEGIN IMMEDIATE" if write else None)

    def add_events(self, events: list[Event]) -> tuple[int, int]:
        with self._connect(write=False) as conn:
            before = conn.total_changes
            conn.executemany(
                "INSERT OR IGNORE INTO events (event_id, user_id, item_id, type, timestamp) VALUES (?, ?, ?, ?, ?)",
                [(e.event_id, e.user_id, e.item_id, e.type, e.timestamp) for e in events],
            )
            added = conn.total_changes - before
        return added, len(events) - added

    def histories(self, user_ids: list[str]) -> dict[str, tuple[bool, list[str]]]:
        out: dict[str, tuple[bool, list[str]]] = {u: (False, []) for u in user_ids}
        if not user_ids:
            return out
        marks = ",".join("?" * len(user_ids))  # placeholders only: values are bound, never formatted in (B608)
        with self._connect(write=False) as conn:
            erased = {r[0] for r in conn.execute(f"SELECT user_id FROM erased_users WHERE user_id IN ({marks})", user_ids)}  # nosec B608
            rows = conn.execute(
                f"SELECT user_id, item_id FROM events WHERE user_id IN ({marks}) ORDER BY timestamp, seq", user_ids  # nosec B608
            ).fetchall()
        for user in user_ids:
            out[user] = (user in erased, [])
        for user, item in rows:
            out[user][1].append(item)
        return out

    def erase_user(self, user_id: str) -> int:
        with self._connect() as conn:
            deleted = conn.execute("DELETE FROM events WHERE user_id = ?", (user_id,)).rowcount
            conn.execute(
                "INSERT INTO erased_users (user_id, erased_at) VALUES (?, ?) "
                "ON CONFLICT(user_id) DO UPDATE SET erased_at = excluded.erased_at",
                (user_id, time.time()),
            )
        return deleted

    def add_item(self, item_id: str, text: str, fields: dict, vector: np.ndarray) -> bool:
        blob = np.ascontiguousarray(vector, dtype=np.float32).tobytes()
        with self._connect() as conn:
            cur = conn.execute(
                "INSERT OR IGNORE INTO items (item_id, text, fields, vector) VALUES (?, ?, ?, ?)",
                (item_id, text, json.dumps(fields, sort_keys=True), blob),
            )
            return cur.rowcount == 1

    def items_after(self, seq: int) -> list[StoredItem]:
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT seq, item_id, text, fields, vector FROM items WHERE seq > ? ORDER BY seq", (seq,)
            ).fetchall()
        return [StoredItem(s, i, t, json.loads(f), np.frombuffer(v, dtype=np.float32).copy()) for s, i, t, f, v in rows]

    def known_items(self, item_ids: list[str]) -> set[str]:
        if not item_ids:
            return set()
        marks = ",".join("?" * len(item_ids))  # placeholders only (B608)
        with self._connect() as conn:
            return {r[0] for r in conn.execute(f"SELECT item_id FROM items WHERE item_id IN ({marks})", item_ids)}  # nosec B608


class _Transaction:
    """``with`` block = one transaction on an autocommit connection (commit, or roll back on error).

    Writers begin IMMEDIATE (take the write lock up front, so concurrent writers wait instead of failing);
    readers (``begin=None``) run each SELECT in its own implicit snapshot and, in WAL mode, never block
    writers: the hot read path of every ranker batch spends no statements on BEGIN/COMMIT.
    """

    def __init__(self, conn: sqlite3.Connection, begin: str | None) -> None:
        self.conn, self.begin = conn, begin

    def __enter__(self) -> sqlite3.Connection:
        if self.begin:
            self.conn.execute(self.begin)
        return self.conn

    def __exit__(self, kind, value, tb) -> None:
        if self.begin:
            self.conn.execute("ROLLBACK" if kind else "COMMIT")

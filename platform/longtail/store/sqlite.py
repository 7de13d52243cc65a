"""``Store`` on one SQLite file in WAL mode: the embedded default for one machine.

Writes are one ``BEGIN IMMEDIATE`` transaction each (a batch of events commits once, with
``synchronous=FULL``, before the route replies); reads run in deferred transactions, which in WAL mode
see one snapshot and never wait for, or block, a writer. One connection per thread, safe across processes
on the same machine; not across machines (use PostgreSQL there).
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from longtail.store import tracking as track
from longtail.store.base import (
    COLUMNS,
    SCHEMA_VERSION,
    Event,
    EventsAdded,
    Impression,
    OnlineRows,
    Retention,
    StoredItem,
    StoreError,
    StoreUnavailable,
    Tracking,
    UserEvents,
    event_hash,
    plan_insert,
    user_events,
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    user_id TEXT NOT NULL,
    item_id TEXT NOT NULL,
    type TEXT NOT NULL,
    weight REAL,
    timestamp REAL NOT NULL,
    stamped INTEGER NOT NULL DEFAULT 1,
    arrived_at REAL NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS events_by_user ON events (user_id, timestamp, seq);
CREATE TABLE IF NOT EXISTS items (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    item_id TEXT NOT NULL UNIQUE,
    text TEXT NOT NULL,
    fields TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS item_vectors (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    item_id TEXT NOT NULL,
    encoder TEXT NOT NULL,
    vector BLOB NOT NULL,
    UNIQUE (item_id, encoder)
);
CREATE INDEX IF NOT EXISTS vectors_by_encoder ON item_vectors (encoder, seq);
CREATE TABLE IF NOT EXISTS erased_users (user_id TEXT PRIMARY KEY, erased_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS erased_events (event_hash TEXT PRIMARY KEY);
"""
BUSY = ("locked", "busy", "unable to open", "disk i/o error")


class SqliteStore:
    def __init__(
        self,
        path: str | Path,
        create: bool = False,
        timeout_s: float = 5.0,
        retention: Retention = Retention(),  # noqa: B008 (frozen)
        tracking: Tracking = Tracking(),  # noqa: B008 (frozen)
    ) -> None:
        self.path = Path(path).expanduser()
        self.timeout_s, self.retention, self.tracking = timeout_s, retention, tracking
        self._local = threading.local()
        if not self.path.is_file():
            if not create:
                raise StoreError(
                    f"no store at {self.path}: create it with `longtail store init {self.path}` "
                    "(or set create_store: true in the app's args)"
                )
            if not self.path.parent.is_dir():
                raise StoreError(f"{self.path.parent}: no such directory for the store")
            with self._write() as conn:
                for statement in [*SCHEMA.split(";"), *track.SCHEMA]:
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(
                    "INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
                )
        self._check_schema()

    def describe(self) -> str:
        return f"sqlite:{self.path}"

    # ---- connections and transactions -----------------------------------------------------------
    def _connection(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(
                self.path, timeout=self.timeout_s, isolation_level=None, check_same_thread=False
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute(f"PRAGMA busy_timeout={int(self.timeout_s * 1000)}")
            self._local.conn = conn
        return conn

    @contextmanager
    def _transaction(self, begin: str) -> Iterator[sqlite3.Connection]:
        try:
            conn = self._connection()
            conn.execute(begin)
        except sqlite3.OperationalError as err:
            raise _unavailable(self, err) from err
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException as err:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if isinstance(err, sqlite3.OperationalError):
                raise _unavailable(self, err) from err
            raise

    def _write(self):
        return self._transaction("BEGIN IMMEDIATE")  # the write lock up front: writers queue, never deadlock

    def _read(self):
        return self._transaction("BEGIN DEFERRED")  # a snapshot; in WAL mode readers never block writers

    def _check_schema(self) -> None:
        with self._read() as conn:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            version = (
                conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
                if "meta" in tables
                else None
            )
        found = sqlite_schema(tables, version)
        if found is None:
            raise StoreError(
                f"{self.path}: not a longtail store of schema {SCHEMA_VERSION} (no longtail tables)"
            )
        if found != SCHEMA_VERSION:
            raise StoreError(
                f"{self.path}: a store of schema {found}, this longtail reads schema {SCHEMA_VERSION}; "
                f"migrate it "
                f"(events, items and erasures are kept): `longtail store migrate {self.path} {self.path}`"
            )

    # ---- events ---------------------------------------------------------------------------------
    def add_events(self, events: list[Event]) -> EventsAdded:
        ids = sorted({e.event_id for e in events})
        users = sorted({e.user_id for e in events})
        with self._write() as conn:
            stored = {
                row[0]: Event(row[0], row[1], row[2], row[3], row[4], weight=row[5], stamped=bool(row[6]))
                for row in _select_in(
                    conn,
                    "SELECT event_id, user_id, item_id, type, timestamp, weight, stamped "
                    "FROM events WHERE event_id IN ({})",
                    ids,
                )
            }
            erased = dict(
                _select_in(conn, "SELECT user_id, erased_at FROM erased_users WHERE user_id IN ({})", users)
            )
            tombstones = set()
            if erased:
                hashes = sorted({event_hash(e.event_id) for e in events if e.user_id in erased})
                tombstones = {
                    r[0]
                    for r in _select_in(
                        conn, "SELECT event_hash FROM erased_events WHERE event_hash IN ({})", hashes
                    )
                }
            fresh, added = plan_insert(events, stored, erased, tombstones)
            now = time.time()
            conn.executemany(
                "INSERT INTO events (event_id, user_id, item_id, type, weight, timestamp, stamped, "
                "arrived_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (e.event_id, e.user_id, e.item_id, e.type, e.weight, e.timestamp, int(e.stamped), now)
                    for e in fresh
                ],
            )
            keep = self.retention.events_per_user
            if keep is not None and fresh:
                conn.executemany(  # per user, down the (user_id, timestamp, seq) index past the newest
                    "DELETE FROM events WHERE seq IN (SELECT seq FROM events WHERE user_id = ? "
                    "ORDER BY timestamp DESC, seq DESC LIMIT -1 OFFSET ?)",
                    [(user, keep) for user in sorted({e.user_id for e in fresh})],
                )
            engaged = track.attribute(track.SqliteSql(conn), fresh, self.tracking)
        return dataclasses.replace(added, attributed=len(engaged), engaged=tuple(engaged))

    def histories(self, user_ids: list[str], limit: int) -> dict[str, UserEvents]:
        users = sorted(set(user_ids))
        with self._read() as conn:
            erased = {
                r[0]
                for r in _select_in(conn, "SELECT user_id FROM erased_users WHERE user_id IN ({})", users)
            }
            rows = _select_in(
                conn,
                "SELECT user_id, item_id, type, weight FROM (SELECT user_id, item_id, type, weight, "
                "timestamp, seq, "
                "ROW_NUMBER() OVER (PARTITION BY user_id ORDER BY timestamp DESC, seq DESC) AS newest "
                "FROM events WHERE user_id IN ({})) WHERE newest <= ? ORDER BY user_id, timestamp, seq",
                users,
                (int(limit),),
            )
        return user_events(users, erased, rows)

    def erase_user(self, user_id: str) -> int:
        with self._write() as conn:
            ids = [r[0] for r in conn.execute("SELECT event_id FROM events WHERE user_id = ?", (user_id,))]
            conn.executemany(
                "INSERT OR IGNORE INTO erased_events (event_hash) VALUES (?)", [(event_hash(i),) for i in ids]
            )
            conn.execute("DELETE FROM events WHERE user_id = ?", (user_id,))
            track.erase(track.SqliteSql(conn), user_id)
            conn.execute(
                "INSERT INTO erased_users (user_id, erased_at) VALUES (?, ?) "
                "ON CONFLICT(user_id) DO UPDATE SET erased_at = max(erased_at, excluded.erased_at)",
                (user_id, time.time()),
            )
        return len(ids)

    def erased_users(self) -> dict[str, float]:
        with self._read() as conn:
            return dict(conn.execute("SELECT user_id, erased_at FROM erased_users").fetchall())

    # ---- impressions ----------------------------------------------------------------------------
    def add_impressions(self, impressions: list[Impression]) -> None:
        with self._write() as conn:
            track.insert_impressions(track.SqliteSql(conn), impressions, self.tracking, time.time())

    def engagement(self, since: float, shelves: tuple[str, ...]) -> dict[str, tuple[int, int]]:
        with self._read() as conn:
            return track.engagement(track.SqliteSql(conn), since, shelves)

    def item_activity(self, since: float) -> dict[str, int]:
        with self._read() as conn:
            return track.item_activity(track.SqliteSql(conn), since)

    def online_rows(self, since: float) -> OnlineRows:
        with self._read() as conn:
            return track.online_rows(track.SqliteSql(conn), since)

    # ---- items ----------------------------------------------------------------------------------
    def add_item(self, item_id: str, text: str, fields: dict, encoder: str, vector: np.ndarray) -> bool:
        with self._write() as conn:
            if self.retention.items is not None:
                known = conn.execute("SELECT 1 FROM items WHERE item_id = ?", (item_id,)).fetchone()
                if known:
                    return False
                self.retention.check_items(conn.execute("SELECT COUNT(*) FROM items").fetchone()[0])
            cur = conn.execute(
                "INSERT OR IGNORE INTO items (item_id, text, fields) VALUES (?, ?, ?)",
                (item_id, text, json.dumps(fields, sort_keys=True)),
            )
            if cur.rowcount != 1:
                return False
            conn.execute(
                "INSERT INTO item_vectors (item_id, encoder, vector) VALUES (?, ?, ?)",
                (item_id, encoder, _blob(vector)),
            )
        return True

    def items_missing_vectors(self, encoder: str) -> list[tuple[str, str]]:
        with self._read() as conn:
            return conn.execute(
                "SELECT item_id, text FROM items WHERE item_id NOT IN "
                "(SELECT item_id FROM item_vectors WHERE encoder = ?) ORDER BY seq",
                (encoder,),
            ).fetchall()

    def add_vectors(self, encoder: str, vectors: dict[str, np.ndarray]) -> int:
        with self._write() as conn:
            before = conn.total_changes
            conn.executemany(
                "INSERT OR IGNORE INTO item_vectors (item_id, encoder, vector) VALUES (?, ?, ?)",
                [(i, encoder, _blob(v)) for i, v in vectors.items()],
            )
            return conn.total_changes - before

    def items_after(self, seq: int, encoder: str) -> list[StoredItem]:
        with self._read() as conn:
            rows = conn.execute(
                "SELECT v.seq, i.item_id, i.text, i.fields, v.vector FROM item_vectors v JOIN items i "
                "ON i.item_id = v.item_id WHERE v.encoder = ? AND v.seq > ? ORDER BY v.seq",
                (encoder, seq),
            ).fetchall()
        return [
            StoredItem(s, i, t, json.loads(f), np.frombuffer(v, dtype=np.float32).copy())
            for s, i, t, f, v in rows
        ]

    def known_items(self, item_ids: list[str]) -> set[str]:
        with self._read() as conn:
            return {
                r[0]
                for r in _select_in(
                    conn, "SELECT item_id FROM items WHERE item_id IN ({})", sorted(set(item_ids))
                )
            }

    # ---- migration ------------------------------------------------------------------------------
    def dump(self, chunk: int = 10_000) -> Iterator[tuple[str, list[tuple]]]:
        with self._read() as conn:  # one snapshot for every table
            for table, columns in COLUMNS.items():
                order = " ORDER BY seq" if "seq" in columns else ""
                cursor = conn.execute(f"SELECT {', '.join(columns)} FROM {table}{order}")  # nosec B608: fixed names
                while rows := cursor.fetchmany(chunk):
                    yield table, [_portable(table, row) for row in rows]

    def restore(self, chunks: Iterable[tuple[str, list[tuple]]]) -> dict[str, int]:
        counts = dict.fromkeys(COLUMNS, 0)
        with self._write() as conn:
            if any(conn.execute(f"SELECT 1 FROM {t} LIMIT 1").fetchone() for t in COLUMNS):  # nosec B608
                raise StoreError(f"{self.path}: not empty; a migration writes into a new store only")
            for table, rows in chunks:
                columns = COLUMNS[table]
                marks = ", ".join("?" * len(columns))
                conn.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows)  # nosec B608
                counts[table] += len(rows)
        return counts


def sqlite_schema(tables: set[str], version: tuple | None) -> int | None:
    """The schema of a SQLite file with these tables and ``meta.schema_version`` row: 1 for the first store
    (events, items with their vector, erased users; no meta table), None when it is no longtail store."""
    if version is not None:
        return int(version[0])
    return 1 if {"events", "items", "erased_users"} <= tables else None


def _portable(table: str, row: tuple) -> tuple:
    """A row as both backends insert it (SQLite's 0/1 booleans as bool)."""
    if table == "events":
        return (*row[:7], bool(row[7]), row[8])
    return row


def _select_in(conn: sqlite3.Connection, sql: str, values: list, extra: tuple = ()) -> list[tuple]:
    """``sql`` with its ``IN ({})`` filled by bound placeholders (values are never formatted in: B608),
    in chunks under SQLite's variable limit."""
    rows: list[tuple] = []
    for start in range(0, len(values), 900):
        chunk = values[start : start + 900]
        rows += conn.execute(sql.format(",".join("?" * len(chunk))), [*chunk, *extra]).fetchall()  # nosec B608
    return rows


def _blob(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype=np.float32).tobytes()


def _unavailable(store: SqliteStore, err: sqlite3.OperationalError) -> Exception:
    if any(word in str(err).lower() for word in BUSY):
        return StoreUnavailable(f"{store.path}: {err}; retry")
    return err

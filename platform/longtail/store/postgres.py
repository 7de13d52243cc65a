"""``Store`` on PostgreSQL (psycopg 3): one state for every node of a multi-node Serve cluster.

Chosen by ``store: postgresql://user@host:port/db`` in the app args. A password inside the URL is refused
(the URL travels in deploy args, logs and the dashboard): it goes in the standard ``PGPASSWORD``,
``PGPASSFILE`` or ``~/.pgpass``. A server that is not on loopback is reached with ``sslmode=require`` unless
the URL says otherwise (``?sslmode=verify-full`` with ``sslrootcert=…`` for a certificate check,
``?sslmode=disable`` on a trusted private network).

One connection per thread, opened lazily and reopened after a connection failure (the Serve app calls the
store from a bounded pool of threads, so a replica holds at most that many connections). Event inserts take
``erased_users`` in SHARE mode and erasure takes it in ROW EXCLUSIVE mode, so batches run concurrently with
each other but never with an erasure; one ``event_id`` arriving in two batches at once is resolved by
retrying the later batch (it then sees the first as stored: a duplicate, or a conflict). Reads run in
REPEATABLE READ, so a read of several tables sees one snapshot (an erasure never shows half done). Vector
inserts lock their table so sequence numbers commit in order (``items_after`` pages on them and must never
skip one).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import numpy as np

from longtail.store import tracking as track
from longtail.store.base import (
    COLUMNS,
    SCHEMA_VERSION,
    TABLES_OF_SCHEMA_2,
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

SCHEMA = [
    "CREATE TABLE IF NOT EXISTS longtail_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS events (
        seq BIGSERIAL PRIMARY KEY, event_id TEXT NOT NULL UNIQUE, user_id TEXT NOT NULL, item_id TEXT NOT
        NULL,
        type TEXT NOT NULL, weight DOUBLE PRECISION, timestamp DOUBLE PRECISION NOT NULL,
        stamped BOOLEAN NOT NULL, arrived_at DOUBLE PRECISION NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS events_by_user ON events (user_id, timestamp, seq)",
    """CREATE TABLE IF NOT EXISTS items (
        seq BIGSERIAL PRIMARY KEY, item_id TEXT NOT NULL UNIQUE, text TEXT NOT NULL, fields TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS item_vectors (
        seq BIGSERIAL PRIMARY KEY, item_id TEXT NOT NULL, encoder TEXT NOT NULL, vector BYTEA NOT NULL,
        UNIQUE (item_id, encoder))""",
    "CREATE INDEX IF NOT EXISTS vectors_by_encoder ON item_vectors (encoder, seq)",
    "CREATE TABLE IF NOT EXISTS erased_users (user_id TEXT PRIMARY KEY, erased_at DOUBLE PRECISION NOT NULL)",
    "CREATE TABLE IF NOT EXISTS erased_events (event_hash TEXT PRIMARY KEY)",
]


WRITE_RETRIES = 3  # a batch that lost a race for an event_id to a concurrent batch is run again


def connection_options(url: str) -> dict[str, str]:
    """The libpq parameters of a store URL, checked: no password inside it, and TLS required for a server
    that is not on loopback unless the URL sets ``sslmode`` itself."""
    from psycopg import conninfo

    try:
        params = conninfo.conninfo_to_dict(url)
    except Exception as err:  # psycopg.ProgrammingError: a malformed URL
        raise StoreError(f"store URL is not a valid PostgreSQL URL: {' '.join(str(err).split())}") from None
    if params.get("password"):
        raise StoreError(
            "the store URL holds a password; it would travel in deploy args, logs and the dashboard. Remove "
            "it "
            "and set PGPASSWORD, PGPASSFILE or ~/.pgpass on every node instead"
        )
    hosts = [h for h in str(params.get("host", "")).split(",") if h]
    if "sslmode" not in params and hosts and not all(_local_host(h) for h in hosts):
        params["sslmode"] = "require"
    return {k: str(v) for k, v in params.items()}


def _local_host(host: str) -> bool:
    if host.startswith("/") or host == "localhost":  # a Unix socket directory, or loopback by name
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class PostgresStore:
    def __init__(
        self,
        url: str,
        create: bool = False,
        timeout_s: float = 5.0,
        retention: Retention = Retention(),  # noqa: B008 (frozen)
        tracking: Tracking = Tracking(),  # noqa: B008 (frozen)
        schemas: tuple[int, ...] = (SCHEMA_VERSION,),
    ) -> None:
        """``schemas``: the schema versions this handle may open (a migration reads older ones)."""
        import psycopg

        self._psycopg = psycopg
        self.url, self.timeout_s, self.retention, self.tracking = url, timeout_s, retention, tracking
        self.params = connection_options(url)
        self._local = threading.local()
        if create:
            with self._write() as cur:
                cur.execute("SELECT pg_advisory_xact_lock(7345123)")  # two replicas creating at once
                for statement in [*SCHEMA, *track.SCHEMA]:
                    cur.execute(statement)
                cur.execute(
                    "INSERT INTO longtail_meta VALUES ('schema_version', %s) ON CONFLICT (key) DO NOTHING",
                    (str(SCHEMA_VERSION),),
                )
        self.schema = self._check_schema(schemas)

    def describe(self) -> str:
        p = self.params
        return (
            f"postgresql://{p.get('user', '')}@{p.get('host', '')}:{p.get('port', '')}/{p.get('dbname', '')}"
        )

    # ---- connections and transactions -----------------------------------------------------------
    def _connection(self):
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed or conn.broken:
            conn = self._psycopg.connect(
                **self.params,
                connect_timeout=max(1, int(self.timeout_s)),
                autocommit=False,
                options=f"-c lock_timeout={int(self.timeout_s * 1000)}",
            )
            self._local.conn = conn
        return conn

    @contextmanager
    def _transaction(self, read_only: bool) -> Iterator:
        errors = (self._psycopg.OperationalError, self._psycopg.errors.LockNotAvailable)
        try:
            conn = self._connection()
            with conn.transaction(), conn.cursor() as cur:
                if read_only:  # one snapshot for all of a read's statements
                    cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                yield cur
        except errors as err:
            raise StoreUnavailable(f"{self.describe()}: {' '.join(str(err).split())}; retry") from err

    def _write(self):
        return self._transaction(read_only=False)

    def _read(self):
        return self._transaction(read_only=True)

    def _check_schema(self, schemas: tuple[int, ...]) -> int:
        with self._read() as cur:
            cur.execute("SELECT to_regclass('longtail_meta') IS NOT NULL")
            exists = cur.fetchone()[0]
            version = None
            if exists:
                cur.execute("SELECT value FROM longtail_meta WHERE key = 'schema_version'")
                version = cur.fetchone()
        if not exists:
            raise StoreError(
                f"no longtail store in {self.describe()}: create it with `longtail store init URL` "
                "(or set create_store: true in the app's args)"
            )
        if version is None:
            raise StoreError(
                f"{self.describe()}: not a longtail store of schema {SCHEMA_VERSION} (no schema version)"
            )
        if int(version[0]) not in schemas:
            raise StoreError(
                f"{self.describe()}: a store of schema {version[0]}, this longtail reads schema "
                f"{SCHEMA_VERSION}; "
                "migrate it into a new database with `longtail store migrate OLD NEW`"
            )
        return int(version[0])

    # ---- events ---------------------------------------------------------------------------------
    def add_events(self, events: list[Event]) -> EventsAdded:
        for attempt in range(WRITE_RETRIES + 1):
            try:
                return self._add_events(events)
            except (
                self._psycopg.errors.UniqueViolation
            ) as err:  # a concurrent batch stored one of these ids first
                if attempt == WRITE_RETRIES:
                    raise StoreUnavailable(
                        f"{self.describe()}: event ids keep colliding ({err}); retry"
                    ) from err
        raise AssertionError("unreachable")

    def _add_events(self, events: list[Event]) -> EventsAdded:
        ids = sorted({e.event_id for e in events})
        users = sorted({e.user_id for e in events})
        with self._write() as cur:
            cur.execute("LOCK TABLE erased_users IN SHARE MODE")  # waits for, and blocks, erasures only
            cur.execute(
                "SELECT event_id, user_id, item_id, type, timestamp, weight, stamped FROM events "
                "WHERE event_id = ANY(%s)",
                (ids,),
            )
            stored = {
                r[0]: Event(r[0], r[1], r[2], r[3], r[4], weight=r[5], stamped=r[6]) for r in cur.fetchall()
            }
            cur.execute("SELECT user_id, erased_at FROM erased_users WHERE user_id = ANY(%s)", (users,))
            erased = dict(cur.fetchall())
            tombstones: set[str] = set()
            if erased:
                hashes = sorted({event_hash(e.event_id) for e in events if e.user_id in erased})
                cur.execute("SELECT event_hash FROM erased_events WHERE event_hash = ANY(%s)", (hashes,))
                tombstones = {r[0] for r in cur.fetchall()}
            fresh, added = plan_insert(events, stored, erased, tombstones)
            now = time.time()
            cur.executemany(
                "INSERT INTO events (event_id, user_id, item_id, type, weight, timestamp, stamped, "
                "arrived_at) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                [
                    (e.event_id, e.user_id, e.item_id, e.type, e.weight, e.timestamp, e.stamped, now)
                    for e in fresh
                ],
            )
            keep = self.retention.events_per_user
            if keep is not None and fresh:
                cur.executemany(  # per user, down the (user_id, timestamp, seq) index past the newest
                    "DELETE FROM events WHERE seq IN (SELECT seq FROM events WHERE user_id = %s "
                    "ORDER BY timestamp DESC, seq DESC OFFSET %s)",
                    [(user, keep) for user in sorted({e.user_id for e in fresh})],
                )
            engaged = track.attribute(track.PostgresSql(cur), fresh, self.tracking)
        return dataclasses.replace(added, attributed=len(engaged), engaged=tuple(engaged))

    def histories(self, user_ids: list[str], limit: int) -> dict[str, UserEvents]:
        users = sorted(set(user_ids))
        with self._read() as cur:
            cur.execute("SELECT user_id FROM erased_users WHERE user_id = ANY(%s)", (users,))
            erased = {r[0] for r in cur.fetchall()}
            cur.execute(
                "SELECT user_id, item_id, type, weight FROM (SELECT user_id, item_id, type, weight, "
                "timestamp, seq, "
                "ROW_NUMBER() OVER (PARTITION BY user_id ORDER BY timestamp DESC, seq DESC) AS newest "
                "FROM events WHERE user_id = ANY(%s)) AS recent WHERE newest <= %s ORDER BY user_id, "
                "timestamp, seq",
                (users, int(limit)),
            )
            rows = cur.fetchall()
        return user_events(users, erased, rows)

    def erase_user(self, user_id: str) -> int:
        with self._write() as cur:
            cur.execute("LOCK TABLE erased_users IN ROW EXCLUSIVE MODE")  # conflicts with inserts' SHARE
            cur.execute("DELETE FROM events WHERE user_id = %s RETURNING event_id", (user_id,))
            ids = [r[0] for r in cur.fetchall()]
            cur.executemany(
                "INSERT INTO erased_events (event_hash) VALUES (%s) ON CONFLICT DO NOTHING",
                [(event_hash(i),) for i in ids],
            )
            track.erase(track.PostgresSql(cur), user_id)
            cur.execute(
                "INSERT INTO erased_users (user_id, erased_at) VALUES (%s, %s) ON CONFLICT (user_id) "
                "DO UPDATE SET erased_at = GREATEST(erased_users.erased_at, excluded.erased_at)",
                (user_id, time.time()),
            )
        return len(ids)

    def erased_users(self) -> dict[str, float]:
        with self._read() as cur:
            cur.execute("SELECT user_id, erased_at FROM erased_users")
            return dict(cur.fetchall())

    # ---- impressions ----------------------------------------------------------------------------
    def add_impressions(self, impressions: list[Impression]) -> None:
        with self._write() as cur:
            track.insert_impressions(track.PostgresSql(cur), impressions, self.tracking, time.time())

    def engagement(self, since: float, shelves: tuple[str, ...]) -> dict[str, tuple[int, int]]:
        with self._read() as cur:
            return track.engagement(track.PostgresSql(cur), since, shelves)

    def item_activity(self, since: float) -> dict[str, int]:
        with self._read() as cur:
            return track.item_activity(track.PostgresSql(cur), since)

    def online_rows(self, since: float) -> OnlineRows:
        with self._read() as cur:
            return track.online_rows(track.PostgresSql(cur), since)

    # ---- items ----------------------------------------------------------------------------------
    def add_item(self, item_id: str, text: str, fields: dict, encoder: str, vector: np.ndarray) -> bool:
        with self._write() as cur:
            if self.retention.items is not None:
                cur.execute("LOCK TABLE items IN SHARE ROW EXCLUSIVE MODE")  # one count-then-insert at a time
                cur.execute("SELECT 1 FROM items WHERE item_id = %s", (item_id,))
                if cur.fetchone():
                    return False
                cur.execute("SELECT COUNT(*) FROM items")
                self.retention.check_items(cur.fetchone()[0])
            cur.execute(
                "INSERT INTO items (item_id, text, fields) VALUES (%s, %s, %s) ON CONFLICT (item_id) DO "
                "NOTHING",
                (item_id, text, json.dumps(fields, sort_keys=True)),
            )
            if cur.rowcount != 1:
                return False
            cur.execute("LOCK TABLE item_vectors IN EXCLUSIVE MODE")  # seq values commit in order
            cur.execute(
                "INSERT INTO item_vectors (item_id, encoder, vector) VALUES (%s, %s, %s)",
                (item_id, encoder, _blob(vector)),
            )
        return True

    def items_missing_vectors(self, encoder: str) -> list[tuple[str, str]]:
        with self._read() as cur:
            cur.execute(
                "SELECT item_id, text FROM items WHERE item_id NOT IN "
                "(SELECT item_id FROM item_vectors WHERE encoder = %s) ORDER BY seq",
                (encoder,),
            )
            return [tuple(r) for r in cur.fetchall()]

    def add_vectors(self, encoder: str, vectors: dict[str, np.ndarray]) -> int:
        with self._write() as cur:
            cur.execute("LOCK TABLE item_vectors IN EXCLUSIVE MODE")
            added = 0
            for item_id, vector in vectors.items():
                cur.execute(
                    "INSERT INTO item_vectors (item_id, encoder, vector) VALUES (%s, %s, %s) "
                    "ON CONFLICT (item_id, encoder) DO NOTHING",
                    (item_id, encoder, _blob(vector)),
                )
                added += cur.rowcount
            return added

    def items_after(self, seq: int, encoder: str) -> list[StoredItem]:
        with self._read() as cur:
            cur.execute(
                "SELECT v.seq, i.item_id, i.text, i.fields, v.vector FROM item_vectors v JOIN items i "
                "ON i.item_id = v.item_id WHERE v.encoder = %s AND v.seq > %s ORDER BY v.seq",
                (encoder, seq),
            )
            rows = cur.fetchall()
        return [
            StoredItem(s, i, t, json.loads(f), np.frombuffer(bytes(v), dtype=np.float32).copy())
            for s, i, t, f, v in rows
        ]

    def known_items(self, item_ids: list[str]) -> set[str]:
        with self._read() as cur:
            cur.execute("SELECT item_id FROM items WHERE item_id = ANY(%s)", (sorted(set(item_ids)),))
            return {r[0] for r in cur.fetchall()}

    # ---- migration ------------------------------------------------------------------------------
    def dump(self, chunk: int = 10_000) -> Iterator[tuple[str, list[tuple]]]:
        tables = tuple(COLUMNS) if self.schema == SCHEMA_VERSION else TABLES_OF_SCHEMA_2
        with self._read() as cur:  # REPEATABLE READ: one snapshot for every table
            for table in tables:
                columns = COLUMNS[table]
                order = " ORDER BY seq" if "seq" in columns else ""
                cur.execute(f"SELECT {', '.join(columns)} FROM {table}{order}")  # nosec B608: fixed names
                while rows := cur.fetchmany(chunk):
                    yield table, [_portable(table, row) for row in rows]

    def restore(self, chunks: Iterable[tuple[str, list[tuple]]]) -> dict[str, int]:
        counts = dict.fromkeys(COLUMNS, 0)
        with self._write() as cur:
            for table in COLUMNS:
                cur.execute(f"SELECT 1 FROM {table} LIMIT 1")  # nosec B608: fixed names
                if cur.fetchone():
                    raise StoreError(
                        f"{self.describe()}: not empty; a migration writes into a new store only"
                    )
            for table, rows in chunks:
                columns = COLUMNS[table]
                marks = ", ".join(["%s"] * len(columns))
                cur.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows)  # nosec B608
                counts[table] += len(rows)
            for table in (
                "events",
                "items",
                "item_vectors",
            ):  # the serial columns continue after the copied rows
                cur.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'seq'), COALESCE(MAX(seq), 0) + 1, "
                    f"false) "
                    f"FROM {table}"  # nosec B608: fixed names
                )
        return counts


def _portable(table: str, row: tuple) -> tuple:
    """A row as both backends insert it (bytea as bytes)."""
    if table == "item_vectors":
        return (*row[:3], bytes(row[3]))
    return tuple(row)


def _blob(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype=np.float32).tobytes()

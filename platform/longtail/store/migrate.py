"""``longtail store migrate SRC DST``: copy a store into a new one of the current schema.

Every event (with its weight, stamp and arrival time), every item added at run time with its vectors, the
erased users with their erasure times, the erased events' tombstones, and the served lists (impressions)
with their attributions are kept, so erased users stay
erased and their replays stay refused. Sources: a SQLite file of any schema this package has written
(schema 1, the first store, included), or a PostgreSQL store of schema 2 or the current one; destinations:
a SQLite file that does not exist yet, or an empty PostgreSQL database. The copy is one transaction on the
destination; a SQLite destination is written to a temporary sibling and renamed into place, so a failed
migration leaves nothing behind.

``DST`` may be ``SRC`` for a SQLite file (an upgrade in place): the old file is kept beside it as
``<name>.schema<N>-<time>.bak``.

Schema 1 stored one vector per item without naming the encoder that made it, so those vectors are not
copied: the serving Encoder of the bundle being served encodes the items again at start (as it does for
any stored item that lacks a vector from its encoder).
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from longtail.store import SCHEMA_VERSION, StoreError, is_postgres, open_store
from longtail.store.base import COLUMNS, TABLES_OF_SCHEMA_2
from longtail.store.sqlite import sqlite_schema


@dataclass(frozen=True)
class Migrated:
    source_schema: int
    rows: dict[str, int]  # rows copied per table
    destination: str  # where the store is now (without secrets)
    backup: Path | None  # the old file, for an in-place SQLite upgrade


def migrate(source: str, destination: str, chunk: int = 10_000) -> Migrated:
    """Copy ``source`` into ``destination`` (a new store of the current schema); see the module docstring."""
    if is_postgres(source):
        if source == destination:
            raise StoreError("a PostgreSQL store migrates into another (empty) database, not into itself")
        from longtail.store.postgres import PostgresStore

        old = PostgresStore(source, schemas=(2, SCHEMA_VERSION))
        schema, chunks = old.schema, old.dump(chunk)
    else:
        schema, chunks = _sqlite_source(Path(source).expanduser(), chunk)
    if is_postgres(destination):
        database = open_store(destination, create=True)
        rows = database.restore(chunks)
        return Migrated(schema, rows, database.describe(), None)
    file = Path(destination).expanduser()
    same = file.exists() and file.resolve() == Path(source).expanduser().resolve()
    in_place = not is_postgres(source) and same
    return _into_sqlite(file, schema, chunks, in_place)


def _sqlite_source(path: Path, chunk: int) -> tuple[int, Iterator[tuple[str, list[tuple]]]]:
    if not path.is_file():
        raise StoreError(f"{path}: no such store")
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        version = (
            conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            if "meta" in tables
            else None
        )
    except sqlite3.DatabaseError as err:
        raise StoreError(f"{path}: not a SQLite store ({err})") from None
    finally:
        conn.close()
    schema = sqlite_schema(tables, version)
    if schema is None:
        raise StoreError(f"{path}: not a longtail store (no longtail tables)")
    if schema == SCHEMA_VERSION:
        queries = {
            t: f"SELECT {', '.join(c)} FROM {t}" + (" ORDER BY seq" if "seq" in c else "")
            for t, c in COLUMNS.items()
        }
    elif schema == 2:  # no impressions yet
        queries = {
            t: f"SELECT {', '.join(COLUMNS[t])} FROM {t}" + (" ORDER BY seq" if "seq" in COLUMNS[t] else "")
            for t in TABLES_OF_SCHEMA_2
        }
    elif schema == 1:  # events had no weight and were all stamped by their sender; items carried a vector of
        # an unnamed encoder (not copied: re-encoded when served); there were no tombstones
        queries = {
            "events": "SELECT seq, event_id, user_id, item_id, type, NULL, timestamp, 1, timestamp FROM "
            "events ORDER BY seq",
            "items": "SELECT seq, item_id, text, fields FROM items ORDER BY seq",
            "erased_users": "SELECT user_id, erased_at FROM erased_users",
        }
    else:
        raise StoreError(
            f"{path}: schema {schema} is newer than this longtail's {SCHEMA_VERSION}; upgrade longtail"
        )
    return schema, _sqlite_rows(path, queries, chunk)


def _sqlite_rows(path: Path, queries: dict[str, str], chunk: int) -> Iterator[tuple[str, list[tuple]]]:
    """Rows of each query, from one read snapshot of a connection closed when done (an in-place upgrade
    renames the file afterwards)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        conn.execute("BEGIN")  # one snapshot
        for table, sql in queries.items():
            cursor = conn.execute(sql)  # nosec B608: fixed names
            while rows := cursor.fetchmany(chunk):
                yield table, [(*r[:7], bool(r[7]), r[8]) if table == "events" else tuple(r) for r in rows]
        conn.execute("COMMIT")
    finally:
        conn.close()


def _into_sqlite(
    destination: Path, schema: int, chunks: Iterator[tuple[str, list[tuple]]], in_place: bool
) -> Migrated:
    if destination.exists() and not in_place:
        raise StoreError(f"{destination}: exists; a migration writes a new store (or upgrades SRC in place)")
    if not destination.parent.is_dir():
        raise StoreError(f"{destination.parent}: no such directory for the store")
    tmp = destination.with_name(f".{destination.name}.migrating-{os.getpid()}")
    for leftover in (tmp, tmp.with_name(tmp.name + "-wal"), tmp.with_name(tmp.name + "-shm")):
        leftover.unlink(missing_ok=True)
    try:
        target = open_store(str(tmp), create=True)
        rows = target.restore(chunks)
        del target  # its connection closes with it
        _checkpoint(tmp)
        backup = None
        if in_place:
            backup = destination.with_name(
                f"{destination.name}.schema{schema}-{time.strftime('%Y%m%dT%H%M%S')}.bak"
            )
            os.replace(destination, backup)
            for suffix in ("-wal", "-shm"):
                side = destination.with_name(destination.name + suffix)
                if side.exists():
                    os.replace(side, backup.with_name(backup.name + suffix))
        os.replace(tmp, destination)
    except BaseException:
        for leftover in (tmp, tmp.with_name(tmp.name + "-wal"), tmp.with_name(tmp.name + "-shm")):
            leftover.unlink(missing_ok=True)
        raise
    return Migrated(schema, rows, f"sqlite:{destination}", backup)


def _checkpoint(path: Path) -> None:
    """Fold the WAL into the file, so the file alone is the whole store when it is renamed."""
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()

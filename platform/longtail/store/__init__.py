"""The serving state store: user events, items added at run time, item vectors per encoder, erasures, and
the served lists (impressions) with the events attributed to them (``longtail.store.tracking``; read by
``longtail report online``, ``longtail.store.online``).

``open_store`` picks the backend from a store string: a ``postgresql://`` URL → ``PostgresStore`` (one store
for every node of a cluster), anything else → ``SqliteStore`` on that file (the embedded default, one
machine). A store is created explicitly (``longtail store init STORE``, or ``create_store: true`` in the app
args): opening a store that does not exist is an error, so a mistyped or unmounted path never serves from a
silently created empty store. A store of an older schema is refused with the command that migrates it
(``longtail store migrate``, ``longtail.store.migrate``); it is never re-created.

The contract both backends keep is ``longtail.store.base``; this package imports no web or Ray framework.
"""

from __future__ import annotations

from pathlib import Path

from longtail.store.base import (
    SCHEMA_VERSION,
    Event,
    EventConflict,
    EventsAdded,
    Impression,
    OnlineRows,
    Retention,
    Store,
    StoredItem,
    StoreError,
    StoreFull,
    StoreUnavailable,
    Tracking,
    UserEvents,
)

__all__ = [
    "SCHEMA_VERSION",
    "Event",
    "EventConflict",
    "EventsAdded",
    "Impression",
    "OnlineRows",
    "Retention",
    "Store",
    "StoreError",
    "StoreFull",
    "StoreUnavailable",
    "StoredItem",
    "Tracking",
    "UserEvents",
    "is_postgres",
    "is_store_file",
    "open_store",
]
POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def is_postgres(spec: str) -> bool:
    """Whether a store string names a PostgreSQL database (else it is a SQLite file path)."""
    return spec.startswith(POSTGRES_SCHEMES)


def is_store_file(path: Path) -> bool:
    """Whether ``path`` is a SQLite file (a store, or a file that claims to be one)."""
    if not path.is_file():
        return False
    with path.open("rb") as file:
        return file.read(16) == b"SQLite format 3\x00"


def open_store(
    spec: str,
    create: bool = False,
    timeout_s: float = 5.0,
    retention: Retention | None = None,
    tracking: Tracking | None = None,
) -> Store:
    """The store a config names: ``postgresql://…`` (or ``postgres://``) or a SQLite file path; without
    ``retention`` it keeps everything (the command line, migrations); ``tracking``: how events are
    attributed to served lists (the app's args), default ``Tracking()``."""
    kept, tracked = retention or Retention(), tracking or Tracking()
    if is_postgres(spec):
        from longtail.store.postgres import PostgresStore

        return PostgresStore(spec, create=create, timeout_s=timeout_s, retention=kept, tracking=tracked)
    from longtail.store.sqlite import SqliteStore

    return SqliteStore(spec, create=create, timeout_s=timeout_s, retention=kept, tracking=tracked)

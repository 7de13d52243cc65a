"""The store's contract: what both backends (``longtail.store.sqlite``, ``longtail.store.postgres``) keep.

Rules both implementations keep (``tests/unit/test_store.py`` runs against both):
- ``add_events`` is one transaction: every event of a batch is stored, or none.
- An ``event_id`` is an idempotency key: resending the same event is a duplicate (ignored); reusing an
  ``event_id`` with another payload is a ``EventConflict`` and the batch stores nothing.
- Erasure sticks: ``erase_user`` deletes the user's events, keeps a tombstone (sha256) of each of their
  ``event_id``s and the erasure time. Later, an event of that user is refused (counted, never stored) when
  its ``event_id`` is tombstoned or its timestamp is at or before the erasure; events stamped after it are a
  new history. Erasure and insertion serialise (one writer at a time on SQLite; a table lock on PostgreSQL).
- Reads never take the write lock. Locked, busy or unreachable → ``StoreUnavailable`` (HTTP 503).
- Bounded growth (``Retention``, set by the serving app): a user keeps their newest ``events_per_user``
  events (older ones are deleted in the batch that displaces them, so an ``event_id`` is an idempotency key
  over the kept events); adding an item beyond ``items`` raises ``StoreFull`` and stores nothing.
- Impressions and attribution (``Tracking``; rules in ``longtail.store.tracking``): ``add_impressions``
  stores served lists; ``add_events`` attributes each newly stored event to at most one impression in the
  same transaction; erasure deletes the user's impressions and attributions with their events.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from longtail.errors import StoreError, StoreUnavailable

__all__ = ["StoreError", "StoreFull", "StoreUnavailable"]  # the first and last from longtail.errors
SCHEMA_VERSION = 3  # 3: impressions, impression_items, attributions
# what a migration copies, table by table, in this column order (``Store.dump`` / ``Store.restore``)
COLUMNS = {
    "events": (
        "seq",
        "event_id",
        "user_id",
        "item_id",
        "type",
        "weight",
        "timestamp",
        "stamped",
        "arrived_at",
    ),
    "items": ("seq", "item_id", "text", "fields"),
    "item_vectors": ("seq", "item_id", "encoder", "vector"),
    "erased_users": ("user_id", "erased_at"),
    "erased_events": ("event_hash",),
    "impressions": ("recommendation_id", "user_id", "shown_at", "arm", "bundle_version", "strategy", "knobs"),
    "impression_items": ("recommendation_id", "position", "item_id", "shelf", "bucket"),
    "attributions": (
        "event_id",
        "recommendation_id",
        "position",
        "user_id",
        "item_id",
        "type",
        "timestamp",
        "matched_by",
    ),
}
TABLES_OF_SCHEMA_2 = ("events", "items", "item_vectors", "erased_users", "erased_events")
TABLES = tuple(COLUMNS)


class StoreFull(StoreError):
    """The store holds as many run-time items as its ``Retention`` allows (nothing was stored)."""


@dataclass(frozen=True)
class Retention:
    """How far token holders can make a store grow; None: no bound (the command line's stores)."""

    events_per_user: int | None = None  # newest events kept per user; older ones deleted on write
    items: int | None = None  # items added at run time (POST /items); one more is ``StoreFull``

    def __post_init__(self) -> None:
        for name in ("events_per_user", "items"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"Retention.{name} must be ≥ 1 or None, got {value}")

    def check_items(self, stored: int) -> None:
        """Raise ``StoreFull`` when ``stored`` run-time items leave no room for one more."""
        if self.items is not None and stored >= self.items:
            raise StoreFull(
                f"the store holds {stored} run-time items, its cap (`max_stored_items: {self.items}` in the "
                "app's args); raise the cap, or retrain so that the items join a bundle"
            )


@dataclass(frozen=True)
class Tracking:
    """How served lists are recorded and events attributed to them (``longtail.store.tracking``)."""

    window_s: float = 86_400.0  # an event is attributed to a list shown at most this long before it
    early_s: float = 60.0  # ... or this much after it (senders' clocks run a little behind the server's)
    match_unlabelled: bool = True  # events without a recommendation_id: matched by (user, item, window)
    keep_s: float | None = 30 * 86_400.0  # impressions (and their attributions) kept this long; None: all

    def __post_init__(self) -> None:
        if self.window_s <= 0 or self.early_s < 0 or (self.keep_s is not None and self.keep_s <= 0):
            raise ValueError(f"Tracking needs window_s > 0, early_s ≥ 0, keep_s > 0 or None: {self}")


@dataclass(frozen=True)
class Impression:
    """One served list: who saw it, which arm and bundle made it, and each slot's item, shelf and bucket."""

    recommendation_id: str
    user_id: str
    shown_at: float  # unix seconds
    arm: str
    bundle_version: str
    strategy: str  # hybrid | cold_start
    knobs: str  # the arm's list knobs, JSON
    items: tuple[tuple[str, str, str], ...]  # by position: (item_id, shelf model|tail|new|cold_start, bucket)


class EventConflict(ValueError):
    """``event_id``s already used by events with another payload (nothing of the batch was stored)."""

    def __init__(self, event_ids: list[str]) -> None:
        self.event_ids = event_ids
        super().__init__(
            f"event_id(s) {event_ids[:5]} already stored with a different user, item, type, weight "
            "or timestamp; an event_id names one event"
        )


@dataclass(frozen=True)
class Event:
    event_id: str
    user_id: str
    item_id: str
    type: str
    timestamp: float  # unix seconds: the sender's, or the arrival time when ``stamped`` is False
    weight: float | None = None  # None: the type's default weight
    stamped: bool = True  # the sender gave the timestamp
    recommendation_id: str | None = None  # the list the event came from (attribution), if the sender says
    position: int | None = None  # the item's slot in that list (0-based), if the sender says

    def same_payload(self, other: Event) -> bool:
        """Same event resent: user, item, type and weight agree, and the timestamps when both were sent."""
        if (self.user_id, self.item_id, self.type, self.weight) != (
            other.user_id,
            other.item_id,
            other.type,
            other.weight,
        ):
            return False
        return not (self.stamped and other.stamped) or self.timestamp == other.timestamp


@dataclass(frozen=True)
class EventsAdded:
    stored: int
    duplicates: int  # event_id already stored with the same payload
    erased: int  # refused: their user was erased after (or their event_id with) them
    attributed: int = 0  # stored events attributed to a served list
    engaged: tuple[tuple[str, str, str, str], ...] = ()  # each attributed one: (arm, shelf, bucket, type)


@dataclass(frozen=True)
class UserEvents:
    erased: bool  # the user was erased: the bundle's history of them is not used
    items: list[str] = field(default_factory=list)  # item ids of the newest stored events, oldest first
    types: list[str] = field(default_factory=list)
    weights: list[float | None] = field(default_factory=list)


@dataclass(frozen=True)
class StoredItem:
    seq: int  # order of the item's vector for this encoder (``items_after`` pages on it)
    item_id: str
    text: str
    fields: dict
    vector: np.ndarray  # (d,) float32


class Store(Protocol):
    """What the Serve replicas need from durable state."""

    def add_events(self, events: list[Event]) -> EventsAdded: ...

    def histories(self, user_ids: list[str], limit: int) -> dict[str, UserEvents]:
        """Per user: erased or not, and the newest ``limit`` stored events, oldest first."""
        ...

    def erase_user(self, user_id: str) -> int:
        """Delete the user's events, tombstone their event_ids, record the erasure; returns events deleted."""
        ...

    def erased_users(self) -> dict[str, float]:
        """Every erased user id → erasure time (unix seconds)."""
        ...

    def add_impressions(self, impressions: list[Impression]) -> None:
        """Store served lists (an id already stored is ignored) and delete those older than
        ``Tracking.keep_s``."""
        ...

    def engagement(self, since: float, shelves: tuple[str, ...]) -> dict[str, tuple[int, int]]:
        """item_id → (slots shown, slots engaged) on ``shelves`` in lists shown at or after ``since``."""
        ...

    def item_activity(self, since: float) -> dict[str, int]:
        """item_id → stored events on it with a timestamp at or after ``since`` (the live trend)."""
        ...

    def online_rows(self, since: float) -> OnlineRows:
        """What ``longtail report online`` reads: slots and engagement by arm × shelf × bucket."""
        ...

    def add_item(self, item_id: str, text: str, fields: dict, encoder: str, vector: np.ndarray) -> bool:
        """Store a new item with its vector from ``encoder``; False when ``item_id`` exists (nothing
        changes)."""
        ...

    def items_missing_vectors(self, encoder: str) -> list[tuple[str, str]]:
        """(item_id, text) of stored items with no vector from ``encoder`` (a new bundle's encoder)."""
        ...

    def add_vectors(self, encoder: str, vectors: dict[str, np.ndarray]) -> int:
        """Store item vectors from ``encoder`` (existing ones are kept); returns how many were new."""
        ...

    def items_after(self, seq: int, encoder: str) -> list[StoredItem]:
        """Items whose ``encoder`` vector was stored after ``seq``, in order."""
        ...

    def known_items(self, item_ids: list[str]) -> set[str]:
        """The subset of ``item_ids`` that were added through the store."""
        ...

    def describe(self) -> str:
        """Where the store is, without secrets (for logs and errors)."""
        ...

    def dump(self, chunk: int = 10_000) -> Iterator[tuple[str, list[tuple]]]:
        """Every row of every table (``TABLES``, columns in ``COLUMNS`` order), in chunks, from one
        snapshot."""
        ...

    def restore(self, chunks: Iterable[tuple[str, list[tuple]]]) -> dict[str, int]:
        """Insert ``dump``'s rows into this store, which must be empty, in one transaction; rows per table."""
        ...


@dataclass(frozen=True)
class OnlineRows:
    """Served lists since a time, aggregated in the store (``Store.online_rows``)."""

    lists: dict[str, int]  # arm → lists shown
    users: dict[str, int]  # arm → distinct users shown a list
    slots: list[tuple[str, str, str, int, int]]  # (arm, shelf, bucket, slots shown, slots engaged)
    first_engagement: list[tuple[str, float]]  # (arm, seconds from a new item's first showing to its first
    # attributed event), one per new item engaged in that arm
    engaged_by_type: dict[str, int]  # event type → attributed events


def event_hash(event_id: str) -> str:
    """The tombstone of an erased event's id (the id itself is not kept)."""
    return hashlib.sha256(event_id.encode()).hexdigest()


def plan_insert(
    events: list[Event], stored: dict[str, Event], erased_at: dict[str, float], tombstones: set[str]
) -> tuple[list[Event], EventsAdded]:
    """Which events of a batch to insert, given what the store holds for their ids and users.

    ``stored``: event_id → the stored event; ``erased_at``: user → erasure time; ``tombstones``: hashes of
    erased event_ids. Raises ``EventConflict`` (insert nothing) when an id is reused with another payload.
    """
    seen: dict[str, Event] = dict(stored)
    fresh: list[Event] = []
    conflicts: list[str] = []
    duplicates = refused = 0
    for e in events:
        earlier = seen.get(e.event_id)
        if earlier is not None:
            if earlier.same_payload(e):
                duplicates += 1
            else:
                conflicts.append(e.event_id)
            continue
        seen[e.event_id] = e
        erased = erased_at.get(e.user_id)
        if event_hash(e.event_id) in tombstones or (erased is not None and e.timestamp <= erased):
            refused += 1
            continue
        fresh.append(e)
    if conflicts:
        raise EventConflict(sorted(set(conflicts)))
    return fresh, EventsAdded(len(fresh), duplicates, refused)


def user_events(users: list[str], erased: set[str], rows) -> dict[str, UserEvents]:
    """``UserEvents`` per user from (user_id, item_id, type, weight) rows in time order."""
    out = {u: UserEvents(u in erased) for u in users}
    for user, item, kind, weight in rows:
        got = out[user]
        got.items.append(item)
        got.types.append(kind)
        got.weights.append(weight)
    return out

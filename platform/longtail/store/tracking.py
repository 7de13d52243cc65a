"""Impressions and attribution, in SQL both backends run (``?`` placeholders; PostgreSQL's adapter turns them
into ``%s``).

An **impression** is one served list: its ``recommendation_id``, the user, when, the arm, the bundle version,
the arm's knobs, and per slot the item, the shelf that filled it (model, tail, new, or cold_start) and the
item's bucket (head, tail, new: never touched in train).

**Attribution** (in the transaction that stores the events; an event is attributed at most once):

- An event that names a ``recommendation_id`` is attributed to that list when the list was shown to the
  same user, holds the event's item (at ``position``, when the event gives one), and the event's time lies
  in ``[shown_at − early_s, shown_at + window_s]``. Otherwise it is not attributed (never to another list).
- An event without one (when ``Tracking.match_unlabelled``) is attributed to the newest list shown to the
  same user within the same window that holds the item.
- Only newly stored events are attributed: duplicates, refused (erased) and conflicting events are not.

Impressions older than ``Tracking.keep_s`` are deleted with their slots and attributions when new ones are
stored; erasing a user deletes theirs.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Protocol

from longtail.store.base import Event, Impression, OnlineRows, Tracking

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS impressions (
        recommendation_id TEXT PRIMARY KEY, user_id TEXT NOT NULL, shown_at DOUBLE PRECISION NOT NULL,
        arm TEXT NOT NULL, bundle_version TEXT NOT NULL, strategy TEXT NOT NULL, knobs TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS impressions_by_user ON impressions (user_id, shown_at)",
    "CREATE INDEX IF NOT EXISTS impressions_by_time ON impressions (shown_at)",
    """CREATE TABLE IF NOT EXISTS impression_items (
        recommendation_id TEXT NOT NULL, position INTEGER NOT NULL, item_id TEXT NOT NULL,
        shelf TEXT NOT NULL, bucket TEXT NOT NULL, PRIMARY KEY (recommendation_id, position))""",
    """CREATE TABLE IF NOT EXISTS attributions (
        event_id TEXT PRIMARY KEY, recommendation_id TEXT NOT NULL, position INTEGER NOT NULL,
        user_id TEXT NOT NULL, item_id TEXT NOT NULL, type TEXT NOT NULL, timestamp DOUBLE PRECISION NOT NULL,
        matched_by TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS attributions_by_list ON attributions (recommendation_id, position)",
    "CREATE INDEX IF NOT EXISTS attributions_by_user ON attributions (user_id)",
    "CREATE INDEX IF NOT EXISTS events_by_time ON events (timestamp)",  # item activity over a window
]


class Sql(Protocol):
    """A cursor in a transaction, with ``?`` placeholders."""

    def rows(self, sql: str, params: Sequence = ()) -> list[tuple]: ...

    def many(self, sql: str, rows: list[tuple]) -> None: ...


class SqliteSql:
    """``Sql`` over a SQLite connection in a transaction."""

    def __init__(self, conn) -> None:
        self.conn = conn

    def rows(self, sql: str, params: Sequence = ()) -> list[tuple]:
        return self.conn.execute(sql, tuple(params)).fetchall()

    def many(self, sql: str, rows: list[tuple]) -> None:
        if rows:
            self.conn.executemany(sql, rows)


class PostgresSql:
    """``Sql`` over a psycopg cursor in a transaction (``?`` → ``%s``; no statement here holds a ``%``)."""

    def __init__(self, cur) -> None:
        self.cur = cur

    def rows(self, sql: str, params: Sequence = ()) -> list[tuple]:
        self.cur.execute(sql.replace("?", "%s"), tuple(params))
        return [tuple(r) for r in self.cur.fetchall()] if self.cur.description else []

    def many(self, sql: str, rows: list[tuple]) -> None:
        if rows:
            self.cur.executemany(sql.replace("?", "%s"), rows)


def insert_impressions(sql: Sql, impressions: list[Impression], tracking: Tracking, now: float) -> None:
    """Store served lists (an id stored already is left as it is), then delete lists older than
    ``keep_s`` with their slots and attributions."""
    sql.many(
        "INSERT INTO impressions (recommendation_id, user_id, shown_at, arm, bundle_version, strategy, "
        "knobs) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (recommendation_id) DO NOTHING",
        [
            (i.recommendation_id, i.user_id, i.shown_at, i.arm, i.bundle_version, i.strategy, i.knobs)
            for i in impressions
        ],
    )
    sql.many(
        "INSERT INTO impression_items (recommendation_id, position, item_id, shelf, bucket) "
        "VALUES (?, ?, ?, ?, ?) ON CONFLICT (recommendation_id, position) DO NOTHING",
        [(i.recommendation_id, pos, *slot) for i in impressions for pos, slot in enumerate(i.items)],
    )
    if tracking.keep_s is not None:
        cutoff = (now - tracking.keep_s,)
        old = "SELECT recommendation_id FROM impressions WHERE shown_at < ?"
        sql.rows(f"DELETE FROM attributions WHERE recommendation_id IN ({old})", cutoff)  # nosec B608
        sql.rows(f"DELETE FROM impression_items WHERE recommendation_id IN ({old})", cutoff)  # nosec B608
        sql.rows("DELETE FROM impressions WHERE shown_at < ?", cutoff)


def attribute(sql: Sql, events: list[Event], tracking: Tracking) -> list[tuple[str, str, str, str]]:
    """Attribute newly stored ``events`` (module docstring); returns (arm, shelf, bucket, event type) of each
    attributed one."""
    rows, engaged = [], []
    for e in events:
        found = _labelled(sql, e, tracking) if e.recommendation_id else None
        if found is None and not e.recommendation_id and tracking.match_unlabelled:
            found = _unlabelled(sql, e, tracking)
        if found is not None:
            rid, position, how, arm, shelf, bucket = found
            rows.append((e.event_id, rid, position, how, e.user_id, e.item_id, e.type, e.timestamp))
            engaged.append((arm, shelf, bucket, e.type))
    sql.many(
        "INSERT INTO attributions (event_id, recommendation_id, position, matched_by, user_id, item_id, "
        "type, timestamp) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    return engaged


Found = tuple[str, int, str, str, str, str]  # recommendation_id, position, matched_by, arm, shelf, bucket


def _labelled(sql: Sql, e: Event, tracking: Tracking) -> Found | None:
    got = sql.rows(
        "SELECT i.user_id, i.shown_at, s.position, i.arm, s.shelf, s.bucket FROM impressions i "
        "JOIN impression_items s ON s.recommendation_id = i.recommendation_id "
        "WHERE i.recommendation_id = ? AND s.item_id = ? ORDER BY s.position",
        (e.recommendation_id, e.item_id),
    )
    for user, shown_at, position, arm, shelf, bucket in got:
        if user != e.user_id or not in_window(e.timestamp, shown_at, tracking):
            return None
        if e.position is None or e.position == position:
            return str(e.recommendation_id), int(position), "id", str(arm), str(shelf), str(bucket)
    return None


def _unlabelled(sql: Sql, e: Event, tracking: Tracking) -> Found | None:
    got = sql.rows(
        "SELECT i.recommendation_id, s.position, i.arm, s.shelf, s.bucket FROM impressions i "
        "JOIN impression_items s ON s.recommendation_id = i.recommendation_id WHERE i.user_id = ? "
        "AND s.item_id = ? AND i.shown_at BETWEEN ? AND ? ORDER BY i.shown_at DESC, s.position LIMIT 1",
        (e.user_id, e.item_id, e.timestamp - tracking.window_s, e.timestamp + tracking.early_s),
    )
    if not got:
        return None
    rid, position, arm, shelf, bucket = got[0]
    return str(rid), int(position), "user_item", str(arm), str(shelf), str(bucket)


def in_window(event_time: float, shown_at: float, tracking: Tracking) -> bool:
    """Whether an event at ``event_time`` may come from a list shown at ``shown_at``."""
    return shown_at - tracking.early_s <= event_time <= shown_at + tracking.window_s


def erase(sql: Sql, user_id: str) -> None:
    """Delete a user's impressions, their slots, and the user's attributions."""
    mine = "SELECT recommendation_id FROM impressions WHERE user_id = ?"
    sql.rows(
        f"DELETE FROM attributions WHERE user_id = ? OR recommendation_id IN ({mine})", (user_id, user_id)
    )
    sql.rows(f"DELETE FROM impression_items WHERE recommendation_id IN ({mine})", (user_id,))
    sql.rows("DELETE FROM impressions WHERE user_id = ?", (user_id,))


_ENGAGED = (
    "LEFT JOIN (SELECT DISTINCT recommendation_id, position FROM attributions) a "
    "ON a.recommendation_id = s.recommendation_id AND a.position = s.position"
)


def engagement(sql: Sql, since: float, shelves: tuple[str, ...]) -> dict[str, tuple[int, int]]:
    """item_id → (slots shown, slots engaged) on ``shelves``, lists shown at or after ``since``."""
    marks = ", ".join("?" * len(shelves))
    got = sql.rows(
        f"SELECT s.item_id, COUNT(*), COUNT(a.recommendation_id) FROM impression_items s "  # nosec B608: marks
        f"JOIN impressions i ON i.recommendation_id = s.recommendation_id {_ENGAGED} "
        f"WHERE i.shown_at >= ? AND s.shelf IN ({marks}) GROUP BY s.item_id",
        (since, *shelves),
    )
    return {str(item): (int(shown), int(engaged)) for item, shown, engaged in got}


def item_activity(sql: Sql, since: float) -> dict[str, int]:
    """item_id → stored events on it with a timestamp at or after ``since`` (the live trend)."""
    got = sql.rows("SELECT item_id, COUNT(*) FROM events WHERE timestamp >= ? GROUP BY item_id", (since,))
    return {str(item): int(n) for item, n in got}


def online_rows(sql: Sql, since: float) -> OnlineRows:
    """What ``longtail report online`` reads (``OnlineRows``)."""
    lists = {
        str(arm): (int(n), int(u))
        for arm, n, u in sql.rows(
            "SELECT arm, COUNT(*), COUNT(DISTINCT user_id) FROM impressions WHERE shown_at >= ? GROUP BY arm",
            (since,),
        )
    }
    slots = [
        (str(arm), str(shelf), str(bucket), int(shown), int(engaged))
        for arm, shelf, bucket, shown, engaged in sql.rows(
            f"SELECT i.arm, s.shelf, s.bucket, COUNT(*), COUNT(a.recommendation_id) FROM impression_items s "  # nosec B608
            f"JOIN impressions i ON i.recommendation_id = s.recommendation_id {_ENGAGED} "
            "WHERE i.shown_at >= ? GROUP BY i.arm, s.shelf, s.bucket ORDER BY i.arm, s.shelf, s.bucket",
            (since,),
        )
    ]
    first = sql.rows(
        "SELECT i.arm, s.item_id, MIN(i.shown_at) FROM impression_items s JOIN impressions i "
        "ON i.recommendation_id = s.recommendation_id WHERE i.shown_at >= ? AND s.bucket = 'new' "
        "GROUP BY i.arm, s.item_id",
        (since,),
    )
    engaged = sql.rows(
        "SELECT i.arm, a.item_id, MIN(a.timestamp) FROM attributions a JOIN impressions i "
        "ON i.recommendation_id = a.recommendation_id JOIN impression_items s "
        "ON s.recommendation_id = a.recommendation_id AND s.position = a.position "
        "WHERE i.shown_at >= ? AND s.bucket = 'new' GROUP BY i.arm, a.item_id",
        (since,),
    )
    shown_first = {(str(arm), str(item)): float(t) for arm, item, t in first}
    delays = [
        (str(arm), max(0.0, float(t) - shown_first[(str(arm), str(item))]))
        for arm, item, t in engaged
        if (str(arm), str(item)) in shown_first
    ]
    by_type: dict[str, int] = defaultdict(int)
    for kind, n in sql.rows(
        "SELECT a.type, COUNT(*) FROM attributions a JOIN impressions i "
        "ON i.recommendation_id = a.recommendation_id WHERE i.shown_at >= ? GROUP BY a.type",
        (since,),
    ):
        by_type[str(kind)] += int(n)
    return OnlineRows(
        {a: n for a, (n, _) in lists.items()},
        {a: u for a, (_, u) in lists.items()},
        slots,
        sorted(delays),
        dict(by_type),
    )


def since_of(seconds: float | None, now: float) -> float:
    """The start of a report window ``seconds`` long ending now (None: everything kept)."""
    return -math.inf if seconds is None else now - seconds

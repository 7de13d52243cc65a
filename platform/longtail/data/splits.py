"""Splits of the evaluation protocol (docs/design.md, "Evaluation protocol"): warm (per user by time),
cold-item, and leave-one-out (the published tables' protocol).

Both take canonical interactions with one row per (user, item) and return new tables; nothing is
shuffled except the seeded choice of cold items.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from longtail.data.ids import encode, naturally_sorted_unique

PARTS = ("train", "valid", "test")
COLD_SEED = 2024
COLD_SHARE = 0.1


@dataclass(frozen=True)
class SplitTables:
    """One split: canonical interaction tables for train, valid and test."""

    train: pa.Table
    valid: pa.Table
    test: pa.Table

    def part(self, name: str) -> pa.Table:
        """The table of part ``name`` (train, valid or test)."""
        if name not in PARTS:
            raise ValueError(f"unknown split part {name!r}; expected one of {PARTS}")
        return getattr(self, name)

    def counts(self) -> dict[str, int]:
        """Rows per part."""
        return {p: self.part(p).num_rows for p in PARTS}


def time_order(interactions: pa.Table, catalog: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row order by (user natural order, timestamp, item natural order) and each row's user code."""
    users = naturally_sorted_unique(interactions.column("user_id").to_numpy(zero_copy_only=False))
    user_code = encode(interactions.column("user_id").to_numpy(zero_copy_only=False), users)
    item_rank = encode(interactions.column("item_id").to_numpy(zero_copy_only=False), catalog)
    timestamp = interactions.column("timestamp").to_numpy()
    order = np.lexsort((item_rank, timestamp, user_code))
    return order, user_code[order]


def warm_split(interactions: pa.Table, catalog: np.ndarray) -> SplitTables:
    """Per user, by time: the last ``max(1, n // 10)`` to test, as many before them to valid.

    Users with fewer than 3 interactions stay wholly in train. ``catalog`` is the item ids in natural
    order (ties in time go to the lower item).
    """
    order, user_sorted = time_order(interactions, catalog)
    n = len(order)
    starts = np.flatnonzero(np.r_[True, user_sorted[1:] != user_sorted[:-1]]) if n else np.zeros(0, int)
    sizes = np.diff(np.r_[starts, n])
    size = np.repeat(sizes, sizes)  # (n,) history length of each row's user
    position = np.arange(n) - np.repeat(starts, sizes)  # (n,) 0-based position in the user's history
    hold = np.maximum(1, size // 10)
    part = np.zeros(n, dtype=np.int8)  # 0 train, 1 valid, 2 test
    part[position >= size - 2 * hold] = 1
    part[position >= size - hold] = 2
    part[size < 3] = 0
    rows = interactions.take(pa.array(order))
    return SplitTables(*(rows.filter(pa.array(part == k)) for k in range(3)))


def loo_split(interactions: pa.Table) -> SplitTables:
    """Leave-one-out: per user by time, ties in the source's row order (a ``seq`` column's order, as
    published runs order them), the last interaction to test, the one before it to valid, the rest to
    train. Users with fewer than 3 interactions stay wholly in train."""
    users = naturally_sorted_unique(interactions.column("user_id").to_numpy(zero_copy_only=False))
    code = encode(interactions.column("user_id").to_numpy(zero_copy_only=False), users)
    n = interactions.num_rows
    order = np.lexsort((np.arange(n), interactions.column("timestamp").to_numpy(), code))
    user_sorted = code[order]
    starts = np.flatnonzero(np.r_[True, user_sorted[1:] != user_sorted[:-1]]) if n else np.zeros(0, int)
    sizes = np.diff(np.r_[starts, n])
    size = np.repeat(sizes, sizes)  # (n,) history length of each row's user
    from_end = size - 1 - (np.arange(n) - np.repeat(starts, sizes))  # (n,) 0 for a user's last row
    part = np.where(size < 3, 0, np.clip(2 - from_end, 0, 2)).astype(np.int8)  # 0 train, 1 valid, 2 test
    rows = interactions.take(pa.array(order))
    return SplitTables(*(rows.filter(pa.array(part == k)) for k in range(3)))


def cold_items(interactions: pa.Table, catalog: np.ndarray, seed: int = COLD_SEED) -> np.ndarray:
    """``round(0.1 × items with an interaction)`` item ids drawn with ``default_rng(seed).choice``."""
    touched = pc.unique(interactions.column("item_id")).to_numpy(zero_copy_only=False)
    ordered = catalog[np.isin(catalog, touched)]  # naturally ordered items with an interaction
    size = round(COLD_SHARE * len(ordered))
    return np.random.default_rng(seed).choice(ordered, size, replace=False)


def cold_split(warm: SplitTables, cold: np.ndarray) -> SplitTables:
    """From the warm split: cold items lose their train rows; their valid rows move to test."""
    cold_set = pa.array(np.asarray(cold, dtype=str))

    def is_cold(table: pa.Table) -> pa.Array:
        return pc.is_in(table.column("item_id"), value_set=cold_set)

    moved = warm.valid.filter(is_cold(warm.valid))
    test = pa.concat_tables([warm.test, moved])
    return SplitTables(
        train=warm.train.filter(pc.invert(is_cold(warm.train))),
        valid=warm.valid.filter(pc.invert(is_cold(warm.valid))),
        test=_sort_like_split(test),
    )


def _sort_like_split(table: pa.Table) -> pa.Table:
    users = naturally_sorted_unique(table.column("user_id").to_numpy(zero_copy_only=False))
    code = encode(table.column("user_id").to_numpy(zero_copy_only=False), users)
    order = np.lexsort((table.column("timestamp").to_numpy(), code))
    return table.take(pa.array(order))


def popularity_buckets(train_counts: np.ndarray, head_share: float = 0.2) -> dict[str, np.ndarray]:
    """Boolean masks over the catalog: head, tail, cold.

    head = the top ``round(head_share × items)`` by train count (ties to the lower index; never an item
    with zero train interactions); tail = every other item; cold = zero train interactions.
    """
    counts = np.asarray(train_counts)
    n_head = min(round(head_share * len(counts)), int((counts > 0).sum()))
    head = np.zeros(len(counts), dtype=bool)
    head[np.argsort(-counts, kind="stable")[:n_head]] = True
    return {"head": head, "tail": ~head, "cold": counts == 0}

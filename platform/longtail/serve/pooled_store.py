"""The store as a replica's event loop calls it: every call in a small thread pool of its own.

Store calls block (a locked SQLite file, a PostgreSQL round trip), so they never run on the event loop. They
get their own pool, apart from the pipeline's thread and from asyncio's default executor: a burst of store
waits cannot hold up ranking, and a PostgreSQL store opens at most ``threads`` connections per replica (one
per pool thread), however many requests are in flight.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np

from longtail.store import Event, EventsAdded, Impression, Store, StoredItem, UserEvents

T = TypeVar("T")


class PooledStore:
    """Awaitable ``Store`` methods, each run in this object's pool of ``threads`` threads."""

    def __init__(self, store: Store, threads: int = 4) -> None:
        self.store = store
        self.threads = threads
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="longtail-store")

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def add_events(self, events: list[Event]) -> EventsAdded:
        return await self._run(self.store.add_events, events)

    async def histories(self, user_ids: list[str], limit: int) -> dict[str, UserEvents]:
        return await self._run(self.store.histories, user_ids, limit)

    async def erase_user(self, user_id: str) -> int:
        return await self._run(self.store.erase_user, user_id)

    async def add_item(self, item_id: str, text: str, fields: dict, encoder: str, vector: np.ndarray) -> bool:
        return await self._run(self.store.add_item, item_id, text, fields, encoder, vector)

    async def known_items(self, item_ids: list[str]) -> set[str]:
        return await self._run(self.store.known_items, item_ids)

    async def items_after(self, seq: int, encoder: str) -> list[StoredItem]:
        return await self._run(self.store.items_after, seq, encoder)

    async def items_missing_vectors(self, encoder: str) -> list[tuple[str, str]]:
        return await self._run(self.store.items_missing_vectors, encoder)

    async def add_vectors(self, encoder: str, vectors: dict[str, np.ndarray]) -> int:
        return await self._run(self.store.add_vectors, encoder, vectors)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def add_impressions(self, impressions: list[Impression]) -> None:
        return await self._run(self.store.add_impressions, impressions)

    async def engagement(self, since: float, shelves: tuple[str, ...]) -> dict[str, tuple[int, int]]:
        return await self._run(self.store.engagement, since, shelves)

    async def item_activity(self, since: float) -> dict[str, int]:
        return await self._run(self.store.item_activity, since)

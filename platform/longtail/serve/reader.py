"""What one ranker replica holds and does, without Serve: the bundle's pipeline, the store's histories and
items, and the per-replica metrics. The Ranker deployment wraps one; with ``ranker_deployment: false``
each Ingress replica holds one and ranks in-process (one Serve hop less per request).

Pipeline work (ranking, neighbours, text search, catalog growth) runs in one thread of its own, one call
at a time (the pipeline's catalog, exposure window and random state are not thread-safe), so the replica's
event loop keeps accepting requests meanwhile and store waits, which run in the store's own pool, never
queue behind it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch

from longtail.bundle import read_bundle
from longtail.serve.knobs import ListKnobs
from longtail.serve.live import LivePipeline, Query
from longtail.serve.metrics import ServeMetrics
from longtail.serve.pooled_store import PooledStore
from longtail.store import StoredItem

T = TypeVar("T")


class EncoderMismatch(ValueError):
    """A vector from one bundle's encoder sent to a ranker of another (a rollout in progress)."""


class Reader:
    """Catalog, graph and hybrid ranker in memory; users' histories from the bundle plus the store."""

    def __init__(
        self, bundle: Path, store: PooledStore, metrics: ServeMetrics, replica: str = "local"
    ) -> None:
        loaded = read_bundle(Path(bundle))
        self.ranker = LivePipeline(loaded)
        self.encoder_id = loaded.encoder_id
        self.stored_history = ListKnobs().stored_history
        self.store = store
        self.metrics = metrics
        self.metrics.bundle.labels(self.ranker.version).set(1)
        self.replica = replica
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="longtail-pipeline")
        self._lock: asyncio.Lock | None = None  # made on the replica's event loop, at its first call
        self._engagement_at = -float("inf")  # monotonic time of the last engagement read
        self._apply_items(store.store.items_after(0, self.encoder_id))

    @property
    def version(self) -> str:
        return self.ranker.version

    @property
    def lock(self) -> asyncio.Lock:
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    def configure(self, knobs: ListKnobs) -> None:
        self.ranker.configure(knobs)
        self.stored_history = knobs.stored_history

    async def _in_thread(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    def _apply_items(self, items: list[StoredItem]) -> None:
        if self.ranker.add_items(items):
            self.metrics.catalog_size.set(self.ranker.n_items)

    async def _sync_items(self) -> None:
        """Pick up items any ingress stored since the last look (cheap when there are none); under the
        lock."""
        items = await self.store.items_after(self.ranker.last_item_seq, self.encoder_id)
        if items:
            await self._in_thread(self._apply_items, items)

    async def _sync_engagement(self) -> None:
        """Re-read the shelves' item engagement when an arm learns from it and the last read is older than
        ``feedback_refresh_s`` (how stale the feedback-driven shelves may be, plus the impression flush)."""
        knobs = self.ranker.knobs
        if not self.ranker.learns_from_feedback:
            return
        if time.monotonic() - self._engagement_at < knobs.feedback_refresh_s:
            return
        self._engagement_at = time.monotonic()
        since = time.time() - knobs.feedback_window_s
        engagement = await self.store.engagement(since, ("tail", "new"))
        activity = await self.store.item_activity(since)
        await self._in_thread(self.ranker.set_engagement, engagement)
        await self._in_thread(self.ranker.set_activity, activity)

    async def recommend_many(self, requests: list[dict]) -> list[dict]:
        """RecommendRequest dicts → ranked lists in request order, scored in one pipeline pass."""
        users = sorted({r["user_id"] for r in requests})
        stored = await self.store.histories(users, self.stored_history)
        async with self.lock:
            await self._sync_items()
            await self._sync_engagement()
            return await self._in_thread(self._rank, requests, stored)

    def _rank(self, requests: list[dict], stored: dict) -> list[dict]:
        queries = []
        for r in requests:
            got = stored[r["user_id"]]
            history, strengths, _ = self.ranker.weighted_history(
                r["user_id"], got.erased, got.items, got.types, got.weights
            )
            queries.append(
                Query(
                    r["user_id"],
                    history,
                    r["k"],
                    r["exclude_seen"],
                    r.get("tail_boost"),
                    r.get("explain", False),
                    strengths,
                    self.ranker.arm_for(r["user_id"]),
                )
            )
        ranked = self.ranker.recommend(queries)
        for result in ranked:
            self.metrics.lists.labels(result.strategy).inc()
            self.metrics.served_items.inc(len(result.items))
            self.metrics.served_tail.inc(sum(item["tail"] for item in result.items))
        self.metrics.coverage.set(self.ranker.coverage)
        return [
            {
                **asdict(r),
                "bundle_version": self.ranker.version,
                "served_by": self.replica,
                "knobs": self.ranker.arm_state(r.arm).described,
            }
            for r in ranked
        ]

    async def similar(self, item_id: str, k: int) -> dict:
        """Neighbours of an item (``items`` None when the catalog has no such item), with the version."""
        async with self.lock:
            await self._sync_items()
            items = await self._in_thread(self._similar, item_id, k)
        return {"items": items, "bundle_version": self.ranker.version}

    def _similar(self, item_id: str, k: int) -> list[dict] | None:
        return self.ranker.similar(item_id, k) if item_id in self.ranker.index else None

    async def search(self, vector: list[float], k: int, encoder: str) -> dict:
        """Items nearest to a text vector made by ``encoder``; refused when it is not this bundle's."""
        if encoder != self.encoder_id:
            raise EncoderMismatch(
                f"vector from encoder {encoder}, this ranker's bundle has {self.encoder_id}"
            )
        async with self.lock:
            await self._sync_items()
            items = await self._in_thread(self.ranker.search, np.asarray(vector, dtype=np.float32), k)
        return {"items": items, "bundle_version": self.ranker.version}

    async def catalog(self) -> dict:
        async with self.lock:
            await self._sync_items()
        return {"version": self.ranker.version, "items": self.ranker.n_items}


def set_torch_threads(threads: int) -> None:
    """Intra-op threads of this replica's torch (scoring one batch needs few)."""
    torch.set_num_threads(threads)

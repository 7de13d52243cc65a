"""Served lists recorded off the request path: ``/recommend`` hands each impression to an ``ImpressionLog``,
which writes them to the store in batches from a background task of the replica's event loop.

A list is written within ``flush_s`` of being served (``/events`` on the same replica flushes first, so an
event never arrives before the list it came from on that replica; on another replica it may, by up to
``flush_s``, and is then not attributed). When the store is busy the batch is kept and retried; beyond
``max_pending`` lists the oldest are dropped and counted (``longtail_impressions_dropped_total``), so a store
outage never grows a replica's memory without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from longtail.serve.metrics import ServeMetrics
from longtail.serve.pooled_store import PooledStore
from longtail.store import Impression, StoreUnavailable

log = logging.getLogger("longtail.serve")


class ImpressionLog:
    """A write-behind buffer of impressions for one replica (one event loop)."""

    def __init__(
        self, store: PooledStore, metrics: ServeMetrics, flush_s: float = 0.5, max_pending: int = 20_000
    ) -> None:
        self.store, self.metrics = store, metrics
        self.flush_s, self.max_pending = flush_s, max_pending
        self._pending: list[Impression] = []
        self._task: asyncio.Task | None = None
        self._flushing: asyncio.Lock | None = None

    def record(self, impression: Impression) -> None:
        """Queue one served list (never blocks; the background task writes it)."""
        self._pending.append(impression)
        if len(self._pending) > self.max_pending:
            dropped = len(self._pending) - self.max_pending
            del self._pending[:dropped]
            self.metrics.impressions_dropped.inc(dropped)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while self._pending:
            await asyncio.sleep(self.flush_s)
            with contextlib.suppress(StoreUnavailable):  # kept and retried at the next tick
                await self.flush()

    async def flush(self) -> None:
        """Write every queued impression now (one transaction); on ``StoreUnavailable`` they stay queued."""
        if self._flushing is None:
            self._flushing = asyncio.Lock()
        async with self._flushing:
            batch, self._pending = self._pending, []
            if not batch:
                return
            try:
                await self.store.add_impressions(batch)
            except StoreUnavailable:
                self._pending = batch + self._pending
                log.warning("impressions: store busy, %d lists kept for the next try", len(self._pending))
                raise

    async def close(self) -> None:
        """Flush what is queued (at shutdown) and stop the background task."""
        with contextlib.suppress(StoreUnavailable):
            await self.flush()
        if self._task is not None:
            self._task.cancel()

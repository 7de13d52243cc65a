"""What one ranker replica holds and does, without Serve: the bundle's pipeline, the store's histories and
items, and the per-replica metrics. The Ranker deployment wraps one; with ``ranker_deployment: false``
each Ingress replica holds one and ranks in-process (one Serve hop less per request).

Pipeline work runs in a worker thread, one call at a time (the pipeline's catalog, exposure window and
random state are not thread-safe), so the replica's event loop keeps accepting requests meanwhile.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from longtail.bundle import read_bundle
from longtail.serve.knobs import RankerKnobs
from longtail.serve.metrics import ServeMetrics
from longtail.serve.ranking import Query, ServingRanker
from longtail.serve.store import open_store


class EncoderMismatch(ValueError):
    """A vector from one bundle's encoder sent to a ranker of another (a rollout in progress)."""


class RankerCore:
    """Catalog, graph and hybrid ranker in memory; users' histories from the bundle plus the store."""

    def __init__(self, bundle: str, store: str, store_timeout_s: float, metrics_dir: str, torch_threads: int,
                 replica: str, deployment: str | None) -> None:  # fmt: skip
        torch.set_num_threads(torch_threads)
        loaded = read_bundle(Path(bundle))
        self.ranker = ServingRanker(loaded)
        self.encoder_id = loaded.encoder_id
        self.stored_history = RankerKnobs().stored_history
        self.store = open_store(store, timeout_s=store_timeout_s)
        self.metrics = ServeMetrics.open(metrics_dir)
        self.metrics.bundle.labels(self.ranker.version).set(1)
        if deployment is not None:  # in an Ingress replica, that replica is counted already
            self.metrics.replicas.labels(deployment).set(1)
        self.replica = replica
        self.lock = asyncio.Lock()  # one pipeline call at a time (created on the replica's event loop)
        self._apply_items(self.store.items_after(0, self.encoder_id))

    @property
    def version(self) -> str:
        return self.ranker.version

    def configure(self, knobs: RankerKnobs) -> None:
        self.ranker.configure(knobs)
        self.stored_history = knobs.stored_history

    def _apply_items(self, items) -> None:
        if self.ranker.add_items(items):
            self.metrics.catalog_size.set(self.ranker.n_items)

    async def _sync_items(self) -> None:
        """Pick up items any ingress stored since the last look (cheap when there are none); under the lock."""
        items = await asyncio.to_thread(self.store.items_after, self.ranker.last_item_seq, self.encoder_id)
        if items:
            await asyncio.to_thread(self._apply_items, items)

    async def recommend_many(self, requests: list[dict]) -> list[dict]:
        """RecommendRequest dicts → ranked lists in request order, scored in one pipeline pass."""
        users = sorted({r["user_id"] for r in requests})
        stored = await asyncio.to_thread(self.store.histories, users, self.stored_history)
        async with self.lock:
            await self._sync_items()
            return await asyncio.to_thread(self._rank, requests, stored)

    def _rank(self, requests: list[dict], stored: dict) -> list[dict]:
        queries = []
        for r in requests:
            got = stored[r["user_id"]]
            history, strengths, known = self.ranker.weighted_history(r["user_id"], got.erased, got.items, got.types,
                                                                     got.weights)  # fmt: skip
            queries.append(Query(r["user_id"], history, r["k"], r["exclude_seen"], r.get("tail_boost"),
                                 r.get("explain", False), known, strengths))  # fmt: skip
        ranked = self.ranker.recommend(queries)
        for result in ranked:
            self.metrics.lists.labels(result.strategy).inc()
            self.metrics.served_items.inc(len(result.items))
            self.metrics.served_tail.inc(sum(item["tail"] for item in result.items))
        self.metrics.coverage.set(self.ranker.coverage)
        return [{**asdict(r), "bundle_version": self.ranker.version, "served_by": self.replica} for r in ranked]

    async def similar(self, item_id: str, k: int) -> dict:
        """Neighbours of an item (``items`` None when the catalog has no such item), with the version."""
        async with self.lock:
            await self._sync_items()
            items = self.ranker.similar(item_id, k) if item_id in self.ranker.index else None
        return {"items": items, "bundle_version": self.ranker.version}

    async def search(self, vector: list[float], k: int, encoder: str) -> dict:
        """Items nearest to a text vector made by ``encoder``; refused when it is not this bundle's."""
        if encoder != self.encoder_id:
            raise EncoderMismatch(f"vector from encoder {encoder}, this ranker's bundle has {self.encoder_id}")
        async with self.lock:
            await self._sync_items()
            items = self.ranker.search(np.asarray(vector, dtype=np.float32), k)
        return {"items": items, "bundle_version": self.ranker.version}

    async def catalog(self) -> dict:
        async with self.lock:
            await self._sync_items()
        return {"version": self.ranker.version, "items": self.ranker.n_items}

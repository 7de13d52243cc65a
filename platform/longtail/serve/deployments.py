"""The Ranker and Encoder deployments. Each loads (and verifies) the bundle itself; neither imports
training code. Requests are batched with ``@serve.batch``; batch sizes are ``user_config`` knobs."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from ray import serve

from longtail.bundle import read_bundle, verify_bundle
from longtail.serve.knobs import EncoderKnobs, RankerKnobs
from longtail.serve.metrics import ServeMetrics
from longtail.serve.ranking import Query, ServingRanker
from longtail.serve.store import SqliteStore


@serve.deployment(
    name="Ranker",
    ray_actor_options={"num_cpus": 0.25},
    max_ongoing_requests=32,
    autoscaling_config={"min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 4},
)
class Ranker:
    """Catalog, graph and hybrid ranker in memory; users' histories from the bundle plus the store."""

    def __init__(self, bundle: str, store: str, metrics_dir: str, torch_threads: int = 1) -> None:
        torch.set_num_threads(torch_threads)
        self.ranker = ServingRanker(read_bundle(Path(bundle)))
        self.store = SqliteStore(store)
        self.metrics = ServeMetrics.open(metrics_dir)
        self.metrics.bundle.labels(self.ranker.version).set(1)
        self._sync_items()

    def reconfigure(self, config: dict) -> None:
        knobs = RankerKnobs.model_validate(config)
        self.ranker.configure(knobs)
        set_batching(self._batch, knobs)

    def _sync_items(self) -> None:
        """Pick up items other replicas' ingress stored since the last look (cheap when there are none)."""
        added = self.ranker.add_items(self.store.items_after(self.ranker.last_item_seq))
        if added:
            self.metrics.catalog_size.set(self.ranker.n_items)

    async def recommend(self, request: dict) -> dict:
        """One request (RecommendRequest fields) → a ranked list; batched with concurrent requests."""
        return await self._batch(request)

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.002)
    async def _batch(self, requests: list[dict]) -> list[dict]:
        self._sync_items()
        stored = self.store.histories(sorted({r["user_id"] for r in requests}))
        queries = []
        for r in requests:
            erased, items = stored[r["user_id"]]
            history, known = self.ranker.history(r["user_id"], erased, items)
            queries.append(Query(r["user_id"], history, r["k"], r["exclude_seen"], r.get("tail_boost"),
                                 r.get("explain", False), known))  # fmt: skip
        ranked = self.ranker.recommend(queries)
        for result in ranked:
            self.metrics.lists.labels(result.strategy).inc()
            self.metrics.served_items.inc(len(result.items))
            self.metrics.served_tail.inc(sum(item["tail"] for item in result.items))
        self.metrics.coverage.set(self.ranker.coverage)
        return [{**asdict(r), "bundle_version": self.ranker.version} for r in ranked]

    async def similar(self, item_id: str, k: int) -> list[dict] | None:
        """Neighbours of an item, or None when the catalog has no such item."""
        self._sync_items()
        if item_id not in self.ranker.index:
            return None
        return self.ranker.similar(item_id, k)

    async def search(self, vector: list[float], k: int) -> list[dict]:
        self._sync_items()
        return self.ranker.search(np.asarray(vector, dtype=np.float32), k)

    async def catalog(self) -> dict:
        self._sync_items()
        return {"version": self.ranker.version, "items": self.ranker.n_items}


@serve.deployment(
    name="Encoder",
    ray_actor_options={"num_cpus": 0.25},
    max_ongoing_requests=32,
    autoscaling_config={"min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 8},
)
class Encoder:
    """The bundle's fine-tuned text encoder, for new items and free-text queries (GPU when the replica has one)."""

    def __init__(self, bundle: str, torch_threads: int = 1) -> None:
        from longtail.model.encoder import load_encoder, load_tokenizer

        torch.set_num_threads(torch_threads)
        manifest = verify_bundle(Path(bundle))
        encoder_config = manifest["config"].get("encoder", {})
        self.max_length = int(encoder_config.get("max_length", 64))
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.encoder = load_encoder(str(Path(bundle) / "encoder")).to(self.device).eval()
        self.tokenizer = load_tokenizer(str(Path(bundle) / "encoder"))

    def reconfigure(self, config: dict) -> None:
        set_batching(self._batch, EncoderKnobs.model_validate(config))

    async def embed(self, text: str) -> list[float]:
        """The unit text vector of one text; concurrent calls are encoded together."""
        return await self._batch(text)

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def _batch(self, texts: list[str]) -> list[list[float]]:
        from longtail.model.encoder import embed_texts

        vectors = embed_texts(self.encoder, self.tokenizer, texts, self.max_length, len(texts), self.device)
        return [v.tolist() for v in vectors]


def set_batching(batched, knobs: RankerKnobs | EncoderKnobs) -> None:
    """Apply a ``user_config``'s batch size and wait to a ``@serve.batch`` method, live."""
    batched.set_max_batch_size(knobs.max_batch_size)
    batched.set_batch_wait_timeout_s(knobs.batch_wait_timeout_s)


def bundle_catalog(bundle: str) -> set[str]:
    """The bundle's item ids (vocab.parquet), for validating events without asking a ranker."""
    import pyarrow.parquet as pq

    return {str(i) for i in pq.read_table(Path(bundle) / "vocab.parquet").column("item_id").to_pylist()}


def bundle_version(bundle: str) -> str:
    return json.loads((Path(bundle) / "manifest.json").read_text())["version"]

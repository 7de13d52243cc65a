"""The Ranker and Encoder deployments. Each loads (and verifies) the bundle itself; neither imports
training code. Requests are batched with ``@serve.batch``; batch sizes are ``user_config`` knobs."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path

import numpy as np
import ray
import torch
from ray import serve

from longtail.bundle import encoder_id, verify_bundle
from longtail.serve.knobs import EncoderKnobs, RankerKnobs
from longtail.serve.metrics import ServeMetrics
from longtail.serve.ranker_core import EncoderMismatch, RankerCore
from longtail.serve.store import open_store

__all__ = ["Encoder", "EncoderMismatch", "Ranker", "bundle_catalog", "bundle_version"]
log = logging.getLogger("longtail.serve")
BACKFILL_EVERY_S = 5.0  # an encoder looks for stored items without its vectors this often (when busy)


@serve.deployment(name="Ranker", ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=32)
class Ranker:
    """A ``RankerCore`` as its own deployment (``ranker_deployment: true``): scales apart from the HTTP
    ingress, e.g. on GPU nodes while the ingress stays on the head."""

    def __init__(self, bundle: str, store: str, store_timeout_s: float, metrics_dir: str, torch_threads: int = 1) -> None:
        replica = f"{ray.get_runtime_context().get_node_id()[:12]}/{serve.get_replica_context().replica_id.unique_id}"
        self.core = RankerCore(bundle, store, store_timeout_s, metrics_dir, torch_threads, replica, "Ranker")

    def reconfigure(self, config: dict) -> None:
        knobs = RankerKnobs.model_validate(config)
        self.core.configure(knobs)
        set_batching(self._batch, knobs)

    async def recommend(self, request: dict) -> dict:
        """One request (RecommendRequest fields) → a ranked list; batched with concurrent requests."""
        return await self._batch(request)

    async def recommend_many(self, requests: list[dict]) -> list[dict]:
        """A batch an Ingress replica gathered: ranked in one pass, lists in request order."""
        return await self.core.recommend_many(requests)

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.002)
    async def _batch(self, requests: list[dict]) -> list[dict]:
        return await self.core.recommend_many(requests)

    async def similar(self, item_id: str, k: int) -> dict:
        return await self.core.similar(item_id, k)

    async def search(self, vector: list[float], k: int, encoder: str) -> dict:
        return await self.core.search(vector, k, encoder)

    async def catalog(self) -> dict:
        return await self.core.catalog()


@serve.deployment(name="Encoder", ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=32)
class Encoder:
    """The bundle's fine-tuned text encoder, for new items and free-text queries (GPU when the replica has one).

    It also encodes, with this bundle's encoder, every stored item that has no vector from it yet (items
    added while an older bundle was served), at start and then every few seconds while it is used.
    """

    def __init__(self, bundle: str, store: str, store_timeout_s: float, metrics_dir: str, torch_threads: int = 1
                 ) -> None:  # fmt: skip
        from longtail.model.encoder import load_encoder, load_tokenizer

        ServeMetrics.open(metrics_dir).replicas.labels("Encoder").set(1)

        torch.set_num_threads(torch_threads)
        manifest = verify_bundle(Path(bundle))
        self.encoder_id = encoder_id(manifest)
        self.max_length = int(manifest["config"].get("encoder", {}).get("max_length", 64))
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.encoder = load_encoder(str(Path(bundle) / "encoder")).to(self.device).eval()
        self.tokenizer = load_tokenizer(str(Path(bundle) / "encoder"))
        self.store = open_store(store, timeout_s=store_timeout_s)
        self._backfilled_at = 0.0
        self._backfill()

    def reconfigure(self, config: dict) -> None:
        set_batching(self._batch, EncoderKnobs.model_validate(config))

    def _encode(self, texts: list[str]) -> np.ndarray:
        from longtail.model.encoder import embed_texts

        return embed_texts(self.encoder, self.tokenizer, texts, self.max_length, max(len(texts), 1), self.device)

    def _backfill(self, chunk: int = 256) -> int:
        """Vectors from this encoder for stored items that lack one; returns how many were added."""
        self._backfilled_at = time.monotonic()
        missing = self.store.items_missing_vectors(self.encoder_id)
        added = 0
        for start in range(0, len(missing), chunk):
            part = missing[start : start + chunk]
            vectors = self._encode([text for _, text in part])
            added += self.store.add_vectors(self.encoder_id, {i: v for (i, _), v in zip(part, vectors, strict=True)})
            log.info("encoder %s: %d/%d stored items encoded", self.encoder_id, start + len(part), len(missing))
        return added

    async def embed(self, text: str) -> dict:
        """The unit text vector of one text and the encoder that made it; concurrent calls are batched."""
        return {"encoder": self.encoder_id, "vector": await self._batch(text)}

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def _batch(self, texts: list[str]) -> list[list[float]]:
        if time.monotonic() - self._backfilled_at > BACKFILL_EVERY_S:
            await asyncio.to_thread(self._backfill)
        return [v.tolist() for v in self._encode(texts)]


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

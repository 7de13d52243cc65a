"""The Ranker and Encoder deployments: Serve wrappers around ``Reader`` and ``EncoderCore``. Each loads
(and verifies) the bundle itself; neither imports training code. Requests are batched with ``@serve.batch``;
batch sizes are ``user_config`` knobs."""

from __future__ import annotations

import ray
from ray import serve

from longtail.serve.encoder_core import EncoderCore
from longtail.serve.knobs import EncoderKnobs, ListKnobs, ReplicaSpec
from longtail.serve.metrics import ServeMetrics
from longtail.serve.pooled_store import PooledStore
from longtail.serve.reader import Reader, set_torch_threads

__all__ = ["Encoder", "Ranker"]


@serve.deployment(name="Ranker", ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=32)
class Ranker:
    """A ``Reader`` as its own deployment (``ranker_deployment: true``): scales apart from the HTTP
    ingress, e.g. on GPU nodes while the ingress stays on the head."""

    def __init__(self, spec: ReplicaSpec) -> None:
        set_torch_threads(spec.torch_threads)
        node, replica_id = (
            ray.get_runtime_context().get_node_id()[:12],
            serve.get_replica_context().replica_id,
        )
        replica = f"{node}/{replica_id.unique_id}"
        metrics = ServeMetrics.open(spec.metrics_dir)
        metrics.replicas.labels("Ranker").set(1)
        store = PooledStore(spec.open_store(), spec.store_threads)
        self.core = Reader(spec.bundle, store, metrics, replica)

    def reconfigure(self, config: dict) -> None:
        knobs = ListKnobs.model_validate(config)
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
    """The bundle's text encoder, for new items and free-text queries (GPU when the replica has one); it
    encodes stored items that lack a vector from it at start and every few seconds after (``EncoderCore``)."""

    def __init__(self, spec: ReplicaSpec) -> None:
        set_torch_threads(spec.torch_threads)
        ServeMetrics.open(spec.metrics_dir).replicas.labels("Encoder").set(1)
        self.core = EncoderCore(spec.bundle, spec.open_store())
        self.core.start_backfill()

    def reconfigure(self, config: dict) -> None:
        set_batching(self._batch, EncoderKnobs.model_validate(config))

    async def embed(self, text: str) -> dict:
        """The unit text vector of one text and the encoder that made it; concurrent calls are batched."""
        return {"encoder": self.core.encoder_id, "vector": await self._batch(text)}

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def _batch(self, texts: list[str]) -> list[list[float]]:
        return [v.tolist() for v in await self.core.encode_async(texts)]


def set_batching(batched, knobs: ListKnobs | EncoderKnobs) -> None:
    """Apply a ``user_config``'s batch size and wait to a ``@serve.batch`` method, live."""
    batched.set_max_batch_size(knobs.max_batch_size)
    batched.set_batch_wait_timeout_s(knobs.batch_wait_timeout_s)

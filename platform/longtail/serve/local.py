"""The app's recommender in one process, without Ray: a ``Reader`` and an ``EncoderCore`` over a bundle.

Used by the HTTP tests (``TestClient`` against ``create_app``) and by anything that serves one bundle from
one Python process (``uvicorn``); the Serve ``Ingress`` reads through the same cores, with batching and
replicas on top.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from longtail.bundle import read_item_ids
from longtail.serve.encoder_core import EncoderCore
from longtail.serve.metrics import ServeMetrics
from longtail.serve.pooled_store import PooledStore
from longtail.serve.reader import Reader


class LocalRecommender:
    """``longtail.serve.api.Recommender`` over in-process cores (one request per pipeline pass)."""

    def __init__(self, ranker: Reader, encoder: EncoderCore, catalog: Iterable[str]) -> None:
        self.ranker, self.encoder = ranker, encoder
        self.catalog_ids = frozenset(catalog)

    @classmethod
    def open(cls, bundle: Path, store: PooledStore, metrics: ServeMetrics) -> LocalRecommender:
        """Both cores over ``bundle`` and ``store``."""
        ids = (str(i) for i in read_item_ids(bundle))
        return cls(Reader(bundle, store, metrics), EncoderCore(bundle, store.store), ids)

    @property
    def version(self) -> str:
        return self.ranker.version

    def in_bundle(self, item_ids: Iterable[str]) -> set[str]:
        return {i for i in item_ids if i in self.catalog_ids}

    async def recommend(self, request: dict) -> dict:
        (ranked,) = await self.ranker.recommend_many([request])
        return ranked

    async def similar(self, item_id: str, k: int) -> dict:
        return await self.ranker.similar(item_id, k)

    async def embed(self, text: str) -> dict:
        (vector,) = await self.encoder.encode_async([text])
        return {"encoder": self.encoder.encoder_id, "vector": vector.tolist()}

    async def search(self, query: str, k: int) -> dict:
        embedded = await self.embed(query)
        return await self.ranker.search(embedded["vector"], k, embedded["encoder"])

    async def catalog(self) -> dict:
        return await self.ranker.catalog()

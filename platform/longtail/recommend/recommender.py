"""The pipeline behind the ``Recommender`` interface, for evaluation and batch recommendation."""

from __future__ import annotations

import numpy as np

from longtail.data.encoded import Histories, SplitData
from longtail.eval.evaluate import batch_rows
from longtail.recommend.pipeline import Batch, Pipeline, recommend, retriever_lists
from longtail.recommend.variants import RankMemo, shared_base, variant_lists


class PipelineRecommender:
    """retrieve → rank → arrange for batches of users; shelf exposure accumulates over one object's calls
    (make one per evaluation pass). ``exclude_seen=False`` may list a user's history again (the unmasked
    protocol of some published tables)."""

    def __init__(
        self, pipeline: Pipeline, name: str = "hybrid", batch_users: int = 256, exclude_seen: bool = True
    ) -> None:
        self.pipeline, self.name, self.batch_users = pipeline, name, batch_users
        self.exclude_seen = exclude_seen
        self.exposure = np.zeros(pipeline.n_items, dtype=np.float64)

    @property
    def step(self) -> int:
        """Users per retrieve → rank → arrange batch (half as many when the ranker scores every item)."""
        return (
            self.batch_users
            if self.pipeline.retrieval.candidates is not None
            else max(1, self.batch_users // 2)
        )

    def fit(self, data: SplitData) -> None:
        """Training happens in ``longtail.train``; this adapter only recommends."""

    def recommend(self, users: np.ndarray, histories: Histories, k: int) -> np.ndarray:
        """(b, k) lists, each user's history excluded unless ``exclude_seen`` is off."""
        out = np.full((len(users), k), -1, dtype=np.int64)
        for start in range(0, len(users), self.step):
            rows = np.arange(start, min(start + self.step, len(users)))
            batch = Batch.of(histories.rows(rows), self.exclude_seen)
            lists = recommend(self.pipeline, batch, k, self.exposure)
            out[rows] = lists.items
        return out


def pipeline_lists(
    variants: list[Pipeline], histories: Histories, k: int, memo: RankMemo | None = None
) -> np.ndarray:
    """(v, u, k): what ``evaluate`` gets from ``PipelineRecommender(variant)`` for each variant over the rows
    of ``histories`` — the same batches, each variant's own shelf exposure — from one retrieval and one
    ranker forward per batch (``variant_lists``), or from the pass ``memo`` keeps of these histories (it
    keeps none it does not have: a catalog-wide evaluation is ranked chunk by chunk)."""
    step, chunk = PipelineRecommender(variants[0]).step, batch_rows(variants[0].n_items)  # evaluate's chunks
    exposures = [np.zeros(v.n_items) for v in variants]
    found = None if memo is None else memo.find(shared_base(variants), histories, k)
    if found is not None:
        return variant_lists(variants, histories, k, step, exposures, ranked=found)
    out = np.full((len(variants), histories.n_users, k), -1, dtype=np.int64)
    for start in range(0, histories.n_users, chunk):
        rows = np.arange(start, min(start + chunk, histories.n_users))
        out[:, rows] = variant_lists(variants, histories.rows(rows), k, step, exposures)
    return out


class RetrieverRecommender:
    """The retriever's own lists: its MIPS search alone (the first stage without the ranker)."""

    def __init__(
        self, pipeline: Pipeline, name: str = "retriever", batch_users: int = 512, exclude_seen: bool = True
    ) -> None:
        self.pipeline, self.name, self.batch_users = pipeline, name, batch_users
        self.exclude_seen = exclude_seen

    def fit(self, data: SplitData) -> None:
        """Already trained."""

    def recommend(self, users: np.ndarray, histories: Histories, k: int) -> np.ndarray:
        out = np.full((len(users), k), -1, dtype=np.int64)
        for start in range(0, len(users), self.batch_users):
            rows = np.arange(start, min(start + self.batch_users, len(users)))
            out[rows] = retriever_lists(self.pipeline, Batch.of(histories.rows(rows), self.exclude_seen), k)
        return out

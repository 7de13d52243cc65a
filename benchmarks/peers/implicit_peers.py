"""The `implicit` library's ALS, BPR and item-kNN behind longtail's Recommender protocol."""

from __future__ import annotations

import numpy as np
from implicit.als import AlternatingLeastSquares
from implicit.bpr import BayesianPersonalizedRanking
from implicit.nearest_neighbours import BM25Recommender, CosineRecommender

from longtail.data.encoded import Histories, SplitData
from longtail.model.base import ScoringRecommender


def train_matrix(data: SplitData):
    """Binary user × item CSR of the train part (what implicit's ``fit`` takes)."""
    return data.histories(("train",)).to_csr(data.n_items)


class ImplicitFactors(ScoringRecommender):
    """ALS or BPR factor model: score = user factors · item factors (implicit adds BPR's bias column)."""

    def __init__(self, kind: str, threads: int = 2, seed: int = 0, **params) -> None:
        self.kind, self.params = kind, params
        self.name = f"{kind} (implicit)"
        cls = AlternatingLeastSquares if kind == "als" else BayesianPersonalizedRanking
        self.model = cls(num_threads=threads, random_state=seed, **params)

    def fit(self, data: SplitData) -> None:
        self.model.fit(train_matrix(data), show_progress=False)

    def score(self, users: np.ndarray, histories: Histories) -> np.ndarray:
        return (self.model.user_factors[users] @ self.model.item_factors.T).astype(np.float32)  # (b, n_items)


class ImplicitItemKNN(ScoringRecommender):
    """implicit's item-item neighbours (cosine or BM25-weighted): score = history · similarity."""

    def __init__(self, weighting: str = "cosine", neighbours: int = 100, threads: int = 2) -> None:
        self.name = "itemknn (implicit)"
        cls = CosineRecommender if weighting == "cosine" else BM25Recommender
        self.model = cls(K=neighbours, num_threads=threads)
        self.n_items = 0

    def fit(self, data: SplitData) -> None:
        self.model.fit(train_matrix(data), show_progress=False)
        self.n_items = data.n_items

    def score(self, users: np.ndarray, histories: Histories) -> np.ndarray:
        return np.asarray(
            (histories.to_csr(self.n_items) @ self.model.similarity).todense(), dtype=np.float32
        )

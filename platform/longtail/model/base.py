"""The recommender interface shared by the baselines, the peers and the two-stage hybrid.

A recommender returns lists, not scores: ``recommend`` gives each user's top-k catalog indices, best
first, with the items of the given histories excluded. Models that score the whole catalog (baselines,
peers) get ``recommend`` from ``ScoringRecommender``; the two-stage hybrid arranges its own lists
(``longtail.recommend``).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from longtail.data.encoded import Histories, SplitData
from longtail.topk import top_k


@runtime_checkable
class Recommender(Protocol):
    """Fit on a split's train part; recommend top-k lists.

    ``recommend`` receives user indices and those users' histories (time-ordered item indices, which at
    test time include valid interactions) and returns (b, k) catalog indices, best first, -1 where fewer
    than k items are left; no list holds an item of the user's history.
    """

    name: str

    def fit(self, data: SplitData) -> None:
        """Learn from ``data.train`` only (``data.valid`` may be read for early stopping)."""
        ...

    def recommend(self, users: np.ndarray, histories: Histories, k: int) -> np.ndarray:
        """(b, k) int64 lists for the b users."""
        ...


class ScoringRecommender:
    """Base of models that score every item: ``recommend`` is the top-k of ``score`` minus the history."""

    name = "scoring"

    def fit(self, data: SplitData) -> None:
        """Learn from ``data.train``."""

    def score(self, users: np.ndarray, histories: Histories) -> np.ndarray:
        """(b, n_items) scores, higher is better."""
        raise NotImplementedError

    def recommend(self, users: np.ndarray, histories: Histories, k: int) -> np.ndarray:
        """Top-k of ``score`` with each user's history excluded; ties go to the lower catalog index."""
        scores = self.score(users, histories)
        return top_k(scores, k, exclude=histories.to_csr(scores.shape[1]))

"""The recommender interface shared by the baselines and the hybrid ranker."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from longtail.data.encoded import Histories, SplitData


@runtime_checkable
class Recommender(Protocol):
    """Fit on a split's train part; score users against the whole catalog.

    ``score`` receives user indices and those users' histories (time-ordered item indices, which at
    test time include valid interactions) and returns (b, n_items) scores, higher is better.
    """

    name: str

    def fit(self, data: SplitData) -> None:
        """Learn from ``data.train`` only (``data.valid`` may be read for early stopping)."""
        ...

    def score(self, users: np.ndarray, histories: Histories) -> np.ndarray:
        """(b, n_items) float32 scores for the b users."""
        ...

"""Text-only recommender: the user is the mean of their history's text vectors; score = cosine."""

from __future__ import annotations

import numpy as np

from longtail.data.encoded import Histories, SplitData
from longtail.model.base import ScoringRecommender


class TextMeanProfile(ScoringRecommender):
    """score(u, i) = ⟨normalize(mean_{j ∈ history(u)} t_j), t_i⟩ with unit item text vectors t."""

    name = "text"

    def __init__(self, vectors: np.ndarray, name: str = "text") -> None:
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        self.vectors = (vectors / np.maximum(norms, 1e-12)).astype(np.float32)  # (n_items, d)
        self.name = name

    def fit(self, data: SplitData) -> None:
        """Nothing to learn: the vectors come from the encoder."""
        if len(self.vectors) != data.n_items:
            raise ValueError(f"{len(self.vectors)} item vectors for a catalog of {data.n_items} items")

    def score(self, users: np.ndarray, histories: Histories) -> np.ndarray:
        """(b, n_items) cosine between the mean history vector and every item."""
        x = histories.to_csr(len(self.vectors))  # (b, n_items)
        profile = np.asarray(x @ self.vectors)  # (b, d)
        profile /= np.maximum(np.linalg.norm(profile, axis=1, keepdims=True), 1e-12)
        return profile @ self.vectors.T

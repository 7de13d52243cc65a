"""Exposure re-rank after scoring: a tail boost and an exploration weight, both knobs in [0, 1].

    boosted = (1 − τ) · zscore_row(score) + τ · zscore(−log(1 + train count))
    explored = boosted + ε · g · 1[item is tail],   g ~ Gumbel(0, 1), seeded

τ = 0 and ε = 0 leave the model's order untouched; τ = 1 ranks by rarity alone.
"""

from __future__ import annotations

import numpy as np


def _zscore(x: np.ndarray, axis: int | None = None) -> np.ndarray:
    finite = np.where(np.isfinite(x), x, np.nan)
    mean = np.nanmean(finite, axis=axis, keepdims=axis is not None)
    std = np.nanstd(finite, axis=axis, keepdims=axis is not None)
    return (x - mean) / np.where(std > 0, std, 1.0)


def tail_boost(scores: np.ndarray, train_counts: np.ndarray, weight: float) -> np.ndarray:
    """Scores (b, c) blended with item rarity; ``train_counts`` (c,) for the same candidates."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"tail boost must be in [0, 1], got {weight}")
    if weight == 0.0:
        return scores
    rarity = _zscore(-np.log1p(train_counts.astype(np.float64)))  # (c,)
    out = (1.0 - weight) * _zscore(scores.astype(np.float64), axis=1) + weight * rarity[None, :]
    return np.where(np.isfinite(scores), out, scores)


def explore(scores: np.ndarray, tail: np.ndarray, weight: float, rng: np.random.Generator) -> np.ndarray:
    """Random lift of tail candidates (c,) by ``weight`` × Gumbel noise on z-scored scores (b, c)."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"exploration must be in [0, 1], got {weight}")
    if weight == 0.0:
        return scores
    noise = rng.gumbel(size=scores.shape) * tail[None, :]
    out = _zscore(scores.astype(np.float64), axis=1) + weight * noise
    return np.where(np.isfinite(scores), out, scores)


class RerankedRecommender:
    """A recommender whose scores get the tail boost before ranking (exploration is left to serving)."""

    def __init__(
        self, inner, train_counts: np.ndarray, tail_boost_weight: float, name: str | None = None
    ) -> None:
        self.inner, self.counts, self.weight = inner, train_counts, tail_boost_weight
        self.name = name or f"{inner.name}+boost{tail_boost_weight:g}"

    def fit(self, data) -> None:
        """The inner model is already fitted."""

    def score(self, users: np.ndarray, histories) -> np.ndarray:
        """Inner scores (b, n_items) with the tail boost applied."""
        return tail_boost(self.inner.score(users, histories), self.counts, self.weight)

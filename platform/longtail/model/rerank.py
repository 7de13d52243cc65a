"""Exposure re-rank after scoring: a tail boost and an exploration weight, both knobs in [0, 1].

    boosted = (1 − τ) · zscore_row(score) + τ · zscore(−log(1 + train count))
    explored = boosted + ε · g · 1[item is tail],   g ~ Gumbel(0, 1), seeded

τ = 0 and ε = 0 leave the model's order untouched; τ = 1 ranks by rarity alone.

Shelves (``arrange``) work on whole lists instead of scores: the head of each list stays the model's
best items and the rest of the list is reserved for tail and never-touched items, chosen by the model's
score damped by how often each item was shown already (a coverage control).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from longtail.data.splits import popularity_buckets
from longtail.model.text_profile import TextMeanProfile


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


@dataclass(frozen=True)
class Shelves:
    """Reserved slots of a list: the knobs of ``arrange``, each a share of the list in [0, 1]."""

    tail_share: float = 0.0  # slots after the relevance block kept for tail items
    new_share: float = 0.0  # slots kept for items nobody has interacted with yet
    exposure_penalty: float = 0.0  # λ: a reserved-slot candidate scores z(score) − λ·log(1 + times shown)

    def __post_init__(self) -> None:
        for name in ("tail_share", "new_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.tail_share + self.new_share > 1.0:
            raise ValueError(f"tail_share + new_share must be ≤ 1, got {self.tail_share + self.new_share}")
        if self.exposure_penalty < 0.0:
            raise ValueError(f"exposure_penalty must be ≥ 0, got {self.exposure_penalty}")

    @property
    def active(self) -> bool:
        return self.tail_share > 0.0 or self.new_share > 0.0


def arrange(
    scores: np.ndarray,
    k: int,
    tail: np.ndarray,
    new: np.ndarray,
    shelves: Shelves,
    exposure: np.ndarray,
    new_scores: np.ndarray | None = None,
) -> np.ndarray:
    """Lists (b, k) of catalog indices, -1 where nothing is left; excluded items score -inf in ``scores`` (b, n).

    Each list is a relevance block (the best k − t − c items by score), then t = round(tail_share·k) tail
    items, then c = round(new_share·k) new items; in the reserved blocks a candidate's z-scored score is
    lowered by λ·log(1 + exposure) so that items shown often already yield to others. Slots a block cannot
    fill go to the next best items. ``exposure`` (n,) counts past showings; it is updated in place, row by
    row, so later rows of the batch see the earlier ones. ``new_scores`` (b, n), when given, order the
    new-item shelf instead of ``scores`` (e.g. text similarity to the history, which needs no interactions).
    """
    n_tail, n_new = round(shelves.tail_share * k), round(shelves.new_share * k)
    n_top = k - n_tail - n_new
    out = np.full((len(scores), k), -1, dtype=np.int64)
    for row, s in enumerate(scores):
        open_ = np.isfinite(s)  # (n,) still available
        z = _zscore(s)
        picks = _best(np.where(open_, s, -np.inf), n_top)
        open_[picks] = False
        z_new = z if new_scores is None else _zscore(np.where(np.isfinite(s), new_scores[row], -np.inf))
        for share, mask, zz in ((n_tail, tail, z), (n_new, new, z_new)):
            if share:
                damped = zz - shelves.exposure_penalty * np.log1p(exposure)
                block = _best(np.where(open_ & mask, damped, -np.inf), share)
                open_[block] = False
                picks = np.concatenate([picks, block])
        if len(picks) < k:
            picks = np.concatenate([picks, _best(np.where(open_, s, -np.inf), k - len(picks))])
        out[row, : len(picks)] = picks
        exposure[picks] += 1
    return out


def _best(values: np.ndarray, m: int) -> np.ndarray:
    """Indices of the ≤ m largest finite values, best first, ties to the lower index."""
    m = min(m, int(np.isfinite(values).sum()))
    if m <= 0:
        return np.zeros(0, dtype=np.int64)
    top = np.argpartition(-values, m - 1)[:m]
    return top[np.lexsort((top, -values[top]))]


class ShelvedRecommender:
    """A recommender whose top-``k`` lists follow ``arrange`` (tail and new-item shelves, exposure damping).

    ``score`` encodes each arranged list as the highest scores of its row (so any top-k reader gets that
    list back) and keeps the model's order below it. ``new_scorer`` (a recommender, e.g. the text profile)
    orders the new-item shelf. Exposure accumulates over the users scored by this object, in the order they
    come: make one per evaluation pass.
    """

    def __init__(self, inner, train_counts: np.ndarray, tail: np.ndarray, shelves: Shelves, k: int = 20,
                 name: str | None = None, new_scorer=None) -> None:  # fmt: skip
        self.inner, self.tail, self.shelves, self.k, self.new_scorer = inner, tail, shelves, k, new_scorer
        self.new = np.asarray(train_counts) == 0
        self.exposure = np.zeros(len(tail), dtype=np.float64)
        self.name = name or inner.name

    def fit(self, data) -> None:
        """The inner model is already fitted."""

    def score(self, users: np.ndarray, histories) -> np.ndarray:
        """(b, n_items): the arranged list on top (k, k − 1, … above every other item), the rest by score."""
        s = np.asarray(self.inner.score(users, histories), dtype=np.float64).copy()
        seen = histories.to_csr(s.shape[1])
        rows = np.repeat(np.arange(len(s)), np.diff(seen.indptr))
        s[rows, seen.indices] = -np.inf
        new_scores = None
        if self.new_scorer is not None and self.shelves.new_share > 0:
            new_scores = np.asarray(self.new_scorer.score(users, histories), dtype=np.float64)
        lists = arrange(s, self.k, self.tail, self.new, self.shelves, self.exposure, new_scores)  # (b, k)
        out = np.where(np.isfinite(s), np.tanh(_zscore(s, axis=1)), -np.inf)  # in (−1, 1)
        for pos in range(self.k):
            filled = lists[:, pos] >= 0
            out[np.flatnonzero(filled), lists[filled, pos]] = 1.0 + self.k - pos
        return out


def with_exposure_rerank(
    inner, train_counts: np.ndarray, boost: float, shelves: Shelves, k: int = 20, text_vectors=None
):
    """``inner`` wrapped by the tail boost and the shelves (for lists of ``k``) that are switched on.

    With ``text_vectors`` (n, d) the new-item shelf is ordered by the text profile (cosine of the mean
    history vector), the signal that needs no interaction at all.
    """
    rec = RerankedRecommender(inner, train_counts, boost, inner.name) if boost > 0 else inner
    if shelves.active:
        rec = ShelvedRecommender(rec, train_counts, popularity_buckets(train_counts)["tail"], shelves, k,
                                 new_scorer=None if text_vectors is None else TextMeanProfile(text_vectors))  # fmt: skip
    return rec

"""The last stage of retrieve → rank → arrange: exposure knobs on scores, and shelves on whole lists.

Score knobs (both in [0, 1]), on the ranked candidates of each user:

    boosted = (1 − τ) · zscore_row(score) + τ · zscore_row(−log(1 + train count))
    explored = boosted + ε · g · 1[item is tail],   g ~ Gumbel(0, 1), seeded

τ = 0 and ε = 0 leave the model's order untouched; τ = 1 ranks by rarity alone.

Shelves (``arrange``) work on whole lists: the head of each list stays the model's best items and the rest
of the list is reserved for tail and never-touched items, chosen by the model's score damped by how often
each item was shown already (a coverage control).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from longtail.topk import best, top_k


def zscore(x: np.ndarray, axis: int | None = None) -> np.ndarray:
    """(x − mean) / std over the finite entries (along ``axis``); non-finite entries stay non-finite."""
    finite = np.isfinite(x)
    keep = axis is not None
    count = np.maximum(finite.sum(axis=axis, keepdims=keep), 1)
    clean = np.where(finite, x, 0.0)
    mean = clean.sum(axis=axis, keepdims=keep) / count
    var = (np.where(finite, clean - mean, 0.0) ** 2).sum(axis=axis, keepdims=keep) / count
    std = np.sqrt(var)
    return (x - mean) / np.where(std > 0, std, 1.0)


def tail_boost(scores: np.ndarray, train_counts: np.ndarray, weight: float) -> np.ndarray:
    """Scores (b, c) blended with item rarity; ``train_counts`` (c,) or (b, c) of the same candidates."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"tail boost must be in [0, 1], got {weight}")
    if weight == 0.0:
        return scores
    counts = np.broadcast_to(train_counts, scores.shape).astype(np.float64)
    rarity = zscore(np.where(np.isfinite(scores), -np.log1p(counts), np.nan), axis=1)  # (b, c)
    out = (1.0 - weight) * zscore(scores.astype(np.float64), axis=1) + weight * rarity
    return np.where(np.isfinite(scores), out, scores)


def explore(scores: np.ndarray, tail: np.ndarray, weight: float, rng: np.random.Generator) -> np.ndarray:
    """Random lift of tail candidates ((c,) or (b, c) mask) by ``weight`` × Gumbel noise on z-scored scores
    (b, c)."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"exploration must be in [0, 1], got {weight}")
    if weight == 0.0:
        return scores
    noise = rng.gumbel(size=scores.shape) * np.broadcast_to(tail, scores.shape)
    out = zscore(scores.astype(np.float64), axis=1) + weight * noise
    return np.where(np.isfinite(scores), out, scores)


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


MODEL_SHELF, TAIL_SHELF, NEW_SHELF = 0, 1, 2  # which part of a list filled a slot (``arrange_labelled``)
SHELF_NAMES = ("model", "tail", "new")


def arrange(
    candidates: np.ndarray,
    scores: np.ndarray,
    k: int,
    tail: np.ndarray,
    new: np.ndarray,
    shelves: Shelves,
    exposure: np.ndarray,
    new_scores: np.ndarray | None = None,
    record: bool = True,
) -> np.ndarray:
    """Column picks (b, k) into ``candidates`` (b, c), best first, -1 where nothing is left.

    ``candidates`` hold catalog indices (-1 pads a row); ``scores`` (b, c) are -inf for excluded or padded
    columns. ``tail``, ``new`` (n,) mark tail and never-touched items; ``exposure`` (n,) counts past
    showings. Each list is a relevance block (the best k − t − c items by score), then t =
    round(tail_share·k) tail items, then c = round(new_share·k) new items; in the reserved blocks a
    candidate's z-scored score is lowered by λ·log(1 + exposure) so that items shown often already yield to
    others. Slots a block cannot fill go to the next best items. With ``record`` the picks are added to
    ``exposure`` row by row, so later rows of the batch see the earlier ones. ``new_scores`` (b, c), when
    given, order the new-item shelf (e.g. text similarity to the history, which needs no interactions).
    Without shelves this is the plain top k (ties to the lower column).
    """
    picks, _ = arrange_labelled(candidates, scores, k, tail, new, shelves, exposure, new_scores, record)
    return picks


def arrange_labelled(
    candidates: np.ndarray,
    scores: np.ndarray,
    k: int,
    tail: np.ndarray,
    new: np.ndarray,
    shelves: Shelves,
    exposure: np.ndarray,
    new_scores: np.ndarray | None = None,
    record: bool = True,
    shelf_bonus: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``arrange``'s picks (b, k) and the shelf that filled each slot (b, k): ``MODEL_SHELF`` (the relevance
    block and the slots a reserved block left over), ``TAIL_SHELF``, ``NEW_SHELF``; -1 where nothing is left.

    ``shelf_bonus`` (n,), when given, is added to each candidate's score in the reserved blocks only (the
    feedback-driven shelves: a sampled estimate of how users engage with the item when it is shown there).
    """
    shelf = np.full((len(scores), k), -1, dtype=np.int8)
    if not shelves.active:
        picks = top_k(scores, k)  # (b, k) columns
        shelf[picks >= 0] = MODEL_SHELF
        if record:
            shown = np.take_along_axis(candidates, np.maximum(picks, 0), 1)[picks >= 0]
            np.add.at(exposure, shown, 1.0)
        return picks, shelf
    n_tail, n_new = round(shelves.tail_share * k), round(shelves.new_share * k)
    n_top = k - n_tail - n_new
    out = np.full((len(scores), k), -1, dtype=np.int64)
    for row, s in enumerate(scores):
        items = candidates[row]
        real = items >= 0
        safe = np.where(real, items, 0)
        open_ = np.isfinite(s) & real  # (c,) still available
        z = zscore(np.where(open_, s, -np.inf))
        picks = best(np.where(open_, s, -np.inf), n_top)
        open_[picks] = False
        labels = [np.full(len(picks), MODEL_SHELF)]
        z_new = z if new_scores is None else zscore(np.where(np.isfinite(s), new_scores[row], -np.inf))
        damping = shelves.exposure_penalty * np.log1p(exposure[safe])  # (c,)
        if shelf_bonus is not None:
            damping = damping - shelf_bonus[safe]
        for share, mask, zz, label in (
            (n_tail, tail[safe], z, TAIL_SHELF),
            (n_new, new[safe], z_new, NEW_SHELF),
        ):
            if share:
                block = best(np.where(open_ & mask, zz - damping, -np.inf), share)
                open_[block] = False
                picks = np.concatenate([picks, block])
                labels.append(np.full(len(block), label))
        if len(picks) < k:
            rest = best(np.where(open_, s, -np.inf), k - len(picks))
            picks = np.concatenate([picks, rest])
            labels.append(np.full(len(rest), MODEL_SHELF))
        out[row, : len(picks)] = picks
        shelf[row, : len(picks)] = np.concatenate(labels)
        if record:
            exposure[items[picks]] += 1
    return out, shelf

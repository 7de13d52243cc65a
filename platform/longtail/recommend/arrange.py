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

from longtail.topk import top_k


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
    tail_knn: float = 0.0  # weight of the item-kNN affinity to the history in the tail shelf's order

    def __post_init__(self) -> None:
        for name in ("tail_share", "new_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.tail_share + self.new_share > 1.0:
            raise ValueError(f"tail_share + new_share must be ≤ 1, got {self.tail_share + self.new_share}")
        if self.exposure_penalty < 0.0:
            raise ValueError(f"exposure_penalty must be ≥ 0, got {self.exposure_penalty}")
        if self.tail_knn < 0.0:
            raise ValueError(f"tail_knn must be ≥ 0, got {self.tail_knn}")

    @property
    def active(self) -> bool:
        return self.tail_share > 0.0 or self.new_share > 0.0


@dataclass(frozen=True)
class Ordered:
    """One batch's ranked candidates as every shelf setting reads them (``order_for_shelves``), so that a
    grid of shelf settings over the same scores computes them once."""

    s: np.ndarray  # (b, c) the scores of pickable candidates, -inf elsewhere
    z: np.ndarray  # (b, c) s z-scored per row
    z_new: np.ndarray  # (b, c) the new-item shelf's order, z-scored (z when no new_scores)
    z_tail: np.ndarray  # (b, c) the tail shelf's order, z-scored (z when no tail_scores)
    best: np.ndarray  # (b, k) the k best columns by s, best first, -1 where none is left


def order_for_shelves(
    candidates: np.ndarray,
    scores: np.ndarray,
    k: int,
    new_scores: np.ndarray | None = None,
    tail_scores: np.ndarray | None = None,
) -> Ordered:
    """What ``arrange_labelled`` reads of ``scores`` (b, c), ``new_scores`` and ``tail_scores`` whatever
    the shelves: the relevance block of any size is a prefix of ``best`` (``top_k``'s one tie rule)."""
    finite = np.isfinite(scores)
    s = np.where(finite & (candidates >= 0), scores, -np.inf)  # (b, c) what may be picked
    z = zscore(s, axis=1)
    z_new = z if new_scores is None else zscore(np.where(finite, new_scores, -np.inf), axis=1)
    z_tail = z if tail_scores is None else zscore(np.where(finite, tail_scores, -np.inf), axis=1)
    return Ordered(s, z, z_new, z_tail, top_k(s, k))


MODEL_SHELF, TAIL_SHELF, NEW_SHELF = 0, 1, 2  # which part of a list filled a slot (``arrange_labelled``)
SHELF_NAMES = ("model", "tail", "new")
_SHELVES = np.array([MODEL_SHELF, TAIL_SHELF, NEW_SHELF], np.int8)


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
    tail_scores: np.ndarray | None = None,
) -> np.ndarray:
    """Column picks (b, k) into ``candidates`` (b, c), best first, -1 where nothing is left.

    ``candidates`` hold catalog indices (-1 pads a row); ``scores`` (b, c) are -inf for excluded or padded
    columns. ``tail``, ``new`` (n,) mark tail and never-touched items; ``exposure`` (n,) counts past
    showings. Each list is a relevance block (the best k − t − c items by score), then t =
    round(tail_share·k) tail items, then c = round(new_share·k) new items; in the reserved blocks a
    candidate's z-scored score is lowered by λ·log(1 + exposure) so that items shown often already yield to
    others. Slots a block cannot fill go to the next best items. With ``record`` the picks are added to
    ``exposure`` row by row, so later rows of the batch see the earlier ones. ``new_scores`` (b, c), when
    given, order the new-item shelf (e.g. text similarity to the history, which needs no interactions);
    ``tail_scores`` (b, c), when given, order the tail shelf (``pipeline.tail_item_scores``).
    Without shelves this is the plain top k (ties to the lower column).
    """
    picks, _ = arrange_labelled(
        candidates, scores, k, tail, new, shelves, exposure, new_scores, record, tail_scores=tail_scores
    )
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
    tail_scores: np.ndarray | None = None,
    ordered: Ordered | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``arrange``'s picks (b, k) and the shelf that filled each slot (b, k): ``MODEL_SHELF`` (the relevance
    block and the slots a reserved block left over), ``TAIL_SHELF``, ``NEW_SHELF``; -1 where nothing is left.

    ``shelf_bonus`` (n,), when given, is added to each candidate's score in the reserved blocks only (the
    feedback-driven shelves: a sampled estimate of how users engage with the item when it is shown there).
    ``tail_scores`` (b, c), when given, order the tail shelf in place of the score (as ``new_scores`` the
    new-item shelf). ``ordered``: ``order_for_shelves`` of the same scores made already (in place of
    ``new_scores`` and ``tail_scores``).

    The batch is arranged at once (z-scores, the relevance block, the shelves' candidates); only where
    exposure damping reads the picks of earlier rows (``record`` with λ > 0) do the reserved blocks go row
    by row, over each row's shelf candidates alone. A test holds both to the row-by-row rule.
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
    safe = np.maximum(candidates, 0)  # (b, c) catalog indices, 0 for padding
    if ordered is None:
        ordered = order_for_shelves(candidates, scores, k, new_scores, tail_scores)
    elif ordered.best.shape[1] < k - n_tail - n_new:
        raise ValueError(f"arrange: the shared ordering holds {ordered.best.shape[1]} best columns, k is {k}")
    s = ordered.s
    top = ordered.best[:, : k - n_tail - n_new]  # (b, n_top) the relevance block
    open_ = np.isfinite(s)
    _close(open_, top)
    tail_z = np.where(open_ & tail[safe], ordered.z_tail, -np.inf)  # (b, c) tail shelf candidates
    new_z = np.where(open_ & new[safe], ordered.z_new, -np.inf)
    if record and shelves.exposure_penalty > 0:  # row r's damping reads the picks of rows < r
        columns, labels = _in_order(
            candidates, (top, tail_z, new_z), open_, s, k, shelves, exposure, shelf_bonus
        )
        return columns, _labelled(shelf, columns, labels)
    damping = _damping(shelves.exposure_penalty, exposure, shelf_bonus)[safe]  # (b, c)
    tail_block = top_k(tail_z - damping, n_tail)  # (b, n_tail)
    _close(open_, tail_block)
    new_block = top_k(np.where(open_, new_z, -np.inf) - damping, n_new)  # (b, n_new)
    _close(open_, new_block)
    short = (top >= 0).sum(1) + (tail_block >= 0).sum(1) + (new_block >= 0).sum(1) < k
    rest = top_k(np.where(open_ & short[:, None], s, -np.inf), k) if short.any() else top[:, :0]
    parts = np.concatenate([top, tail_block, new_block, rest], axis=1)  # (b, m) list order, -1 gaps
    labels = np.repeat(
        [MODEL_SHELF, TAIL_SHELF, NEW_SHELF, MODEL_SHELF], [top.shape[1], n_tail, n_new, rest.shape[1]]
    )
    order = np.argsort(parts < 0, axis=1, kind="stable")[:, :k]  # real picks first, in list order
    columns = np.take_along_axis(parts, order, 1)
    if record:
        shown = np.take_along_axis(candidates, np.maximum(columns, 0), 1)[columns >= 0]
        np.add.at(exposure, shown, 1.0)
    return columns, _labelled(shelf, columns, labels[order])


def _close(open_: np.ndarray, picks: np.ndarray) -> None:
    """Mark picked columns (b, m) (-1: none) as taken in ``open_`` (b, c)."""
    rows, cols = np.nonzero(picks >= 0)
    open_[rows, picks[rows, cols]] = False


def _labelled(shelf: np.ndarray, columns: np.ndarray, labels: np.ndarray) -> np.ndarray:
    shelf[:] = np.where(columns >= 0, labels, -1)
    return shelf


def _in_order(
    candidates: np.ndarray,
    blocks: tuple[np.ndarray, np.ndarray, np.ndarray],
    open_: np.ndarray,
    s: np.ndarray,
    k: int,
    shelves: Shelves,
    exposure: np.ndarray,
    shelf_bonus: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:
    """``arrange_labelled``'s columns and shelves (b, k), row by row: a row's picks are added to ``exposure``
    before the next row is damped by it. ``blocks``: the relevance block (b, n_top) and the tail and new
    shelves' z-scores (b, c), -inf where a candidate may not go."""
    top, tail_z, new_z = blocks
    n_top = top.shape[1]
    n_tail = round(shelves.tail_share * k)
    n_new = k - n_top - n_tail
    full = np.repeat(_SHELVES, [n_top, n_tail, n_new])  # (k,) the labels of a row no block left short
    top_short = np.any(top < 0, axis=1).tolist()  # (b,) bools
    columns = np.full((len(s), k), -1, dtype=np.int64)
    labels = np.full((len(s), k), -1, dtype=np.int8)
    # each row's shelf candidates first (by column, so that equal values keep the lower column first)
    eligible = np.isfinite(tail_z) | np.isfinite(new_z)  # (b, c)
    width = eligible.sum(1)  # (b,)
    at = np.argsort(~eligible, axis=1, kind="stable")[:, : max(int(width.max(initial=0)), 1)]  # (b, e)
    tail_e, new_e = np.take_along_axis(tail_z, at, 1), np.take_along_axis(new_z, at, 1)  # (b, e)
    items_e = np.take_along_axis(np.maximum(candidates, 0), at, 1)
    item_damping = _damping(shelves.exposure_penalty, exposure, shelf_bonus)  # (n,) kept up to date
    for row in range(len(s)):
        w = width[row]
        damping = item_damping[items_e[row, :w]]  # (w,)
        tail_at = _best(tail_e[row, :w] - damping, n_tail)  # positions in at[row]
        new_row = new_e[row, :w] - damping
        new_row[tail_at] = -np.inf
        new_at = _best(new_row, n_new)
        relevant = top[row]
        picks = np.concatenate([relevant, at[row, tail_at], at[row, new_at]])
        shelf = full
        if len(picks) < k or top_short[row]:  # a block ran short
            relevant = relevant[relevant >= 0]
            picks = np.concatenate([relevant, at[row, tail_at], at[row, new_at]])
            shelf = np.repeat(_SHELVES, [len(relevant), len(tail_at), len(new_at)])
            left = open_[row].copy()
            left[picks] = False
            rest = _best(np.where(left, s[row], -np.inf), k - len(picks))  # the model's best of what is left
            picks = np.concatenate([picks, rest])
            shelf = np.concatenate([shelf, np.full(len(rest), MODEL_SHELF, np.int8)])
        columns[row, : len(picks)] = picks
        labels[row, : len(picks)] = shelf
        shown = candidates[row, picks]
        exposure[shown] += 1
        item_damping[shown] = _damping(shelves.exposure_penalty, exposure[shown], shelf_bonus, shown)
    return columns, labels


def _damping(
    penalty: float, exposure: np.ndarray, shelf_bonus: np.ndarray | None, items: np.ndarray | None = None
) -> np.ndarray:
    """What a reserved-shelf candidate loses: λ·log(1 + times shown) − its shelf bonus, for each entry of
    ``exposure`` (of ``items``, or of the whole catalog)."""
    damping = penalty * np.log1p(exposure)
    if shelf_bonus is None:
        return damping
    return damping - (shelf_bonus if items is None else shelf_bonus[items])


def _best(values: np.ndarray, m: int) -> np.ndarray:
    """``topk.best`` for the short rows of the loop above: the ≤ m largest finite entries of ``values`` (c,),
    best first, equal values by the lower index."""
    if m == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.argsort(-values, kind="stable")[:m]
    return order[np.isfinite(values[order])]

"""Shelves: reserved tail and new-item slots with exposure damping
(``longtail.recommend.arrange.arrange``)."""

from __future__ import annotations

import numpy as np
import pytest

from longtail.config import RerankConfig
from longtail.recommend.arrange import Shelves
from longtail.recommend.arrange import arrange as arrange_columns

# 10 items: 0-3 head, 4-9 tail, of which 8 and 9 were never touched
TAIL = np.array([False] * 4 + [True] * 6)
NEW = np.array([False] * 8 + [True] * 2)
SCORES = np.array([[9.0, 8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0, 0.0]])


def arrange(scores, k, tail, new, shelves, exposure):
    """Shelves over the whole catalog: every item is a candidate, so columns are catalog indices."""
    candidates = np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
    return arrange_columns(candidates, scores, k, tail, new, shelves, exposure)


def test_relevance_block_then_tail_then_new():
    lists = arrange(SCORES, 6, TAIL, NEW, Shelves(tail_share=0.34, new_share=0.17), np.zeros(10))
    # k − t − c = 6 − 2 − 1 = 3 best, then the 2 best tail items left, then the best new item
    assert lists[0].tolist() == [0, 1, 2, 4, 5, 8]


def test_no_shelves_is_plain_top_k_and_counts_exposure():
    exposure = np.zeros(10)
    lists = arrange(SCORES, 4, TAIL, NEW, Shelves(), exposure)
    assert lists[0].tolist() == [0, 1, 2, 3]
    assert exposure.tolist() == [1.0] * 4 + [0.0] * 6


def test_exposure_penalty_moves_shelf_slots_to_items_shown_less():
    exposure = np.zeros(10)
    scores = np.repeat(SCORES, 3, axis=0)
    damped = arrange(scores, 3, TAIL, NEW, Shelves(tail_share=0.67, exposure_penalty=5.0), exposure)
    assert damped[:, 0].tolist() == [0, 0, 0]  # the relevance block is never damped
    assert damped[0, 1:].tolist() == [4, 5]
    assert set(damped[1, 1:]) == {6, 7}  # rows see the exposure of the rows before them
    plain = arrange(scores, 3, TAIL, NEW, Shelves(tail_share=0.67), np.zeros(10))
    assert (plain[:, 1:] == [4, 5]).all()


def test_tail_scores_order_the_tail_shelf_and_leave_the_relevance_block_alone():
    candidates = np.broadcast_to(np.arange(10), SCORES.shape)
    order = np.full(SCORES.shape, -np.inf)
    order[0, 4:] = [0.0, 1.0, 2.0, 9.0, 5.0, 3.0]  # another order of the tail: item 7 first, then 8
    shelves = Shelves(tail_share=0.4)
    lists = arrange_columns(candidates, SCORES, 5, TAIL, NEW, shelves, np.zeros(10), tail_scores=order)
    assert lists[0].tolist() == [0, 1, 2, 7, 8]
    plain = arrange_columns(candidates, SCORES, 5, TAIL, NEW, shelves, np.zeros(10))
    assert plain[0].tolist() == [0, 1, 2, 4, 5]


def test_excluded_items_are_skipped_and_short_shelves_are_refilled():
    scores = SCORES.copy()
    scores[0, [4, 5, 6, 7, 8, 9]] = -np.inf  # every tail item excluded
    lists = arrange(scores, 5, TAIL, NEW, Shelves(tail_share=0.4), np.zeros(10))
    assert lists[0].tolist() == [0, 1, 2, 3, -1]  # the tail shelf had nothing: best of the rest, then empty


def test_per_user_candidates_map_to_catalog_items_and_their_exposure():
    candidates = np.array([[9, 4, 0, 2, -1], [3, 5, 8, -1, -1]])  # two users' own candidates, -1 padded
    scores = np.array([[1.0, 5.0, 9.0, 3.0, -np.inf], [2.0, 1.0, 0.5, -np.inf, -np.inf]])
    exposure = np.zeros(10)
    cols = arrange_columns(
        candidates, scores, 3, TAIL, NEW, Shelves(tail_share=0.34, new_share=0.34), exposure
    )
    items = np.take_along_axis(candidates, np.maximum(cols, 0), 1)
    # user 0: best by score (0), best tail (4), best new (9); user 1: best (3), tail (5), new (8)
    assert items.tolist() == [[0, 4, 9], [3, 5, 8]]
    assert exposure[[0, 4, 9, 3, 5, 8]].tolist() == [1.0] * 6 and exposure.sum() == 6
    short = arrange_columns(candidates, scores, 5, TAIL, NEW, Shelves(), np.zeros(10), record=False)
    assert short[1].tolist() == [0, 1, 2, -1, -1]  # padding and -inf columns are never picked


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"tail_share": 1.5}, "tail_share"),
        ({"tail_share": 0.6, "new_share": 0.6}, "≤ 1"),
        ({"exposure_penalty": -1.0}, "exposure_penalty"),
        ({"tail_knn": -1.0}, "tail_knn"),
    ],
)
def test_bad_shelves_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Shelves(**kwargs)
    with pytest.raises(ValueError, match=message.split()[0]):
        RerankConfig(**kwargs)


def _row_by_row(candidates, scores, k, tail, new, shelves, exposure, new_scores, record, shelf_bonus):
    """The rule of ``arrange``'s docstring, one row at a time (the reference the batched code must equal)."""
    from longtail.recommend.arrange import MODEL_SHELF, NEW_SHELF, TAIL_SHELF, zscore
    from longtail.topk import best

    n_tail, n_new = round(shelves.tail_share * k), round(shelves.new_share * k)
    out, shelf = np.full((len(scores), k), -1), np.full((len(scores), k), -1)
    for row, s in enumerate(scores):
        items = candidates[row]
        safe = np.maximum(items, 0)
        open_ = np.isfinite(s) & (items >= 0)
        z = zscore(np.where(open_, s, -np.inf))
        picks = best(np.where(open_, s, -np.inf), k - n_tail - n_new)
        labels = [MODEL_SHELF] * len(picks)
        open_[picks] = False
        z_new = z if new_scores is None else zscore(np.where(np.isfinite(s), new_scores[row], -np.inf))
        damping = shelves.exposure_penalty * np.log1p(exposure[safe])
        if shelf_bonus is not None:
            damping = damping - shelf_bonus[safe]
        for share, mask, zz, label in (
            (n_tail, tail[safe], z, TAIL_SHELF),
            (n_new, new[safe], z_new, NEW_SHELF),
        ):
            block = best(np.where(open_ & mask, zz - damping, -np.inf), share) if share else picks[:0]
            open_[block] = False
            picks, labels = np.concatenate([picks, block]), labels + [label] * len(block)
        rest = best(np.where(open_, s, -np.inf), k - len(picks))
        picks, labels = np.concatenate([picks, rest]), labels + [MODEL_SHELF] * len(rest)
        out[row, : len(picks)], shelf[row, : len(picks)] = picks, labels
        if record:
            exposure[items[picks]] += 1
    return out, shelf


@pytest.mark.parametrize("seed", range(6))
def test_batched_shelves_equal_the_row_by_row_rule(seed):
    """Ties, padding, excluded candidates, short shelves, a shelf bonus, with and without exposure damping:
    ``arrange_labelled`` (vectorised over the batch, row by row only where damping reads earlier rows' picks)
    gives the reference's picks, shelves and exposure counts."""
    from longtail.recommend.arrange import arrange_labelled, order_for_shelves

    rng = np.random.default_rng(seed)
    for trial in range(60):
        n, b = int(rng.integers(5, 60)), int(rng.integers(1, 12))
        c, k = int(rng.integers(1, min(n, 40) + 1)), int(rng.integers(1, 25))
        candidates = np.stack([rng.permutation(n)[:c] for _ in range(b)])
        candidates[rng.random((b, c)) < 0.15] = -1
        scores = rng.integers(-3, 4, (b, c)).astype(float) if trial % 2 else rng.normal(size=(b, c))
        scores[(rng.random((b, c)) < 0.15) | (candidates < 0)] = -np.inf  # excluded; padding
        tail, new = rng.random(n) < 0.6, rng.random(n) < 0.3
        shares = rng.choice([0.0, 0.1, 0.2, 0.3, 0.4], 2)
        shelves = Shelves(float(shares[0]), float(shares[1]), float(rng.choice([0.0, 0.1, 0.5, 1.0])))
        new_scores = (
            np.where(rng.random((b, c)) < 0.5, rng.normal(size=(b, c)), -np.inf) if trial % 3 else None
        )
        bonus = rng.normal(size=n) * 0.3 if trial % 5 == 0 else None
        record = bool(trial % 4)
        exposure = rng.integers(0, 5, n).astype(float)
        expected_exposure = exposure.copy()
        prepared_exposure = exposure.copy()
        got = arrange_labelled(candidates, scores, k, tail, new, shelves, exposure, new_scores, record, bonus)
        expected = _row_by_row(
            candidates, scores, k, tail, new, shelves, expected_exposure, new_scores, record, bonus
        )
        assert got[0].tolist() == expected[0].tolist() and got[1].tolist() == expected[1].tolist()
        assert exposure.tolist() == expected_exposure.tolist()
        # a grid's shared ordering (one per batch, whatever the shelves) gives the same picks
        ordered = order_for_shelves(candidates, scores, k, new_scores)
        shared = arrange_labelled(
            candidates, scores, k, tail, new, shelves, prepared_exposure, None, record, bonus, ordered=ordered
        )
        assert shared[0].tolist() == expected[0].tolist() and shared[1].tolist() == expected[1].tolist()
        assert prepared_exposure.tolist() == expected_exposure.tolist()

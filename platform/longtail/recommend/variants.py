"""Lists of several variants of one pipeline — the same models, index and retrieval; other shelves, score
knobs or popularity terms — from one retrieve and one ranker forward per batch of users.

Each variant's lists equal what ``recommend`` gives it over the same users in the same batches (its own
shelf exposure, counted from zero over the pass). Variants that differ only in their shelves share their
re-scored candidates (the score knobs run once per batch unless exploration draws noise). Exploration
draws from the pipelines' shared generator batch by batch, so where several variants explore, their noise
differs from that of separate passes.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from longtail.data.encoded import Histories
from longtail.recommend.arrange import Shelves, arrange_labelled
from longtail.recommend.pipeline import Batch, Knobs, Pipeline, new_item_scores, rank, retrieve, score_knobs


def variant_lists(
    variants: list[Pipeline],
    histories: Histories,
    k: int,
    batch_users: int = 256,
    exposures: list[np.ndarray] | None = None,
) -> np.ndarray:
    """(v, u, k) catalog indices (-1: nothing left): each variant's top-``k`` lists for every row of
    ``histories`` (u users), ranked in batches of ``batch_users`` rows. ``exposures``: each variant's shelf
    exposure (n,), counted on in place (None: from zero)."""
    first = variants[0]
    for v in variants:
        if v.ranker is not first.ranker or v.index is not first.index or v.retrieval != first.retrieval:
            raise ValueError("variant_lists: every variant must share the first one's models and retrieval")
        if (v.knobs.alpha, v.knobs.beta) != (first.knobs.alpha, first.knobs.beta):
            raise ValueError("variant_lists: every variant must share the first one's α and β gates")
    base = first.with_knobs(
        shelves=Shelves(), popularity_penalty=0.0, trend_bonus=0.0, tail_boost=0.0, exploration=0.0
    )
    if exposures is None:
        exposures = [np.zeros(base.n_items) for _ in variants]  # each variant's own pass
    out = np.full((len(variants), histories.n_users, k), -1, dtype=np.int64)
    for start in range(0, histories.n_users, batch_users):
        rows = np.arange(start, min(start + batch_users, histories.n_users))
        batch = Batch.of(histories.rows(rows))
        candidates = retrieve(base, batch, k)
        scores, _, _ = rank(base, batch, candidates)  # (b, C) the ranker's own scores
        adjusted_by: dict[Knobs, tuple[np.ndarray, np.ndarray | None]] = {}  # score knobs → (scores, new)
        for j, variant in enumerate(variants):
            knobs = variant.knobs
            key = dataclasses.replace(knobs, shelves=Shelves())
            if key not in adjusted_by or knobs.exploration:  # exploration draws new noise every time
                adjusted_by[key] = (score_knobs(variant, candidates, scores), None)
            adjusted, new_scores = adjusted_by[key]
            if knobs.shelves.new_share > 0 and new_scores is None:
                new_scores = new_item_scores(variant, batch, candidates, adjusted)
                adjusted_by[key] = (adjusted, new_scores)
            columns, _ = arrange_labelled(
                candidates, adjusted, k, variant.tail, variant.new, knobs.shelves, exposures[j], new_scores
            )
            items = np.take_along_axis(candidates, np.maximum(columns, 0), 1)
            out[j, rows] = np.where(columns >= 0, items, -1)
    return out

"""Lists of several variants of one pipeline — the same models, index and retrieval; other shelves, score
knobs or popularity terms — from one retrieve and one ranker forward per batch of users.

Each variant's lists equal what ``recommend`` gives it over the same users in the same batches (its own
shelf exposure, counted from zero over the pass). Variants that differ only in their shelves share their
re-scored candidates (the score knobs run once per batch unless exploration draws noise). Exploration
draws from the pipelines' shared generator batch by batch, so where several variants explore, their noise
differs from that of separate passes.

A ``RankMemo`` keeps the last retrieve → rank passes (``RankedRows``), so that later grids over the same
models and histories skip them: ``longtail train`` ranks the valid users once for the chosen fit's
popularity terms, its shelves and its valid evaluation.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass

import numpy as np

from longtail.data.encoded import Histories
from longtail.recommend.arrange import Ordered, Shelves, arrange_labelled, order_for_shelves
from longtail.recommend.pipeline import (
    Batch,
    Knobs,
    Pipeline,
    new_item_scores,
    rank,
    retrieve,
    score_knobs,
    tail_affinity,
    tail_item_scores,
)


@dataclass(frozen=True)
class RankedRows:
    """One retrieve → rank pass over u histories: candidates (u, C) (-1 pads a row) and the ranker's own
    scores (u, C) (-inf for padding), before any knob."""

    candidates: np.ndarray
    scores: np.ndarray

    def rows(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(candidates, scores) of ``rows``, their all-padding columns dropped."""
        candidates = self.candidates[rows]
        width = int(np.flatnonzero((candidates >= 0).any(0)).max(initial=0)) + 1
        return candidates[:, :width], self.scores[rows, :width]


def shared_base(variants: list[Pipeline]) -> Pipeline:
    """The first variant without knobs (its models, retrieval and gates), after checking that every variant
    shares them."""
    first = variants[0]
    for v in variants:
        if v.ranker is not first.ranker or v.index is not first.index or v.retrieval != first.retrieval:
            raise ValueError("variant_lists: every variant must share the first one's models and retrieval")
        if (v.knobs.alpha, v.knobs.beta) != (first.knobs.alpha, first.knobs.beta):
            raise ValueError("variant_lists: every variant must share the first one's α and β gates")
    return first.with_knobs(
        shelves=Shelves(), popularity_penalty=0.0, trend_bonus=0.0, tail_boost=0.0, exploration=0.0
    )


def rank_rows(base: Pipeline, histories: Histories, k: int, batch_users: int = 256) -> RankedRows:
    """``base``'s candidates and scores for every row of ``histories``, ranked in batches of ``batch_users``;
    each row's real candidates first (as ``retrieve`` packs them), padded to the widest batch."""
    parts = [(np.full((0, 1), -1, np.int64), np.full((0, 1), -np.inf))]  # no rows: an empty pass
    for start in range(0, histories.n_users, batch_users):
        batch = Batch.of(histories.rows(np.arange(start, min(start + batch_users, histories.n_users))))
        candidates = retrieve(base, batch, k)
        scores, _, _ = rank(base, batch, candidates)  # (b, C) the ranker's own scores
        parts.append((candidates, scores))
    width = max(c.shape[1] for c, _ in parts)
    candidates = np.concatenate(
        [np.pad(c, ((0, 0), (0, width - c.shape[1])), constant_values=-1) for c, _ in parts]
    )
    scores = np.concatenate(
        [np.pad(s, ((0, 0), (0, width - s.shape[1])), constant_values=-np.inf) for _, s in parts]
    )
    candidates.setflags(write=False)  # shared by every later grid: read, never written
    scores.setflags(write=False)
    return RankedRows(candidates, scores)


_RANKED_BY = ("retriever", "ranker", "index", "text_vectors", "graph", "catalog")  # a pass's objects


class RankMemo:
    """The last ``capacity`` retrieve → rank passes, by models, retrieval, gates and histories: a later grid
    over the same ones reads them instead of ranking again (the same candidates and scores). An entry holds
    its models, so it is found by identity (never by an ``id`` a freed model left behind)."""

    def __init__(self, capacity: int = 2) -> None:
        if capacity < 1:
            raise ValueError(f"RankMemo keeps at least one pass, got capacity {capacity}")
        self.capacity = capacity
        self._passes: list[tuple[Pipeline, tuple, RankedRows]] = []  # (base, what else it ranked, pass)

    @staticmethod
    def _inputs(base: Pipeline, histories: Histories, k: int) -> tuple:
        digest = hashlib.sha1(histories.indptr.tobytes())
        digest.update(histories.items.tobytes())
        if histories.strengths is not None:
            digest.update(histories.strengths.tobytes())
        gates = (base.knobs.alpha, base.knobs.beta)
        return base.retrieval.model_dump_json(), base.history_strengths, gates, k, digest.hexdigest()

    def find(self, base: Pipeline, histories: Histories, k: int) -> RankedRows | None:
        """The kept pass of these models and histories, or None."""
        inputs = self._inputs(base, histories, k)
        for kept, kept_inputs, ranked in self._passes:
            if kept_inputs == inputs and all(getattr(kept, f) is getattr(base, f) for f in _RANKED_BY):
                return ranked
        return None

    def ranked(self, base: Pipeline, histories: Histories, k: int, batch_users: int = 256) -> RankedRows:
        """The kept pass, or a new one (kept; the oldest is dropped beyond ``capacity``)."""
        found = self.find(base, histories, k)
        if found is not None:
            return found
        ranked = rank_rows(base, histories, k, batch_users)
        self._passes = [*self._passes, (base, self._inputs(base, histories, k), ranked)][-self.capacity :]
        return ranked

    def clear(self) -> None:
        """Drop every kept pass (and the models they hold)."""
        self._passes = []


def variant_lists(
    variants: list[Pipeline],
    histories: Histories,
    k: int,
    batch_users: int = 256,
    exposures: list[np.ndarray] | None = None,
    ranked: RankedRows | None = None,
) -> np.ndarray:
    """(v, u, k) catalog indices (-1: nothing left): each variant's top-``k`` lists for every row of
    ``histories`` (u users), ranked in batches of ``batch_users`` rows. ``exposures``: each variant's shelf
    exposure (n,), counted on in place (None: from zero). ``ranked``: the rows' retrieve → rank pass
    already made (``rank_rows`` of the same models and histories), None: ranked here."""
    base = shared_base(variants)
    if exposures is None:
        exposures = [np.zeros(base.n_items) for _ in variants]  # each variant's own pass
    out = np.full((len(variants), histories.n_users, k), -1, dtype=np.int64)
    for start in range(0, histories.n_users, batch_users):
        rows = np.arange(start, min(start + batch_users, histories.n_users))
        batch = Batch.of(histories.rows(rows))
        if ranked is None:
            candidates = retrieve(base, batch, k)
            scores, _, _ = rank(base, batch, candidates)  # (b, C) the ranker's own scores
        else:
            candidates, scores = ranked.rows(rows)
        adjusted_by: dict[Knobs, tuple[np.ndarray, np.ndarray | None]] = {}  # score knobs → (scores, new)
        tail_by: dict[tuple[Knobs, float], np.ndarray] = {}  # (score knobs, tail_knn) → tail shelf order
        affinity: np.ndarray | None = None  # the batch's item-kNN affinity, made on first need
        ordered_by: dict[tuple[Knobs, float, bool], Ordered] = {}  # what every shelf setting reads
        for j, variant in enumerate(variants):
            knobs = variant.knobs
            key = dataclasses.replace(knobs, shelves=Shelves())
            if key not in adjusted_by or knobs.exploration:  # exploration draws new noise every time
                adjusted_by[key] = (score_knobs(variant, candidates, scores), None)
            adjusted, new_scores = adjusted_by[key]
            if knobs.shelves.new_share > 0 and new_scores is None:
                new_scores = new_item_scores(variant, batch, candidates, adjusted)
                adjusted_by[key] = (adjusted, new_scores)
            tail_scores = None
            shelves = knobs.shelves
            if shelves.tail_share > 0 and shelves.tail_knn > 0 and variant.neighbours is not None:
                if (key, shelves.tail_knn) not in tail_by:
                    affinity = tail_affinity(base, batch, candidates) if affinity is None else affinity
                    tail_by[key, shelves.tail_knn] = tail_item_scores(variant, candidates, adjusted, affinity)
                tail_scores = tail_by[key, shelves.tail_knn]
            ordered = None
            if shelves.active:
                by = (key, shelves.tail_knn if tail_scores is not None else 0.0, new_scores is not None)
                if by not in ordered_by or knobs.exploration:
                    ordered_by[by] = order_for_shelves(candidates, adjusted, k, new_scores, tail_scores)
                ordered = ordered_by[by]
            columns, _ = arrange_labelled(
                candidates,
                adjusted,
                k,
                variant.tail,
                variant.new,
                shelves,
                exposures[j],
                new_scores,
                tail_scores=tail_scores,
                ordered=ordered,
            )
            items = np.take_along_axis(candidates, np.maximum(columns, 0), 1)
            out[j, rows] = np.where(columns >= 0, items, -1)
    return out

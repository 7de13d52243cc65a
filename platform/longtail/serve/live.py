"""What a ranker replica computes, without Ray: the bundle's two-stage pipeline over a catalog that grows
with items added at run time, users' histories (the bundle's plus stored events), and the lists.

Known users go through ``longtail.recommend.pipeline.recommend`` — the same retrieve → rank → arrange as
``longtail eval`` — with this replica's knobs; the shelves' exposure counts are the lists this replica
served in its coverage window; seen items are excluded on request. A user with no usable history
(unknown, or erased with no new events) gets a cold-start list: the most popular items, with a share of
the slots given to randomly drawn tail items, so new users also see the tail.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from dataclasses import dataclass, field

import numpy as np
from scipy import sparse

from longtail.bundle import Bundle
from longtail.config import RetrievalConfig
from longtail.data.encoded import Histories, table_strengths
from longtail.data.events import event_strengths
from longtail.model.explain import explain
from longtail.model.graph import topk_rows
from longtail.recommend.arrange import SHELF_NAMES, Shelves
from longtail.recommend.build import load_pipeline, popularity_penalty_of, trend_bonus_of
from longtail.recommend.pipeline import Batch, Knobs, Pipeline, grow, popularity_terms, recommend
from longtail.serve.knobs import PER_DEPLOY, ListKnobs, arm_of
from longtail.store import StoredItem
from longtail.topk import best


@dataclass
class Query:
    """One /recommend request, once the user's history is known (catalog indices, oldest first)."""

    user_id: str
    history: list[int]
    k: int
    exclude_seen: bool = True
    tail_boost: float | None = None  # None: the knob's value
    explain: bool = False
    strengths: list[float] | None = None  # event strength of each history item; None: all 1
    arm: str = "default"  # the user's A/B arm (``LivePipeline.arm_for``)


@dataclass
class Ranked:
    user_id: str
    strategy: str  # "hybrid" or "cold_start"
    items: list[dict] = field(
        default_factory=list
    )  # item_id, score, tail, bucket, shelf, [reason], [explanation]
    arm: str = "default"


@dataclass(frozen=True)
class ArmState:
    """One A/B arm as a replica applies it: its share, the knobs it ranks with, and the run-time knobs."""

    share: float
    knobs: Knobs
    retrieval: RetrievalConfig  # with the arm's candidates
    settings: ListKnobs
    described: dict = field(default_factory=dict)  # the arm's list knobs that are set (impressions record it)


PRIOR_SHOWINGS = 50.0  # strength of the feedback-driven shelves' prior (pseudo-showings at the overall rate)


class LivePipeline:
    """The bundle's pipeline over a catalog that can grow while serving."""

    def __init__(self, bundle: Bundle, seed: int = 0) -> None:
        self.version = bundle.version
        self.item_ids: list[str] = [str(i) for i in bundle.item_ids]
        self.index = {item: i for i, item in enumerate(self.item_ids)}
        self.pipeline = load_pipeline(bundle)
        self.text_k = bundle.config.graph.text_k or 20
        self.trained = (self.pipeline.knobs, self.pipeline.retrieval)  # what a knob of None restores
        self.ranker_config = (
            bundle.config.ranker
        )  # τ and the popularity adjustment γ and trend boost δ chosen on valid
        self._index_popularity()
        self.events = bundle.config.events
        self.histories, self.history_strengths = _bundle_histories(bundle, self.index)
        self.rng = np.random.default_rng(seed)
        self.configure(ListKnobs())
        self.last_item_seq = 0
        self._window: deque[list[int]] = deque()
        self.exposure = np.zeros(self.n_items, dtype=np.float64)  # (n,) showings in the window
        self.shown = np.zeros(self.n_items)  # (n,) shelf showings the feedback-driven shelves learn from
        self.engaged = np.zeros(self.n_items)  # (n,) of which attributed to an event
        self.activity = np.zeros(self.n_items)  # (n,) stored events per item in the feedback window

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def counts(self) -> np.ndarray:
        return self.pipeline.train_counts

    @property
    def vectors(self) -> np.ndarray:
        return self.pipeline.text_vectors

    def _index_popularity(self) -> None:
        """Catalog order by train count (cold start reads it per request) and the tail items."""
        self.popular_order = np.argsort(-self.counts, kind="stable")  # (n,)
        self.tail_items = np.flatnonzero(self.pipeline.tail)  # (n_tail,)

    def configure(self, knobs: ListKnobs) -> None:
        """Apply run-time knobs and arms; every knob of None is the bundle's (as trained and selected on
        valid)."""
        self.knobs = knobs
        self.arms = {name: self._arm(share, arm) for name, (share, arm) in knobs.arm_knobs().items()}
        first = next(iter(self.arms.values()))
        self.pipeline = dataclasses.replace(
            self.pipeline, knobs=first.knobs, retrieval=first.retrieval, rng=self.rng
        )

    def _arm(self, share: float, knobs: ListKnobs) -> ArmState:
        trained, retrieval = self.trained
        shelves = trained.shelves
        tail = shelves.tail_share if knobs.tail_share is None else knobs.tail_share
        live = Knobs(
            shelves=Shelves(
                tail,
                min(shelves.new_share if knobs.new_share is None else knobs.new_share, 1.0 - tail),
                shelves.exposure_penalty if knobs.exposure_penalty is None else knobs.exposure_penalty,
                shelves.tail_knn if knobs.tail_knn is None else knobs.tail_knn,
            ),
            tail_boost=trained.tail_boost if knobs.tail_boost is None else knobs.tail_boost,
            exploration=trained.exploration if knobs.exploration is None else knobs.exploration,
            popularity_penalty=popularity_penalty_of(self.ranker_config, knobs.popularity_adjustment),
            trend_bonus=trend_bonus_of(self.ranker_config, knobs.trend_boost),
            alpha=knobs.alpha,
            beta=knobs.beta,
        )
        candidates = (
            retrieval.candidates
            if knobs.candidates is None
            else None
            if knobs.candidates == "exact"
            else int(knobs.candidates)
        )
        described = knobs.model_dump(exclude_none=True, exclude=set(PER_DEPLOY))
        return ArmState(
            share, live, retrieval.model_copy(update={"candidates": candidates}), knobs, described
        )

    def arm_for(self, user_id: str) -> str:
        """The user's arm under the current knobs (``longtail.serve.knobs.arm_of``)."""
        if len(self.arms) == 1:
            return next(iter(self.arms))
        return arm_of(user_id, self.knobs.experiment, [(n, a.share) for n, a in self.arms.items()])

    def arm_state(self, arm: str) -> ArmState:
        """An arm's state; the first arm for a name the current knobs no longer hold (a reconfigure between a
        request's arm and its pass)."""
        return self.arms.get(arm) or next(iter(self.arms.values()))

    def arm_pipeline(self, arm: str) -> Pipeline:
        """The pipeline as ``arm`` ranks: the current models and catalog with the arm's knobs."""
        state = self.arm_state(arm)
        return dataclasses.replace(self.pipeline, knobs=state.knobs, retrieval=state.retrieval)

    def set_engagement(self, engagement: dict[str, tuple[int, int]]) -> None:
        """Per item (shelf showings, engaged showings), as ``Store.engagement`` reads them."""
        self.shown[:], self.engaged[:] = 0.0, 0.0
        for item, (shown, engaged) in engagement.items():
            i = self.index.get(item)
            if i is not None:
                self.shown[i], self.engaged[i] = shown, min(engaged, shown)

    def set_activity(self, activity: dict[str, int]) -> None:
        """Per item, stored events in the window, as ``Store.item_activity`` reads them."""
        self.activity[:] = 0.0
        for item, n in activity.items():
            i = self.index.get(item)
            if i is not None:
                self.activity[i] = n

    @property
    def learns_from_feedback(self) -> bool:
        return any(a.settings.shelf_feedback > 0 or a.settings.shelf_trend > 0 for a in self.arms.values())

    def shelf_lift(self, settings: ListKnobs) -> np.ndarray | None:
        """(n,) what the reserved shelves add to each item's score under an arm's knobs: the engagement lift
        (``shelf_bonus``) and the live trend; None when both are off."""
        lift = self.shelf_bonus(settings.shelf_feedback)
        if settings.shelf_trend > 0:
            trend = settings.shelf_trend * np.log1p(self.activity)
            lift = trend if lift is None else lift + trend
        return lift

    def shelf_bonus(self, weight: float) -> np.ndarray | None:
        """(n,) the feedback-driven shelves' lift: weight · log((engaged + m·P) / (m·(shown + P))), the log of
        an item's engagement rate on the shelves (its posterior mean, shrunk towards the shelves' overall rate
        m by P = ``PRIOR_SHOWINGS`` pseudo-showings) over m. An item never shown gets 0; one users engage with
        more than the others rises; one shown often and ignored sinks below the never-shown ones, which then
        take its slots. None when ``weight`` is 0. (Thompson sampling from the Beta posterior lost to this on
        the valid replay, ``benchmarks/online_sim.py``: its draws for rarely shown items are noise on the
        shelf order.)"""
        if weight <= 0.0:
            return None
        rate = float(np.clip((self.engaged.sum() + 1.0) / (self.shown.sum() + 100.0), 1e-4, 0.5))
        return weight * np.log(
            (self.engaged + rate * PRIOR_SHOWINGS) / (rate * (self.shown + PRIOR_SHOWINGS))
        )

    @property
    def shelves(self) -> Shelves:
        return self.pipeline.shelves

    # ---- catalog growth -------------------------------------------------------------------------
    def add_items(self, items: list[StoredItem]) -> int:
        """Make stored items recommendable: text vectors, graph edges to their text neighbours, both models'
        rows and the retriever index's entries."""
        fresh = [it for it in items if it.item_id not in self.index]
        if items:
            self.last_item_seq = max(self.last_item_seq, max(it.seq for it in items))
        if not fresh:
            return 0
        p, n, m = self.pipeline, self.n_items, len(fresh)
        new_vectors = np.stack([it.vector for it in fresh]).astype(np.float32)  # (m, d)
        if new_vectors.shape[1] != p.text_vectors.shape[1]:
            raise ValueError(
                f"new item vectors have {new_vectors.shape[1]} dims, the catalog {p.text_vectors.shape[1]}"
            )
        self.pipeline = grow(
            p, new_vectors, _grow_graph(p.graph, np.vstack([p.text_vectors, new_vectors]), n, self.text_k)
        )
        self.exposure = np.concatenate([self.exposure, np.zeros(m)])
        self.shown, self.engaged = np.r_[self.shown, np.zeros(m)], np.r_[self.engaged, np.zeros(m)]
        self.activity = np.r_[self.activity, np.zeros(m)]
        self._index_popularity()
        for offset, it in enumerate(fresh):
            self.item_ids.append(it.item_id)
            self.index[it.item_id] = n + offset
        return m

    # ---- histories ------------------------------------------------------------------------------
    def history(self, user_id: str, erased: bool, stored_items: list[str]) -> tuple[list[int], bool]:
        """(catalog indices oldest first, whether anything is known of the user)."""
        items, _, known = self.weighted_history(user_id, erased, stored_items)
        return items, known

    def weighted_history(
        self,
        user_id: str,
        erased: bool,
        stored_items: list[str],
        types: list[str] | None = None,
        weights: list[float | None] | None = None,
    ) -> tuple[list[int], list[float], bool]:
        """(catalog indices oldest first, each one's event strength, whether anything is known of the user):
        the bundle's history, then the stored events (``types``/``weights`` give their strengths)."""
        base = [] if erased else list(self.histories.get(user_id, ()))
        base_s = [] if erased or not base else list(self.history_strengths.get(user_id, np.ones(len(base))))
        types = types if types is not None else [""] * len(stored_items)
        weights = weights if weights is not None else [None] * len(stored_items)
        keep = [j for j, i in enumerate(stored_items) if i in self.index]
        extra = [self.index[stored_items[j]] for j in keep]
        extra_s = event_strengths([types[j] for j in keep], [weights[j] for j in keep], self.events).tolist()
        known = (not erased and user_id in self.histories) or bool(extra)
        return base + extra, [float(v) for v in base_s] + extra_s, known

    # ---- ranking --------------------------------------------------------------------------------
    def recommend(self, queries: list[Query]) -> list[Ranked]:
        """Ranked lists for a batch of queries: one pipeline pass per distinct (arm, tail boost)."""
        results: dict[int, Ranked] = {}
        warm = [q for q in queries if q.history]
        groups = sorted(
            {(q.arm, q.tail_boost) for q in warm}, key=lambda g: (g[0], -1.0 if g[1] is None else g[1])
        )
        for arm, boost in groups:
            group = [q for q in warm if q.arm == arm and q.tail_boost == boost]
            for q, ranked in zip(group, self._rank(group, boost), strict=True):
                results[id(q)] = ranked
        ranked_lists = [results.get(id(q)) or self.cold_start(q) for q in queries]
        for r in ranked_lists:
            self._observe([self.index[i["item_id"]] for i in r.items])
        return ranked_lists

    def _rank(self, queries: list[Query], boost: float | None) -> list[Ranked]:
        arm = queries[0].arm
        pipeline = self.arm_pipeline(arm)
        lengths = [len(q.history) for q in queries]
        strengths = None
        if any(q.strengths is not None for q in queries):
            strengths = np.asarray(
                [s for q in queries for s in (q.strengths or [1.0] * len(q.history))], np.float32
            )
            strengths = None if np.all(strengths == 1.0) else strengths
        histories = Histories(
            np.r_[0, np.cumsum(lengths)].astype(np.int64),
            np.asarray([i for q in queries for i in q.history], dtype=np.int64),
            strengths,
        )
        batch = Batch(histories, np.asarray([q.exclude_seen for q in queries]))
        k = max(q.k for q in queries)
        bonus = self.shelf_lift(self.arm_state(arm).settings)
        lists = recommend(pipeline, batch, k, self.exposure, record=False, boost=boost, shelf_bonus=bonus)
        notes = None
        if any(q.explain for q in queries):
            notes = explain(
                lists.ranked,
                lists.recent,
                lists.columns,
                np.asarray(self.item_ids, dtype=object),
                popularity=popularity_terms(pipeline, lists.candidates),
            )
        assert lists.shelves is not None
        out = []
        for row, q in enumerate(queries):
            keep = lists.items[row] >= 0
            picks, values = lists.items[row][keep][: q.k], lists.scores[row][keep][: q.k]
            shelves = [SHELF_NAMES[s] for s in lists.shelves[row][keep][: q.k].tolist()]
            ranked = Ranked(q.user_id, "hybrid", self._items(picks, values, shelves), arm)
            if q.explain and notes is not None:
                for item, reason in zip(ranked.items, notes[row], strict=False):
                    item["explanation"] = reason
            out.append(ranked)
        return out

    def cold_start(self, q: Query) -> Ranked:
        """Popular items plus a ``cold_start_tail_share`` of random tail items on evenly spread slots."""
        seen = set(q.history) if q.exclude_seen else set()
        popular = (int(i) for i in self.popular_order if int(i) not in seen)  # lazy: stops after k
        share = self.arm_state(q.arm).settings.cold_start_tail_share
        want = min(len(self.tail_items), round(q.k * share))
        draw: np.ndarray | list[int] = (
            self.rng.choice(self.tail_items, min(len(self.tail_items), want + len(seen)), replace=False)
            if want
            else []
        )
        explore_iter = iter([int(i) for i in draw if int(i) not in seen][:want])
        slots = {int(q.k / max(want, 1) * (j + 0.5)) for j in range(want)}
        picks: list[int] = []
        reasons: list[str] = []
        for pos in range(q.k):
            sources = [(explore_iter, "explore"), (popular, "popular")]
            for source, reason in sources if pos in slots else sources[::-1]:
                item = next((i for i in source if i not in picks), None)
                if item is not None:
                    picks.append(item)
                    reasons.append(reason)
                    break
            else:
                break  # both sources exhausted
        items = self._items(
            np.asarray(picks, dtype=np.int64), -np.arange(len(picks), dtype=np.float64), reasons
        )
        for entry, reason in zip(items, reasons, strict=True):
            entry["reason"] = reason
        return Ranked(q.user_id, "cold_start", items, q.arm)

    def _items(self, picks: np.ndarray, values: np.ndarray, shelves: list[str] | None = None) -> list[dict]:
        """Response items; ``shelves``: what filled each slot (model, tail, new; popular, explore for a new
        user), None for lists that are not a user's (neighbours, text search)."""
        tail, new = self.pipeline.tail, self.pipeline.new
        out = [
            {
                "item_id": self.item_ids[i],
                "score": float(v),
                "tail": bool(tail[i]),
                "bucket": "new" if new[i] else "tail" if tail[i] else "head",
            }
            for i, v in zip(picks.tolist(), values.tolist(), strict=True)
        ]
        for item, shelf in zip(out, shelves or [], strict=False):
            item["shelf"] = shelf
        return out

    def _observe(self, picks: list[int]) -> None:
        self._window.append(picks)
        np.add.at(self.exposure, picks, 1.0)
        while len(self._window) > self.knobs.coverage_window:
            np.subtract.at(self.exposure, self._window.popleft(), 1.0)

    @property
    def coverage(self) -> float:
        """Share of the catalog that appeared in the last ``coverage_window`` served lists."""
        return int(np.count_nonzero(self.exposure)) / max(self.n_items, 1)

    # ---- neighbours and text search ---------------------------------------------------------------
    def similar(self, item_id: str, k: int) -> list[dict]:
        """Graph neighbours by edge weight, then text neighbours by cosine, without the item itself."""
        i = self.index[item_id]
        row = self.pipeline.graph.getrow(i)
        row.sort_indices()
        order = row.indices[best(row.data, k)].tolist()
        if len(order) < k:
            sims = self.vectors @ self.vectors[i]  # (n,)
            sims[[i, *order]] = -np.inf  # not the item, nor its graph neighbours again
            order += best(sims, k - len(order)).tolist()
        weights = self.vectors[order] @ self.vectors[i]
        return self._items(np.asarray(order, dtype=np.int64), weights.astype(np.float64))

    def search(self, vector: np.ndarray, k: int) -> list[dict]:
        """Items whose text vectors are closest (cosine) to a query vector."""
        sims = self.vectors @ np.asarray(vector, dtype=np.float32)
        top = best(sims, k)
        return self._items(top, sims[top].astype(np.float64))


def _bundle_histories(
    bundle: Bundle, index: dict[str, int]
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(user id → catalog indices of the bundle's interactions, oldest first; user id → their strengths)."""
    table = bundle.histories
    users = np.asarray(table.column("user_id").to_pylist(), dtype=object)
    items = np.fromiter(
        (index[str(i)] for i in table.column("item_id").to_pylist()), np.int64, table.num_rows
    )
    times = table.column("timestamp").to_numpy().astype(np.float64)
    strengths = table_strengths(table, bundle.config.events)  # (rows,) 1 where the columns are absent
    order = np.lexsort((np.arange(len(users)), times, users.astype(str)))
    users, items, strengths = users[order], items[order], strengths[order]
    cuts = np.flatnonzero(users[1:] != users[:-1]) + 1
    groups = zip(np.split(users, cuts), np.split(items, cuts), np.split(strengths, cuts), strict=True)
    by_user = [(str(u[0]), it, st) for u, it, st in groups if len(u)]
    return {u: it for u, it, _ in by_user}, {u: st for u, _, st in by_user}


def _grow_graph(graph: sparse.csr_matrix, vectors: np.ndarray, n_old: int, k: int) -> sparse.csr_matrix:
    """Add rows/columns for items n_old.. : edges to their k nearest items by text, both ways, rows
    re-normalised."""
    n = len(vectors)
    rows, cols, vals = topk_rows(vectors[n_old:] @ vectors.T, k + 1, n_old)  # (m, n) similarities
    keep = rows != cols
    rows, cols, vals = rows[keep], cols[keep], np.clip(vals[keep], 1e-6, None)
    grown = sparse.csr_matrix((graph.data, graph.indices, graph.indptr), shape=(n_old, n_old))
    grown.resize((n, n))
    new = sparse.csr_matrix((vals, (rows, cols)), shape=(n, n))
    total = sparse.csr_matrix(grown + new.maximum(new.T))
    row_sum = np.asarray(total.sum(1)).ravel()
    return sparse.csr_matrix(sparse.diags(1.0 / np.maximum(row_sum, 1e-12)) @ total).astype(np.float32)

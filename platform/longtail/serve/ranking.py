"""What a ranker replica computes, without Ray: the bundle's catalog, grown by items added at run time,
users' histories (the bundle's plus stored events), and retrieve → rank → re-rank for a batch of users.

Known users are scored by the hybrid ranker over the whole catalog, then re-ranked (tail boost,
exploration and shelves, ``longtail.model.rerank``; the shelves' exposure counts are the lists this
replica served in its coverage window); seen items are excluded on request. A user with no usable history
(unknown, or erased with no new events) gets a cold-start list: the most popular items, with a share of
the slots given to randomly drawn tail items, so new users also see the tail.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy import sparse

from longtail.bundle import Bundle, load_ranker
from longtail.data.splits import popularity_buckets
from longtail.model.explain import explain
from longtail.model.factory import graph_tensor
from longtail.model.graph import topk_rows
from longtail.model.hybrid import HybridOutput, HybridRanker, extend_catalog
from longtail.model.rerank import Shelves, arrange, explore, tail_boost
from longtail.model.text_profile import profile_scores
from longtail.serve.knobs import RankerKnobs
from longtail.serve.store import StoredItem


@dataclass
class Query:
    """One /recommend request, once the user's history is known (catalog indices, oldest first)."""

    user_id: str
    history: list[int]
    k: int
    exclude_seen: bool = True
    tail_boost: float | None = None  # None: the knob's value
    explain: bool = False
    known_user: bool = True


@dataclass
class Ranked:
    user_id: str
    strategy: str  # "hybrid" or "cold_start"
    items: list[dict] = field(default_factory=list)  # item_id, score, tail, [reason], [explanation]


class ServingRanker:
    """The bundle's ranker over a catalog that can grow while serving."""

    def __init__(self, bundle: Bundle, seed: int = 0) -> None:
        self.version = bundle.manifest["version"]
        self.item_ids: list[str] = [str(i) for i in bundle.item_ids]
        self.index = {item: i for i, item in enumerate(self.item_ids)}
        self.counts = np.asarray(bundle.train_counts, dtype=np.int64)
        self.vectors = np.asarray(bundle.vectors, dtype=np.float32)
        self.graph = sparse.csr_matrix(bundle.graph, dtype=np.float32)
        self.head = popularity_buckets(self.counts)["head"]
        self._index_popularity()
        self.text_k = int(bundle.manifest["config"].get("graph", {}).get("text_k", 20)) or 20
        self.model: HybridRanker = load_ranker(bundle)
        self.trained_alpha, self.trained_beta = self.model.alpha.fixed, self.model.beta.fixed
        rerank = bundle.manifest["config"].get("rerank", {})
        self.trained_shelves = Shelves(rerank.get("tail_share", 0.0), rerank.get("new_share", 0.0),
                                       rerank.get("exposure_penalty", 0.0))  # fmt: skip
        self.histories = _bundle_histories(bundle, self.index)
        self.configure(RankerKnobs())
        self.rng = np.random.default_rng(seed)
        self.last_item_seq = 0
        self._window: deque[list[int]] = deque()
        self.exposure = np.zeros(self.n_items, dtype=np.float64)  # (n,) showings in the window

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def _index_popularity(self) -> None:
        """Catalog order by train count (cold start reads it per request) and the tail items."""
        self.popular_order = np.argsort(-self.counts, kind="stable")  # (n,)
        self.tail_items = np.flatnonzero(~self.head)  # (n_tail,)

    def configure(self, knobs: RankerKnobs) -> None:
        """Apply run-time knobs; α/β/shelves of None restore the bundle's."""
        self.knobs = knobs
        trained = self.trained_shelves
        tail = trained.tail_share if knobs.tail_share is None else knobs.tail_share
        self.shelves = Shelves(
            tail,
            min(trained.new_share if knobs.new_share is None else knobs.new_share, 1.0 - tail),
            trained.exposure_penalty if knobs.exposure_penalty is None else knobs.exposure_penalty,
        )
        self.model.alpha.fixed = self.trained_alpha if knobs.alpha is None else knobs.alpha
        self.model.beta.fixed = self.trained_beta if knobs.beta is None else knobs.beta

    # ---- catalog growth -------------------------------------------------------------------------
    def add_items(self, items: list[StoredItem]) -> int:
        """Make stored items recommendable: text vectors, graph edges to their text neighbours, ranker rows."""
        fresh = [it for it in items if it.item_id not in self.index]
        if items:
            self.last_item_seq = max(self.last_item_seq, max(it.seq for it in items))
        if not fresh:
            return 0
        n, m = self.n_items, len(fresh)
        new_vectors = np.stack([it.vector for it in fresh]).astype(np.float32)  # (m, d)
        if new_vectors.shape[1] != self.vectors.shape[1]:
            raise ValueError(f"new item vectors have {new_vectors.shape[1]} dims, the catalog {self.vectors.shape[1]}")
        vectors = np.vstack([self.vectors, new_vectors])
        self.graph = _grow_graph(self.graph, vectors, n, self.text_k)
        self.model = extend_catalog(self.model, torch.from_numpy(new_vectors), graph_tensor(self.graph))
        self.configure(self.knobs)
        self.vectors = vectors
        self.counts = np.concatenate([self.counts, np.zeros(m, np.int64)])
        self.exposure = np.concatenate([self.exposure, np.zeros(m)])
        self.head = np.concatenate([self.head, np.zeros(m, bool)])
        self._index_popularity()
        for offset, it in enumerate(fresh):
            self.item_ids.append(it.item_id)
            self.index[it.item_id] = n + offset
        return m

    # ---- histories ------------------------------------------------------------------------------
    def history(self, user_id: str, erased: bool, stored_items: list[str]) -> tuple[list[int], bool]:
        """(catalog indices oldest first, whether anything is known of the user)."""
        base = [] if erased else list(self.histories.get(user_id, ()))
        extra = [self.index[i] for i in stored_items if i in self.index]
        known = (not erased and user_id in self.histories) or bool(extra)
        return base + extra, known

    # ---- ranking --------------------------------------------------------------------------------
    @torch.no_grad()
    def recommend(self, queries: list[Query]) -> list[Ranked]:
        """Ranked lists for a batch of queries (one forward pass for all users with a history)."""
        warm = [q for q in queries if q.history]
        results: dict[int, Ranked] = {}
        if warm:
            length = self.model.max_history
            history = np.full((len(warm), length), self.n_items, dtype=np.int64)  # (b, L), padded
            for row, q in enumerate(warm):
                recent = q.history[-length:]
                history[row, : len(recent)] = recent
            out = self.model(torch.from_numpy(history))
            scores = out.score.numpy().astype(np.float64)  # (b, n)
            for row, q in enumerate(warm):
                picks, values = self._rank_row(scores[row], q)
                ranked = Ranked(q.user_id, "hybrid", self._items(picks, values))
                if q.explain and len(picks):
                    reasons = explain(_row(out, row), history[row : row + 1], picks[None, :], np.asarray(self.item_ids))
                    for item, reason in zip(ranked.items, reasons[0], strict=True):
                        item["explanation"] = reason
                results[id(q)] = ranked
        for q in queries:
            if id(q) not in results:
                results[id(q)] = self.cold_start(q)
        ranked_lists = [results[id(q)] for q in queries]
        for r in ranked_lists:
            self._observe([self.index[i["item_id"]] for i in r.items])
        return ranked_lists

    def _rank_row(self, scores: np.ndarray, q: Query) -> tuple[np.ndarray, np.ndarray]:
        boost = self.knobs.tail_boost if q.tail_boost is None else q.tail_boost
        s = tail_boost(scores[None, :], self.counts, boost)
        s = explore(s, ~self.head, self.knobs.exploration, self.rng)[0]
        if q.exclude_seen:
            s[np.asarray(q.history, dtype=np.int64)] = -np.inf
        k = min(q.k, int(np.isfinite(s).sum()))
        if k <= 0:
            return np.zeros(0, np.int64), np.zeros(0)
        new_scores = None
        if self.shelves.new_share > 0:  # the new-item shelf is ordered by the text profile
            new_scores = profile_scores(self.vectors, np.asarray(q.history, dtype=np.int64))[None, :]
        # without shelves this is the plain top k (ties to the lower index); the exposure is a copy because
        # _observe counts what is finally served
        top = arrange(s[None, :], k, ~self.head, self.counts == 0, self.shelves, self.exposure.copy(), new_scores)[0]
        return top, s[top]

    def cold_start(self, q: Query) -> Ranked:
        """Popular items plus a ``cold_start_tail_share`` of random tail items on evenly spread slots."""
        seen = set(q.history) if q.exclude_seen else set()
        popular = (int(i) for i in self.popular_order if int(i) not in seen)  # lazy: stops after k
        want = min(len(self.tail_items), round(q.k * self.knobs.cold_start_tail_share))
        draw = self.rng.choice(self.tail_items, min(len(self.tail_items), want + len(seen)), replace=False) if want else []
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
        items = self._items(np.asarray(picks, dtype=np.int64), -np.arange(len(picks), dtype=np.float64))
        for item, reason in zip(items, reasons, strict=True):
            item["reason"] = reason
        return Ranked(q.user_id, "cold_start", items)

    def _items(self, picks: np.ndarray, values: np.ndarray) -> list[dict]:
        return [
            {"item_id": self.item_ids[i], "score": float(v), "tail": bool(not self.head[i])}
            for i, v in zip(picks.tolist(), values.tolist(), strict=True)
        ]

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
        row = self.graph.getrow(i)
        order = row.indices[np.argsort(-row.data, kind="stable")].tolist()
        if len(order) < k:
            sims = self.vectors @ self.vectors[i]
            order += [int(j) for j in np.argsort(-sims, kind="stable") if j != i and j not in order][: k - len(order)]
        order = order[:k]
        weights = self.vectors[order] @ self.vectors[i]
        return [{"item_id": self.item_ids[j], "score": float(w), "tail": bool(not self.head[j])}
                for j, w in zip(order, weights.tolist(), strict=True)]  # fmt: skip

    def search(self, vector: np.ndarray, k: int) -> list[dict]:
        """Items whose text vectors are closest (cosine) to a query vector."""
        sims = self.vectors @ np.asarray(vector, dtype=np.float32)
        k = min(k, self.n_items)
        top = np.argpartition(-sims, k - 1)[:k]
        top = top[np.lexsort((top, -sims[top]))]
        return self._items(top, sims[top].astype(np.float64))


def _bundle_histories(bundle: Bundle, index: dict[str, int]) -> dict[str, np.ndarray]:
    """user id → catalog indices of the bundle's interactions, oldest first."""
    table = bundle.histories
    users = np.asarray(table.column("user_id").to_pylist(), dtype=object)
    items = np.fromiter((index[str(i)] for i in table.column("item_id").to_pylist()), np.int64, table.num_rows)
    times = table.column("timestamp").to_numpy().astype(np.float64)
    order = np.lexsort((np.arange(len(users)), times, users.astype(str)))
    users, items = users[order], items[order]
    cuts = np.flatnonzero(users[1:] != users[:-1]) + 1
    return {str(u[0]): it for u, it in zip(np.split(users, cuts), np.split(items, cuts), strict=True) if len(u)}


def _grow_graph(graph: sparse.csr_matrix, vectors: np.ndarray, n_old: int, k: int) -> sparse.csr_matrix:
    """Add rows/columns for items n_old.. : edges to their k nearest items by text, both ways, rows re-normalised."""
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


def _row(out: HybridOutput, row: int) -> HybridOutput:
    """One user's slice of a batch's output."""
    keep = slice(row, row + 1)
    return HybridOutput(out.score[keep], out.text[keep], out.assoc[keep], out.cf[keep], out.alpha, out.beta,
                        out.text_attention[keep], out.cf_attention[keep])  # fmt: skip

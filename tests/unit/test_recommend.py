"""retrieve → rank → arrange: the MIPS index, the candidate channels, and the pipeline against exact
ranking."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy import sparse

from longtail.bundle import read_bundle
from longtail.data.encoded import Histories
from longtail.eval.evaluate import evaluate
from longtail.recommend.arrange import Shelves
from longtail.recommend.build import exact, load_pipeline, own_lists
from longtail.recommend.channels import graph_neighbours, merge
from longtail.recommend.index import ItemIndex
from longtail.recommend.pipeline import Batch, Catalog, channels, rank, recommend, retrieve
from longtail.recommend.recommender import PipelineRecommender
from tests.conftest import clustered_split


def histories(rows: list[list[int]]) -> Histories:
    return Histories(
        np.r_[0, np.cumsum([len(r) for r in rows])].astype(np.int64),
        np.asarray([i for r in rows for i in r], dtype=np.int64),
    )


@pytest.fixture(scope="module")
def vectors() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(3000, 16)).astype(np.float32)


@pytest.mark.parametrize("kind", ["exact", "ivf", "hnsw"])
def test_index_kinds_find_the_best_items_and_honour_exclusions(vectors, kind):
    index = ItemIndex.build(vectors, kind, nprobe=64)
    queries = np.random.default_rng(1).normal(size=(20, 16)).astype(np.float32)
    truth = np.argsort(-(queries @ vectors.T), axis=1)[:, :10]
    found = index.search(queries, 10)
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, truth, strict=True)])
    assert overlap == 1.0 if kind == "exact" else overlap > 0.8
    exclude = sparse.csr_matrix(
        (np.ones(20 * 3), (np.repeat(np.arange(20), 3), truth[:, :3].ravel())), shape=(20, 3000)
    )
    assert not (
        hit := set(map(tuple, np.argwhere(exclude.toarray())))
        & {(r, i) for r, row in enumerate(index.search(queries, 10, exclude)) for i in row}
    ), hit
    allowed = np.zeros(3000, bool)
    allowed[::7] = True
    restricted = index.search(queries, 10, allowed=allowed)
    assert (restricted >= 0).all() and allowed[restricted].all()
    index.add(queries[:1] * 100)  # a new item far along the first query: the best match of that query
    assert index.n_items == 3001 and index.search(queries[:1], 1)[0, 0] == 3000
    if kind != "exact":
        again = ItemIndex.from_bytes(kind, index.to_bytes(), nprobe=64)
        assert np.array_equal(again.search(queries, 10), index.search(queries, 10))


@pytest.mark.parametrize("kind", ["exact", "ivf"])
def test_search_many_equals_one_search_per_request(vectors, kind):
    index = ItemIndex.build(vectors, kind, nprobe=64)
    queries = np.random.default_rng(2).normal(size=(6, 16)).astype(np.float32)
    exclude = sparse.csr_matrix(
        (np.ones(12), (np.repeat(np.arange(6), 2), np.arange(12) * 5)), shape=(6, 3000)
    )
    allowed = np.zeros(3000, bool)
    allowed[1::3] = True
    wanted = [(40, None), (15, allowed), (2999, allowed)]  # the last asks for more than the subset holds
    for ordered in (True, False):
        got = index.search_many(queries, wanted, exclude, ordered=ordered)
        for (k, subset), rows in zip(wanted, got, strict=True):
            alone = index.search(queries, k, exclude, allowed=subset)
            assert rows.shape == alone.shape
            if ordered:
                assert np.array_equal(rows, alone)
            else:  # the same ids per row, real ids before the -1 padding
                assert all(set(a) == set(b) for a, b in zip(rows, alone, strict=True))
                assert all((r[: (r >= 0).sum()] >= 0).all() for r in rows)
    assert (got[2] == -1).any() and allowed[got[2][got[2] >= 0]].all()


def test_channels_return_what_they_promise():
    graph = sparse.csr_matrix(
        np.array([[0, 0.7, 0.3, 0], [0.5, 0, 0, 0.5], [1, 0, 0, 0], [0, 1, 0, 0]], np.float32)
    )
    recent = np.array([[2, 0], [3, -1]])  # user 0: newest is 0; user 1: only 3
    out = graph_neighbours(graph, recent, 2)
    assert out[0].tolist() == [1, 0] and out[1].tolist() == [1, -1]  # reach of 0 (newest) wins; 2 reaches 0
    merged = merge(
        [np.array([[3, 1, -1], [2, 2, 0]]), np.array([[1, 7], [4, -1]])],
        sparse.csr_matrix(([1.0], ([1], [0])), shape=(2, 10)),
    )  # user 1 excludes item 0
    assert merged.tolist() == [[1, 3, 7], [2, 4, -1]]


@pytest.fixture
def pipe(tiny_bundle):
    return load_pipeline(read_bundle(tiny_bundle))


def test_each_channel_returns_what_it_promises(pipe):
    counts = np.where(
        np.arange(pipe.n_items) % 5 == 0, 0, pipe.train_counts
    )  # items 0, 5, 10, 15 never touched
    retrieval = pipe.retrieval.model_copy(
        update={
            "candidates": 3,
            "graph_candidates": 4,
            "graph_recent": 1,
            "new_candidates": 2,
            "tail_candidates": 5,
        }
    )
    p = dataclasses.replace(
        pipe,
        train_counts=counts,
        retrieval=retrieval,
        catalog=Catalog.of(counts, pipe.text_vectors, retrieval),
    )
    batch = Batch.of(histories([[1, 2, 3], [11, 12]]))
    lists = channels(p, batch)
    assert {name: got.shape[1] for name, got in lists.items()} == {"mips": 3, "tail": 5, "graph": 4, "new": 2}
    assert p.tail[lists["tail"][lists["tail"] >= 0]].all()  # the tail index holds tail items only
    assert set(lists["new"].ravel()) <= {0, 5, 10, 15}  # never-touched items only
    for row, newest in enumerate([3, 12]):  # graph neighbours of the newest history item
        assert set(lists["graph"][row][lists["graph"][row] >= 0]) <= set(p.graph[newest].indices)
    for name in ("mips", "tail"):  # the MIPS channels never offer the user's own items
        assert not {1, 2, 3} & set(lists[name][0]) and not {11, 12} & set(lists[name][1])
    merged = retrieve(p, batch)
    union = {
        row: {int(i) for got in lists.values() for i in got[row] if i >= 0} - seen
        for row, seen in enumerate([{1, 2, 3}, {11, 12}])
    }
    assert [set(row[row >= 0].tolist()) for row in merged] == [union[0], union[1]]


def test_exact_and_two_stage_lists_agree_when_candidates_cover_the_catalog(pipe):
    data = clustered_split()
    everything = pipe.with_candidates(pipe.n_items)
    for variant in (own_lists, lambda p: p.with_knobs(shelves=Shelves(0.3, 0.0, 0.5))):
        a = evaluate(PipelineRecommender(variant(everything)), data, "test")
        b = evaluate(PipelineRecommender(variant(exact(pipe))), data, "test")
        assert a.metrics == pytest.approx(b.metrics, nan_ok=True)
    users = np.arange(6)
    two = PipelineRecommender(own_lists(everything)).recommend(
        users, data.histories(("train",)).rows(users), 10
    )
    one = PipelineRecommender(own_lists(exact(pipe))).recommend(
        users, data.histories(("train",)).rows(users), 10
    )
    assert np.array_equal(two, one)


def test_lists_exclude_history_and_respect_k(pipe):
    batch = Batch(histories([[0, 1, 2], [3]]), np.array([True, False]))
    lists = recommend(pipe, batch, 5)
    assert lists.items.shape == (2, 5) and not {0, 1, 2} & set(lists.items[0])
    assert (lists.items >= 0).all() and all(len(set(row)) == 5 for row in lists.items)


class _TensorBytes(__import__("torch").utils._python_dispatch.TorchDispatchMode):
    """Largest tensor any torch op makes while active (bytes)."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        import torch

        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, tuple | list) else (out,):
            if isinstance(t, torch.Tensor) and t.layout == torch.strided:
                self.largest = max(self.largest, t.numel() * t.element_size())
        return out


def request_memory(n: int) -> tuple[int, int]:
    """(peak numpy/Python bytes, largest torch tensor bytes) of one warm request over an n-item catalog."""
    import tracemalloc

    from benchmarks.synthetic_pipeline import synthetic_pipeline

    from longtail.config import RetrievalConfig

    pipe = synthetic_pipeline(n, RetrievalConfig(index="ivf", nlist=32, nprobe=4), text_dim=32)
    rng = np.random.default_rng(0)
    batch = Batch.of(histories([rng.integers(0, n, 30).tolist() for _ in range(4)]))
    exposure = np.zeros(n)
    recommend(pipe, batch, 20, exposure)  # warm: caches of projected text
    tracemalloc.start()
    with _TensorBytes() as mode:
        recommend(pipe, batch, 20, exposure)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak, mode.largest


def test_request_memory_does_not_grow_with_the_catalog():
    small, large = request_memory(4_000), request_memory(40_000)
    assert large[0] < 1.25 * small[0] + 65_536, (small, large)  # numpy: candidates × history, not catalog
    assert large[1] < 1.1 * small[1], (small, large)  # torch: the largest tensor is candidates × history


def test_the_new_item_shelf_orders_by_text_profile_and_ranker_score_together(tiny_bundle):
    import dataclasses

    from longtail.bundle import read_bundle
    from longtail.recommend.arrange import zscore
    from longtail.recommend.build import load_pipeline
    from longtail.recommend.pipeline import Batch, Catalog, new_item_scores, text_profile

    pipe = load_pipeline(read_bundle(tiny_bundle))
    counts = np.asarray(pipe.train_counts).copy()
    counts[[3, 5, 7]] = 0  # three never-touched items
    pipe = dataclasses.replace(
        pipe, train_counts=counts, catalog=Catalog.of(counts, pipe.text_vectors, pipe.retrieval)
    )
    batch = Batch.of(clustered_split().histories(("train",)).rows(np.arange(2)))
    candidates = np.array([[3, 4, 5, 7, -1], [5, 7, 1, 2, 3]])
    scores = np.array([[0.1, 9.0, 2.0, 1.0, -np.inf], [3.0, 0.5, 1.0, 1.0, 7.0]])
    got = new_item_scores(pipe, batch, candidates, scores)
    assert np.isinf(got[0, [1, 4]]).all() and np.isinf(got[1, [2, 3]]).all()  # only never-touched candidates
    profile = text_profile(pipe, batch)
    row = np.array([3, 5, 7])
    cosine = pipe.text_vectors[row] @ profile[0]
    expected = zscore(cosine.astype(np.float64)) + zscore(np.array([0.1, 2.0, 1.0]))
    assert np.allclose(got[0, [0, 2, 3]], expected, atol=1e-3)  # close cosines: z amplifies float32 rounding


def test_the_tail_shelf_orders_by_ranker_score_and_item_knn_affinity_together(tiny_bundle):
    from longtail.model.graph import cosine_neighbours
    from longtail.recommend.arrange import zscore
    from longtail.recommend.pipeline import tail_affinity, tail_item_scores

    plain = load_pipeline(read_bundle(tiny_bundle))
    assert plain.neighbours is None  # a bundle written without the item-kNN file
    data = clustered_split()
    near = cosine_neighbours(data.histories(("train",)), data.n_items, 5, targets=plain.tail)
    pipe = dataclasses.replace(plain, neighbours=near).with_knobs(shelves=Shelves(0.5, 0.0, 0.0, 1.0))
    batch = Batch.of(data.histories(("train",)).rows(np.arange(3)))
    candidates = retrieve(pipe, batch, 10)
    scores = np.where(candidates >= 0, np.random.default_rng(0).normal(size=candidates.shape), -np.inf)
    affinity = tail_affinity(pipe, batch, candidates)
    tail = (candidates >= 0) & pipe.tail[np.maximum(candidates, 0)]
    assert np.isinf(affinity[~tail]).all() and np.isfinite(affinity[tail]).all()
    reach = (batch.histories.to_csr(pipe.n_items) @ near).toarray()  # Σ over the history of sim(h, ·)
    rows, cols = np.nonzero(tail)
    assert np.allclose(affinity[rows, cols], reach[rows, candidates[rows, cols]])
    got = tail_item_scores(pipe, candidates, scores, affinity)
    for r in range(3):
        on = tail[r]
        expected = zscore(scores[r, on]) + zscore(affinity[r, on])
        assert np.allclose(got[r, on], expected) and np.isinf(got[r, ~on]).all()
    ranked, _, _ = rank(pipe, batch, candidates)
    order = tail_item_scores(pipe, candidates, ranked, affinity)
    lists = recommend(pipe, batch, 10).items
    alone = recommend(pipe.with_knobs(shelves=Shelves(0.5, 0.0, 0.0, 0.0)), batch, 10).items
    assert (lists[:, :5] == alone[:, :5]).all()  # the relevance block is the model's either way
    for r in range(3):
        open_ = np.isfinite(order[r]) & ~np.isin(candidates[r], lists[r, :5])
        best = candidates[r][np.argsort(-np.where(open_, order[r], -np.inf))[: min(5, open_.sum())]]
        assert set(lists[r, 5 : 5 + len(best)]) == set(best)  # the tail shelf: the best tail items by the sum
    assert (lists[:, 5:] != alone[:, 5:]).any()  # the affinity moved some tail shelf


def test_a_grown_catalog_keeps_the_item_knn_matrix_with_empty_rows_for_new_items(tiny_bundle):
    from longtail.model.graph import cosine_neighbours
    from longtail.recommend.pipeline import grow

    pipe = load_pipeline(read_bundle(tiny_bundle))
    data = clustered_split()
    near = cosine_neighbours(data.histories(("train",)), data.n_items, 5, targets=pipe.tail)
    pipe = dataclasses.replace(pipe, neighbours=near)
    n = pipe.n_items
    new = np.eye(2, pipe.text_vectors.shape[1], dtype=np.float32)
    graph = sparse.csr_matrix(pipe.graph, copy=True)
    graph.resize((n + 2, n + 2))
    grown = grow(pipe, new, graph)
    assert grown.neighbours.shape == (n + 2, n + 2) and grown.neighbours[n:].nnz == 0
    assert (grown.neighbours[:n, :n] != near).nnz == 0 and pipe.neighbours.shape == (n, n)

"""Metrics against hand-computed values, and their properties under random inputs."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import sparse

from longtail.eval.metrics import (
    METRIC_KEYS,
    aplt,
    compute_metrics,
    coverage,
    gini,
    hit_matrix,
    ndcg,
    recall,
    target_counts,
)


def csr(rows: list[list[int]], n_items: int) -> sparse.csr_matrix:
    data = [(u, i) for u, items in enumerate(rows) for i in items]
    r, c = zip(*data, strict=True) if data else ((), ())
    return sparse.csr_matrix((np.ones(len(r)), (r, c)), shape=(len(rows), n_items))


def test_hand_computed_example():
    # user 0: list [3, 1, 4, 0], targets {1, 0}: hits at ranks 2 and 4
    # user 1: list [2, 5, 1, -1] (3 filled), target {6}: no hit
    topk = np.array([[3, 1, 4, 0], [2, 5, 1, -1]])
    targets = csr([[1, 0], [6]], n_items=8)
    hits, n = hit_matrix(topk, targets), target_counts(targets)
    assert hits.tolist() == [[False, True, False, True], [False, False, False, False]]
    assert recall(hits, n, 2) == (0.5 + 0.0) / 2
    assert recall(hits, n, 4) == (1.0 + 0.0) / 2
    dcg0 = 1 / math.log2(3) + 1 / math.log2(5)
    idcg0 = 1 + 1 / math.log2(3)
    assert math.isclose(ndcg(hits, n, 4), (dcg0 / idcg0 + 0) / 2)
    assert math.isclose(coverage(topk, 8, 4), 6 / 8)  # {0,1,2,3,4,5}
    tail = np.array([False, False, False, True, True, True, True, True])  # head = {0, 1, 2}
    assert math.isclose(aplt(topk, tail, 4), (2 / 4 + 1 / 3) / 2)
    # exposure x = [1,2,1,1,1,1,0,0] sorted [0,0,1,1,1,1,1,2]; n=8, Σx=7
    x = np.array([0, 0, 1, 1, 1, 1, 1, 2])
    expected = sum((2 * i - 8 - 1) * x[i - 1] for i in range(1, 9)) / (8 * 7)
    assert math.isclose(gini(topk, 8, 4), expected)


def test_ndcg_ideal_uses_min_of_k_and_targets():
    topk = np.array([[0, 1, 2]])
    targets = csr([[0, 1, 2, 3, 4]], 6)  # 5 targets, k=3: perfect list scores 1
    assert math.isclose(ndcg(hit_matrix(topk, targets), target_counts(targets), 3), 1.0)


def test_tail_and_cold_restrict_targets_but_not_lists():
    topk = np.tile(np.arange(20), (2, 1))
    targets = csr([[0, 25], [1, 2]], 30)
    buckets = {"tail": np.arange(30) >= 10, "cold": np.arange(30) >= 25}
    m = compute_metrics(topk, targets, buckets)
    assert set(m) == set(METRIC_KEYS)
    assert m["tail_recall@20"] == 0.0  # only user 0 has a tail target (25), not shown
    assert m["cold_recall@20"] == 0.0
    assert m["recall@20"] == (0.5 + 1.0) / 2
    assert m["aplt@1"] == 0.0 and m["aplt@10"] == 0.0 and m["aplt@20"] == 0.5  # items 10-19 are tail
    shifted = compute_metrics(topk[:, ::-1], targets, buckets)  # tail items first
    assert shifted["aplt@1"] == 1.0 and shifted["aplt@10"] == 1.0
    no_cold = compute_metrics(topk, targets, {"tail": buckets["tail"], "cold": np.zeros(30, bool)})
    assert math.isnan(no_cold["cold_recall@20"])  # no user has a cold target


def test_gini_extremes():
    assert gini(np.array([[0], [0], [0]]), 4, 1) == 0.75  # (n-1)/n: everything on one item
    assert math.isclose(gini(np.array([[0], [1], [2], [3]]), 4, 1), 0.0)


@st.composite
def ranking_case(draw):
    n_items = draw(st.integers(5, 40))
    n_users = draw(st.integers(1, 8))
    k = 20
    topk = np.full((n_users, k), -1)
    for u in range(n_users):
        filled = draw(st.integers(0, min(k, n_items)))
        topk[u, :filled] = draw(st.permutations(range(n_items)))[:filled]
    rows = [
        draw(st.lists(st.integers(0, n_items - 1), min_size=1, max_size=6, unique=True))
        for _ in range(n_users)
    ]
    tail = np.array(draw(st.lists(st.booleans(), min_size=n_items, max_size=n_items)))
    cold = tail & np.array(draw(st.lists(st.booleans(), min_size=n_items, max_size=n_items)))
    return topk, csr(rows, n_items), {"tail": tail, "cold": cold}


@settings(max_examples=150, deadline=None)
@given(ranking_case())
def test_metric_properties(case):
    topk, targets, buckets = case
    m = compute_metrics(topk, targets, buckets)
    for key, value in m.items():
        assert math.isnan(value) or (0.0 <= value <= 1.0 + 1e-12), key
    assert m["recall@10"] <= m["recall@20"] + 1e-12  # monotone in K
    assert m["ndcg@10"] <= m["hit@10"] + 1e-12
    assert m["coverage@20"] <= 1.0
    n = target_counts(targets)
    hits = hit_matrix(topk, targets)
    for k in range(1, 20):
        assert recall(hits, n, k) <= recall(hits, n, k + 1) + 1e-12

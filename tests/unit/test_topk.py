"""top_k: ties to the lower index, exclusions, short catalogs."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import sparse

from longtail.topk import top_k


def test_ties_go_to_lower_index_and_order_is_best_first():
    scores = np.array([[1.0, 3.0, 3.0, 2.0, 3.0]])
    assert top_k(scores, 3).tolist() == [[1, 2, 4]]
    assert top_k(scores, 4).tolist() == [[1, 2, 4, 3]]


def test_exclusions_and_unfilled_slots():
    scores = np.array([[5.0, 4.0, 3.0], [1.0, np.nan, 2.0]])
    exclude = sparse.csr_matrix(np.array([[1, 0, 1], [0, 0, 0]]))
    assert top_k(scores, 3, exclude).tolist() == [[1, -1, -1], [2, 0, -1]]
    assert top_k(scores, 5).shape == (2, 5)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 4), min_size=1, max_size=30), st.integers(1, 12))
def test_matches_a_full_stable_sort(values, k):
    scores = np.array([values], dtype=float)
    expected = np.argsort(-scores[0], kind="stable")[:k]
    got = top_k(scores, k)[0]
    assert got[: len(expected)].tolist() == expected.tolist()


def test_numpy_and_torch_top_k_pick_the_same_on_ties_and_infinities():
    import torch

    from longtail.topk import best, top_k_torch

    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, size=(50, 40)).astype(np.float64)  # many ties
    scores[rng.random(scores.shape) < 0.2] = -np.inf
    scores[3] = -np.inf  # a row with nothing to pick
    for k in (1, 5, 40, 45):
        want = top_k(scores, k)
        assert np.array_equal(top_k_torch(torch.from_numpy(scores), k).numpy(), want), k
        unordered = top_k_torch(torch.from_numpy(scores), k, ordered=False).numpy()
        assert all(
            sorted(u[u >= 0]) == sorted(w[w >= 0]) and (u[: (u >= 0).sum()] >= 0).all()
            for u, w in zip(unordered, want, strict=True)
        )
    row = scores[0]
    assert best(row, 7).tolist() == [i for i in top_k(row[None], 7)[0] if i >= 0]
    assert best(np.array([1.0, 2.0, 2.0, 0.5]), 2).tolist() == [1, 2]  # equal: the lower index first

"""top_k: ties to the lower index, exclusions, short catalogs."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import sparse

from longtail.eval.ranking import top_k


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

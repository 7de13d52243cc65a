"""The item graph's combination of sources (longtail.model.graph.combine)."""

import numpy as np
from scipy import sparse

from longtail.model.graph import combine


def ring(n: int, step: int, values: np.ndarray) -> sparse.csr_matrix:
    """Edges i → i ± step (symmetric) with value values[i] on both edges of item i's pair (i, i + step)."""
    rows = np.r_[np.arange(n), (np.arange(n) + step) % n]
    cols = np.r_[(np.arange(n) + step) % n, np.arange(n)]
    return sparse.csr_matrix((np.r_[values, values], (rows, cols)), shape=(n, n))


def mass_on(graph: sparse.csr_matrix, source: sparse.csr_matrix) -> np.ndarray:
    """(n,) each row's graph mass on the edges of ``source``."""
    return np.asarray(graph.multiply(source > 0).sum(1)).ravel()


def test_each_source_gives_every_row_its_weight_whatever_the_scale_of_its_values():
    n = 12
    text = ring(n, 1, np.full(n, 0.8, np.float32))  # text cosines: every neighbour high
    cooc = ring(n, 3, np.r_[1.0, np.full(n - 1, 0.02)].astype(np.float32))  # one strong pair, many weak
    graph = combine({"text": text, "cooc": cooc}, {"text": 1.0, "cooc": 1.0})
    assert np.allclose(np.asarray(graph.sum(1)).ravel(), 1.0)
    away = np.setdiff1d(np.arange(n), [0, 3])  # rows off the strong pair (symmetrising lifts its two ends)
    # scaled by each source's largest value instead, text would take 0.98 of these rows
    assert np.allclose(mass_on(graph, cooc)[away], 0.5, atol=1e-6)
    assert (mass_on(graph, cooc) >= 0.5 - 1e-6).all()
    weighted = combine({"text": text, "cooc": cooc}, {"text": 1.0, "cooc": 3.0})
    assert np.allclose(mass_on(weighted, cooc)[away], 0.75, atol=1e-6)
    assert np.allclose(mass_on(weighted, text)[away], 0.25, atol=1e-6)


def test_a_source_off_or_empty_adds_nothing_and_an_untouched_item_reaches_its_neighbours():
    n = 6
    text = sparse.csr_matrix(([0.9], ([0], [5])), shape=(n, n))  # one directed edge 0 → 5
    cooc = ring(n - 1, 1, np.full(n - 1, 0.5, np.float32))
    cooc.resize((n, n))  # item 5: nobody touched it, no co-occurrence row
    graph = combine({"text": text, "cooc": cooc, "kg": sparse.csr_matrix((n, n))}, {"text": 1.0, "cooc": 1.0})
    assert graph[5, 0] == 1.0  # symmetrised: the untouched item reaches its text neighbour
    assert np.allclose(np.asarray(graph.sum(1)).ravel(), 1.0)
    off = combine({"text": text, "cooc": cooc}, {"text": 0.0, "cooc": 1.0})
    assert off[0, 5] == 0.0 and off[5].nnz == 0

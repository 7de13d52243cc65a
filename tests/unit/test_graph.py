"""The item graph's combination of sources (longtail.model.graph.combine) and item-kNN neighbours."""

import numpy as np
from scipy import sparse

from longtail.data.encoded import Histories
from longtail.model.graph import combine, cosine_neighbours


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


def test_cosine_neighbours_keep_each_items_k_most_similar_target_items():
    rows = [[0, 1, 2], [0, 1], [1, 3], [0, 2, 4], [4, 4, 1]]  # user 4 took item 4 twice: counted once
    lengths = np.array([len(r) for r in rows])
    histories = Histories(np.r_[0, np.cumsum(lengths)], np.concatenate(rows).astype(np.int64))
    n = 6  # item 5: nobody took it
    x = np.zeros((len(rows), n))
    for u, r in enumerate(rows):
        x[u, r] = 1.0
    norms = np.sqrt(x.sum(0))
    full = (x.T @ x) / (np.outer(norms, norms) + 1e-12)
    np.fill_diagonal(full, 0.0)
    every = cosine_neighbours(histories, n, n, block_cells=7).toarray()  # blocks of one row: same result
    assert np.allclose(every, full, atol=1e-6)
    top = cosine_neighbours(histories, n, 1).toarray()
    assert ((top > 0).sum(1) == [1, 1, 1, 1, 1, 0]).all()
    assert np.allclose(top.max(1), full.max(1), atol=1e-6)
    targets = np.array([False, False, True, True, True, True])
    tail = cosine_neighbours(histories, n, 2, targets=targets).toarray()
    assert not tail[:, ~targets].any()  # only target columns
    assert (
        tail[0, 2] == tail[0].max() and tail[0, 2] > 0
    )  # item 0's nearest target: item 2 (two shared users)

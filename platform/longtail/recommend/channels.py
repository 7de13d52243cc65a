"""Candidate channels beside the retriever's MIPS search, and their merge (numpy and scipy only).

Each channel returns (b, k) catalog indices, -1 padded; ``merge`` joins channels per user, drops
duplicates and each user's excluded items, and sorts each row by catalog index (so ties later go to the
lower index).
"""

from __future__ import annotations

import numpy as np
from scipy import sparse

from longtail.eval.metrics import hit_matrix


def graph_neighbours(graph: sparse.csr_matrix, recent: np.ndarray, k: int) -> np.ndarray:
    """The k items most strongly linked to each user's newest items: Σ_l w_l A[h_l, ·], w_l = 1 / (1 + age).

    ``recent`` (b, m) holds the m newest history items, newest last, -1 padded at the end of a row. Reads
    only the graph rows of those items (no catalog-sized work per request).
    """
    b, m = recent.shape
    out = np.full((b, k), -1, dtype=np.int64)
    if k == 0 or b == 0 or graph.nnz == 0:
        return out
    real = recent >= 0
    age = real.sum(1, keepdims=True) - 1 - np.arange(m)[None, :]  # (b, m) 0 = newest
    users, items, weights = np.repeat(np.arange(b), real.sum(1)), recent[real], 1.0 / (1.0 + age[real])
    starts, ends = graph.indptr[items], graph.indptr[items + 1]
    lengths = ends - starts
    take = np.repeat(starts - np.r_[0, np.cumsum(lengths)[:-1]], lengths) + np.arange(lengths.sum())
    owner = np.repeat(users, lengths)  # (E,) one entry per (user, history item, neighbour)
    target = graph.indices[take].astype(np.int64)
    reach = np.repeat(weights, lengths) * graph.data[take]
    order = np.lexsort((target, owner))
    owner, target, reach = owner[order], target[order], reach[order]
    first = np.r_[True, (owner[1:] != owner[:-1]) | (target[1:] != target[:-1])]
    starts_of = np.flatnonzero(first)
    owner, target, reach = (
        owner[first],
        target[first],
        np.add.reduceat(reach, starts_of) if len(reach) else reach,
    )
    order = np.lexsort((target, -reach, owner))  # by user, strongest first, ties to the lower index
    owner, target = owner[order], target[order]
    rank = np.arange(len(owner)) - np.searchsorted(owner, owner)  # position within the user's row
    keep = rank < k
    out[owner[keep], rank[keep]] = target[keep]
    return out


def merge(parts: list[np.ndarray], exclude: sparse.csr_matrix | None = None) -> np.ndarray:
    """Per-row union of channel lists (each (b, k_i), -1 padded) minus ``exclude`` (b, n): (b, C), -1
    padded."""
    joined = np.concatenate([p for p in parts if p.shape[1]], axis=1) if parts else np.zeros((0, 0), np.int64)
    if joined.size == 0:
        return joined.astype(np.int64)
    if exclude is not None:
        joined = np.where((joined >= 0) & ~hit_matrix(joined, exclude), joined, -1)
    big = np.iinfo(np.int64).max
    joined = np.sort(np.where(joined >= 0, joined, big), axis=1)
    joined[:, 1:][joined[:, 1:] == joined[:, :-1]] = big  # later copies of an id
    joined = np.sort(joined, axis=1)
    width = int((joined < big).sum(1).max(initial=0))
    joined = joined[:, :width]
    return np.where(joined < big, joined, -1)

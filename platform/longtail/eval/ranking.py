"""Full-catalog top-K with exclusions; ties go to the lower catalog index."""

from __future__ import annotations

import numpy as np
from scipy import sparse


def top_k(scores: np.ndarray, k: int, exclude: sparse.csr_matrix | None = None) -> np.ndarray:
    """Best ``k`` items per row of ``scores`` (b, n), best first; -1 where fewer than ``k`` remain.

    Items set in ``exclude`` (b, n) and NaN scores are never returned. Equal scores rank the lower
    index first. Cost is O(n) per row (a partition), not a full sort.
    """
    scores = np.array(scores, dtype=np.float64)  # (b, n) copy we may edit
    b, n = scores.shape
    scores[np.isnan(scores)] = -np.inf
    if exclude is not None:
        ex = sparse.csr_matrix(exclude)
        rows = np.repeat(np.arange(b), np.diff(ex.indptr))
        scores[rows, ex.indices] = -np.inf
    kk = min(k, n)
    out = np.full((b, k), -1, dtype=np.int64)
    if kk == 0 or b == 0:
        return out
    threshold = -np.partition(-scores, kk - 1, axis=1)[:, kk - 1 : kk]  # (b, 1) k-th best score
    above = scores > threshold  # (b, n)
    tied = scores == threshold
    room = kk - above.sum(1, keepdims=True)  # (b, 1) slots left for tied items, lowest index first
    chosen = above | (tied & (np.cumsum(tied, axis=1) <= room))  # exactly kk per row
    rows, cols = np.nonzero(chosen)
    vals = scores[rows, cols]
    order = np.lexsort((cols, -vals, rows))  # by row, then score desc, then index asc
    cols, vals = cols[order].reshape(b, kk), vals[order].reshape(b, kk)
    out[:, :kk] = np.where(np.isneginf(vals), -1, cols)
    return out

"""Top-k with one tie rule everywhere: the larger score first; of equal scores, the lower index first.

Entries of -inf or NaN are never picked; a row that runs out is padded with -1. ``top_k`` (numpy) and
``top_k_torch`` give the same picks (a test checks it on tied scores); ``best`` is ``top_k`` of one row.
Every ranking of the package goes through these: lists, candidates, graph neighbours, similar items.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import sparse


def top_k(scores: np.ndarray, k: int, exclude: sparse.csr_matrix | None = None) -> np.ndarray:
    """Best ``k`` columns per row of ``scores`` (b, n), best first; -1 where fewer than ``k`` remain.

    Columns set in ``exclude`` (b, n) are never returned. Cost is O(n) per row (a partition), not a sort.
    """
    scores = np.array(scores, dtype=np.float64)  # (b, n) a copy we may edit
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
    room = kk - above.sum(1, keepdims=True)  # (b, 1) slots left for tied columns, lowest index first
    chosen = above | (tied & (np.cumsum(tied, axis=1) <= room))  # exactly kk per row
    rows, cols = np.nonzero(chosen)
    vals = scores[rows, cols]
    order = np.lexsort((cols, -vals, rows))  # by row, then score desc, then index asc
    picked, picked_vals = cols[order].reshape(b, kk), vals[order].reshape(b, kk)
    out[:, :kk] = np.where(np.isneginf(picked_vals), -1, picked)
    return out


def best(values: np.ndarray, m: int) -> np.ndarray:
    """Indices of the ≤ m largest finite entries of ``values`` (n,), best first (the one tie rule)."""
    picks = top_k(np.asarray(values)[None, :], m)[0]
    return picks[picks >= 0]


def top_k_torch(scores: torch.Tensor, k: int, ordered: bool = True) -> torch.Tensor:
    """``top_k`` of a (b, n) tensor without NaN (scores of inner products, -inf for what may not be picked):
    (b, k) int64 columns, -1 for -inf. ``ordered=False``: each row's picks in any order (real ones first, then
    -1), which saves a sort.

    ``torch.topk`` does the work (it breaks ties arbitrarily): its k + 1 best tell which rows have a tie
    across
    the k-th place, and only those rows are resolved by a scan of the whole row; ties inside the k best only
    change their order, which a sort of the k picks settles."""
    b, n = scores.shape
    kk = min(k, n)
    if kk == 0 or b == 0:
        return torch.full((b, k), -1, dtype=torch.int64)
    vals, cols = torch.topk(scores, min(kk + 1, n), dim=1, sorted=False)  # (b, kk[+1]) in no order
    straddled = torch.zeros(b, dtype=torch.bool)
    if kk < n:  # drop the (k+1)-th; where it equals the k-th, a tie straddles the k-th place
        lowest = torch.topk(vals, 2, dim=1, largest=False)  # the (k+1)-th and the k-th value, and where
        straddled = lowest.values[:, 0] == lowest.values[:, 1]
        keep = torch.arange(kk + 1).expand(b, kk + 1) != lowest.indices[:, :1]
        vals, cols = vals[keep].view(b, kk), cols[keep].view(b, kk)
    if straddled.any():  # the tied block crosses the k-th place: the lowest columns of it are in
        rows = straddled.nonzero()[:, 0]
        tied_rows = scores[rows]  # (r, n)
        threshold = vals[rows].min(dim=1, keepdim=True).values  # (r, 1) the k-th value
        tied = tied_rows == threshold
        chosen = (tied_rows > threshold) | (
            tied & (torch.cumsum(tied, dim=1) <= kk - (tied_rows > threshold).sum(1, keepdim=True))
        )
        picked = chosen.nonzero()[:, 1].view(len(rows), kk)
        cols[rows], vals[rows] = picked, tied_rows.gather(1, picked)
    if ordered:  # by score, equal scores by column: sort by column, then stably by score
        by_col = torch.sort(cols, dim=1).indices
        cols, vals = cols.gather(1, by_col), vals.gather(1, by_col)
        by_val = torch.sort(-vals, dim=1, stable=True).indices
        cols, vals = cols.gather(1, by_val), vals.gather(1, by_val)
    cols = torch.where(torch.isneginf(vals), -1, cols)
    if not ordered:  # real picks first
        cols = cols.gather(1, torch.sort((cols < 0).to(torch.int8), dim=1, stable=True).indices)
    if kk < k:
        cols = torch.cat([cols, torch.full((b, k - kk), -1, dtype=torch.int64)], dim=1)
    return cols

"""Top-K metrics of the evaluation protocol, vectorised with numpy.

Inputs everywhere: ``topk`` (U, K) int64 catalog indices best first, -1 for an unfilled slot; targets as
a CSR matrix (U, n_items) whose row u holds user u's held-out items. Accuracy metrics are plain means over
users with at least one (restricted) target; exposure metrics use every row of ``topk``.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse

METRIC_KEYS = (
    "recall@10",
    "recall@20",
    "ndcg@10",
    "ndcg@20",
    "hit@10",
    "tail_recall@20",
    "tail_ndcg@10",
    "cold_recall@20",
    "coverage@20",
    "aplt@1",
    "aplt@10",
    "aplt@20",
    "gini@20",
)


def hit_matrix(topk: np.ndarray, targets: sparse.csr_matrix) -> np.ndarray:
    """hits[u, j] = topk[u, j] is one of user u's targets; (U, K) bool."""
    targets = sparse.csr_matrix(targets)
    n_users, n_items = targets.shape
    rows = np.repeat(np.arange(n_users, dtype=np.int64), np.diff(targets.indptr))
    keys = np.sort(rows * n_items + targets.indices.astype(np.int64))  # (nnz,)
    query = np.arange(n_users, dtype=np.int64)[:, None] * n_items + topk  # (U, K)
    if len(keys) == 0:
        return np.zeros(topk.shape, dtype=bool)
    pos = np.clip(np.searchsorted(keys, query), 0, len(keys) - 1)
    return (topk >= 0) & (keys[pos] == query)


def _log_discounts(k: int) -> np.ndarray:
    return 1.0 / np.log2(np.arange(2, k + 2))  # (k,)


def recall(hits: np.ndarray, n_targets: np.ndarray, k: int) -> float:
    """mean_u |top-k ∩ T_u| / |T_u| over users with |T_u| > 0 (NaN when there are none)."""
    users = n_targets > 0
    if not users.any():
        return float("nan")
    return float((hits[users, :k].sum(1) / n_targets[users]).mean())


def ndcg(hits: np.ndarray, n_targets: np.ndarray, k: int) -> float:
    """mean_u DCG@k / IDCG@k; DCG = Σ_j hit_j / log2(j + 2) (j from 0), IDCG over min(k, |T_u|) hits."""
    users = n_targets > 0
    if not users.any():
        return float("nan")
    disc = _log_discounts(k)
    width = min(k, hits.shape[1])
    dcg = hits[users, :width] @ disc[:width]
    ideal = np.cumsum(disc)[np.minimum(n_targets[users], k) - 1]
    return float((dcg / ideal).mean())


def hit_rate(hits: np.ndarray, n_targets: np.ndarray, k: int) -> float:
    """mean_u 1[top-k ∩ T_u ≠ ∅] over users with |T_u| > 0."""
    users = n_targets > 0
    return float(hits[users, :k].any(1).mean()) if users.any() else float("nan")


def coverage(topk: np.ndarray, n_items: int, k: int) -> float:
    """|∪_u top-k_u| / n_items: the share of the catalog that appears in any list."""
    shown = topk[:, :k]
    return float(len(np.unique(shown[shown >= 0])) / n_items) if n_items else float("nan")


def aplt(topk: np.ndarray, tail: np.ndarray, k: int) -> float:
    """mean_u (tail items in u's filled top-k slots / filled slots), over users with a filled slot."""
    shown = topk[:, :k]
    filled = shown >= 0
    n_filled = filled.sum(1)
    users = n_filled > 0
    if not users.any():
        return float("nan")
    is_tail = filled & tail[np.where(filled, shown, 0)]
    return float((is_tail.sum(1)[users] / n_filled[users]).mean())


def gini(topk: np.ndarray, n_items: int, k: int) -> float:
    """Gini of exposure counts x over all catalog items: Σ_i (2i − n − 1)·x_(i) / (n·Σx), x ascending, i from
    1."""
    shown = topk[:, :k]
    x = np.sort(np.bincount(shown[shown >= 0], minlength=n_items)).astype(np.float64)
    total = x.sum()
    if total == 0:
        return float("nan")
    i = np.arange(1, n_items + 1)
    return float(((2 * i - n_items - 1) * x).sum() / (n_items * total))


def restrict(targets: sparse.csr_matrix, keep: np.ndarray) -> sparse.csr_matrix:
    """Targets limited to the items where ``keep`` (n_items,) is true."""
    return sparse.csr_matrix(targets @ sparse.diags(keep.astype(np.float32)))


def target_counts(targets: sparse.csr_matrix) -> np.ndarray:
    """Targets per user, (U,) int64."""
    matrix = sparse.csr_matrix(targets)
    matrix.eliminate_zeros()
    return np.diff(matrix.indptr).astype(np.int64)


def compute_metrics(
    topk: np.ndarray, targets: sparse.csr_matrix, buckets: dict[str, np.ndarray]
) -> dict[str, float]:
    """Every key of ``METRIC_KEYS`` for lists ``topk`` (U, ≥20) against ``targets`` (U, n_items).

    ``buckets`` holds boolean masks over the catalog: ``tail`` and ``cold`` (docs/design.md, "Evaluation
    protocol"). Rows of users without any target should be dropped by the caller before calling.
    """
    n_items = targets.shape[1]
    targets = sparse.csr_matrix(targets)
    targets.eliminate_zeros()
    hits, n = hit_matrix(topk, targets), target_counts(targets)
    tail_t, cold_t = restrict(targets, buckets["tail"]), restrict(targets, buckets["cold"])
    tail_hits, n_tail = hit_matrix(topk, tail_t), target_counts(tail_t)
    cold_hits, n_cold = hit_matrix(topk, cold_t), target_counts(cold_t)
    return {
        "recall@10": recall(hits, n, 10),
        "recall@20": recall(hits, n, 20),
        "ndcg@10": ndcg(hits, n, 10),
        "ndcg@20": ndcg(hits, n, 20),
        "hit@10": hit_rate(hits, n, 10),
        "tail_recall@20": recall(tail_hits, n_tail, 20),
        "tail_ndcg@10": ndcg(tail_hits, n_tail, 10),
        "cold_recall@20": recall(cold_hits, n_cold, 20),
        "coverage@20": coverage(topk, n_items, 20),
        "aplt@1": aplt(topk, buckets["tail"], 1),  # tail exposure at rank 1 (published LOO tables)
        "aplt@10": aplt(topk, buckets["tail"], 10),
        "aplt@20": aplt(topk, buckets["tail"], 20),
        "gini@20": gini(topk, n_items, 20),
    }


def recall_by_bins(
    topk: np.ndarray, targets: sparse.csr_matrix, bins: list[np.ndarray], k: int = 20
) -> list[float]:
    """recall@k with targets restricted to each bin of items (a list of index arrays); NaN for empty bins."""
    n_items = targets.shape[1]
    out = []
    for members in bins:
        keep = np.zeros(n_items, dtype=bool)
        keep[members] = True
        restricted = restrict(targets, keep)
        out.append(recall(hit_matrix(topk, restricted), target_counts(restricted), k))
    return out


def popularity_deciles(train_counts: np.ndarray, n_bins: int = 10) -> list[np.ndarray]:
    """Catalog indices split into ``n_bins`` near-equal bins from least to most popular (ties by index)."""
    order = np.argsort(train_counts, kind="stable")
    return [np.asarray(b) for b in np.array_split(order, n_bins)]

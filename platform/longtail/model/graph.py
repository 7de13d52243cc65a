"""The item graph: sparse top-k neighbours from text vectors, a knowledge graph and co-occurrence.

Each source gives a non-negative (n_items, n_items) matrix with at most k entries per row; the graph is
their weighted sum with every source's rows scaled to sum 1, symmetrised (so an item that nobody touched
is reachable from its own neighbours) and row-normalised. It is stored as an edge table (src, dst, weight,
kind) and used as a CSR matrix.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse

from longtail.data.encoded import Histories
from longtail.topk import best, top_k

GRAPH_RULE = 2  # how sources combine (2: each source's rows sum to its weight); in the graph cache key


def topk_rows(scores: np.ndarray, k: int, row_offset: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows, cols, vals) of the k largest positive entries per row of a dense block (``longtail.topk``'s
    rule)."""
    k = min(k, scores.shape[1])
    if k == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    top = top_k(np.where(scores > 0, scores, -np.inf), k)  # (c, k), -1 where a row has fewer positive entries
    keep = top >= 0
    vals = np.take_along_axis(scores, np.maximum(top, 0), 1)
    rows = np.repeat(np.arange(scores.shape[0]) + row_offset, k).reshape(-1, k)
    return rows[keep], top[keep], vals[keep].astype(np.float32)


def text_knn(vectors: np.ndarray, k: int, block_cells: int = 1 << 24) -> sparse.csr_matrix:
    """Exact cosine top-k neighbours of unit vectors (n, d), in row blocks so memory stays bounded."""
    n = len(vectors)
    step = max(1, block_cells // max(n, 1))
    parts = []
    for start in range(0, n, step):
        sims = vectors[start : start + step] @ vectors.T  # (c, n)
        sims[np.arange(len(sims)), np.arange(start, start + len(sims))] = 0.0  # no self-loops
        parts.append(topk_rows(sims, k, start))
    return _assemble(parts, n)


def kg_neighbours(item_entities: sparse.csr_matrix, k: int, block_cells: int = 1 << 24) -> sparse.csr_matrix:
    """Items sharing knowledge-graph entities, each entity weighted by idf = log(n_items / items with it).

    ``item_entities`` (n_items, n_entities) is binary; sim(i, j) = Σ_e idf_e² / (‖i‖·‖j‖), top-k per item.
    """
    x = sparse.csr_matrix(item_entities, dtype=np.float32)
    n = x.shape[0]
    df = np.asarray((x > 0).sum(0)).ravel()
    idf = np.log(n / np.maximum(df, 1)).astype(np.float32)
    xw = sparse.csr_matrix(x @ sparse.diags(idf))  # (n, n_entities)
    norms = np.sqrt(np.asarray(xw.multiply(xw).sum(1)).ravel())
    xw = sparse.csr_matrix(sparse.diags(1.0 / np.maximum(norms, 1e-12)) @ xw)
    step = max(1, block_cells // max(n, 1))
    xt = xw.T.tocsc()
    parts = []
    for start in range(0, n, step):
        sims = (xw[start : start + step] @ xt).toarray()  # (c, n)
        sims[np.arange(len(sims)), np.arange(start, start + len(sims))] = 0.0
        parts.append(topk_rows(sims, k, start))
    return _assemble(parts, n)


def cosine_neighbours(
    histories: Histories,
    n_items: int,
    k: int,
    shrink: float = 0.0,
    targets: np.ndarray | None = None,
    block_cells: int = 1 << 25,
) -> sparse.csr_matrix:
    """Item-kNN similarity: sim(i, j) = |U_i ∩ U_j| / (sqrt(|U_i|·|U_j|) + shrink) over the users of
    ``histories`` (each counted once per item), the k largest per row, no self-loops, in row blocks of
    ``block_cells`` // n items. ``targets`` (n,) bool, when given, limits the columns to those items (the tail
    shelf's neighbours: the k most similar tail items of every item). Each block stays sparse: the work grows
    with the co-occurring pairs, not with n² (food, 41k items: 9 s against 56 s for dense blocks, the same
    matrix)."""
    x = histories.to_csr(n_items).tocsc()  # (n_users, n) binary
    norms = np.sqrt(np.asarray(x.sum(0)).ravel())  # (n,)
    k = min(k, max(n_items - 1, 1))
    step = max(1, block_cells // max(n_items, 1))
    xt = x.T.tocsr()
    parts = [
        _sparse_block(xt[start : start + step] @ x, norms, start, shrink, targets, k)
        for start in range(0, n_items, step)
    ]
    return _assemble(parts, n_items)


def _sparse_block(
    counts: sparse.spmatrix,
    norms: np.ndarray,
    start: int,
    shrink: float,
    targets: np.ndarray | None,
    k: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``cosine_neighbours``' rule on one block of sparse co-counts (c, n) whose rows start at ``start``."""
    coo = sparse.coo_matrix(counts)
    rows, cols = coo.row.astype(np.int64), coo.col.astype(np.int64)
    values = coo.data / (norms[start + rows] * norms[cols] + shrink + 1e-12)
    keep = (start + rows != cols) & (values > 0)
    if targets is not None:
        keep &= targets[cols]
    block = sparse.csr_matrix((values[keep], (rows[keep], cols[keep])), shape=counts.shape)
    top = keep_topk(block, k).tocoo()
    return top.row.astype(np.int64) + start, top.col.astype(np.int64), top.data.astype(np.float32)


def cooccurrence(histories: Histories, n_items: int, window: int, k: int) -> sparse.csr_matrix:
    """Items consumed within ``window`` steps of each other in a history, cosine-normalised, top-k per
    item."""
    owner = np.repeat(np.arange(histories.n_users), histories.lengths())
    items = histories.items
    rows, cols = [], []
    for d in range(1, window + 1):
        same = owner[:-d] == owner[d:] if len(items) > d else np.zeros(0, bool)
        rows += [items[:-d][same], items[d:][same]]
        cols += [items[d:][same], items[:-d][same]]
    r, c = (np.concatenate(rows), np.concatenate(cols)) if rows else (np.zeros(0, int), np.zeros(0, int))
    counts = sparse.csr_matrix((np.ones(len(r), np.float32), (r, c)), shape=(n_items, n_items))
    counts.sum_duplicates()
    counts.setdiag(0)
    counts.eliminate_zeros()
    freq = np.sqrt(np.bincount(items, minlength=n_items).astype(np.float32))
    norm = sparse.diags(1.0 / np.maximum(freq, 1.0))
    return keep_topk(sparse.csr_matrix(norm @ counts @ norm), k)


def keep_topk(matrix: sparse.csr_matrix, k: int) -> sparse.csr_matrix:
    """The k largest entries of each row of a sparse matrix."""
    m = sparse.csr_matrix(matrix)
    m.sort_indices()  # equal values then go to the lower column (the one tie rule)
    rows, cols, vals = [], [], []
    for i in range(m.shape[0]):
        lo, hi = m.indptr[i], m.indptr[i + 1]
        if hi == lo:
            continue
        data, idx = m.data[lo:hi], m.indices[lo:hi]
        pick = best(data, k)  # positions in the row; its indices are sorted, so ties go to the lower column
        rows.append(np.full(len(pick), i))
        cols.append(idx[pick])
        vals.append(data[pick])
    if not rows:
        return sparse.csr_matrix(m.shape, dtype=np.float32)
    return sparse.csr_matrix(
        (np.concatenate(vals).astype(np.float32), (np.concatenate(rows), np.concatenate(cols))), shape=m.shape
    )


def combine(parts: dict[str, sparse.csr_matrix], weights: dict[str, float]) -> sparse.csr_matrix:
    """Σ_s w_s · row-normalised source s, symmetrised as max(A, Aᵀ), then rows scaled to sum 1.

    Each source gives every item it has edges for the same mass (its weight), whatever the scale of its
    values: text cosines (0.5-0.9 for every top-k neighbour) would otherwise drown co-occurrence, whose
    values are mostly far below its largest (on three development catalogs, 77-85 % of the mass went to
    text edges under a per-source maximum; docs/results.md, "The item graph").
    """
    n = next(iter(parts.values())).shape[0]
    total = sparse.csr_matrix((n, n), dtype=np.float32)
    for name, matrix in parts.items():
        if matrix.nnz and weights.get(name, 0.0) > 0:
            total = total + weights[name] * _rows_to_one(matrix)
    return _rows_to_one(total.maximum(total.T)).astype(np.float32)


def _rows_to_one(matrix: sparse.csr_matrix) -> sparse.csr_matrix:
    """Rows scaled to sum 1 (empty rows stay empty)."""
    row_sum = np.asarray(matrix.sum(1)).ravel()
    return sparse.csr_matrix(sparse.diags(1.0 / np.maximum(row_sum, 1e-12)) @ matrix)


def _assemble(parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]], n: int) -> sparse.csr_matrix:
    rows = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, np.int64)
    cols = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, np.int64)
    vals = np.concatenate([p[2] for p in parts]) if parts else np.zeros(0, np.float32)
    return sparse.csr_matrix((vals, (rows, cols)), shape=(n, n))


def item_entity_matrix(
    item_ids: np.ndarray,
    link_items: np.ndarray,
    link_entities: np.ndarray,
    heads: np.ndarray,
    tails: np.ndarray,
) -> sparse.csr_matrix:
    """Binary (n_items, n_entities): item i touches entity e when a triple joins i's linked entity and e."""
    item_pos = {str(v): i for i, v in enumerate(item_ids)}
    entity_items: dict[str, list[int]] = {}
    for item, entity in zip(link_items, link_entities, strict=True):
        if str(item) in item_pos:
            entity_items.setdefault(str(entity), []).append(item_pos[str(item)])
    vocab: dict[str, int] = {}
    rows, cols = [], []
    for head, tail in zip(heads, tails, strict=True):
        for own, other in ((str(head), str(tail)), (str(tail), str(head))):
            for item in entity_items.get(own, ()):
                rows.append(item)
                cols.append(vocab.setdefault(other, len(vocab)))
    m = sparse.csr_matrix(
        (np.ones(len(rows), np.float32), (rows, cols)), shape=(len(item_ids), max(len(vocab), 1))
    )
    m.data[:] = 1.0
    m.sum_duplicates()
    m.data[:] = 1.0
    return m

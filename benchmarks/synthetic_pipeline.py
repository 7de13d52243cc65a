"""A pipeline over a synthetic catalog (random text vectors, graph and weights) for sizing: latency and
memory of the request path at 10k–1M items, without training anything."""

from __future__ import annotations

import numpy as np
from scipy import sparse

from longtail.config import RankerConfig, RetrievalConfig, RetrieverConfig
from longtail.model.factory import build_ranker, build_retriever
from longtail.recommend.build import make_pipeline
from longtail.recommend.pipeline import Pipeline


def synthetic_pipeline(
    n: int, retrieval: RetrievalConfig, text_dim: int = 384, neighbours: int = 10, seed: int = 0
) -> Pipeline:
    """Two untrained stages and a MIPS index over ``n`` random items with Zipf train counts (a long tail)."""
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, text_dim), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    rows = np.repeat(np.arange(n), neighbours)
    graph = sparse.csr_matrix(
        (rng.random(n * neighbours, dtype=np.float32), (rows, rng.integers(0, n, n * neighbours))),
        shape=(n, n),
    )
    graph = sparse.csr_matrix(sparse.diags(1.0 / np.maximum(np.asarray(graph.sum(1)).ravel(), 1e-12)) @ graph)
    counts = np.where(rng.random(n) < 0.05, 0, rng.zipf(1.3, n).clip(0, 10_000))  # 5% never touched
    ranker_cfg = RankerConfig(heads=2, alpha=None, beta=None)
    ranker = build_ranker(ranker_cfg, vectors, graph, counts)
    retriever = build_retriever(
        RetrieverConfig(), ranker_cfg.max_history, vectors, graph, counts, seed
    ).compact()
    return make_pipeline(
        retriever=retriever,
        ranker=ranker,
        vectors=vectors,
        graph=graph,
        train_counts=counts,
        retrieval=retrieval,
        seed=seed,
    )

"""The one place that maps configs to model constructors."""

from __future__ import annotations

import numpy as np
import torch
from scipy import sparse

from longtail.config import BASELINE_NAMES, BaselinesConfig, GraphConfig, RankerConfig, RetrieverConfig
from longtail.data.encoded import Histories
from longtail.model.base import Recommender
from longtail.model.baselines import BPRMF, EpochCallback, ItemKNN, MostPop
from longtail.model.gates import Popularity
from longtail.model.graph import combine, cooccurrence, kg_neighbours, text_knn
from longtail.model.hybrid import HybridRanker, RankerSpec
from longtail.model.retriever import FactorizedRetriever, RetrieverSpec


def build_baseline(name: str, config: BaselinesConfig, on_epoch: EpochCallback | None = None) -> Recommender:
    """A fresh, unfitted baseline ``name`` with its knobs from ``config``."""
    if name == "mostpop":
        return MostPop()
    if name == "itemknn":
        return ItemKNN(k=config.itemknn.k, shrink=config.itemknn.shrink)
    if name == "bpr":
        return BPRMF(config.bpr, on_epoch=on_epoch)
    raise ValueError(f"unknown model {name!r}; expected one of {BASELINE_NAMES}")


def build_graph(
    config: GraphConfig, vectors: np.ndarray, item_entities: sparse.csr_matrix | None, train: Histories
) -> tuple[sparse.csr_matrix, dict[str, sparse.csr_matrix]]:
    """The combined item graph and its sources (text kNN, knowledge graph, co-occurrence)."""
    n = len(vectors)
    parts = {"text": text_knn(vectors, config.text_k) if config.text_k else sparse.csr_matrix((n, n))}
    if item_entities is not None and config.kg_k:
        parts["kg"] = kg_neighbours(item_entities, config.kg_k)
    if config.cooc_k:
        parts["cooc"] = cooccurrence(train, n, config.cooc_window, config.cooc_k)
    weights = {"text": config.text_weight, "kg": config.kg_weight, "cooc": config.cooc_weight}
    return combine(parts, weights), parts


def graph_tensor(graph: sparse.csr_matrix) -> torch.Tensor:
    """A scipy matrix as a coalesced torch sparse COO tensor."""
    coo = graph.tocoo()
    index = torch.as_tensor(np.vstack([coo.row, coo.col]).astype(np.int64))
    values = torch.as_tensor(coo.data, dtype=torch.float32)
    return torch.sparse_coo_tensor(index, values, coo.shape, check_invariants=True).coalesce()


def neighbour_text(graph: sparse.csr_matrix, vectors: np.ndarray) -> np.ndarray:
    """(n, d) A·x: each item's graph neighbours' text vectors, weighted by the (row-normalised) edges."""
    return np.asarray(sparse.csr_matrix(graph, dtype=np.float32) @ np.asarray(vectors, dtype=np.float32))


def ranker_spec(config: RankerConfig) -> RankerSpec:
    return RankerSpec(
        dim=config.dim,
        heads=config.heads,
        max_history=config.max_history,
        alpha=config.alpha,
        beta=config.beta,
        attention=config.attention,
        dropout=config.dropout,
        id_dropout=config.id_dropout,
        text_adapter=config.text_adapter,
    )


def retriever_spec(config: RetrieverConfig, max_history: int) -> RetrieverSpec:
    return RetrieverSpec(
        dim=config.dim,
        heads=config.heads,
        layers=config.layers,
        max_history=max_history,
        alpha=config.alpha,
        beta=config.beta,
        dropout=config.dropout,
        id_dropout=config.id_dropout,
    )


def build_ranker(
    config: RankerConfig, vectors: np.ndarray, graph: sparse.csr_matrix, train_counts: np.ndarray
) -> HybridRanker:
    """An untrained ``HybridRanker`` over the catalog of ``vectors``."""
    torch.manual_seed(config.seed)
    popularity = Popularity.of(torch.tensor(np.asarray(train_counts)))
    return HybridRanker(ranker_spec(config), _float_tensor(vectors), graph_tensor(graph), popularity)


def build_retriever(
    config: RetrieverConfig,
    max_history: int,
    vectors: np.ndarray,
    graph: sparse.csr_matrix,
    train_counts: np.ndarray,
    seed: int = 0,
) -> FactorizedRetriever:
    """An untrained ``FactorizedRetriever`` over the catalog of ``vectors``, reading ``max_history`` items."""
    torch.manual_seed(seed + 1)
    popularity = Popularity.of(torch.tensor(np.asarray(train_counts)))
    hood = torch.from_numpy(neighbour_text(graph, vectors))
    return FactorizedRetriever(retriever_spec(config, max_history), _float_tensor(vectors), hood, popularity)


def _float_tensor(array: np.ndarray) -> torch.Tensor:
    """A float32 tensor sharing memory with ``array`` when it already is a writable float32 C array."""
    out = np.ascontiguousarray(array, dtype=np.float32)
    return torch.from_numpy(out if out.flags.writeable else out.copy())

"""Building a ``Pipeline``: from trained models (training, tuning) or from a verified bundle (eval, Serve)."""

from __future__ import annotations

import numpy as np
import torch
from scipy import sparse

from longtail.bundle import Bundle, load_models
from longtail.config import RankerConfig, RerankConfig, RetrievalConfig
from longtail.model.hybrid import HybridRanker
from longtail.model.retriever import FactorizedRetriever
from longtail.recommend.arrange import Shelves
from longtail.recommend.index import ItemIndex, choose_kind
from longtail.recommend.pipeline import Catalog, Knobs, Pipeline


@torch.no_grad()
def item_vectors(retriever: FactorizedRetriever) -> np.ndarray:
    """The retriever's v_i of every item (n, 3·dim)."""
    retriever.eval()
    return retriever.item_vectors().cpu().numpy()


def build_index(retriever: FactorizedRetriever, retrieval: RetrievalConfig, seed: int = 0) -> ItemIndex:
    """The MIPS index of the retriever's item vectors, of the kind the config (and the catalog size) asks."""
    kind = choose_kind(retrieval.index, retriever.n_items, retrieval.exact_below)
    return ItemIndex.build(
        item_vectors(retriever),
        kind,
        retrieval.nlist,
        retrieval.nprobe,
        retrieval.hnsw_m,
        retrieval.ef_search,
        seed,
    )


def shelves_of(rerank: RerankConfig) -> Shelves:
    return Shelves(rerank.tail_share, rerank.new_share, rerank.exposure_penalty, rerank.tail_knn)


def knobs_of(ranker: RankerConfig, rerank: RerankConfig | None = None) -> Knobs:
    """The knobs a trained config implies: its post-hoc popularity terms (τ·γ, τ·δ) and, with ``rerank``, its
    shelves and score knobs (None: the model's own lists)."""
    rerank = rerank or RerankConfig()
    return Knobs(
        shelves=shelves_of(rerank),
        tail_boost=rerank.tail_boost,
        exploration=rerank.exploration,
        popularity_penalty=popularity_penalty_of(ranker),
        trend_bonus=trend_bonus_of(ranker),
    )


def make_pipeline(
    *,
    retriever: FactorizedRetriever,
    ranker: HybridRanker,
    vectors: np.ndarray,
    graph: sparse.csr_matrix,
    train_counts: np.ndarray,
    retrieval: RetrievalConfig,
    knobs: Knobs | None = None,
    index: ItemIndex | None = None,
    recent_counts: np.ndarray | None = None,
    history_strengths: bool = True,
    seed: int = 0,
    neighbours: sparse.csr_matrix | None = None,
) -> Pipeline:
    """A pipeline over trained models (both put in eval mode): ``knobs`` None means the model's own lists
    without any popularity term; ``index`` None builds the MIPS index; ``recent_counts`` (n,) feed the trend
    term; ``history_strengths``: the models read the histories' event strengths (``events.in_history``);
    ``neighbours`` (n, n): the item-kNN matrix of the tail shelf's order (``Shelves.tail_knn``)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    counts = np.asarray(train_counts)
    return Pipeline(
        retriever=retriever.eval(),
        ranker=ranker.eval(),
        index=index or build_index(retriever, retrieval, seed),
        text_vectors=vectors,
        graph=sparse.csr_matrix(graph, dtype=np.float32),
        train_counts=counts,
        recent_counts=None if recent_counts is None else np.asarray(recent_counts),
        retrieval=retrieval,
        history_strengths=history_strengths,
        catalog=Catalog.of(counts, vectors, retrieval),
        neighbours=None if neighbours is None else sparse.csr_matrix(neighbours, dtype=np.float32),
        knobs=knobs or Knobs(),
        rng=np.random.default_rng(seed),
    )


def popularity_penalty_of(ranker: RankerConfig, adjustment: float | None = None) -> float:
    """The score-unit penalty per log(1 + train count): γ·τ, since the ranker's logits are score / τ."""
    return (ranker.popularity_adjustment if adjustment is None else adjustment) * ranker.temperature


def trend_bonus_of(ranker: RankerConfig, boost: float | None = None) -> float:
    """The score-unit bonus per log(1 + recent count): δ·τ."""
    return (ranker.trend_boost if boost is None else boost) * ranker.temperature


def load_pipeline(bundle: Bundle, retrieval: RetrievalConfig | None = None) -> Pipeline:
    """The bundle's pipeline with its shelves and its index (read from ``index.faiss`` when it has one)."""
    cfg = bundle.config
    retrieval = retrieval or cfg.retrieval
    retriever, ranker = load_models(bundle)
    retriever.compact()  # scoring only from here: drop what only training reads
    index = None
    if bundle.index_bytes is not None and retrieval.index == cfg.retrieval.index:
        kind = choose_kind(cfg.retrieval.index, len(bundle.item_ids), cfg.retrieval.exact_below)
        index = ItemIndex.from_bytes(kind, bundle.index_bytes, retrieval.nprobe, retrieval.ef_search)
    return make_pipeline(
        retriever=retriever,
        ranker=ranker,
        vectors=bundle.vectors,
        graph=bundle.graph,
        train_counts=bundle.train_counts,
        retrieval=retrieval,
        knobs=knobs_of(cfg.ranker, cfg.rerank),
        index=index,
        recent_counts=bundle.recent_counts,
        history_strengths=cfg.events.in_history,
        seed=cfg.ranker.seed,
        neighbours=bundle.neighbours,
    )


def own_lists(p: Pipeline) -> Pipeline:
    """The same pipeline without the score knobs and shelves: the model's own lists (its popularity
    adjustment stays: it is part of the model's score, chosen on valid like its weights)."""
    return p.with_knobs(shelves=Shelves(), tail_boost=0.0, exploration=0.0)


def exact(p: Pipeline) -> Pipeline:
    """The same pipeline ranking every item (no retrieval stage)."""
    return p.with_candidates(None)

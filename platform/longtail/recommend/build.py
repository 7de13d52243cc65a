"""Building a ``Pipeline``: from trained models (training, tuning) or from a verified bundle (eval, Serve)."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from scipy import sparse

from longtail.bundle import Bundle, load_models
from longtail.config import RankerConfig, RerankConfig, RetrievalConfig
from longtail.model.hybrid import HybridRanker
from longtail.model.rerank import Shelves
from longtail.model.retriever import FactorizedRetriever
from longtail.recommend.index import ItemIndex, choose_kind
from longtail.recommend.pipeline import Pipeline


@torch.no_grad()
def item_vectors(retriever: FactorizedRetriever) -> np.ndarray:
    """The retriever's v_i of every item (n, 3·dim)."""
    retriever.eval()
    return retriever.item_vectors().cpu().numpy()


def build_index(retriever: FactorizedRetriever, retrieval: RetrievalConfig, seed: int = 0) -> ItemIndex:
    """The MIPS index of the retriever's item vectors, of the kind the config (and the catalog size) asks."""
    kind = choose_kind(retrieval.index, retriever.n_items, retrieval.exact_below)
    return ItemIndex.build(item_vectors(retriever), kind, retrieval.nlist, retrieval.nprobe, retrieval.hnsw_m,
                           retrieval.ef_search, seed)  # fmt: skip


def shelves_of(rerank: RerankConfig) -> Shelves:
    return Shelves(rerank.tail_share, rerank.new_share, rerank.exposure_penalty)


def make_pipeline(retriever: FactorizedRetriever, ranker: HybridRanker, vectors: np.ndarray, graph: sparse.csr_matrix,
                  train_counts: np.ndarray, retrieval: RetrievalConfig, rerank: RerankConfig | None = None,
                  index: ItemIndex | None = None, seed: int = 0, history_strengths: bool = True,
                  popularity_penalty: float = 0.0, recent_counts: np.ndarray | None = None,
                  trend_bonus: float = 0.0) -> Pipeline:  # fmt: skip
    """A pipeline over trained models; ``rerank`` None means the model's own lists (no boost, no shelves);
    ``history_strengths``: the models read the histories' event strengths (``events.in_history``);
    ``popularity_penalty``: τ·γ of the ranker's post-hoc popularity adjustment (``popularity_penalty_of``);
    ``recent_counts`` (n,) and ``trend_bonus`` τ·δ: its trend term (``trend_bonus_of``)."""
    rerank = rerank or RerankConfig()
    return Pipeline(
        retriever.eval(), ranker.eval(), index or build_index(retriever, retrieval, seed),
        np.asarray(vectors, dtype=np.float32), sparse.csr_matrix(graph, dtype=np.float32), np.asarray(train_counts),
        retrieval, shelves_of(rerank), rerank.tail_boost, rerank.exploration, np.random.default_rng(seed),
        history_strengths, popularity_penalty, None if recent_counts is None else np.asarray(recent_counts), trend_bonus,
    )  # fmt: skip


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
    return make_pipeline(retriever, ranker, bundle.vectors, bundle.graph, bundle.train_counts, retrieval, cfg.rerank,
                         index, cfg.ranker.seed, cfg.events.in_history, popularity_penalty_of(cfg.ranker),
                         bundle.recent_counts, trend_bonus_of(cfg.ranker))  # fmt: skip


def own_lists(p: Pipeline) -> Pipeline:
    """The same pipeline without the score knobs and shelves: the model's own lists (its popularity
    adjustment stays: it is part of the model's score, chosen on valid like its weights)."""
    return dataclasses.replace(p, shelves=Shelves(), boost=0.0, exploration=0.0)


def exact(p: Pipeline) -> Pipeline:
    """The same pipeline ranking every item (no retrieval stage)."""
    return dataclasses.replace(p, retrieval=p.retrieval.model_copy(update={"candidates": None}))

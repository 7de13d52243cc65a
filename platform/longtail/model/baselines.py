"""Baselines behind the ``Recommender`` interface: most-popular, item-kNN (cosine) and BPR matrix
factorisation."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import numpy as np
import torch
from scipy import sparse

from longtail.config import BPRConfig
from longtail.data.encoded import Histories, SplitData
from longtail.model.base import ScoringRecommender
from longtail.model.graph import cosine_neighbours

T = TypeVar("T")

EpochCallback = Callable[[int, float], None]


class MostPop(ScoringRecommender):
    """Score = the item's train count, the same list for everyone."""

    name = "mostpop"

    def __init__(self) -> None:
        self.counts: np.ndarray | None = None

    def fit(self, data: SplitData) -> None:
        """Count train interactions per item."""
        self.counts = data.train_counts().astype(np.float32)

    def score(self, users: np.ndarray, histories: Histories) -> np.ndarray:
        """(b, n_items) train counts."""
        counts = _fitted(self.counts, self.name)
        return np.broadcast_to(counts, (len(users), len(counts)))


class ItemKNN(ScoringRecommender):
    """Item-based kNN: cosine similarity of items' train user sets, ``k`` neighbours kept per item.

    score(u, i) = Σ_{j ∈ history(u)} sim(j, i), with sim(i, j) = |U_i ∩ U_j| / (sqrt(|U_i|·|U_j|) + shrink).
    """

    name = "itemknn"

    def __init__(self, k: int = 100, shrink: float = 0.0, block_cells: int = 1 << 25) -> None:
        self.k, self.shrink, self.block_cells = k, shrink, block_cells
        self.similarity: sparse.csr_matrix | None = None

    def fit(self, data: SplitData) -> None:
        """Build the top-k cosine similarity matrix (n_items, n_items) block by block."""
        train = data.histories(("train",))
        self.similarity = cosine_neighbours(train, data.n_items, self.k, self.shrink, None, self.block_cells)

    def score(self, users: np.ndarray, histories: Histories) -> np.ndarray:
        """(b, n_items) summed similarity to the history."""
        similarity = _fitted(self.similarity, self.name)
        return np.asarray((histories.to_csr(similarity.shape[0]) @ similarity).todense(), np.float32)


class BPRMF(ScoringRecommender, torch.nn.Module):
    """Matrix factorisation trained with the BPR loss: −log σ(⟨p_u, q_i⟩ − ⟨p_u, q_j⟩) for a seen item i
    and a uniformly sampled item j, plus L2 on the embeddings in the batch."""

    name = "bpr"

    def __init__(self, config: BPRConfig | None = None, on_epoch: EpochCallback | None = None) -> None:
        super().__init__()
        c = config or BPRConfig()
        self.dim, self.epochs, self.lr, self.batch_size, self.l2, self.seed = (
            c.dim,
            c.epochs,
            c.lr,
            c.batch_size,
            c.l2,
            c.seed,
        )
        self.on_epoch = on_epoch
        self.user_emb = torch.nn.Embedding(0, self.dim)
        self.item_emb = torch.nn.Embedding(0, self.dim)

    def fit(self, data: SplitData) -> None:
        """Adam over shuffled (user, item) train pairs for ``epochs`` epochs."""
        gen = torch.Generator().manual_seed(self.seed)
        self.user_emb = torch.nn.Embedding(data.n_users, self.dim)
        self.item_emb = torch.nn.Embedding(data.n_items, self.dim)
        for emb in (self.user_emb, self.item_emb):
            torch.nn.init.normal_(emb.weight, std=0.1, generator=gen)
        users = torch.as_tensor(data.train.users)
        items = torch.as_tensor(data.train.items)
        opt = torch.optim.Adam(self.parameters(), lr=self.lr)
        for epoch in range(self.epochs):
            perm = torch.randperm(len(users), generator=gen)
            total = 0.0
            for start in range(0, len(perm), self.batch_size):
                idx = perm[start : start + self.batch_size]
                u, i = users[idx], items[idx]  # (B,)
                j = torch.randint(0, data.n_items, (len(idx),), generator=gen)  # (B,) negatives
                pu, qi, qj = self.user_emb(u), self.item_emb(i), self.item_emb(j)  # (B, d)
                margin = (pu * (qi - qj)).sum(-1)  # (B,)
                loss = -torch.nn.functional.logsigmoid(margin).mean()
                loss = loss + self.l2 * (pu.pow(2).sum(-1) + qi.pow(2).sum(-1) + qj.pow(2).sum(-1)).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += loss.item() * len(idx)
            if self.on_epoch is not None:
                self.on_epoch(epoch, total / max(len(perm), 1))

    @torch.no_grad()
    def score(self, users: np.ndarray, histories: Histories) -> np.ndarray:
        """(b, n_items) inner products of user and item factors."""
        pu = self.user_emb(torch.as_tensor(np.asarray(users, dtype=np.int64)))  # (b, d)
        return (pu @ self.item_emb.weight.T).numpy()  # (b, n_items)


def _fitted(value: T | None, name: str) -> T:
    if value is None:
        raise RuntimeError(f"{name}: call fit() before scoring")
    return value

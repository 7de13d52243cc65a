"""LightFM with the WARP loss and item features (the item's id plus the words of its text)."""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
from lightfm import LightFM
from scipy import sparse

from longtail.data.encoded import Histories, SplitData
from longtail.model.base import ScoringRecommender


def text_features(texts: np.ndarray | None, n_items: int, min_df: int = 2, max_share: float = 0.5):
    """(n_items, n_items + vocab) CSR: an identity block plus bag-of-words of the item text, rows sum to 1."""
    tokens = (
        [sorted(set(re.findall(r"[a-z0-9]{2,}", str(t).lower()))) for t in texts] if texts is not None else []
    )
    df = Counter(w for toks in tokens for w in toks)
    vocab = {
        w: j for j, w in enumerate(sorted(w for w, c in df.items() if min_df <= c <= max_share * n_items))
    }
    rows, cols = list(range(n_items)), list(range(n_items))
    for i, toks in enumerate(tokens):
        for w in toks:
            if w in vocab:
                rows.append(i)
                cols.append(n_items + vocab[w])
    x = sparse.csr_matrix(
        (np.ones(len(rows), np.float32), (rows, cols)), shape=(n_items, n_items + len(vocab))
    )
    return sparse.diags(1.0 / np.asarray(x.sum(1)).ravel()) @ x


class LightFMWarp(ScoringRecommender):
    """score(u, i) = ⟨user vector, Σ feature vectors of i⟩ + item bias, trained with WARP."""

    def __init__(
        self,
        no_components: int = 64,
        epochs: int = 30,
        learning_rate: float = 0.05,
        item_alpha: float = 1e-6,
        threads: int = 2,
        seed: int = 0,
    ) -> None:
        self.name = "lightfm warp + item text"
        self.epochs, self.threads = epochs, threads
        self.model = LightFM(
            no_components=no_components,
            loss="warp",
            learning_rate=learning_rate,
            item_alpha=item_alpha,
            random_state=seed,
        )
        self.item_vectors = self.item_bias = None

    def fit(self, data: SplitData) -> None:
        train = data.histories(("train",)).to_csr(data.n_items).tocoo()
        features = text_features(data.item_text, data.n_items)
        self.model.fit(train, item_features=features, epochs=self.epochs, num_threads=self.threads)
        self.item_bias, self.item_vectors = self.model.get_item_representations(features)

    def score(self, users: np.ndarray, histories: Histories) -> np.ndarray:
        user_bias, user_vectors = self.model.user_biases[users], self.model.user_embeddings[users]
        scores = user_vectors @ self.item_vectors.T + self.item_bias[None, :] + user_bias[:, None]
        return scores.astype(np.float32)  # (b, n_items)

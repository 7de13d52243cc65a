"""LightGCN (torch-geometric's implementation) on the user–item graph of the train part, BPR loss.

Trained until valid ndcg@10 stops rising: checked every ``eval_every`` epochs, stopped after ``patience``
checks without a gain, the best check's embeddings kept. ``curve`` holds (epoch, loss, valid ndcg@10);
``best_epoch`` is what the test-time refit on train+valid trains for (``early_stop=False``: valid is
then inside train and cannot judge).
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch_geometric.nn.models import LightGCN
from torch_geometric.utils import to_torch_csr_tensor

from longtail.data.encoded import Histories, SplitData
from longtail.eval.evaluate import evaluate
from longtail.model.base import ScoringRecommender


class LightGCNPeer(ScoringRecommender):
    """Users are nodes 0..U-1, items U..U+I-1; score = ⟨final user embedding, final item embedding⟩."""

    def __init__(
        self,
        num_layers: int = 3,
        embedding_dim: int = 64,
        epochs: int = 1000,
        lr: float = 5e-3,
        batch_size: int = 4096,
        reg: float = 1e-4,
        seed: int = 0,
        early_stop: bool = True,
        eval_every: int = 10,
        patience: int = 3,
    ) -> None:
        self.name = "lightgcn (torch-geometric)"
        self.num_layers, self.dim, self.epochs, self.lr = num_layers, embedding_dim, epochs, lr
        self.batch_size, self.reg, self.seed = batch_size, reg, seed
        self.early_stop, self.eval_every, self.patience = early_stop, eval_every, patience
        self.users = self.items = None
        self.curve: list[dict] = []
        self.best_epoch = epochs

    def fit(self, data: SplitData) -> None:
        torch.manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        n_users, n_items = data.n_users, data.n_items
        pairs = np.unique(np.stack([data.train.users, data.train.items], 1), axis=0)  # (n, 2)
        u = torch.from_numpy(pairs[:, 0])
        i = torch.from_numpy(pairs[:, 1] + n_users)
        edge_index = torch.stack([torch.cat([u, i]), torch.cat([i, u])])  # (2, 2n), both directions
        n_nodes = n_users + n_items
        adj = to_torch_csr_tensor(
            edge_index, size=(n_nodes, n_nodes)
        )  # sparse propagation: ~4x scatter's speed
        model = LightGCN(n_nodes, self.dim, self.num_layers)
        optim = torch.optim.Adam(model.parameters(), lr=self.lr)
        best, since, t0 = -1.0, 0, time.time()
        self.curve = []
        for epoch in range(1, self.epochs + 1):
            order, total = rng.permutation(len(pairs)), 0.0
            for start in range(0, len(order), self.batch_size):
                idx = torch.from_numpy(order[start : start + self.batch_size])
                neg = torch.from_numpy(rng.integers(0, n_items, len(idx)) + n_users)
                emb = model.get_embedding(adj)  # (n_nodes, d)
                pos_rank = (emb[u[idx]] * emb[i[idx]]).sum(-1)
                neg_rank = (emb[u[idx]] * emb[neg]).sum(-1)
                nodes = torch.cat([u[idx], i[idx], neg])
                loss = model.recommendation_loss(pos_rank, neg_rank, node_id=nodes, lambda_reg=self.reg)
                optim.zero_grad()
                loss.backward()
                optim.step()
                total += float(loss.detach()) * len(idx)
            if not self.early_stop:
                if epoch % 50 == 0 or epoch == self.epochs:
                    print(
                        f"[lightgcn] lr {self.lr:g} epoch {epoch}/{self.epochs}: loss "
                        f"{total / len(order):.4f}",
                        flush=True,
                    )
                continue
            if epoch % self.eval_every:
                continue
            self._keep(model, adj, n_users)
            ndcg = evaluate(self, data, "valid").metrics["ndcg@10"]
            self.curve.append(
                {"epoch": epoch, "loss": round(total / len(order), 4), "valid_ndcg@10": round(ndcg, 4)}
            )
            print(
                f"[lightgcn] lr {self.lr:g} epoch {epoch}: loss {total / len(order):.4f}, valid ndcg@10 "
                f"{ndcg:.4f} ({time.time() - t0:.0f} s)",
                flush=True,
            )
            if ndcg > best:
                best, since, self.best_epoch = ndcg, 0, epoch
                best_emb = (self.users, self.items)
            else:
                since += 1
                if since >= self.patience:
                    break
        if self.early_stop and self.curve:
            self.users, self.items = best_emb
        else:
            self._keep(model, adj, n_users)

    def _keep(self, model: LightGCN, adj: torch.Tensor, n_users: int) -> None:
        with torch.no_grad():
            emb = model.get_embedding(adj).numpy()
        self.users, self.items = emb[:n_users], emb[n_users:]

    def score(self, users: np.ndarray, histories: Histories) -> np.ndarray:
        return (self.users[users] @ self.items.T).astype(np.float32)  # (b, n_items)

"""The sparse-dense hybrid ranker (DESIGN.md, "The model"). Pure torch.

    score(u, i) = α_i(1 − β_i)·s_text(u, i) + α_i β_i·s_assoc(u, i) + (1 − α_i)·s_cf(u, i)

- s_text: target-aware attention over the projected text vectors of the history (``TargetAttention``),
  defined for every item with text, touched or not.
- s_assoc: κ · Σ_l r_l · A[h_l, i], the item graph A reached from the history with recency weights
  r_l ∝ exp(−λ · position from newest); κ, λ ≥ 0 learned.
- s_cf: target-aware attention over ID embeddings of the history. An item with no train interaction has
  no ID vector (zero): its random, only-ever-negative embedding would be noise, so it scores on text and
  graph alone — exactly like an item added to the catalog after training.
- α_i, β_i: fixed numbers, or learned popularity gates: α_i = σ(a − softplus(w)·z_i) falls as item i gets
  more popular (z = standardised log(1 + train count)); β_i = σ(b + v·z_i).

Users are their history; there is no per-user parameter.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import nn

from longtail.model.attention import TargetAttention


@dataclass
class HybridOutput:
    """Scores of b users × c candidates, with every term and the attention for explanations."""

    score: torch.Tensor  # (b, c)
    text: torch.Tensor  # (b, c)
    assoc: torch.Tensor  # (b, c)
    cf: torch.Tensor  # (b, c)
    alpha: torch.Tensor  # (c,)
    beta: torch.Tensor  # (c,)
    text_attention: torch.Tensor  # (b, c, L)
    cf_attention: torch.Tensor  # (b, c, L)


class PopularityGate(nn.Module):
    """A mixing coefficient per item: fixed, or σ(bias + slope·z) with the slope's sign optionally forced."""

    def __init__(self, fixed: float | None, init: float, falling: bool) -> None:
        super().__init__()
        self.fixed, self.falling = fixed, falling
        self.bias = nn.Parameter(torch.logit(torch.tensor(init)))
        self.slope = nn.Parameter(torch.tensor(0.5 if falling else 0.0))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """(c,) coefficients for items with standardised log-popularity z (c,)."""
        if self.fixed is not None:
            return torch.full_like(z, self.fixed)
        slope = -nn.functional.softplus(self.slope) if self.falling else self.slope
        return torch.sigmoid(self.bias + slope * z)


class HybridRanker(nn.Module):
    """The hybrid scorer over a fixed catalog of ``n_items`` items (index ``n_items`` is padding)."""

    def __init__(
        self,
        text_vectors: torch.Tensor,
        graph: torch.Tensor,
        train_counts: torch.Tensor,
        dim: int = 64,
        heads: int = 1,
        max_history: int = 50,
        alpha: float | None = None,
        beta: float | None = None,
        use_attention: bool = True,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        n = text_vectors.shape[0]
        self.n_items, self.max_history = n, max_history
        self.register_buffer("text_vectors", text_vectors.float(), persistent=False)  # (n, d_t)
        self.register_buffer("graph", graph.coalesce().float(), persistent=False)  # (n, n) sparse COO
        with warnings.catch_warnings():  # "sparse CSR support is in beta": matmul and its backward are what we use
            warnings.simplefilter("ignore", UserWarning)
            graph_t = self.graph.t().coalesce().to_sparse_csr()
        self.register_buffer("graph_t", graph_t, persistent=False)  # (n, n) Aᵀ in CSR: ~10× faster products
        z = torch.log1p(train_counts.float())
        self.register_buffer("pop_z", (z - z.mean()) / z.std().clamp_min(1e-6), persistent=False)  # (n,)
        self.cold_z = float(-z.mean() / z.std().clamp_min(1e-6))  # pop_z of an item never touched
        known = torch.cat([train_counts > 0, torch.tensor([False])]).float()[:, None]  # (n + 1, 1), padding 0
        self.register_buffer("known", known, persistent=False)
        self.text_proj = nn.Linear(text_vectors.shape[1], dim)
        self.item_emb = nn.Embedding(n + 1, dim, padding_idx=n)
        nn.init.normal_(self.item_emb.weight, std=0.01)
        self.text_attn = TargetAttention(dim, heads, max_history, use_attention)
        self.cf_attn = TargetAttention(dim, heads, max_history, use_attention)
        self.assoc_scale = nn.Parameter(torch.tensor(1.0))  # κ = softplus(·)·10
        self.assoc_decay = nn.Parameter(torch.tensor(-2.0))  # λ = softplus(·)
        self.alpha = PopularityGate(alpha, 0.5, falling=True)
        self.beta = PopularityGate(beta, 0.5, falling=False)
        self.dropout = nn.Dropout(dropout)

    def item_text(self, items: torch.Tensor) -> torch.Tensor:
        """Projected text vectors (…, dim); padding maps to zeros."""
        safe = items.clamp(0, self.n_items - 1)
        out = self.projected_text()[safe] if not torch.is_grad_enabled() else self.text_proj(self.text_vectors[safe])
        return out * (items < self.n_items).unsqueeze(-1)

    def item_id(self, items: torch.Tensor) -> torch.Tensor:
        """ID embeddings (…, dim); zero for padding and for items without a train interaction."""
        return self.item_emb(items) * self.known[items]

    def projected_text(self) -> torch.Tensor:
        """text_proj of every item (n, dim), cached while the projection's weights are unchanged (scoring)."""
        key = (self.text_proj.weight._version, self.text_proj.bias._version, self.text_proj.weight.data_ptr(),
               self.text_vectors.data_ptr())  # fmt: skip
        if getattr(self, "_text_key", None) != key:
            with torch.no_grad():
                self._text_cache = self.text_proj(self.text_vectors)
            self._text_key = key
        return self._text_cache

    def assoc(self, history: torch.Tensor, mask: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """κ · Σ_l r_l A[h_l, c] for each user and candidate: (b, c)."""
        b, length = history.shape
        from_end = (mask.sum(1, keepdim=True) - 1 - torch.arange(length, device=history.device)).float()
        r = torch.exp(-nn.functional.softplus(self.assoc_decay) * from_end.clamp_min(0)) * mask  # (b, L)
        r = r / r.sum(1, keepdim=True).clamp_min(1e-12)
        rows = torch.zeros(b, self.n_items + 1, device=history.device).scatter_add(1, history, r)[
            :, : self.n_items
        ]
        reach = torch.sparse.mm(self.graph_t, rows.t()).t()  # (b, n) = rows @ A
        return nn.functional.softplus(self.assoc_scale) * 10.0 * reach[:, candidates]

    def forward(self, history: torch.Tensor, candidates: torch.Tensor | None = None) -> HybridOutput:
        """history: (b, L) item indices, oldest first, padded with ``n_items``; candidates: (c,) or all items."""
        if candidates is None:
            candidates = torch.arange(self.n_items, device=history.device)
        mask = history < self.n_items  # (b, L)
        hist_text = self.dropout(self.item_text(history))  # (b, L, dim)
        cand_text = self.item_text(candidates)  # (c, dim)
        s_text, w_text = self.text_attn(cand_text, cand_text, hist_text, hist_text, mask)
        hist_id = self.dropout(self.item_id(history))  # (b, L, dim)
        cand_id = self.item_id(candidates)  # (c, dim)
        s_cf, w_cf = self.cf_attn(cand_id, cand_id, hist_id, hist_id, mask)
        s_assoc = self.assoc(history, mask, candidates)
        z = self.pop_z[candidates]
        alpha, beta = self.alpha(z), self.beta(z)  # (c,)
        score = alpha * (1 - beta) * s_text + alpha * beta * s_assoc + (1 - alpha) * s_cf
        return HybridOutput(score, s_text, s_assoc, s_cf, alpha, beta, w_text, w_cf)


def extend_catalog(model: HybridRanker, new_vectors: torch.Tensor, graph: torch.Tensor) -> HybridRanker:
    """A ranker over the catalog plus m new, untouched items, with the same weights.

    new_vectors: (m, d_t) their text vectors; graph: (n + m, n + m) sparse, the grown item graph. New
    items get a zero ID embedding (nothing is known of them but their text and neighbours) and the
    popularity of a never-touched item; every old item scores exactly as before for the same history.
    """
    n, m = model.n_items, new_vectors.shape[0]
    grown = HybridRanker(
        torch.cat([model.text_vectors, new_vectors.float()]), graph, torch.zeros(n + m),
        dim=model.text_proj.out_features, heads=model.text_attn.heads, max_history=model.max_history,
        alpha=model.alpha.fixed, beta=model.beta.fixed, use_attention=model.text_attn.use_attention,
    )  # fmt: skip
    grown.pop_z = torch.cat([model.pop_z, torch.full((m,), model.cold_z)])  # (n + m,)
    grown.known = torch.cat([model.known[:n], torch.zeros(m, 1), model.known[n:]])  # (n + m + 1, 1)
    grown.cold_z = model.cold_z
    state = model.state_dict()
    emb = state["item_emb.weight"]  # (n + 1, dim), padding last
    state["item_emb.weight"] = torch.cat([emb[:n], torch.zeros(m, emb.shape[1]), emb[n:]])
    grown.load_state_dict(state)
    grown.dropout.p = model.dropout.p
    return grown.train(model.training)

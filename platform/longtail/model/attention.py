"""Target-aware attention over a user's history (DIN-style): the candidate item is the query.

For candidate i and history items h_1..h_L (oldest first):

    a(i, l) = mean_heads softmax_l( ⟨W_q x_i, W_k x_{h_l}⟩_head / √d_head + r_head[L_u − 1 − l] + log w_l )
    s(u, i) = Σ_l a(i, l) · ⟨y_i, y_{h_l}⟩

where x are the attention features, y the value/target vectors, r a learned recency bias indexed by
position from the newest item and w_l the event strength of history item l (a purchase > a view; 1 when
not given): an item of strength w weighs like w copies of it. Padding never receives weight; an empty
history scores 0.

Candidates are either shared by the batch, (c, d), or one set per user, (b, c, d) — the second stage of
retrieve → rank scores each user's own candidates, so nothing here grows with the catalog.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class TargetAttention(nn.Module):
    """Scores candidates against histories through candidate-dependent attention weights."""

    def __init__(self, dim: int, heads: int, max_history: int, use_attention: bool = True) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads, self.head_dim, self.use_attention = heads, dim // heads, use_attention
        self.query = nn.Linear(dim, dim, bias=False)
        self.key = nn.Linear(dim, dim, bias=False)
        self.recency = nn.Parameter(torch.zeros(heads, max_history))

    def weights(
        self,
        cand: torch.Tensor,
        hist: torch.Tensor,
        mask: torch.Tensor,
        strength: torch.Tensor | None = None,
        projected: bool = False,
    ) -> torch.Tensor:
        """Attention of each candidate over each history: (b, c, L).

        cand: (c, d) shared or (b, c, d) per-user candidate features; hist: (b, L, d); mask: (b, L) true
        for real items; strength: (b, L) positive event strengths, or None (all 1). ``projected``: cand and
        hist are already W_q x and W_k x (per-item tables, for scoring).
        """
        b, length, _ = hist.shape
        c = cand.shape[-2]
        if not self.use_attention:  # mean pooling: every real history item weighs its strength
            w = mask.float() if strength is None else mask.float() * strength
            w = w / w.sum(1, keepdim=True).clamp_min(1e-12)  # (b, L)
            return w[:, None, :].expand(b, c, length)
        # every pass over the (b, h, c, L) logits counts (it is the ranker's largest tensor): the 1/√dh
        # scale goes into the (smaller) keys, recency and padding into one (b, h, 1, L) bias
        q, k = (cand, hist) if projected else (self.query(cand), self.key(hist))
        k = k.reshape(b, length, self.heads, self.head_dim) / math.sqrt(self.head_dim)  # (b, L, h, dh)
        k = k.permute(0, 2, 3, 1)  # (b, h, dh, L)
        if cand.dim() == 2:
            q = q.reshape(c, self.heads, self.head_dim).transpose(0, 1)  # (h, c, dh)
            logits = torch.matmul(q[None], k)  # (b, h, c, L)
        elif self.heads == 1:
            logits = torch.matmul(q, k[:, 0])[:, None]  # (b, 1, c, L): no per-head copy of the queries
        else:
            q = q.reshape(b, c, self.heads, self.head_dim).transpose(1, 2)  # (b, h, c, dh)
            logits = torch.matmul(q, k)  # (b, h, c, L)
        from_end = (mask.sum(1, keepdim=True) - 1 - torch.arange(length, device=mask.device)).clamp(0, None)
        bias = self.recency[:, from_end.clamp(max=self.recency.shape[1] - 1)].permute(1, 0, 2)  # (b, h, L)
        if strength is not None:
            bias = bias + torch.log(strength)[:, None, :]
        empty = ~mask.any(1)  # (b,) no real item: such a history scores 0
        # padding gets -inf, except in an empty history, whose softmax over -inf only would be NaN (in
        # backward
        # too, spoiling every gradient of the batch); its weights are zeroed below instead
        blocked = ~mask[:, None, :] & ~empty[:, None, None]  # (b, 1, L)
        bias = bias.masked_fill(blocked, float("-inf"))[:, :, None, :]  # (b, h, 1, L)
        w = torch.softmax(logits + bias, dim=-1).mean(1)  # (b, c, L)
        if empty.any():
            w = w.masked_fill(empty[:, None, None], 0.0)
        return w

    def forward(
        self,
        cand_feat: torch.Tensor,
        cand_vec: torch.Tensor,
        hist_feat: torch.Tensor,
        hist_vec: torch.Tensor,
        mask: torch.Tensor,
        strength: torch.Tensor | None = None,
        projected: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(scores (b, c), weights (b, c, L)) for candidates (c, d) or (b, c, d) against histories (b, L, d);
        strength (b, L) or None; ``projected``: the features are already W_q x (candidates) and W_k x
        (history)."""
        w = self.weights(cand_feat, hist_feat, mask, strength, projected)  # (b, c, L)
        pattern = "cd,bld->bcl" if cand_vec.dim() == 2 else "bcd,bld->bcl"
        sim = torch.einsum(pattern, cand_vec, hist_vec)  # (b, c, L)
        return (w * sim).sum(-1), w

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


class _Transposed(torch.autograd.Function):
    """x.T (2-d) whose gradient comes back contiguous: the plain transpose hands its (c, b) gradient on as a
    strided view, and every (c, b, L) backward op before it then runs on (and copies) that layout."""

    @staticmethod
    def forward(ctx: object, x: torch.Tensor) -> torch.Tensor:
        return x.t().contiguous()

    @staticmethod
    def backward(ctx: object, grad: torch.Tensor) -> torch.Tensor:
        return grad.t().contiguous()


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
        if cand.dim() == 2:
            w = self._shared_weights(cand, hist, mask, strength, projected) / self.heads  # (c, b, L)
            return w.permute(1, 0, 2)
        # every pass over the (b, c, L) logits counts (they are the ranker's largest tensors): the 1/√dh
        # scale goes into the (smaller) keys, recency and padding into a (b, 1, L) bias per head, added by
        # the product itself; the mean over heads one head at a time (no (b, h, c, L) tensor)
        q, k = (cand, hist) if projected else (self.query(cand), self.key(hist))
        k = k.reshape(b, length, self.heads, self.head_dim) / math.sqrt(self.head_dim)  # (b, L, h, dh)
        k = k.permute(0, 2, 3, 1)  # (b, h, dh, L)
        q = q.reshape(b, c, self.heads, self.head_dim)  # (b, c, h, dh)
        bias = self._bias(mask, strength)[:, :, None, :]  # (b, h, 1, L)
        w = torch.softmax(torch.baddbmm(bias[:, 0], q[:, :, 0], k[:, 0]), dim=-1)  # (b, c, L)
        for i in range(1, self.heads):
            w = w + torch.softmax(torch.baddbmm(bias[:, i], q[:, :, i], k[:, i]), dim=-1)
        return self._zero_empty(w / self.heads if self.heads > 1 else w, mask, 0)

    def _shared_weights(
        self,
        cand: torch.Tensor,
        hist: torch.Tensor,
        mask: torch.Tensor,
        strength: torch.Tensor | None,
        projected: bool,
    ) -> torch.Tensor:
        """Attention of candidates (c, d) shared by the batch over histories (b, L, d), summed over the heads
        (the caller divides where that is cheapest): (c, b, L).

        Candidate-major, so the logits of each head are one (c, dh) × (dh, b·L) product (bias added in it)
        rather than b small ones (training: about a third faster than the (b, h, c, L) layout, same
        numbers).
        """
        b, length, _ = hist.shape
        c = cand.shape[0]
        q, k = (cand, hist) if projected else (self.query(cand), self.key(hist))
        k = k.reshape(b * length, self.heads, self.head_dim) / math.sqrt(self.head_dim)  # (b·L, h, dh)
        q = q.reshape(c, self.heads, self.head_dim).transpose(0, 1)  # (h, c, dh)
        bias = self._bias(mask, strength).transpose(0, 1).reshape(self.heads, 1, b * length)  # (h, 1, b·L)
        k = k.permute(1, 2, 0)  # (h, dh, b·L)
        # the mean over heads one head at a time: no (h, c, b, L) tensor, nor its expanded gradient
        w = torch.softmax(torch.addmm(bias[0], q[0], k[0]).view(c, b, length), dim=-1)
        for i in range(1, self.heads):
            w = w + torch.softmax(torch.addmm(bias[i], q[i], k[i]).view(c, b, length), dim=-1)
        return self._zero_empty(w, mask, 1)  # (c, b, L)

    def _bias(self, mask: torch.Tensor, strength: torch.Tensor | None) -> torch.Tensor:
        """Recency, log strength and padding (−inf) per head: (b, h, L). An empty history keeps finite
        logits: a softmax over −inf only would be NaN (in backward too, spoiling every gradient of the
        batch); ``_zero_empty`` zeroes its weights instead."""
        length = mask.shape[1]
        from_end = (mask.sum(1, keepdim=True) - 1 - torch.arange(length, device=mask.device)).clamp(0, None)
        bias = self.recency[:, from_end.clamp(max=self.recency.shape[1] - 1)].permute(1, 0, 2)  # (b, h, L)
        if strength is not None:
            bias = bias + torch.log(strength)[:, None, :]
        blocked = ~mask & mask.any(1, keepdim=True)  # (b, L)
        return bias.masked_fill(blocked[:, None, :], float("-inf"))

    @staticmethod
    def _zero_empty(w: torch.Tensor, mask: torch.Tensor, user_dim: int) -> torch.Tensor:
        """``w`` with the weights of empty histories set to 0 (an empty history scores 0); users on
        ``user_dim`` of w, positions last."""
        empty = ~mask.any(1)  # (b,)
        if not empty.any():
            return w
        shape = [1] * w.dim()
        shape[user_dim] = len(empty)
        return w.masked_fill(empty.view(shape), 0.0)

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
        (history). The weights carry no gradient (explanations read them)."""
        if cand_vec.dim() == 2 and self.use_attention:  # shared: candidate-major throughout
            b, length, d = hist_vec.shape
            w = self._shared_weights(cand_feat, hist_feat, mask, strength, projected)  # (c, b, L) head sum
            # the mean over heads divides the (c, d) candidate vectors, not a (c, b, L) tensor
            y = cand_vec / self.heads
            sim = (y @ hist_vec.reshape(b * length, d).T).view(-1, b, length)  # (c, b, L)
            return _Transposed.apply((w * sim).sum(-1)), (w.detach() / self.heads).permute(1, 0, 2)
        w = self.weights(cand_feat, hist_feat, mask, strength, projected)  # (b, c, L)
        sim = torch.einsum("bcd,bld->bcl" if cand_vec.dim() == 3 else "cd,bld->bcl", cand_vec, hist_vec)
        return (w * sim).sum(-1), w.detach()

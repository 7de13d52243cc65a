"""The factorized hybrid: the seed formula as one inner product, for retrieval over the whole catalog.

    score(u, i) = α_i(1−β_i)·⟨p_u, t_i⟩ + α_iβ_i·⟨r_u, t_i⟩ + (1−α_i)·⟨c_u, e_i⟩ = ⟨q_u, v_i⟩

    v_i = [α_i(1−β_i)·t_i ; α_iβ_i·t_i ; (1−α_i)·e_i]        item tower   (n, 3·dim)
    q_u = [p_u ; r_u ; c_u]                                   user tower   (b, 3·dim)

- t_i = W_t x_i: the item's text vector x_i projected without bias (defined for every item with text);
  e_i: its ID embedding, zero for items without a train interaction; α_i, β_i: the popularity gates of
  ``longtail.model.gates`` applied on the item side, so v_i needs nothing of the user.
- p_u, c_u: heads over a SASRec-like sequence encoder — causal self-attention blocks over the history's
  t + e + a position embedding counted from the newest item; the newest position's output reads out.
- r_u = W_r Σ_l ρ_l g_{h_l}: association through the item graph, the projected text of the history's
  graph neighbours (g = A·t, row-normalised graph A) with recency weights ρ_l ∝ exp(−λ·position from
  newest). It makes the graph term an inner product too.

Because every term is an inner product, maximum-inner-product search over v serves it exactly. Pure torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from longtail.model.gates import Popularity, PopularityGate
from longtail.model.gather import rows


@dataclass(frozen=True)
class RetrieverSpec:
    """The retriever's shape and regularisation (``longtail.config.RetrieverConfig`` is mapped onto it)."""

    dim: int = 64  # each of the three term vectors (item vectors are 3·dim)
    heads: int = 2  # self-attention heads of the user tower
    layers: int = 2  # causal self-attention blocks of the user tower
    max_history: int = 30  # newest history items read
    alpha: float | None = None  # fixed α, or None: the learned popularity gate
    beta: float | None = None  # fixed β, or None: the learned popularity gate
    dropout: float = 0.1  # in the user tower, while training
    id_dropout: float = 0.0  # chance an item's ID vector is off for a training step


@dataclass
class RetrieverOutput:
    """Scores of b users × c candidates and the three terms (before the gates)."""

    score: torch.Tensor  # (b, c) = ⟨q_u, v_i⟩
    text: torch.Tensor  # (b, c) ⟨p_u, t_i⟩
    assoc: torch.Tensor  # (b, c) ⟨r_u, t_i⟩
    cf: torch.Tensor  # (b, c) ⟨c_u, e_i⟩
    alpha: torch.Tensor  # (c,)
    beta: torch.Tensor  # (c,)


class CausalBlock(nn.Module):
    """Pre-norm transformer block with causal self-attention (nanoGPT's block, key padding added)."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.mlp = nn.Sequential(
            nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim), nn.Dropout(dropout)
        )

    def forward(self, x: torch.Tensor, blocked: torch.Tensor) -> torch.Tensor:
        """x: (b, L, dim); blocked: (b·heads, L, L) true where a position may not attend."""
        h = self.norm1(x)
        x = x + self.attn(h, h, h, attn_mask=blocked, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))

    def at(self, x: torch.Tensor, blocked: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        """``forward(x, blocked)[i, position[i]]`` (b, dim), computing that one position's query only (the
        read-out block: the other positions' outputs would be thrown away)."""
        b, length, _ = x.shape
        users = torch.arange(b, device=x.device)
        h = self.norm1(x)
        mask = blocked.view(b, -1, length, length)[users, :, position].reshape(
            -1, 1, length
        )  # (b·heads, 1, L)
        y = (
            x[users, position]
            + self.attn(h[users, position][:, None], h, h, attn_mask=mask, need_weights=False)[0][:, 0]
        )
        return y + self.mlp(self.norm2(y))


class FactorizedRetriever(nn.Module):
    """User and item towers over a catalog of n items (index n is padding): ``text_vectors`` (n, d_t) unit
    text vectors, ``neighbour_text`` (n, d_t) A·x (each item's graph neighbours' text), ``popularity``."""

    text_vectors: torch.Tensor  # buffers (registered in __init__)
    neighbour_text: torch.Tensor
    pop_z: torch.Tensor
    known: torch.Tensor
    _cache: tuple[torch.Tensor, torch.Tensor]

    def __init__(
        self,
        spec: RetrieverSpec,
        text_vectors: torch.Tensor,
        neighbour_text: torch.Tensor,
        popularity: Popularity,
    ) -> None:
        super().__init__()
        self.spec = spec
        n, d_text = text_vectors.shape
        dim = spec.dim
        self.n_items, self.max_history, self.dim, self.heads = n, spec.max_history, dim, spec.heads
        self.register_buffer("text_vectors", text_vectors.float(), persistent=False)  # (n, d_t)
        self.register_buffer("neighbour_text", neighbour_text.float(), persistent=False)  # (n, d_t) = A·x
        self.popularity = popularity
        self.register_buffer("pop_z", popularity.z.float(), persistent=False)  # (n,)
        self.register_buffer("known", popularity.known_rows(), persistent=False)  # (n + 1, 1)
        self.text_proj = nn.Linear(d_text, dim, bias=False)
        self.item_emb = nn.Embedding(n + 1, dim, padding_idx=n)
        nn.init.normal_(self.item_emb.weight, std=0.01)
        self.position = nn.Embedding(spec.max_history, dim)
        self.blocks = nn.ModuleList(CausalBlock(dim, spec.heads, spec.dropout) for _ in range(spec.layers))
        self.norm = nn.LayerNorm(dim)
        self.text_head = nn.Linear(dim, dim)
        self.cf_head = nn.Linear(dim, dim)
        self.assoc_proj = nn.Linear(dim, dim, bias=False)
        self.assoc_decay = nn.Parameter(torch.tensor(-2.0))  # λ = softplus(·)
        self.alpha = PopularityGate(spec.alpha, 0.5, falling=True)
        self.beta = PopularityGate(spec.beta, 0.5, falling=False)
        self.dropout = nn.Dropout(spec.dropout)
        self.compacted = False  # see ``compact``

    # ---- item tower ---------------------------------------------------------------------------------
    def item_text(self, items: torch.Tensor) -> torch.Tensor:
        """t_i (…, dim); zeros for padding."""
        safe = items.clamp(0, self.n_items - 1)
        out = (
            rows(self._projected()[0], safe)
            if not torch.is_grad_enabled()
            else self.text_proj(rows(self.text_vectors, safe))
        )
        return out * (items < self.n_items).unsqueeze(-1)

    def _projected(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(W_t x, W_t g) of every item (n, dim) each, cached while the projection is unchanged (scoring)."""
        key = (
            self.text_proj.weight._version,
            self.text_proj.weight.data_ptr(),
            self.text_vectors.data_ptr(),
            self.neighbour_text.data_ptr(),
        )
        if self.compacted or getattr(self, "_cache_key", None) == key:
            return self._cache
        with torch.no_grad():
            self._cache = (self.text_proj(self.text_vectors), self.text_proj(self.neighbour_text))
        self._cache_key = key
        return self._cache

    def compact(self) -> FactorizedRetriever:
        """For scoring only: keep the projected caches (n, dim) and free the raw neighbour text (n, d_t),
        which
        only training reads (at a million items it is 1.5 GB). Returns the model in eval mode."""
        self.eval()
        if not self.compacted:
            self._projected()
            self.neighbour_text = torch.zeros(0, self.neighbour_text.shape[1])
            self.compacted = True
        return self

    def item_id(self, items: torch.Tensor, known: torch.Tensor | None = None) -> torch.Tensor:
        """e_i (…, dim); zero for padding and for items without a train interaction (or that ``known``
        zeroes)."""
        return self.item_emb(items) * rows(self.known if known is None else known, items)

    def gates(self, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.pop_z[items.clamp(max=self.n_items - 1)]
        return self.alpha(z), self.beta(z)

    def item_vectors(self, items: torch.Tensor | None = None) -> torch.Tensor:
        """v_i for ``items`` (c,) or every item: (c, 3·dim)."""
        if items is None:
            items = torch.arange(self.n_items, device=self.pop_z.device)
        t, e = self.item_text(items), self.item_id(items)  # (c, dim)
        a, b = (g[:, None] for g in self.gates(items))
        return torch.cat([a * (1 - b) * t, a * b * t, (1 - a) * e], dim=-1)

    def grown(self, text_vectors: torch.Tensor, new_neighbour_text: torch.Tensor) -> FactorizedRetriever:
        """This retriever over the catalog plus m new, untouched items, with the same weights and spec:
        ``text_vectors`` (n + m, d_t) the grown catalog's (shared, not copied), ``new_neighbour_text`` (m,
        d_t)
        A·x of the new rows. The new items have no ID vector and a never-touched item's gates."""
        n, m = self.n_items, text_vectors.shape[0] - self.n_items
        new = new_neighbour_text.float()
        neighbours = new if self.compacted else torch.cat([self.neighbour_text, new])
        grown = FactorizedRetriever(self.spec, text_vectors, neighbours, self.popularity.grown(m))
        state = self.state_dict()
        emb = state["item_emb.weight"]  # (n + 1, dim), padding last
        state["item_emb.weight"] = torch.cat([emb[:n], torch.zeros(m, emb.shape[1]), emb[n:]])
        grown.load_state_dict(state)
        if self.compacted:  # the old rows' caches as they were, the new rows' from their raw text
            with torch.no_grad():
                text, hood = self._projected()
                grown._cache = (
                    torch.cat([text, grown.text_proj(text_vectors[n:].float())]),
                    torch.cat([hood, grown.text_proj(new)]),
                )
            grown.neighbour_text, grown.compacted = torch.zeros(0, neighbours.shape[1]), True
        return grown.train(self.training)

    # ---- user tower ---------------------------------------------------------------------------------
    def user_parts(
        self, history: torch.Tensor, strength: torch.Tensor | None = None, known: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(p_u, r_u, c_u), each (b, dim), for histories (b, L) oldest first, padded with ``n_items``;
        strength (b, L): event strengths, which weigh the association term's ρ (the sequence encoder reads
        the items only)."""
        length = history.shape[1]
        mask = history < self.n_items  # (b, L)
        n_real = mask.sum(1)  # (b,)
        from_end = (n_real[:, None] - 1 - torch.arange(length, device=history.device)).clamp(
            0, self.max_history - 1
        )
        x = self.item_text(history) + self.item_id(history, known) + self.position(from_end) * mask[..., None]
        x = self.dropout(x)  # (b, L, dim)
        causal = torch.ones(length, length, dtype=torch.bool, device=history.device).triu(1)  # (L, L)
        blocked = causal[None] | ~mask[:, None, :]  # (b, L, L)
        blocked[:, :, 0] = (
            False  # position 0 is always visible: an empty history never meets an all-masked row
        )
        blocked = blocked.repeat_interleave(self.heads, dim=0)  # (b·heads, L, L)
        for block in self.blocks[:-1]:
            x = block(x, blocked)
        readout: CausalBlock = self.blocks[-1]  # type: ignore[assignment]  # ModuleList items are modules
        last = self.norm(readout.at(x, blocked, (n_real - 1).clamp_min(0)))  # (b, dim) the newest position
        rho = torch.exp(-nn.functional.softplus(self.assoc_decay) * from_end.float()) * mask  # (b, L)
        if strength is not None:
            rho = rho * strength
        rho = rho / rho.sum(1, keepdim=True).clamp_min(1e-12)
        safe = history.clamp(max=self.n_items - 1)
        if torch.is_grad_enabled():
            if self.compacted:
                raise RuntimeError("a compacted retriever scores only (no raw neighbour text to train on)")
            reach = self.text_proj(
                torch.einsum("bl,bld->bd", rho, rows(self.neighbour_text, safe))
            )  # W_t Σ_l ρ_l g_{h_l}
        else:
            reach = torch.einsum(
                "bl,bld->bd", rho, rows(self._projected()[1], safe)
            )  # the same, from the cache
        r_u = self.assoc_proj(reach)
        real = (n_real > 0)[:, None]  # an empty history has no vector: it scores 0 everywhere
        return self.text_head(last) * real, r_u, self.cf_head(last) * real

    def user_vectors(self, history: torch.Tensor, strength: torch.Tensor | None = None) -> torch.Tensor:
        """q_u (b, 3·dim)."""
        return torch.cat(self.user_parts(history, strength), dim=-1)

    def forward(
        self,
        history: torch.Tensor,
        candidates: torch.Tensor | None = None,
        strength: torch.Tensor | None = None,
    ) -> RetrieverOutput:
        """⟨q_u, v_i⟩ and its terms for histories (b, L) and shared candidates (c,) (None: every item);
        strength (b, L) event strengths or None."""
        if candidates is None:
            candidates = torch.arange(self.n_items, device=history.device)
        known = None  # ID dropout (training): the same items lose their ID vector in histories and candidates
        if self.training and self.spec.id_dropout > 0:
            known = self.known * (torch.rand_like(self.known) >= self.spec.id_dropout)
        p, r, c = self.user_parts(history, strength, known)
        t, e = self.item_text(candidates), self.item_id(candidates, known)  # (c, dim)
        a, b = self.gates(candidates)
        text, assoc, cf = p @ t.T, r @ t.T, c @ e.T  # (b, c)
        score = a * (1 - b) * text + a * b * assoc + (1 - a) * cf  # = user_vectors @ item_vectors.T
        return RetrieverOutput(score, text, assoc, cf, a, b)

"""The sparse-dense hybrid ranker (docs/design.md, "Scoring"), the second stage of retrieve → rank. Pure
torch.

    score(u, i) = α_i(1 − β_i)·s_text(u, i) + α_i β_i·s_assoc(u, i) + (1 − α_i)·s_cf(u, i)

- s_text: target-aware attention over the projected text vectors of the history (``TargetAttention``),
  defined for every item with text, touched or not.
- s_assoc: κ · Σ_l r_l · A[h_l, i], the item graph A reached from the history with recency weights
  r_l ∝ w_l · exp(−λ · position from newest) (w_l: the event's strength, 1 when not given); κ, λ ≥ 0 learned.
- s_cf: target-aware attention over ID embeddings of the history. An item with no train interaction has
  no ID vector (zero): its random, only-ever-negative embedding would be noise, so it scores on text and
  graph alone — exactly like an item added to the catalog after training.
- α_i, β_i: fixed numbers, or learned popularity gates: α_i = σ(a − softplus(w)·z_i) falls as item i gets
  more popular (z = standardised log(1 + train count)); β_i = σ(b + v·z_i).

Event strengths w (b, L) (``longtail.config.EventsConfig``) enter both attentions as log w_l: an item of
strength w weighs like w copies of it.

Candidates are shared by a batch (training, exact scoring of the whole catalog) or one set per user (the
second stage: tensors grow with candidates × history, never with the catalog). Users are their history;
there is no per-user parameter.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from longtail.model.attention import TargetAttention
from longtail.model.gates import Popularity, PopularityGate
from longtail.model.gather import rows

EDGE_KEY = 1 << 32  # an edge (src, dst) is the key src·2³² + dst: sorted once, searched per request
TABLES_MAX_BYTES = 64 << 20  # scoring tables (6 of (n + 1, dim)) up to this size: 43k items at dim 64; larger
# catalogs project each request's candidates instead (at 1M items the tables would add 1.5 GB per replica)


@dataclass(frozen=True)
class RankerSpec:
    """The ranker's shape and regularisation (``longtail.config.RankerConfig`` is mapped onto it)."""

    dim: int = 64  # projected text and ID embeddings
    heads: int = 1  # attention heads (must divide dim)
    max_history: int = 50  # newest history items read
    alpha: float | None = None  # fixed α, or None: the learned popularity gate
    beta: float | None = None  # fixed β, or None: the learned popularity gate
    attention: bool = True  # target-aware attention; False: mean pooling
    dropout: float = 0.1  # on history embeddings, while training
    id_dropout: float = 0.0  # chance an item's ID vector is off for a training step
    text_adapter: int = 0  # hidden width of the residual MLP on the text vectors; 0: the projection only


class TextAdapter(nn.Module):
    """U·GELU(V·x), added to the linear projection W_t·x of an item's frozen text vector x: the text view
    reshaped non-linearly by the recommendation loss while the encoder stays frozen. U starts at zero, so
    an untrained adapter leaves the projection as it is."""

    def __init__(self, d_text: int, hidden: int, dim: int) -> None:
        super().__init__()
        self.down = nn.Linear(d_text, hidden)
        self.up = nn.Linear(hidden, dim, bias=False)
        nn.init.zeros_(self.up.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (…, d_text) → (…, dim)."""
        return self.up(nn.functional.gelu(self.down(x)))


@dataclass
class ItemTable:
    """One attention view's per-item inputs for scoring, (n + 1, dim) each with a zero padding row: the
    value vector y (text projection or ID embedding), its query W_q y and key W_k y."""

    value: torch.Tensor
    query: torch.Tensor
    key: torch.Tensor


@dataclass
class HybridOutput:
    """Scores of b users × c candidates, with every term and the attention for explanations."""

    score: torch.Tensor  # (b, c)
    text: torch.Tensor  # (b, c)
    assoc: torch.Tensor  # (b, c)
    cf: torch.Tensor  # (b, c)
    alpha: torch.Tensor  # (c,) shared candidates or (b, c) per-user candidates
    beta: torch.Tensor  # like alpha
    text_attention: torch.Tensor  # (b, c, L)
    cf_attention: torch.Tensor  # (b, c, L)

    def row(self, r: int) -> HybridOutput:
        """One user's slice."""
        keep = slice(r, r + 1)
        gate = (lambda g: g) if self.alpha.dim() == 1 else (lambda g: g[keep])
        return HybridOutput(
            self.score[keep],
            self.text[keep],
            self.assoc[keep],
            self.cf[keep],
            gate(self.alpha),
            gate(self.beta),
            self.text_attention[keep],
            self.cf_attention[keep],
        )


def edge_table(graph: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sorted keys src·2³² + dst (nnz,), weights (nnz,)) of a sparse (n, n) graph."""
    coo = graph.to_sparse_coo().coalesce() if graph.layout != torch.sparse_coo else graph.coalesce()
    src, dst = coo.indices()
    keys = src * EDGE_KEY + dst
    order = torch.argsort(keys)
    return keys[order], coo.values().float()[order]


class HybridRanker(nn.Module):
    """The hybrid scorer over a catalog of n items (index n is padding): ``text_vectors`` (n, d_t) unit text
    vectors, ``graph`` (n, n) sparse item graph, ``popularity`` the items' train popularity."""

    text_vectors: torch.Tensor  # buffers (registered in __init__)
    pop_z: torch.Tensor
    known: torch.Tensor
    edge_keys: torch.Tensor
    edge_weights: torch.Tensor

    def __init__(
        self, spec: RankerSpec, text_vectors: torch.Tensor, graph: torch.Tensor, popularity: Popularity
    ) -> None:
        super().__init__()
        self.spec = spec
        n = text_vectors.shape[0]
        self.n_items, self.max_history = n, spec.max_history
        self.register_buffer("text_vectors", text_vectors.float(), persistent=False)  # (n, d_t)
        self._set_graph(graph)
        self.popularity = popularity
        self.register_buffer("pop_z", popularity.z.float(), persistent=False)  # (n,)
        self.register_buffer("known", popularity.known_rows(), persistent=False)  # (n + 1, 1), padding 0
        self.text_proj = nn.Linear(text_vectors.shape[1], spec.dim)
        self.item_emb = nn.Embedding(n + 1, spec.dim, padding_idx=n)
        nn.init.normal_(self.item_emb.weight, std=0.01)
        self.text_attn = TargetAttention(spec.dim, spec.heads, spec.max_history, spec.attention)
        self.cf_attn = TargetAttention(spec.dim, spec.heads, spec.max_history, spec.attention)
        self.assoc_scale = nn.Parameter(torch.tensor(1.0))  # κ = softplus(·)·10
        self.assoc_decay = nn.Parameter(torch.tensor(-2.0))  # λ = softplus(·)
        self.alpha = PopularityGate(spec.alpha, 0.5, falling=True)
        self.beta = PopularityGate(spec.beta, 0.5, falling=False)
        self.dropout = nn.Dropout(spec.dropout)
        self.text_adapter = (  # made last: the other weights draw the same numbers with or without it
            TextAdapter(text_vectors.shape[1], spec.text_adapter, spec.dim) if spec.text_adapter else None
        )

    def grown(self, text_vectors: torch.Tensor, graph: torch.Tensor) -> HybridRanker:
        """This ranker over the catalog plus m new, untouched items, with the same weights and spec.

        text_vectors: (n + m, d_t) the grown catalog's text vectors (the old rows first; shared, not copied);
        graph: (n + m, n + m) sparse, the grown item graph. New items get a zero ID embedding (nothing is
        known of them but their text and neighbours) and the popularity of a never-touched item; every old
        item scores exactly as before for the same history.
        """
        n, m = self.n_items, text_vectors.shape[0] - self.n_items
        grown = HybridRanker(self.spec, text_vectors, graph, self.popularity.grown(m))
        state = self.state_dict()
        emb = state["item_emb.weight"]  # (n + 1, dim), padding last
        state["item_emb.weight"] = torch.cat([emb[:n], torch.zeros(m, emb.shape[1]), emb[n:]])
        grown.load_state_dict(state)
        return grown.train(self.training)

    def _set_graph(self, graph: torch.Tensor) -> None:
        keys, weights = edge_table(graph)
        self.register_buffer("edge_keys", keys, persistent=False)  # (nnz,) sorted
        self.register_buffer("edge_weights", weights, persistent=False)  # (nnz,)

    def item_text(self, items: torch.Tensor) -> torch.Tensor:
        """Projected text vectors (…, dim); padding maps to zeros."""
        safe = items.clamp(0, self.n_items - 1)
        out = (
            rows(self.projected_text(), safe)
            if not torch.is_grad_enabled()
            else self.project_text(rows(self.text_vectors, safe))
        )
        return out * (items < self.n_items).unsqueeze(-1)

    def project_text(self, x: torch.Tensor) -> torch.Tensor:
        """(…, d_t) text vectors → (…, dim): W_t·x, plus the adapter where there is one."""
        out = self.text_proj(x)
        return out if self.text_adapter is None else out + self.text_adapter(x)

    def _text_weights(self) -> tuple[tuple[int, int], ...]:
        """(version, address) of every weight the projected text reads: the caches' key."""
        weights = list(self.text_proj.parameters())
        if self.text_adapter is not None:
            weights += list(self.text_adapter.parameters())
        return tuple((w._version, w.data_ptr()) for w in weights)

    def item_id(self, items: torch.Tensor, known: torch.Tensor | None = None) -> torch.Tensor:
        """ID embeddings (…, dim); zero for padding and for items without a train interaction (or, with
        ``known`` (n + 1, 1), for the items it zeroes)."""
        return self.item_emb(items) * rows(self.known if known is None else known, items)

    def _known_this_step(self) -> torch.Tensor | None:
        """ID dropout: while training, each item loses its ID vector for this step with chance ``id_dropout``
        (as candidate and in histories alike), so text and graph must score it the way they score a
        never-touched item."""
        if not (self.training and self.spec.id_dropout > 0):
            return None
        return self.known * (torch.rand_like(self.known) >= self.spec.id_dropout)

    def projected_text(self) -> torch.Tensor:
        """The projected text of every item (n, dim), cached while the projection's weights are unchanged
        (scoring)."""
        key = (self._text_weights(), self.text_vectors.data_ptr())
        if getattr(self, "_text_key", None) != key:
            with torch.no_grad():
                self._text_cache = self.project_text(self.text_vectors)
            self._text_key = key
        return self._text_cache

    def item_tables(self) -> tuple[ItemTable, ItemTable]:
        """(text view, CF view) tables of every item for scoring without autograd, so a request gathers rows
        instead of projecting its candidates and history; cached while the weights they read are unchanged."""
        weights = (
            self.item_emb.weight,
            self.text_attn.query.weight,
            self.text_attn.key.weight,
            self.cf_attn.query.weight,
            self.cf_attn.key.weight,
        )
        key = (
            self._text_weights(),
            *((w._version, w.data_ptr()) for w in weights),
            self.text_vectors.data_ptr(),
            self.known.data_ptr(),
        )
        if getattr(self, "_tables_key", None) != key:
            with torch.no_grad():
                pad = torch.zeros(1, self.text_proj.out_features, device=self.text_vectors.device)
                text = torch.cat([self.project_text(self.text_vectors), pad])  # (n + 1, dim)
                ids = self.item_emb.weight * self.known  # (n + 1, dim): zero for padding and untouched items
                self._tables = (
                    ItemTable(text, self.text_attn.query(text), self.text_attn.key(text)),
                    ItemTable(ids, self.cf_attn.query(ids), self.cf_attn.key(ids)),
                )
            self._tables_key = key
        return self._tables

    def _history_edges(self, history: torch.Tensor, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Every graph edge leaving a history item: (user·(n + 1) + its target (E,), r_l·A[h_l, target] (E,)),
        read from the sorted edge keys (b·L·degree entries; padding has no row)."""
        b, length = history.shape
        keys, n = self.edge_keys, self.n_items + 1
        src = history.reshape(-1)  # (b·L,)
        start = torch.searchsorted(keys, src * EDGE_KEY)
        lengths = torch.searchsorted(keys, (src + 1) * EDGE_KEY) - start  # padding has no row: 0
        slot = torch.repeat_interleave(torch.arange(b * length, device=keys.device), lengths)  # (E,)
        pos = (
            start[slot]
            + torch.arange(len(slot), device=keys.device)
            - (torch.cumsum(lengths, 0) - lengths)[slot]
        )
        user_dst = torch.div(slot, length, rounding_mode="floor") * n + keys[pos] % EDGE_KEY  # (E,)
        return user_dst, self.edge_weights[pos] * r.reshape(-1)[slot]

    def _reach_of(self, history: torch.Tensor, r: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """Σ_l r_l A[h_l, c] for per-user candidates (b, c) from the history's edges, summed per (user, item)
        in a dense (b, n + 1) buffer while that is no larger than the attention's (b, c, L) tensors, else
        by sorting the entries (no catalog-sized row per user: a request's memory does not grow with the
        catalog)."""
        b, length = history.shape
        n = self.n_items + 1
        user_dst, weight = self._history_edges(history, r)
        if n <= candidates.shape[-1] * length:  # a (b, n + 1) buffer no larger than the attention's: no sort
            dense = torch.zeros(b * n, device=weight.device).index_add_(0, user_dst, weight)
            return dense.view(b, n).gather(1, candidates)
        unique, inverse = torch.unique(user_dst, return_inverse=True)  # sorted
        reach = torch.zeros(len(unique), device=weight.device).index_add(0, inverse, weight)  # (U,)
        query = torch.arange(b, device=weight.device)[:, None] * n + candidates  # (b, c)
        if len(unique) == 0:
            return torch.zeros(query.shape, device=weight.device)
        at = torch.searchsorted(unique, query).clamp(max=len(unique) - 1)
        return torch.where(unique[at] == query, reach[at], 0.0)

    def _shared_reach(self, history: torch.Tensor, r: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """Σ_l r_l A[h_l, c] for candidates (c,) shared by the batch: (b, c), from the history's edges that
        reach a candidate, summed per user and distinct candidate (no catalog-sized row per user: training
        memory does not grow with the catalog; a catalog-wide sparse product cost more, and its backward
        re-sorted the graph every step)."""
        b, n = history.shape[0], self.n_items + 1
        user_dst, weight = self._history_edges(history, r)  # (E,) each
        distinct, inverse = torch.unique(candidates, return_inverse=True)  # (u,), (c,)
        column = torch.full((n,), -1, dtype=torch.long, device=weight.device)
        column[distinct] = torch.arange(len(distinct), device=weight.device)  # item → its column, or -1
        hit = column[user_dst % n]  # (E,)
        keep = hit >= 0
        slot = torch.div(user_dst[keep], n, rounding_mode="floor") * len(distinct) + hit[keep]
        reach = torch.zeros(b * len(distinct), device=weight.device).index_add_(0, slot, weight[keep])
        return reach.view(b, -1)[:, inverse]

    def assoc(
        self,
        history: torch.Tensor,
        mask: torch.Tensor,
        candidates: torch.Tensor,
        strength: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """κ · Σ_l r_l A[h_l, c] for each user and candidate: (b, c); candidates (c,) or (b, c)."""
        length = history.shape[1]
        from_end = (mask.sum(1, keepdim=True) - 1 - torch.arange(length, device=history.device)).float()
        r = torch.exp(-nn.functional.softplus(self.assoc_decay) * from_end.clamp_min(0)) * mask  # (b, L)
        if strength is not None:
            r = r * strength
        r = r / r.sum(1, keepdim=True).clamp_min(1e-12)
        kappa = nn.functional.softplus(self.assoc_scale) * 10.0
        if candidates.dim() == 2:  # per-user candidates: the history's edges, then a lookup per candidate
            return kappa * self._reach_of(history, r, candidates)
        return kappa * self._shared_reach(history, r, candidates)  # shared by the batch (training)

    def forward(
        self,
        history: torch.Tensor,
        candidates: torch.Tensor | None = None,
        strength: torch.Tensor | None = None,
        *,
        alpha: float | None = None,
        beta: float | None = None,
    ) -> HybridOutput:
        """history: (b, L) item indices, oldest first, padded with ``n_items``; candidates: (c,) shared,
        (b, c) per user (``n_items`` pads a short row; it scores 0), or None for every item; strength:
        (b, L) positive event strengths of the history (padding: any positive value), or None (all 1);
        ``alpha``/``beta``: one number in place of each gate for this call (serving knobs), None as built."""
        if candidates is None:
            candidates = torch.arange(self.n_items, device=history.device)
        mask = history < self.n_items  # (b, L)
        tables_fit = 6 * (self.n_items + 1) * self.text_proj.out_features * 4 <= TABLES_MAX_BYTES
        if (
            not (self.training or torch.is_grad_enabled()) and tables_fit
        ):  # scoring: gather table rows, same numbers
            text, ids = self.item_tables()
            s_text, w_text = self.text_attn(
                rows(text.query, candidates),
                rows(text.value, candidates),
                rows(text.key, history),
                rows(text.value, history),
                mask,
                strength,
                projected=True,
            )
            s_cf, w_cf = self.cf_attn(
                rows(ids.query, candidates),
                rows(ids.value, candidates),
                rows(ids.key, history),
                rows(ids.value, history),
                mask,
                strength,
                projected=True,
            )
        else:
            hist_text = self.dropout(self.item_text(history))  # (b, L, dim)
            cand_text = self.item_text(candidates)  # (c, dim) or (b, c, dim)
            s_text, w_text = self.text_attn(cand_text, cand_text, hist_text, hist_text, mask, strength)
            known = self._known_this_step()
            hist_id = self.dropout(self.item_id(history, known))  # (b, L, dim)
            cand_id = self.item_id(candidates, known)
            s_cf, w_cf = self.cf_attn(cand_id, cand_id, hist_id, hist_id, mask, strength)
        s_assoc = self.assoc(history, mask, candidates, strength)
        z = self.pop_z[candidates.clamp(max=self.n_items - 1)]
        a, b = self.alpha(z, alpha), self.beta(z, beta)  # (c,) or (b, c)
        score = a * (1 - b) * s_text + a * b * s_assoc + (1 - a) * s_cf
        return HybridOutput(score, s_text, s_assoc, s_cf, a, b, w_text, w_cf)

"""Fine-tuning objective: teach the text encoder collaborative meaning from co-consumption.

Pairs. For every user history h (train split, time order) every pair (h_t, h_{t+d}) with 1 ≤ d ≤ w is a
positive pair: the same person consumed both items close in time. Pairs are drawn per epoch with
probability ∝ (c_a · c_p)^(−γ), where c is an item's train count, so head items do not dominate.

Loss. For a batch of B pairs with unit vectors a_i = f(text(anchor_i)), p_j = f(text(positive_j)):

    s_ij = ⟨a_i, p_j⟩ / τ − λ · log q(p_j)
    L    = ½ · [ CE(s_i·, i) + CE(s_·j, j) ]          (symmetric InfoNCE, in-batch negatives)

where q(j) is the probability that item j is drawn as a batch member (its share of pair slots), so the
λ·log q term (the logQ correction) removes the bias of popular items being everyone's negative more
often. Entries whose item equals the row's own positive or anchor (j ≠ i) are masked as false
negatives. Only text passes through the encoder, so what is learned transfers to items that never
interacted.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from longtail.data.encoded import Histories


def cooccurrence_pairs(histories: Histories, window: int) -> tuple[np.ndarray, np.ndarray]:
    """All (anchor, positive) item pairs at most ``window`` steps apart in a user's history."""
    items, indptr = histories.items, histories.indptr
    owner = np.repeat(np.arange(histories.n_users), np.diff(indptr))  # (nnz,)
    anchors, positives = [], []
    for d in range(1, window + 1):
        same = owner[:-d] == owner[d:] if len(items) > d else np.zeros(0, bool)
        a, p = items[:-d][same], items[d:][same]
        keep = a != p
        anchors.append(a[keep])
        positives.append(p[keep])
    return np.concatenate(anchors).astype(np.int64), np.concatenate(positives).astype(np.int64)


def pair_weights(
    anchors: np.ndarray, positives: np.ndarray, counts: np.ndarray, exponent: float
) -> np.ndarray:
    """Sampling probability of each pair ∝ (c_a · c_p)^(−γ), normalised to sum to 1."""
    c = np.maximum(counts.astype(np.float64), 1.0)
    w = (c[anchors] * c[positives]) ** (-exponent)
    return w / w.sum()


def sample_pairs(
    anchors: np.ndarray, positives: np.ndarray, weights: np.ndarray, n: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` pairs drawn by ``weights`` (without replacement while the pool allows), random direction."""
    n_pool = len(anchors)
    picked = rng.choice(n_pool, size=min(n, n_pool), replace=False, p=weights)
    if n > n_pool:
        picked = np.concatenate([picked, rng.choice(n_pool, size=n - n_pool, replace=True, p=weights)])
    a, p = anchors[picked], positives[picked]
    flip = rng.random(len(picked)) < 0.5  # the loss is symmetric; mixing directions balances the batches
    return np.where(flip, p, a), np.where(flip, a, p)


def slot_log_q(anchors: np.ndarray, positives: np.ndarray, n_items: int) -> np.ndarray:
    """log of each item's share of pair slots, (n_items,); unseen items get the smallest share."""
    slots = np.bincount(np.concatenate([anchors, positives]), minlength=n_items).astype(np.float64)
    return np.log(np.maximum(slots, 0.5) / max(slots.sum(), 1.0))


def info_nce(
    a: torch.Tensor,
    p: torch.Tensor,
    a_items: torch.Tensor,
    p_items: torch.Tensor,
    log_q_a: torch.Tensor,
    log_q_p: torch.Tensor,
    temperature: float,
    logq_weight: float = 1.0,
) -> torch.Tensor:
    """Symmetric in-batch InfoNCE with logQ correction and false-negative masking (module docstring).

    a, p: (B, d) unit vectors; a_items, p_items: (B,) item ids; log_q_a, log_q_p: (B,) log sampling shares.
    """
    sim = a @ p.T / temperature  # (B, B)
    eye = torch.eye(len(a), dtype=torch.bool, device=a.device)
    clash = (p_items[None, :] == p_items[:, None]) | (p_items[None, :] == a_items[:, None])  # (B, B)
    clash_t = (a_items[None, :] == a_items[:, None]) | (a_items[None, :] == p_items[:, None])
    neg_inf = torch.finfo(sim.dtype).min
    rows = (sim - logq_weight * log_q_p[None, :]).masked_fill(clash & ~eye, neg_inf)  # anchor → positives
    cols = (sim.T - logq_weight * log_q_a[None, :]).masked_fill(clash_t & ~eye, neg_inf)  # positive → anchors
    target = torch.arange(len(a), device=a.device)
    return 0.5 * (nn.functional.cross_entropy(rows, target) + nn.functional.cross_entropy(cols, target))


@torch.no_grad()
def in_batch_accuracy(a: torch.Tensor, p: torch.Tensor) -> float:
    """Share of anchors whose own positive is their most similar batch member, a cheap validation signal."""
    return float(((a @ p.T).argmax(1) == torch.arange(len(a), device=a.device)).float().mean())

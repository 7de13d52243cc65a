"""Training the retriever and the hybrid ranker on next-item examples (pure torch; Ray glue:
``longtail.train``).

Every train history h_1..h_n gives examples (h_{<t}, h_t) for t ≥ 2, the prefix cut to the last L items.
Loss: sampled softmax over the batch's targets plus N uniformly drawn items, with

    logit_j = score(u, j) / τ − log q_j + η · log π_j

where q_j is the chance of j being a candidate (the mixture of in-batch targets and uniform negatives),
which removes the sampling bias, and π_j the smoothed train popularity share: η > 0 (logit adjustment)
makes the learned score popularity-balanced, so the model ranks the tail higher. Seen items and other
rows' copies of a row's own target are masked. With event strengths (``EventsConfig``) each example's
loss is weighted by its target's strength (a purchase teaches more than a view) and the prefix carries its
items' strengths into the models.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from longtail.data.encoded import Histories


def next_item_examples(histories: Histories, max_history: int, pad: int) -> tuple[np.ndarray, np.ndarray]:
    """All (prefix, target) pairs: prefixes (N, L) left-aligned, oldest first, padded with ``pad``; targets
    (N,)."""
    src, valid, target_pos = _example_positions(histories, max_history)
    prefixes = np.where(valid, histories.items[np.where(valid, src, 0)], pad)
    return prefixes.astype(np.int64), histories.items[target_pos].astype(np.int64)


def next_item_strengths(histories: Histories, max_history: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Event strengths of ``next_item_examples``: prefixes (N, L) (padding 1) and targets (N,); None when the
    histories carry none."""
    if histories.strengths is None:
        return None
    src, valid, target_pos = _example_positions(histories, max_history)
    prefix = np.where(valid, histories.strengths[np.where(valid, src, 0)], 1.0)
    return prefix.astype(np.float32), histories.strengths[target_pos].astype(np.float32)


def _example_positions(histories: Histories, max_history: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(prefix source positions (N, L), valid (N, L), target positions (N,)) into ``histories.items``."""
    lengths = histories.lengths()
    starts = histories.indptr[:-1]
    users = np.repeat(np.arange(histories.n_users), np.maximum(lengths - 1, 0))
    t = (
        np.arange(len(users))
        - np.repeat(np.r_[0, np.cumsum(np.maximum(lengths - 1, 0))[:-1]], np.maximum(lengths - 1, 0))
        + 1
    )
    begin = np.maximum(0, t - max_history)  # (N,) first prefix position
    width = t - begin  # (N,) prefix length ≤ L
    cols = np.arange(max_history)[None, :]
    src = starts[users][:, None] + begin[:, None] + cols  # (N, L)
    valid = cols < width[:, None]
    return src, valid, starts[users] + t


def popularity_log_prior(counts: np.ndarray) -> np.ndarray:
    """log π with π ∝ count + 1 (add-one smoothing so cold items are finite)."""
    c = counts.astype(np.float64) + 1.0
    return np.log(c / c.sum()).astype(np.float32)


def sampled_softmax_loss(
    model: nn.Module,
    history: torch.Tensor,
    target: torch.Tensor,
    negatives: torch.Tensor,
    target_share: torch.Tensor,
    log_prior: torch.Tensor,
    eta: float,
    temperature: float = 1.0,
    strength: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean cross-entropy of each row's target among the batch targets + negatives (module docstring).

    history (b, L), target (b,), negatives (N,), target_share (n,) probability that a batch target is j;
    strength (b, L) the history's event strengths (or None); weight (b,) each row's loss weight (or None:
    the plain mean).
    """
    b, n_neg = len(target), len(negatives)
    n_items = log_prior.shape[0]
    candidates = torch.cat([target, negatives])  # (b + N,)
    q = (b * target_share[candidates] + n_neg / n_items) / (b + n_neg)
    out = model(history, candidates) if strength is None else model(history, candidates, strength)
    logits = out.score / temperature - torch.log(q) + eta * log_prior[candidates]  # (b, b + N)
    seen = (history[:, :, None] == candidates[None, None, :]).any(1)  # (b, b + N)
    own = torch.zeros_like(seen)
    own[torch.arange(b), torch.arange(b)] = True
    clash = (candidates[None, :] == target[:, None]) & ~own
    logits = logits.masked_fill((seen & ~own) | clash, torch.finfo(logits.dtype).min)
    labels = torch.arange(b, device=logits.device)
    if weight is None:
        return nn.functional.cross_entropy(logits, labels)
    return (
        nn.functional.cross_entropy(logits, labels, reduction="none") * weight
    ).sum() / weight.sum().clamp_min(1e-12)


@dataclass(frozen=True)
class LossSpec:
    """The sampled softmax's knobs: logits are score / τ − log q + η·log π; each scorer's loss has a
    weight."""

    eta: float = 0.0  # η, the popularity logit adjustment (``ranker.popularity_correction``)
    temperature: float = 1.0  # τ
    weights: Mapping[str, float] = field(default_factory=dict)  # scorer name → loss weight (default 1)


class NextItemObjective(nn.Module):
    """Several scorers trained on the same next-item examples: Σ_m w_m · sampled-softmax loss of scorer m.

    The retriever and the ranker share one pass over the examples and one optimizer; each keeps its own
    parameters. ``forward`` returns the loss so that a DDP wrapper of this module syncs every gradient.
    ``target_share`` (n,): the chance that a batch target is item j; ``log_prior`` (n,): log π.
    """

    target_share: torch.Tensor  # buffers (registered in __init__)
    log_prior: torch.Tensor

    def __init__(
        self,
        scorers: dict[str, nn.Module],
        spec: LossSpec,
        target_share: torch.Tensor,
        log_prior: torch.Tensor,
    ) -> None:
        super().__init__()
        self.scorers = nn.ModuleDict(scorers)
        self.weights, self.eta, self.temperature = spec.weights, spec.eta, spec.temperature
        self.register_buffer("target_share", target_share.float(), persistent=False)  # (n,)
        self.register_buffer("log_prior", log_prior.float(), persistent=False)  # (n,)

    def forward(
        self,
        history: torch.Tensor,
        target: torch.Tensor,
        negatives: torch.Tensor,
        strength: torch.Tensor | None = None,
        weight: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Weighted loss of every scorer on histories (b, L), targets (b,) and shared negatives (N,); history
        strengths (b, L) and row weights (b,) when events have strengths."""
        return sum(  # type: ignore[return-value]  # a sum of tensors is a tensor
            self.weights.get(name, 1.0)
            * sampled_softmax_loss(
                model,
                history,
                target,
                negatives,
                self.target_share,
                self.log_prior,
                self.eta,
                self.temperature,
                strength,
                weight,
            )
            for name, model in self.scorers.items()
        )


def train_epoch(
    objective: nn.Module,
    prefixes: torch.Tensor,
    targets: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    batch_size: int,
    n_negatives: int,
    n_items: int,
    generator: torch.Generator,
    on_step: Callable[[int, int, float], None] | None = None,
    strengths: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
) -> float:
    """One pass over shuffled examples; returns the mean loss. ``objective`` (a ``NextItemObjective``) may be
    DDP-wrapped. ``strengths`` (N, L): the prefixes' event strengths; ``weights`` (N,): each example's loss
    weight (both optional)."""
    objective.train()
    order = torch.randperm(len(targets), generator=generator).to(targets.device)
    total, steps = 0.0, 0
    n_steps = (len(order) + batch_size - 1) // batch_size
    for step in range(n_steps):
        idx = order[step * batch_size : (step + 1) * batch_size]
        negatives = torch.randint(0, n_items, (n_negatives,), generator=generator).to(targets.device)
        loss = objective(
            prefixes[idx],
            targets[idx],
            negatives,
            None if strengths is None else strengths[idx],
            None if weights is None else weights[idx],
        )
        optimizer.zero_grad()
        loss.backward()
        core: nn.Module = getattr(objective, "module", objective)  # under DDP, the wrapped module
        for scorer in core.get_submodule("scorers").children():  # each model's own norm
            nn.utils.clip_grad_norm_(scorer.parameters(), 5.0)
        optimizer.step()
        total, steps = total + loss.item(), steps + 1
        if on_step is not None:
            on_step(step + 1, n_steps, loss.item())
    return total / max(steps, 1)

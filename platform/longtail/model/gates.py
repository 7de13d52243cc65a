"""Popularity-gated mixing coefficients: one number per item, fixed or learned from its popularity."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


def standardised_log_counts(train_counts: torch.Tensor) -> tuple[torch.Tensor, float]:
    """(z (n,), z of a never-touched item): z = standardised log(1 + train count)."""
    z = torch.log1p(train_counts.float())
    mean, std = z.mean(), z.std().clamp_min(1e-6) if len(z) > 1 else torch.tensor(1.0)
    return (z - mean) / std, float(-mean / std)


@dataclass(frozen=True)
class Popularity:
    """What the models know of each item's train popularity: its standardised log count (the gates' input)
    and whether it was touched at all (untouched items have no ID vector)."""

    z: torch.Tensor  # (n,) standardised log(1 + train count)
    cold_z: float  # z of a never-touched item
    known: torch.Tensor  # (n,) bool: at least one train interaction

    @classmethod
    def of(cls, train_counts: torch.Tensor) -> Popularity:
        z, cold_z = standardised_log_counts(train_counts)
        return cls(z, cold_z, train_counts > 0)

    def grown(self, m: int) -> Popularity:
        """The same items, then ``m`` never-touched ones (old items keep their z: their scores do not
        move)."""
        return Popularity(
            torch.cat([self.z, torch.full((m,), self.cold_z)]),
            self.cold_z,
            torch.cat([self.known, torch.zeros(m, dtype=torch.bool)]),
        )

    def known_rows(self) -> torch.Tensor:
        """(n + 1, 1) float: 1 for touched items, 0 for untouched ones and the padding row."""
        return torch.cat([self.known, torch.tensor([False])]).float()[:, None]


class PopularityGate(nn.Module):
    """A mixing coefficient per item: fixed, or σ(bias + slope·z) with the slope's sign optionally forced."""

    def __init__(self, fixed: float | None, init: float, falling: bool) -> None:
        super().__init__()
        self.fixed, self.falling = fixed, falling
        self.bias = nn.Parameter(torch.logit(torch.tensor(init)))
        self.slope = nn.Parameter(torch.tensor(0.5 if falling else 0.0))

    def forward(self, z: torch.Tensor, fixed: float | None = None) -> torch.Tensor:
        """Coefficients shaped like z, for items with standardised log-popularity z; ``fixed`` overrides the
        gate with one number for this call (a serving knob), None keeps it as built."""
        fixed = self.fixed if fixed is None else fixed
        if fixed is not None:
            return torch.full_like(z, fixed)
        slope = -nn.functional.softplus(self.slope) if self.falling else self.slope
        return torch.sigmoid(self.bias + slope * z)

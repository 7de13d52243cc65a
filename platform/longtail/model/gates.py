"""Popularity-gated mixing coefficients: one number per item, fixed or learned from its popularity."""

from __future__ import annotations

import torch
from torch import nn


def standardised_log_counts(train_counts: torch.Tensor) -> tuple[torch.Tensor, float]:
    """(z (n,), z of a never-touched item): z = standardised log(1 + train count)."""
    z = torch.log1p(train_counts.float())
    mean, std = z.mean(), z.std().clamp_min(1e-6) if len(z) > 1 else torch.tensor(1.0)
    return (z - mean) / std, float(-mean / std)


class PopularityGate(nn.Module):
    """A mixing coefficient per item: fixed, or σ(bias + slope·z) with the slope's sign optionally forced."""

    def __init__(self, fixed: float | None, init: float, falling: bool) -> None:
        super().__init__()
        self.fixed, self.falling = fixed, falling
        self.bias = nn.Parameter(torch.logit(torch.tensor(init)))
        self.slope = nn.Parameter(torch.tensor(0.5 if falling else 0.0))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Coefficients shaped like z, for items with standardised log-popularity z."""
        if self.fixed is not None:
            return torch.full_like(z, self.fixed)
        slope = -nn.functional.softplus(self.slope) if self.falling else self.slope
        return torch.sigmoid(self.bias + slope * z)

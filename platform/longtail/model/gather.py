"""Row gathers from per-item tables, the hot path of scoring. Pure torch."""

from __future__ import annotations

import torch
from torch import nn


def rows(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``table[index]`` for a 2-D table (n, d) and integer indices of any shape: (…, d). Embedding's gather,
    about 4× faster on CPU than advanced indexing for a (3, 460) index into (1683, 64); autograd flows
    to ``table`` as with indexing."""
    return nn.functional.embedding(index, table)

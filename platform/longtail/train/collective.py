"""What the fit's workers exchange beyond DDP's gradients (torch.distributed only, no Ray)."""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist


def gather_rows(mine: np.ndarray, sizes: list[int], device: torch.device) -> np.ndarray | None:
    """Every rank's int64 rows (sizes[rank], k) stacked in rank order on rank 0; None on the other ranks.
    ``all_gather`` needs equal shapes: each rank pads its rows to the largest share."""
    if len(sizes) != dist.get_world_size() or len(mine) != sizes[dist.get_rank()]:
        raise ValueError(f"gather_rows: {len(mine)} rows on rank {dist.get_rank()}, sizes {sizes}")
    padded = torch.full((max(sizes), mine.shape[1]), -1, dtype=torch.int64, device=device)
    padded[: len(mine)] = torch.from_numpy(mine).to(device)
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded)
    if dist.get_rank() != 0:
        return None
    return np.concatenate([part[:size].cpu().numpy() for part, size in zip(parts, sizes, strict=True)])

"""Event strength: how much one interaction counts, from its type and its own weight (``EventsConfig``)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from longtail.config import EventsConfig


def event_strengths(types: Sequence[str], weights: Sequence[float | None], cfg: EventsConfig) -> np.ndarray:
    """(n,) float32 strengths: type weight (1.0 for unlisted types) × own weight (1.0 when None or unused),
    clipped into [1 / cfg.max_strength, cfg.max_strength]."""
    kinds, which = np.unique(np.asarray(types, dtype=object).astype(str), return_inverse=True)
    by_type = np.array([cfg.type_weights.get(k, 1.0) for k in kinds], dtype=np.float64)[which.reshape(-1)]
    if cfg.use_weight:
        own = np.array([1.0 if w is None else float(w) for w in weights], dtype=np.float64)
        by_type = by_type * np.nan_to_num(own, nan=1.0)
    return np.clip(by_type, 1.0 / cfg.max_strength, cfg.max_strength).astype(np.float32)


def uniform(strengths: np.ndarray | None) -> bool:
    """True when every event counts the same (then nothing needs to carry strengths)."""
    return strengths is None or len(strengths) == 0 or bool(np.all(strengths == strengths[0]))

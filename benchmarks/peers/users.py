"""A seeded sample of users for the peers too slow to train on every user of a large dataset.

The sampled peers fit on the sampled users' interactions only (the catalog is unchanged); every row of
such a run is then scored on the same users with ``evaluate(..., among=users)``, whose popularity buckets
stay those of the whole train part, so head, tail and cold mean what they mean in the full table.
Imported by both environments (the bench and RecBole's), so it needs only numpy and longtail.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from longtail.data.encoded import Interactions, SplitData


def sample_users(data: SplitData, n: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of ``n`` users drawn without replacement (every user when ``n`` ≥ their number)."""
    if n <= 0:
        raise ValueError(f"--users must be positive, got {n}")
    if n >= data.n_users:
        return np.arange(data.n_users)
    return np.sort(np.random.default_rng(seed).choice(data.n_users, n, replace=False))


def restricted(data: SplitData, users: np.ndarray) -> SplitData:
    """``data`` with only ``users``' interactions in every part; user and item indices keep their meaning."""

    def keep(part: Interactions) -> Interactions:
        rows = np.isin(part.users, users)
        strengths = None if part.strengths is None else part.strengths[rows]
        return Interactions(part.users[rows], part.items[rows], part.timestamps[rows], strengths)

    return dataclasses.replace(data, train=keep(data.train), valid=keep(data.valid), test=keep(data.test))

"""The one place that maps configs to model constructors."""

from __future__ import annotations

from longtail.config import BaselinesConfig
from longtail.model.base import Recommender
from longtail.model.baselines import BPRMF, EpochCallback, ItemKNN, MostPop

BASELINE_NAMES = ("mostpop", "itemknn", "bpr")


def build_baseline(name: str, config: BaselinesConfig, on_epoch: EpochCallback | None = None) -> Recommender:
    """A fresh, unfitted baseline ``name`` with its knobs from ``config``."""
    if name == "mostpop":
        return MostPop()
    if name == "itemknn":
        return ItemKNN(k=config.itemknn.k, shrink=config.itemknn.shrink)
    if name == "bpr":
        c = config.bpr
        return BPRMF(c.dim, c.epochs, c.lr, c.batch_size, c.l2, c.seed, on_epoch=on_epoch)
    raise ValueError(f"unknown model {name!r}; expected one of {BASELINE_NAMES}")

"""longtail: surface the long tail of a recommender's catalog.

    import longtail

    data = longtail.prepare(dataset="ml-100k", out="data/ml-100k")
    bundle = longtail.train(data, out="bundles/ml100k")
    rec = longtail.load(bundle.path)
    rec.recommend(user_id="196", k=10)

The Python API is ``longtail.api`` (``prepare``, ``train``, ``evaluate``, ``load``), loaded on first use so
that ``import longtail`` (and ``longtail --help``) stays light; ``longtail.client`` talks to a running
service.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"
__all__ = [
    "Bundle",
    "Dataset",
    "Recommended",
    "Recommender",
    "Report",
    "evaluate",
    "load",
    "prepare",
    "train",
]

if TYPE_CHECKING:
    from longtail.api import Bundle, Dataset, Recommended, Recommender, Report, evaluate, load, prepare, train


def __getattr__(name: str) -> Any:
    if name in __all__:
        from longtail import api

        return getattr(api, name)
    raise AttributeError(f"module 'longtail' has no attribute {name!r}")

"""Full-ranking evaluation of any ``Recommender`` on one part of a split (docs/design.md, "Evaluation
protocol")."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from longtail.data.encoded import Histories, SplitData
from longtail.data.splits import popularity_buckets
from longtail.eval.metrics import compute_metrics, popularity_deciles, recall_by_bins
from longtail.model.base import Recommender

ProgressCallback = Callable[[int, int], None]


@dataclass
class EvalResult:
    """Metrics of one model on one part, plus recall@20 per popularity decile (least popular first)."""

    model: str
    part: str
    n_users: int
    metrics: dict[str, float]
    decile_recall: list[float] = field(default_factory=list)

    def to_json(self) -> dict:
        """JSON-ready dict; NaN (a metric with no eligible user) becomes null."""
        clean = {k: (None if v != v else round(v, 6)) for k, v in self.metrics.items()}
        deciles = [None if v != v else round(v, 6) for v in self.decile_recall]
        return {
            "model": self.model,
            "part": self.part,
            "users": self.n_users,
            "metrics": clean,
            "recall@20_by_popularity_decile": deciles,
        }


def history_parts(part: str) -> tuple[str, ...]:
    """What a model may read as history when ranking ``part``: train for valid, train+valid for test."""
    if part not in ("valid", "test"):
        raise ValueError(f"part must be 'valid' or 'test', got {part!r}")
    return ("train",) if part == "valid" else ("train", "valid")


def batch_rows(n_items: int, cap: int = 1024, cells: int = 1 << 24) -> int:
    """Users per scoring batch so that one (b, n_items) matrix stays near ``cells`` entries."""
    return max(1, min(cap, cells // max(n_items, 1)))


def rank(
    model: Recommender,
    data: SplitData,
    users: np.ndarray,
    histories: Histories,
    k: int,
    progress: ProgressCallback | None = None,
) -> np.ndarray:
    """Top-``k`` lists (len(users), k) over the whole catalog minus each user's history."""
    out = np.empty((len(users), k), dtype=np.int64)
    step = batch_rows(data.n_items)
    for start in range(0, len(users), step):
        batch = users[start : start + step]
        out[start : start + len(batch)] = model.recommend(batch, histories.rows(batch), k)
        if progress is not None:
            progress(min(start + step, len(users)), len(users))
    return out


def evaluate(
    model: Recommender,
    data: SplitData,
    part: str = "test",
    progress: ProgressCallback | None = None,
    max_users: int | None = None,
    seed: int = 0,
    among: np.ndarray | None = None,
) -> EvalResult:
    """Rank the full catalog for every user with a target in ``part`` and compute every metric.

    ``max_users`` evaluates a seeded random sample of that many users instead (e.g. per-epoch validation
    of a large dataset); reported figures use every user. ``among`` (user indices) keeps only those users
    (e.g. a peer fit on a sample of users); popularity buckets stay those of ``data``'s whole train part.
    """
    users = eval_users(data, part, max_users, seed, among)
    topk = rank(model, data, users, data.histories(history_parts(part)), k=20, progress=progress)
    return score_lists(getattr(model, "name", type(model).__name__), topk, data, part, users)


def eval_users(
    data: SplitData, part: str, max_users: int | None = None, seed: int = 0, among: np.ndarray | None = None
) -> np.ndarray:
    """``evaluate``'s users: those with a target in ``part`` (of ``among``), a seeded sample of at most
    ``max_users``."""
    targets = data.histories((part,)).to_csr(data.n_items)
    users = np.flatnonzero(np.diff(targets.indptr) > 0)
    if among is not None:
        users = np.intersect1d(users, among)
    if max_users is not None and len(users) > max_users:
        users = np.sort(np.random.default_rng(seed).choice(users, max_users, replace=False))
    return users


def score_lists(model: str, topk: np.ndarray, data: SplitData, part: str, users: np.ndarray) -> EvalResult:
    """Every metric of the top-20 lists ``topk`` (len(users), 20) against ``users``' targets in ``part``."""
    targets = data.histories((part,)).to_csr(data.n_items)[users]
    counts = data.train_counts()
    metrics = compute_metrics(topk, targets, popularity_buckets(counts))
    deciles = recall_by_bins(topk, targets, popularity_deciles(counts), k=20)
    return EvalResult(model, part, len(users), metrics, deciles)

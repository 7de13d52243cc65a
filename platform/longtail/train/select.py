"""Choices made on the dataset's own validation part (``select:``), so the defaults fit any dataset: the
fit and the ranker's popularity adjustment, then the shelves (``select_shelves``).

Fit and popularity adjustment (``longtail.train.chain.choose_fit``): the ranker is trained with logits
score / τ (+ η·log π while training); ranking by score / τ − γ·log(1 + train count) is the post-hoc logit
adjustment of Menon et al. (ICLR 2021), which moves the lists towards the tail without a refit. Every γ
re-scores the same candidates of one ranking pass (``variant_metrics``); ``choose_fit_point`` keeps one
(fit, γ): rows whose own lists reach within ``ndcg_tolerance`` (relative) of the best valid ndcg@10 tie,
and the most tail_recall@20 wins, then coverage@20. The trend term δ·log(1 + recent count) (what is popular in
the newest part of train) is tried on the same pass and kept only where it does no worse on either count
(``choose_fit_trend_point``).

Shelves (``select_shelves``): the grid arranges one set of ranked candidates per batch (retrieve and rank
once), so trying every
(tail_share, new_share, exposure_penalty) point costs a fraction of one evaluation. Only points with
tail_share + new_share ≤ 0.5 are tried: the first half of a 20-item list stays the model's own ranking,
so ndcg@10 cannot move and the choice trades recall@20 for the tail only.

The tail shelf's item-kNN weight (``rerank.tail_knn``) is chosen first (``choose_tail_knn``: the weight
whose largest tail shelf alone finds the most valid tail), then the grid orders every tail shelf with it.

Rule, in order:
1. feasible: valid recall@20 ≥ (1 − recall_budget) × the own lists';
2. while the catalog has never-touched items, only points with new_share ≥ the floor: ``min_new_share``, or
   the never-touched items' share of the catalog (rounded up to a ``new_shares`` value) where that is
   larger — a catalog where a tenth of the items is new shows them in at least a tenth of every list. A
   list that can never show a new item breaks the platform's promise, and valid holds too few
   never-touched targets to price the new-item shelf (ML-100K: 33 among 943 users, amazon2014-toy: 28
   among 5,000; none on a cold split, whose new items have no valid data), so it would drop the shelf as
   pure cost; valid chooses among the shares above the floor;
3. if any remaining point reaches coverage@20 ≥ ``min_coverage``, only those;
4. those within ``tail_tolerance`` (relative) of the best valid tail_recall@20 (never-touched items count
   as tail) tie; the most cold_recall@20 wins, then coverage@20.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass

import numpy as np

from longtail.config import SelectConfig, TrainConfig
from longtail.data.encoded import SplitData
from longtail.data.splits import popularity_buckets
from longtail.eval.metrics import compute_metrics
from longtail.recommend.arrange import Shelves
from longtail.recommend.pipeline import Pipeline
from longtail.recommend.variants import RankMemo, shared_base, variant_lists

K = 20  # list length of the metrics the rule reads


@dataclass(frozen=True)
class ShelfPoint:
    tail_share: float
    new_share: float
    exposure_penalty: float
    tail_knn: float = 0.0

    @property
    def shelves(self) -> Shelves:
        return Shelves(self.tail_share, self.new_share, self.exposure_penalty, self.tail_knn)


def grid(select: SelectConfig, tail_knn: float = 0.0) -> list[ShelfPoint]:
    """The own lists (0, 0, 0) first, then every point with shelves whose shares sum to ≤ 0.5; the points
    with a tail shelf order it with ``tail_knn`` (``choose_tail_knn``)."""
    points = [ShelfPoint(0.0, 0.0, 0.0)]
    for t, c, lam in itertools.product(select.tail_shares, select.new_shares, select.exposure_penalties):
        if 0 < t + c <= 0.5 + 1e-9:
            points.append(ShelfPoint(t, c, lam, tail_knn if t > 0 else 0.0))
    return list(dict.fromkeys(points))


def choose_tail_knn(
    pipe: Pipeline, data: SplitData, select: SelectConfig, users: np.ndarray, memo: RankMemo | None = None
) -> dict:
    """The tail shelf's item-kNN weight, before the grid: each of ``select.tail_knn_weights`` orders the
    largest tail shelf alone (no new-item shelf, no exposure damping), and the most valid tail_recall@20
    wins (the smaller weight on a tie). One weight for the whole grid keeps its cost that of the shares
    (every weight at every point: 176 points instead of 66, amazon2014-toy's grid 51 s → 211 s on a busy
    machine). Returns ``{"chosen": w,
    "rows": [...]}``; w = 0 where the pipeline has no item-kNN matrix."""
    weights = sorted(set(select.tail_knn_weights) | {0.0})
    if pipe.neighbours is None or len(weights) == 1 or max(select.tail_shares) == 0:
        return {"chosen": 0.0, "rows": []}
    points = [ShelfPoint(max(select.tail_shares), 0.0, 0.0, w) for w in weights]
    metrics = grid_metrics(pipe, data, points, users, memo)
    rows = [
        {"tail_share": p.tail_share, "tail_knn": p.tail_knn} | {k: _json(m[k]) for k in FIT_KEYS}
        for p, m in zip(points, metrics, strict=True)
    ]
    best = max(range(len(points)), key=lambda j: (_num(metrics[j]["tail_recall@20"]), -j))
    return {"chosen": points[best].tail_knn, "rows": rows}


def sample_users(data: SplitData, part: str, max_users: int | None, seed: int = 0) -> np.ndarray:
    """Users with a target in ``part``, a seeded sample of at most ``max_users`` (as ``evaluate`` draws)."""
    targets = data.histories((part,)).to_csr(data.n_items)
    users = np.flatnonzero(np.diff(targets.indptr) > 0)
    if max_users is not None and len(users) > max_users:
        users = np.sort(np.random.default_rng(seed).choice(users, max_users, replace=False))
    return users


def grid_metrics(
    pipe: Pipeline,
    data: SplitData,
    points: list[ShelfPoint],
    users: np.ndarray,
    memo: RankMemo | None = None,
) -> list[dict[str, float]]:
    """Valid metrics of every point's lists for ``users`` (history: train), one retrieve + rank per batch
    (or ``memo``'s pass); the pipeline's score knobs (popularity adjustment, tail boost, exploration) stay
    on, only its shelves are replaced."""
    return variant_metrics([pipe.with_knobs(shelves=p.shelves) for p in points], data, users, memo)


def variant_metrics(
    variants: list[Pipeline], data: SplitData, users: np.ndarray, memo: RankMemo | None = None
) -> list[dict[str, float]]:
    """Valid metrics of the lists of each variant of one pipeline — the same models, index and retrieval,
    other shelves or popularity terms — for ``users`` (history: train): ``variant_lists``, one retrieval
    and ranker forward per batch of 256 users, or the pass ``memo`` keeps (made and kept there if it has
    none)."""
    histories = data.histories(("train",)).rows(users)
    ranked = None if memo is None else memo.ranked(shared_base(variants), histories, K)
    topk = variant_lists(variants, histories, K, ranked=ranked)
    targets = data.histories(("valid",)).to_csr(data.n_items)[users]
    buckets = popularity_buckets(data.train_counts())
    return [compute_metrics(lists, targets, buckets) for lists in topk]


def choose(
    points: list[ShelfPoint],
    metrics: list[dict[str, float]],
    recall_budget: float,
    tail_tolerance: float = 0.0,
    min_coverage: float | None = None,
    min_new_share: float = 0.0,
) -> int:
    """Index of the chosen point (the rule in the module docstring); ``points[0]`` must be the own lists."""
    floor = (1.0 - recall_budget) * metrics[0]["recall@20"]
    pool = [j for j in range(len(points)) if metrics[j]["recall@20"] >= floor - 1e-12]  # own lists always
    for keep in (
        (lambda j: points[j].new_share >= min_new_share - 1e-9) if min_new_share > 0 else None,
        (lambda j: metrics[j]["coverage@20"] >= min_coverage) if min_coverage is not None else None,
    ):
        if keep is not None and any(keep(j) for j in pool):
            pool = [j for j in pool if keep(j)]
    best_tail = max(_num(metrics[j]["tail_recall@20"]) for j in pool)
    tied = [j for j in pool if _num(metrics[j]["tail_recall@20"]) >= best_tail * (1 - tail_tolerance) - 1e-12]
    return max(
        tied,
        key=lambda j: (
            _num(metrics[j]["cold_recall@20"]),
            _num(metrics[j]["coverage@20"]),
            _num(metrics[j]["tail_recall@20"]),
        ),
    )


FIT_KEYS = ("ndcg@10", "recall@20", "tail_recall@20", "cold_recall@20", "coverage@20")


def choose_fit_point(rows: list[dict], ndcg_tolerance: float) -> int:
    """Index of the kept row: within ``ndcg_tolerance`` of the best valid ndcg@10, the most tail_recall@20,
    then coverage@20, then ndcg@10 (NaN never wins)."""
    top = max(_num(r["ndcg@10"]) for r in rows)
    tied = [j for j, r in enumerate(rows) if _num(r["ndcg@10"]) >= top * (1 - ndcg_tolerance) - 1e-12]
    return max(
        tied,
        key=lambda j: (
            _num(rows[j]["tail_recall@20"]),
            _num(rows[j]["coverage@20"]),
            _num(rows[j]["ndcg@10"]),
        ),
    )


def choose_fit_trend_point(rows: list[dict], ndcg_tolerance: float) -> int:
    """Index of the kept row of a grid with a ``trend_boost`` column: ``choose_fit_point`` over the rows
    without
    the trend term (trend_boost 0; all rows when there are none), then a row with the trend term replaces that
    pick only where it does no worse on valid ndcg@10 and tail_recall@20 both — the most tail_recall@20 among
    those, then ndcg@10. So the trend term never buys accuracy with tail (measured: on ML-100K the best-ndcg
    rule over the whole grid kept δ 0.5 at valid tail_recall@20 0.086 against 0.096 without it)."""
    plain = [j for j, r in enumerate(rows) if r["trend_boost"] == 0] or list(range(len(rows)))
    base = rows[plain[choose_fit_point([rows[j] for j in plain], ndcg_tolerance)]]
    better = [
        j
        for j, r in enumerate(rows)
        if _num(r["ndcg@10"]) >= _num(base["ndcg@10"]) - 1e-12
        and _num(r["tail_recall@20"]) >= _num(base["tail_recall@20"]) - 1e-12
    ]
    return max(
        better,
        key=lambda j: (
            _num(rows[j]["tail_recall@20"]),
            _num(rows[j]["ndcg@10"]),
            _num(rows[j]["coverage@20"]),
            -j,
        ),
    )


def _num(x: float | None) -> float:
    return -1.0 if x is None or x != x else float(x)  # NaN (no eligible user) never wins


def new_share_floor(select: SelectConfig, new_fraction: float) -> float:
    """The least new_share while ``new_fraction`` of the catalog is never-touched (0 when none is):
    never-touched
    items get at least their share of the catalog in every list — the smallest ``select.new_shares`` value
    that reaches it (the largest when none does) — and at least ``select.min_new_share``."""
    if new_fraction <= 0:
        return 0.0
    proportional = min(
        (v for v in select.new_shares if v >= new_fraction - 1e-9), default=max(select.new_shares)
    )
    return max(select.min_new_share, proportional)


def select_shelves(
    pipe: Pipeline, data: SplitData, select: SelectConfig, seed: int = 0, memo: RankMemo | None = None
) -> dict:
    """Try the grid on valid; returns ``{"chosen": {...}, "rule": ..., "users": n, "tail_knn": {...}, "grid":
    [...]}``. ``memo``: where the valid users' ranking pass may already be (``RankMemo``)."""
    users = sample_users(data, "valid", select.users, seed)
    weight = choose_tail_knn(pipe, data, select, users, memo)
    points = grid(select, weight["chosen"])
    metrics = grid_metrics(pipe, data, points, users, memo)
    floor = new_share_floor(select, float(np.mean(pipe.new)))
    best = choose(points, metrics, select.recall_budget, select.tail_tolerance, select.min_coverage, floor)
    rows = [
        dataclasses.asdict(p) | {k: _json(m[k]) for k in FIT_KEYS}
        for p, m in zip(points, metrics, strict=True)
    ]
    return {
        "chosen": dataclasses.asdict(points[best]),
        "rule": f"recall@20 ≥ {1 - select.recall_budget:g} × own lists'; new_share ≥ {floor:g}; coverage@20 "
        f"≥ "
        f"{select.min_coverage} where reachable; tail_recall@20 within {select.tail_tolerance:g} of the "
        f"best; "
        f"then the most cold_recall@20, then coverage@20",
        "users": len(users),
        "tail_knn": weight,
        "grid": rows,
    }


def _json(x: float) -> float | None:
    return None if x != x else round(float(x), 6)


# ---- the fit candidates (``longtail.train.chain.choose_fit``) ----------------------------------------
def with_id_dropout(config: TrainConfig, value: float) -> TrainConfig:
    """``config`` with both stages' ID dropout set to ``value``."""
    return config.model_copy(
        update={
            "ranker": config.ranker.model_copy(update={"id_dropout": value}),
            "retriever": config.retriever.model_copy(update={"id_dropout": value}),
        }
    )


def with_epochs(config: TrainConfig, epochs: int) -> TrainConfig:
    """``config`` with the fit's epoch budget set to ``epochs``."""
    return config.model_copy(update={"ranker": config.ranker.model_copy(update={"epochs": epochs})})


def rung_epochs(config: TrainConfig) -> int:
    """Epochs every ``select.id_dropout`` value trains before the choice: ``select.fit_rung`` of
    ``ranker.epochs`` (rounded up), or all of them when there is one value to fit."""
    epochs, values = config.ranker.epochs, config.select.id_dropout
    if values is None or len(values) < 2:
        return epochs
    return max(1, min(epochs, math.ceil(config.select.fit_rung * epochs)))

"""How much each term of the ranker's score (text, association, CF) decides the items a list shows.

For every listed item the ranker's score is the sum of three contributions, α(1−β)·s_text,
αβ·s_assoc and (1−α)·s_cf. A term's share of an item's score is |contribution| over the sum of the three
|contributions|; the table averages it over the listed items of each popularity bucket (head, tail,
cold = never touched in train; cold items are tail items too), next to the mean signed contribution. The
post-hoc popularity terms (−τ·γ·log(1 + train count) + τ·δ·log(1 + recent count), added to the ranked score
after the ranker) are reported beside them as their mean contribution (``mean_popularity``), not as a share
of the ranker's score.
"""

from __future__ import annotations

import numpy as np

from longtail.data.encoded import Histories
from longtail.data.splits import popularity_buckets
from longtail.recommend.pipeline import Batch, Pipeline, popularity_terms, recommend

TERMS = ("text", "assoc", "cf")


def contributions(out, columns: np.ndarray) -> np.ndarray:
    """(b, k, 3) text/assoc/cf contributions of each pick (``columns`` into the ranker's candidates), NaN
    where -1."""
    alpha, beta = (
        np.broadcast_to(g.detach().numpy(), out.score.shape) for g in (out.alpha, out.beta)
    )  # (b, c)
    terms = np.stack(
        [
            alpha * (1 - beta) * out.text.detach().numpy(),
            alpha * beta * out.assoc.detach().numpy(),
            (1 - alpha) * out.cf.detach().numpy(),
        ],
        axis=-1,
    )  # (b, c, 3)
    picked = np.take_along_axis(terms, np.maximum(columns, 0)[..., None], 1)  # (b, k, 3)
    return np.where((columns >= 0)[..., None], picked, np.nan)


def term_shares(
    pipe: Pipeline, histories: Histories, users: np.ndarray, k: int = 20, batch_users: int = 256
) -> dict[str, dict[str, float]]:
    """``{bucket: {"items": n, "share_text": …, "mean_text": …, …}}`` over the lists ``pipe`` serves
    ``users``."""
    exposure = np.zeros(pipe.n_items)
    items, parts = [], []
    for start in range(0, len(users), batch_users):
        rows = users[start : start + batch_users]
        lists = recommend(pipe, Batch.of(histories.rows(rows)), k, exposure)
        items.append(lists.items.ravel())
        parts.append(contributions(lists.ranked, lists.columns).reshape(-1, 3))
    if not items:
        return {}
    item, part = np.concatenate(items), np.concatenate(parts)  # (m,), (m, 3)
    keep = (item >= 0) & ~np.isnan(part).any(1)
    item, part = item[keep], part[keep]
    adjustment = popularity_terms(pipe, item)  # (m,) or None
    adjustment = np.zeros(len(item)) if adjustment is None else adjustment
    magnitude = np.abs(part)
    share = magnitude / np.maximum(magnitude.sum(1, keepdims=True), 1e-12)  # (m, 3)
    buckets = popularity_buckets(pipe.train_counts)
    table = {}
    for name in ("head", "tail", "cold"):
        mask = buckets[name][item]
        row: dict[str, float] = {"items": int(mask.sum())}
        for j, term in enumerate(TERMS):
            row[f"share_{term}"] = float(share[mask, j].mean()) if mask.any() else float("nan")
            row[f"mean_{term}"] = float(part[mask, j].mean()) if mask.any() else float("nan")
        row["mean_popularity"] = float(adjustment[mask].mean()) if mask.any() else float("nan")
        table[name] = row
    return table

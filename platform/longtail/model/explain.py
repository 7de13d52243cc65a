"""Explanations: how much each term contributed to an item's score, and which history items the
target-aware attention looked at ("because you watched …")."""

from __future__ import annotations

import numpy as np

from longtail.model.hybrid import HybridOutput


def explain(
    out: HybridOutput,
    history: np.ndarray,
    picks: np.ndarray,
    item_ids: np.ndarray,
    top_history: int = 3,
    popularity: np.ndarray | None = None,
) -> list[list[dict]]:
    """For each user row and each picked candidate column: term contributions and attended history items.

    ``history`` (b, L) catalog indices with padding ≥ len(item_ids); ``picks`` (b, k) candidate columns of
    ``out`` (-1 for an empty slot, skipped); ``popularity`` (b, c) the post-hoc popularity adjustment of each
    candidate, or None when there is none. Contributions: text = α(1−β)·s_text, assoc = αβ·s_assoc,
    cf = (1−α)·s_cf (and popularity); they sum to the ranked score.
    """
    b = picks.shape[0]
    a, b_ = (np.broadcast_to(g.detach().numpy(), out.score.shape) for g in (out.alpha, out.beta))  # (b, c)
    text, assoc, cf = (t.detach().numpy() for t in (out.text, out.assoc, out.cf))  # (b, c)
    attention = (out.text_attention + out.cf_attention).detach().numpy() / 2  # (b, c, L)
    n_items = len(item_ids)
    result = []
    for row in range(b):
        items = []
        for col in picks[row]:
            if col < 0:
                continue
            w = attention[row, col]
            order = [int(i) for i in np.argsort(-w, kind="stable") if history[row, i] < n_items and w[i] > 0][
                :top_history
            ]
            items.append(
                {
                    "contributions": {
                        "text": float(a[row, col] * (1 - b_[row, col]) * text[row, col]),
                        "assoc": float(a[row, col] * b_[row, col] * assoc[row, col]),
                        "cf": float((1 - a[row, col]) * cf[row, col]),
                    }
                    | ({} if popularity is None else {"popularity": float(popularity[row, col])}),
                    "alpha": float(a[row, col]),
                    "beta": float(b_[row, col]),
                    "because": [
                        {"item_id": str(item_ids[history[row, i]]), "attention": float(w[i])} for i in order
                    ],
                }
            )
        result.append(items)
    return result

"""Explanations: how much each term contributed to an item's score, and which history items the
target-aware attention looked at ("because you watched …")."""

from __future__ import annotations

import numpy as np

from longtail.model.hybrid import HybridOutput


def explain(
    out: HybridOutput, history: np.ndarray, picks: np.ndarray, item_ids: np.ndarray, top_history: int = 3
) -> list[list[dict]]:
    """For each user row and each picked candidate column: term contributions and attended history items.

    ``history`` (b, L) catalog indices with padding ≥ len(item_ids); ``picks`` (b, k) candidate columns.
    Contributions: text = α(1−β)·s_text, assoc = αβ·s_assoc, cf = (1−α)·s_cf; they sum to the score.
    """
    a, b_ = out.alpha.detach().numpy(), out.beta.detach().numpy()  # (c,)
    text, assoc, cf = (t.detach().numpy() for t in (out.text, out.assoc, out.cf))  # (b, c)
    attention = (out.text_attention + out.cf_attention).detach().numpy() / 2  # (b, c, L)
    n_items = len(item_ids)
    result = []
    for row in range(picks.shape[0]):
        items = []
        for col in picks[row]:
            w = attention[row, col]
            order = [int(i) for i in np.argsort(-w) if history[row, i] < n_items and w[i] > 0][:top_history]
            items.append({
                "contributions": {
                    "text": float(a[col] * (1 - b_[col]) * text[row, col]),
                    "assoc": float(a[col] * b_[col] * assoc[row, col]),
                    "cf": float((1 - a[col]) * cf[row, col]),
                },
                "alpha": float(a[col]), "beta": float(b_[col]),
                "because": [{"item_id": str(item_ids[history[row, i]]), "attention": float(w[i])} for i in order],
            })  # fmt: skip
        result.append(items)
    return result

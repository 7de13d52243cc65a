"""`benchmarks/paired_ratio.py`: per-user metrics average to the metric code's figures; the interval."""

from __future__ import annotations

import numpy as np
import pytest
from benchmarks.paired_ratio import interval, per_user
from scipy import sparse

from longtail.eval.metrics import compute_metrics


def test_per_user_means_are_the_metric_codes_figures() -> None:
    rng = np.random.default_rng(0)
    n_users, n_items = 40, 60
    topk = np.stack([rng.permutation(n_items)[:20] for _ in range(n_users)])
    rows = [rng.choice(n_items, size=rng.integers(1, 6), replace=False) for _ in range(n_users)]
    targets = sparse.csr_matrix(
        (np.ones(sum(map(len, rows))), np.concatenate(rows), np.r_[0, np.cumsum(list(map(len, rows)))]),
        shape=(n_users, n_items),
    )
    tail = np.arange(n_items) >= 12
    buckets = {"head": ~tail, "tail": tail, "cold": np.zeros(n_items, bool)}
    want = compute_metrics(topk, targets, buckets)
    got = per_user(topk, targets, tail)
    assert np.mean(got["ndcg@10"]) == pytest.approx(want["ndcg@10"])
    assert np.nanmean(got["tail_recall@20"]) == pytest.approx(want["tail_recall@20"])


def test_interval_brackets_the_ratio_and_narrows_with_users() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.exponential(1.1, 4000), rng.exponential(1.0, 4000)
    wide, narrow = interval(a[:200], b[:200], 500), interval(a, b, 500)
    for r in (wide, narrow):
        assert r["low"] < r["ratio"] < r["high"]
    assert narrow["high"] - narrow["low"] < wide["high"] - wide["low"]
    a[:10] = np.nan  # a user without the metric on one side is left out of both
    assert interval(a, b, 100)["users"] == 3990

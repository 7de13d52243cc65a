"""The peers' user sample (`benchmarks/peers/users.py`) and `evaluate(..., among=)`."""

from __future__ import annotations

import numpy as np
import pytest
from benchmarks.peers.users import restricted, sample_users

from longtail.eval.evaluate import evaluate
from longtail.model.baselines import MostPop
from tests.conftest import clustered_split


def test_sample_is_seeded_sorted_and_capped() -> None:
    data = clustered_split(n_users=60)
    a, b = sample_users(data, 10, seed=3), sample_users(data, 10, seed=3)
    assert np.array_equal(a, b) and len(np.unique(a)) == 10 and np.all(np.diff(a) > 0)
    assert not np.array_equal(a, sample_users(data, 10, seed=4))
    assert np.array_equal(sample_users(data, 500), np.arange(60))
    with pytest.raises(ValueError, match="--users"):
        sample_users(data, 0)


def test_restricted_keeps_only_the_sample_with_its_indices() -> None:
    data = clustered_split(n_users=60)
    users = sample_users(data, 12)
    sub = restricted(data, users)
    assert sub.n_users == data.n_users and sub.n_items == data.n_items
    for part in ("train", "valid", "test"):
        full, kept = data.part(part), sub.part(part)
        assert set(kept.users.tolist()) == set(users.tolist())
        assert len(kept) == int(np.isin(full.users, users).sum())
    for u in users:  # a sampled user's history is whole
        assert np.array_equal(sub.histories(("train",)).of(int(u)), data.histories(("train",)).of(int(u)))


def test_evaluate_among_scores_those_users_with_the_whole_datas_buckets() -> None:
    data = clustered_split(n_users=60)
    users = sample_users(data, 12)
    model = MostPop()
    model.fit(data)
    some = evaluate(model, data, "test", among=users)
    assert some.n_users == 12
    assert evaluate(model, data, "test").n_users == 60
    # the same users scored on the restricted data: same lists, so the same accuracy; buckets are the
    # whole train part's in the first call, the sample's train counts in the second
    alone = evaluate(model, restricted(data, users), "test")
    assert alone.n_users == 12
    assert some.metrics["recall@20"] == pytest.approx(alone.metrics["recall@20"])

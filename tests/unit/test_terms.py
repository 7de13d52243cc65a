"""Score-term shares over served lists: contributions add up to the ranker's score, shares to one."""

import numpy as np
import pytest

from longtail.bundle import read_bundle
from longtail.recommend.build import load_pipeline, own_lists
from longtail.recommend.pipeline import Batch, recommend
from longtail.recommend.terms import contributions, term_shares
from tests.conftest import clustered_split


def test_contributions_sum_to_the_score_of_each_pick_and_shares_to_one(tiny_bundle):
    pipe = own_lists(load_pipeline(read_bundle(tiny_bundle)))
    data = clustered_split()
    histories = data.histories(("train",))
    lists = recommend(pipe, Batch.of(histories.rows(np.arange(10))), 5)
    parts = contributions(lists.ranked, lists.columns)  # (10, 5, 3)
    assert parts.shape == (10, 5, 3)
    assert np.allclose(parts.sum(-1), lists.scores, atol=1e-5)
    table = term_shares(pipe, histories, np.arange(data.n_users), k=5, batch_users=7)
    assert sum(row["items"] for name, row in table.items() if name != "cold") == 5 * data.n_users
    for row in table.values():
        if row["items"]:
            assert row["share_text"] + row["share_assoc"] + row["share_cf"] == pytest.approx(1.0)
            assert all(0 <= row[f"share_{t}"] <= 1 for t in ("text", "assoc", "cf"))


def test_the_popularity_adjustment_is_reported_beside_the_shares(tiny_bundle):
    pipe = own_lists(load_pipeline(read_bundle(tiny_bundle))).with_knobs(popularity_penalty=0.3)
    data = clustered_split()
    histories = data.histories(("train",))
    lists = recommend(pipe, Batch.of(histories.rows(np.arange(10))), 5)
    counts = data.train_counts()[lists.items]
    assert np.allclose(
        contributions(lists.ranked, lists.columns).sum(-1) - 0.3 * np.log1p(counts), lists.scores, atol=1e-5
    )
    table = term_shares(pipe, histories, np.arange(data.n_users), k=5)
    for row in table.values():
        if row["items"]:
            assert row["mean_popularity"] <= 0
            assert row["share_text"] + row["share_assoc"] + row["share_cf"] == pytest.approx(1.0)
    if table["head"]["items"] and table["cold"]["items"]:
        assert table["head"]["mean_popularity"] < table["cold"]["mean_popularity"] == 0

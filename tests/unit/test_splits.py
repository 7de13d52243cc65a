"""The splits and buckets follow the evaluation protocol of docs/design.md exactly."""

from __future__ import annotations

import numpy as np
import pytest

from longtail.data import ImportOptions, import_source, load_named, popularity_buckets, write_dataset
from longtail.data.encoded import load_split_data
from longtail.data.splits import cold_items, cold_split, loo_split, warm_split


def pairs(table):
    return sorted(zip(table.column("user_id").to_pylist(), table.column("item_id").to_pylist(), strict=True))


@pytest.fixture
def toy(recbole_dir):
    return import_source(recbole_dir, "recbole", ImportOptions())


def test_warm_split_by_time_with_natural_item_ties(toy):
    warm = warm_split(toy.interactions, toy.catalog())
    # u1: 10 items → 1 test, 1 valid; u2: ties at t=50 ordered 1, 3, 10 (numeric), then 2, 4;
    # u3 has 2 interactions and stays in train; u4 has 3 → one each.
    assert pairs(warm.test) == [("u1", "10"), ("u2", "4"), ("u4", "9")]
    assert pairs(warm.valid) == [("u1", "9"), ("u2", "2"), ("u4", "8")]
    assert ("u3", "5") in pairs(warm.train) and ("u3", "6") in pairs(warm.train)
    assert warm.counts() == {"train": 14, "valid": 3, "test": 3}


def test_warm_split_sizes_follow_floor_of_a_tenth():
    import pyarrow as pa

    n = 37  # floor(37/10) = 3 each
    table = pa.table(
        {
            "user_id": ["a"] * n,
            "item_id": [str(i) for i in range(n)],
            "timestamp": [float(i) for i in range(n)],
            "weight": pa.array([1.0] * n, pa.float32()),
            "event_type": ["x"] * n,
        }
    )
    warm = warm_split(table, np.array([str(i) for i in range(n)], dtype=object))
    assert warm.counts() == {"train": 31, "valid": 3, "test": 3}
    assert warm.test.column("item_id").to_pylist() == ["34", "35", "36"]


def test_leave_one_out_keeps_the_sources_order_for_ties():
    import pyarrow as pa

    # b's last two share a timestamp: the row order decides (item 9 came after 1), not the item ids;
    # c has 2 interactions and stays in train; rows of one user need not be adjacent
    rows = [("b", "5", 1.0), ("c", "1", 1.0), ("b", "9", 7.0), ("b", "1", 7.0), ("c", "2", 2.0)]
    rows += [("a", str(i), float(i)) for i in range(4)]
    table = pa.table(
        {
            "user_id": [u for u, _, _ in rows],
            "item_id": [i for _, i, _ in rows],
            "timestamp": [t for _, _, t in rows],
            "weight": pa.array([1.0] * len(rows), pa.float32()),
            "event_type": ["x"] * len(rows),
        }
    )
    loo = loo_split(table)
    assert pairs(loo.test) == [("a", "3"), ("b", "1")] and pairs(loo.valid) == [("a", "2"), ("b", "9")]
    assert pairs(loo.train) == [("a", "0"), ("a", "1"), ("b", "5"), ("c", "1"), ("c", "2")]


def test_cold_split_moves_valid_to_test_and_drops_train(toy):
    catalog = toy.catalog()
    warm = warm_split(toy.interactions, catalog)
    cold = cold_items(toy.interactions, catalog, seed=2024)
    touched = [str(i) for i in range(1, 11)]  # items with an interaction, natural order
    assert list(cold) == list(np.random.default_rng(2024).choice(touched, 1, replace=False))
    split = cold_split(warm, cold)
    c = cold[0]
    assert c not in split.train.column("item_id").to_pylist()
    assert c not in split.valid.column("item_id").to_pylist()
    n_warm = sum(t.column("item_id").to_pylist().count(c) for t in (warm.valid, warm.test))
    assert split.test.column("item_id").to_pylist().count(c) == n_warm


def test_popularity_buckets():
    counts = np.array([5, 0, 5, 1, 9, 0, 2, 2, 0, 3])
    b = popularity_buckets(counts)  # round(0.2 × 10) = 2 head items: 4 (9 hits), then 0 (ties 0 < 2)
    assert np.flatnonzero(b["head"]).tolist() == [0, 4]
    assert (b["tail"] == ~b["head"]).all()
    assert np.flatnonzero(b["cold"]).tolist() == [1, 5, 8]
    assert popularity_buckets(np.array([0, 0, 1, 0, 0]))["head"].sum() == 1  # never a zero-count item


@pytest.mark.network
def test_ml100k_counts_match_the_protocol(tmp_path):
    manifest = write_dataset(load_named("ml-100k"), tmp_path / "ml", source="ml-100k")
    assert manifest["users"] == 943 and manifest["catalog_size"] == 1682
    assert manifest["splits"]["warm"] == {"train": 80808, "valid": 9596, "test": 9596}
    assert manifest["rows"]["kg"] > 0 and manifest["rows"]["kg_link"] > 0
    data = load_split_data(tmp_path / "ml", "warm")
    assert popularity_buckets(data.train_counts())["head"].sum() == 336
    cold = load_split_data(tmp_path / "ml", "cold")
    assert (cold.train_counts() == 0).sum() >= 168  # the 168 cold items have no train data

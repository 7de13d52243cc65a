"""The Python API without Ray: ``prepare`` a user's files, ``evaluate`` a bundle next to a baseline,
``load`` a bundle and recommend, find similar items and add items in memory."""

from __future__ import annotations

import pytest

import longtail
from longtail.config import ConfigError, TrainConfig
from longtail.data.encoded import load_split_data
from longtail.eval.evaluate import evaluate as evaluate_model
from longtail.model.factory import build_baseline
from tests.conftest import write_clustered_dataset


def test_prepare_imports_files_and_names_what_is_missing(recbole_dir, tmp_path):
    data = longtail.prepare(recbole_dir, format="recbole", out=tmp_path / "data")
    assert data.path == tmp_path / "data" and (data.path / "manifest.json").is_file()
    assert data.manifest["rows"]["interactions"] == 20 and len(data.fingerprint) >= 16
    with pytest.raises(ConfigError, match="exactly one"):
        longtail.prepare(recbole_dir, dataset="ml-100k", out=tmp_path / "x")
    with pytest.raises(ConfigError, match="format="):
        longtail.prepare(recbole_dir, out=tmp_path / "x")


def test_evaluate_reports_the_bundle_and_each_baseline_as_plain_evaluation_does(tiny_bundle, tmp_path):
    data = write_clustered_dataset(tmp_path / "data")
    report = longtail.evaluate(tiny_bundle, data, part="valid", models=["mostpop"])
    table = report.table()
    assert {"hybrid", "mostpop"} <= set(table) and report.part == "valid"
    assert table["hybrid"]["ndcg@10"] > 0 and all(0.0 <= v <= 1.0 for v in table["hybrid"].values() if v == v)
    split = load_split_data(data, "warm", None)
    mostpop = build_baseline("mostpop", TrainConfig().baselines)
    mostpop.fit(split)
    plain = dict(evaluate_model(mostpop, split, "valid").metrics)
    assert table["mostpop"] == pytest.approx(plain, nan_ok=True)
    with pytest.raises(ConfigError, match="no_such"):
        longtail.evaluate(None, data, models=["mostpop"], overrides={"baselines.no_such": 1})
    with pytest.raises(ConfigError, match="baselines always mask"):
        longtail.evaluate(tiny_bundle, data, models=["mostpop"], keep_seen=True)
    # leave-one-out: one test item per user with 3 or more interactions; unmasked, a list may repeat history
    loo = longtail.evaluate(tiny_bundle, data, split="loo", keep_seen=True).results[0]
    assert loo.n_users == len(set(load_split_data(data, "loo", None).part("test").users))
    assert set(loo.metrics) >= {"hit@10", "ndcg@10", "aplt@1", "aplt@10"}


@pytest.fixture(scope="module")
def rec(tiny_bundle):
    return longtail.load(tiny_bundle)


def test_a_known_user_equals_their_history_given_raw(rec):
    items, _, _ = rec.live.weighted_history("u0", False, [])
    history = [rec.live.item_ids[i] for i in items]
    by_id = rec.recommend(user_id="u0", k=5)
    by_history = rec.recommend(history=history, k=5)
    assert len(by_id) == 5 and [r.item_id for r in by_id] == [r.item_id for r in by_history]
    assert not {r.item_id for r in by_id} & set(history)  # seen items are left out
    explained = rec.recommend(user_id="u0", k=3, explain=True)
    assert all(r.explanation and "contributions" in r.explanation for r in explained)


def test_an_unknown_user_gets_the_cold_start_list_and_bad_calls_name_the_problem(rec):
    cold = rec.recommend(user_id="never-seen", k=6)
    assert len(cold) == 6 and {r.reason for r in cold} <= {"popular", "explore"}
    with pytest.raises(ConfigError, match="user_id=, history="):
        rec.recommend(k=5)
    with pytest.raises(ConfigError, match="nope"):
        rec.recommend(history=["1", "nope"], k=5)
    with pytest.raises(ConfigError, match="no item 'nope'"):
        rec.similar("nope")


def test_added_items_are_recommendable_at_once(tiny_bundle):
    rec = longtail.load(tiny_bundle)  # its own copy: adding items changes the catalog
    before = len(rec.item_ids)
    assert rec.add_items({"new-1": "A story of space number 5", "3": "already there"}) == 1
    assert rec.add_items([("new-1", "again")]) == 0
    assert len(rec.item_ids) == before + 1 and rec.item_ids[-1] == "new-1"
    similar = rec.similar("new-1", k=3)
    assert len(similar) == 3 and "new-1" not in {r.item_id for r in similar}
    assert "new-1" in {r.item_id for r in rec.similar("5", k=len(rec.item_ids) - 1)}
    assert rec.recommend(history=["new-1"], k=4)
    with pytest.raises(ConfigError, match=r"\['blank'\]: text holds only whitespace"):
        rec.add_items({"blank": " \n "})
    assert "blank" not in rec.item_ids

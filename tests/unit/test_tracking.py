"""MLflow tracking: names MLflow accepts, and a train run logged from a manifest into a real SQLite store."""

from __future__ import annotations

import json
import math

import mlflow
import pytest

from longtail.config import TrainConfig
from longtail.tracking import flat, log_sweep_summary, log_train_run, metric_name, numeric, tracking_uri


def test_names_and_values_mlflow_accepts():
    assert metric_name("valid_ndcg@10") == "valid_ndcg_at_10"
    assert metric_name("test/tail_recall@20") == "test/tail_recall_at_20"
    assert metric_name("a(b)") == "a_b_"
    assert numeric({"x": 1, "nan": math.nan, "inf": -math.inf, "flag": True, "s": "a"}, "p/") == {"p/x": 1.0}
    assert flat({"a": {"b": 1, "c": None}, "d": [1, 2]}) == {"a.b": 1, "a.c": "null", "d": "[1, 2]"}


def test_uri_is_explicit_then_env_then_beside_the_output(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking_uri(tmp_path / "bundles" / "b") == f"sqlite:///{tmp_path / 'bundles' / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    assert tracking_uri(tmp_path / "b") == "http://mlflow:5000"
    assert tracking_uri(tmp_path / "b", "sqlite:///x.db") == "sqlite:///x.db"


@pytest.fixture
def bundle(tmp_path):
    out = tmp_path / "bundles" / "shop@v1"
    out.mkdir(parents=True)
    metrics = {
        "valid": {"ndcg@10": 0.2, "cold_recall@20": math.nan},
        "test": {"ndcg@10": 0.18, "coverage@20": 0.7},
        "own_lists": {"test": {"ndcg@10": 0.18}},
        "seconds": 12.5,
        "stage_seconds": {"encoder_embed_graph": 2.5, "fit_and_popularity_terms": 9.0},
        "fit_history": [
            {"epoch": 1.0, "train_loss": 3.0, "valid_ndcg@10": 0.1},
            {"epoch": 2.0, "train_loss": 2.5, "valid_ndcg@10": 0.2},
        ],
        "selection": {"shelves": {"chosen": {"tail_share": 0.3, "new_share": 0.1, "exposure_penalty": 0.5}}},
    }
    manifest = {
        "format_version": 2,
        "version": "v1",
        "config": TrainConfig().model_dump(),
        "metrics": metrics,
        "data": {"path": "/d", "fingerprint": "f"},
        "files": {},
    }
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def test_train_run_carries_params_epochs_finals_and_plots(bundle, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    plot = tmp_path / "alpha.png"
    plot.write_bytes(b"\x89PNG")
    run_id = log_train_run(uri, bundle, [plot, tmp_path / "missing.png"])
    client = mlflow.MlflowClient(tracking_uri=uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["bundle_version"] == "v1"
    assert run.data.params["ranker.temperature"] == str(TrainConfig().ranker.temperature)
    assert run.data.params["selected.tail_share"] == "0.3"
    assert len(run.data.params) > 100  # more than one batch of params
    history = client.get_metric_history(run_id, "fit/valid_ndcg_at_10")
    assert [(m.step, m.value) for m in history] == [(1, 0.1), (2, 0.2)]
    assert (
        run.data.metrics["test/ndcg_at_10"] == 0.18 and run.data.metrics["own_lists/test/ndcg_at_10"] == 0.18
    )
    assert "valid/cold_recall_at_20" not in run.data.metrics  # NaN: no cold items, not a zero
    assert run.data.metrics["seconds/fit_and_popularity_terms"] == 9.0  # each stage's wall time
    artifacts = {a.path for a in client.list_artifacts(run_id)} | {
        a.path for a in client.list_artifacts(run_id, "plots")
    }
    assert {"manifest.json", "plots/alpha.png"} <= artifacts


def test_sweep_summary_run(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    table = tmp_path / "trials.csv"
    table.write_text("trial,objective\na,0.1\n")
    run_id = log_sweep_summary(
        uri,
        "longtail-tune-x",
        [table],
        {"objective": 0.1, "trial": "a", "ranker.lr": 0.01, "valid_ndcg@10": 0.1, "test_x": None},
    )
    client = mlflow.MlflowClient(tracking_uri=uri)
    run = client.get_run(run_id)
    assert run.data.metrics == {"best/objective": 0.1, "best/ranker.lr": 0.01, "best/valid_ndcg_at_10": 0.1}
    assert run.data.params == {"best.trial": "a"}
    again = log_sweep_summary(
        uri, "longtail-tune-x", [table], {"objective": 0.2}
    )  # a resumed sweep, summarised again
    experiment = client.get_experiment_by_name("longtail-tune-x").experiment_id
    assert [r.info.run_id for r in client.search_runs([experiment])] == [again]

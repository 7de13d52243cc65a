"""`longtail train` end to end on real local Ray with the tiny config, then the bundle evaluates."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from longtail.bundle import read_bundle
from longtail.config import TrainConfig, load_config
from longtail.data.encoded import load_split_data
from longtail.eval.evaluate import evaluate
from longtail.recommend.build import load_pipeline, own_lists
from longtail.recommend.recommender import PipelineRecommender, RetrieverRecommender
from longtail.train.chain import train_pipeline
from tests.conftest import write_clustered_dataset

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_tiny_pipeline_trains_caches_and_evaluates(ray_env, tiny_encoder, tmp_path):
    data_dir = write_clustered_dataset(tmp_path / "data")
    overrides = [
        f"encoder.name={tiny_encoder}",
        f"resources.storage_path={tmp_path / 'ray'}",
        "ranker.epochs=2",
        "ranker.examples_per_epoch=256",
        "ranker.dim=16",
        "graph.kg_k=0",
        "rerank.tail_share=0.3",
        "rerank.new_share=0.2",
        "rerank.exposure_penalty=0.25",
        "select.shelves=false",
    ]
    cfg = load_config(TrainConfig, ROOT / "train_configs" / "tiny.yaml", overrides)
    logs: list[str] = []
    bundle_dir = train_pipeline(data_dir, cfg, tmp_path / "bundle", log=logs.append)
    bundle = read_bundle(bundle_dir)
    metrics = bundle.manifest.metrics
    assert set(metrics["test"]) >= {"ndcg@10", "tail_recall@20", "coverage@20"}
    assert set(metrics["own_lists"]) == set(metrics["retriever"]) == {"valid", "test"}
    assert (bundle_dir / "encoder" / "model.safetensors").is_file() and (
        bundle_dir / "retriever.safetensors"
    ).is_file()
    assert bundle.neighbours is not None and bundle.neighbours.nnz > 0  # the tail shelf's item-kNN matrix
    data = load_split_data(data_dir, "warm")
    pipe = load_pipeline(bundle)  # what eval and Serve read: the same lists as the training run wrote down
    # each epoch's validation: two workers ranked half the users each; the best epoch's weights (the
    # bundle's), ranked here in one process without the post-hoc popularity terms, give its ndcg@10
    fitted = own_lists(pipe).with_knobs(popularity_penalty=0.0, trend_bonus=0.0)
    valid = evaluate(PipelineRecommender(fitted), data, "valid", max_users=cfg.ranker.valid_users).metrics
    best = max(h["valid_ndcg@10"] for h in metrics["fit_history"])
    assert valid["ndcg@10"] == pytest.approx(best, abs=1e-6)
    own = evaluate(PipelineRecommender(own_lists(pipe)), data, "test").metrics
    assert own == pytest.approx(metrics["own_lists"]["test"], abs=1e-6, nan_ok=True)
    # the shelves fill slots 11-20 only: the model's own top 10 (so ndcg@10) is the served lists' too
    assert own["ndcg@10"] == pytest.approx(metrics["test"]["ndcg@10"], abs=1e-6)
    shelved = evaluate(PipelineRecommender(pipe), data, "test").metrics
    assert shelved == pytest.approx(metrics["test"], abs=1e-6, nan_ok=True)
    first = evaluate(RetrieverRecommender(pipe), data, "test").metrics
    assert first == pytest.approx(metrics["retriever"]["test"], abs=1e-6, nan_ok=True)
    assert (tmp_path / "bundle-alpha-sweep.png").read_bytes()[:4] == b"\x89PNG"
    # a second run with the same inputs, through the console script (joining this module's cluster), reuses
    # every upstream stage and fits ID dropout 0 and 0.3 for the first of the two epochs (select.fit_rung
    # 0.5) in one Ray Train run (the same worker trains both, one after the other), chooses one on valid and
    # continues only that one to epoch 2 (ID dropout 0 to epoch 2 is the first run's fit: reused); it
    # chooses γ again, and δ, on the continued fit and the shelves on valid (the defaults), and the bundle
    # serves what it chose
    cli = Path(sys.executable).parent / "longtail"
    again = subprocess.run(
        [
            str(cli),
            "train",
            "--config",
            str(ROOT / "train_configs" / "tiny.yaml"),
            "--data",
            str(data_dir),
            "--out",
            str(tmp_path / "bundle2"),
            *overrides,
            "select.shelves=true",
            "select.id_dropout=[0.0,0.3]",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=ray_env,
    )
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stderr.count("fit: epochs 1-1 of id_dropout") == 2, again.stderr[-2000:]
    workers = {  # the rank-0 worker that trained each rung fit
        value: re.search(rf"pid=(\d+)\)\S* \[fit\] id_dropout {value} epoch 1/1", again.stderr).group(1)
        for value in ("0", "0.3")
    }
    assert workers["0"] == workers["0.3"], again.stderr[-2000:]
    assert "ndcg@10" in again.stdout and "select: shelves" in again.stderr
    second = read_bundle(tmp_path / "bundle2")
    fits = second.manifest.metrics["selection"]["fit"]
    gammas, deltas = TrainConfig().select.popularity_adjustments, TrainConfig().select.trend_boosts
    rung = fits["rung"]  # every one-epoch fit at every γ and the config's δ (δ is chosen on the kept fit)
    assert rung["epochs"] == 1 and [
        (row["id_dropout"], row["popularity_adjustment"], row["trend_boost"], row["epochs"])
        for row in rung["grid"]
    ] == [(d, g, 0.0, 1) for d in (0.0, 0.3) for g in gammas]
    kept = fits["chosen"]
    assert kept["id_dropout"] == rung["chosen"]["id_dropout"]
    continued = f"fit: epochs 2-2 of id_dropout {kept['id_dropout']:g}"
    assert "neighbours: reusing" in again.stderr, again.stderr[-2000:]  # the tail shelf's item-kNN matrix
    if kept["id_dropout"] == 0.0:
        assert continued not in again.stderr and again.stderr.count("reusing") == 5, again.stderr[-2000:]
    else:
        assert continued in again.stderr and again.stderr.count("reusing") == 4, again.stderr[-2000:]
    assert [row["epochs"] for row in fits["grid"]] == [2] * len(gammas) * len(deltas)
    assert [h["epoch"] for h in second.manifest.metrics["fit_history"]] == [1.0, 2.0]
    weight = second.manifest.metrics["selection"]["shelves"]["tail_knn"]  # chosen before the shelf grid
    assert [r["tail_knn"] for r in weight["rows"]] == [0.0, 0.5, 1.0]
    kept_row = next(r for r in weight["rows"] if r["tail_knn"] == second.config.rerank.tail_knn)
    assert all(kept_row["tail_recall@20"] >= r["tail_recall@20"] for r in weight["rows"])
    assert second.config.ranker.epochs == 2
    assert second.config.ranker.id_dropout == second.config.retriever.id_dropout == kept["id_dropout"]
    assert second.config.ranker.popularity_adjustment == kept["popularity_adjustment"]
    assert second.config.ranker.trend_boost == kept["trend_boost"]
    assert (
        f"select: id_dropout {kept['id_dropout']:g}, popularity_adjustment "
        f"{kept['popularity_adjustment']:g}, "
        f"trend_boost {kept['trend_boost']:g} of 1 fits × {len(gammas)} adjustments × {len(deltas)} trend "
        f"boosts"
    ) in again.stderr
    recent = load_split_data(data_dir, "warm").recent_counts(second.config.ranker.trend_window)
    assert (second.recent_counts == recent).all()  # the bundle carries the trend term's counts
    ranked = next(
        row for row in fits["grid"] if {k: row[k] for k in kept} == kept
    )  # the kept point is served
    own_valid = evaluate(PipelineRecommender(own_lists(load_pipeline(second))), data, "valid").metrics
    assert own_valid["ndcg@10"] == pytest.approx(ranked["ndcg@10"], abs=1e-5)
    assert own_valid["tail_recall@20"] == pytest.approx(ranked["tail_recall@20"], abs=1e-5, nan_ok=True)
    first_fit = bundle.manifest.metrics["selection"]["fit"]  # tiny.yaml: one fit, the (γ, δ) grid on it
    assert [row["popularity_adjustment"] for row in first_fit["grid"]] == gammas * len(deltas)
    assert bundle.config.ranker.popularity_adjustment == first_fit["chosen"]["popularity_adjustment"]
    # ... and logs the run to MLflow beside the bundle: config, each epoch's fit metrics, the α-sweep plot
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    [run] = client.search_runs([client.get_experiment_by_name("longtail-train").experiment_id])
    assert run.data.params["ranker.epochs"] == "2" and "mlflow: run" in again.stderr
    fit_epochs = client.get_metric_history(run.info.run_id, "fit/valid_ndcg_at_10")
    assert [m.step for m in fit_epochs] == [int(h["epoch"]) for h in second.manifest.metrics["fit_history"]]
    assert run.data.metrics["test/ndcg_at_10"] == pytest.approx(second.manifest.metrics["test"]["ndcg@10"])
    assert [a.path for a in client.list_artifacts(run.info.run_id, "plots")] == [
        "plots/bundle2-alpha-sweep.png"
    ]
    chosen = second.manifest.metrics["selection"]["shelves"]["chosen"]
    assert second.config.rerank.model_dump(include=set(chosen)) == chosen
    assert len(second.manifest.metrics["selection"]["shelves"]["grid"]) > 1
    # the CLI evaluates the bundle next to a baseline
    report = tmp_path / "report.json"
    subprocess.run(
        [
            str(cli),
            "eval",
            "--bundle",
            str(bundle_dir),
            "--model",
            "mostpop",
            "--data",
            str(data_dir),
            "--out",
            str(report),
        ],
        check=True,
        capture_output=True,
        timeout=300,
        env=ray_env,
    )
    results = json.loads(report.read_text())["results"]
    assert [r["model"] for r in results] == [
        "hybrid",
        "hybrid (own lists)",
        "retriever (first stage)",
        "mostpop",
    ]
    assert results[0]["metrics"]["ndcg@10"] == pytest.approx(results[1]["metrics"]["ndcg@10"], abs=1e-6)
    terms = json.loads((tmp_path / "report-terms.json").read_text())[
        "buckets"
    ]  # each term's share, per bucket
    assert terms["head"]["items"] + terms["tail"]["items"] > 0 and (tmp_path / "report-terms.png").is_file()
    # `longtail recommend` as a Ray Data job over ranker actors: the same pipeline, so the same lists (the
    # relevance block; the shelves' exposure is counted per actor there, over all users in-process)
    lists = {}
    for mode in ("--ray", "--no-ray"):
        recs = tmp_path / f"recs{mode}.jsonl"
        done = subprocess.run(
            [
                str(cli),
                "recommend",
                "--bundle",
                str(bundle_dir),
                "--data",
                str(data_dir),
                mode,
                "--actors",
                "1",
                "--users",
                "all",
                "--k",
                "10",
                "--out",
                str(recs),
            ],
            capture_output=True,
            text=True,
            timeout=600,
            env=ray_env,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        lists[mode] = {row["user_id"]: row["items"] for row in map(json.loads, recs.read_text().splitlines())}
    assert lists["--ray"].keys() == lists["--no-ray"].keys() and len(lists["--ray"]) == data.n_users
    block = 10 - round(0.3 * 10) - round(0.2 * 10)
    assert all(lists["--ray"][u][:block] == lists["--no-ray"][u][:block] for u in lists["--ray"])
    assert all(len(set(items)) == 10 for items in lists["--ray"].values())

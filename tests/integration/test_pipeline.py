"""`longtail train` end to end on real local Ray with the tiny config, then the bundle evaluates."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from longtail.bundle import load_ranker, read_bundle
from longtail.config import TrainConfig, load_config
from longtail.data.encoded import load_split_data
from longtail.eval.evaluate import evaluate
from longtail.model.ranker_train import HybridRecommender
from longtail.train.pipeline import reranked, train_pipeline
from tests.conftest import write_clustered_dataset

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_tiny_pipeline_trains_caches_and_evaluates(ray_cluster, tiny_encoder, tmp_path):
    data_dir = write_clustered_dataset(tmp_path / "data")
    overrides = [f"encoder.name={tiny_encoder}", f"resources.storage_path={tmp_path / 'ray'}", "ranker.epochs=2",
                 "ranker.examples_per_epoch=256", "ranker.dim=16", "graph.kg_k=0",
                 "rerank.tail_share=0.3", "rerank.new_share=0.2", "rerank.exposure_penalty=0.25"]  # fmt: skip
    cfg = load_config(TrainConfig, ROOT / "train_configs" / "tiny.yaml", overrides)
    logs: list[str] = []
    bundle_dir = train_pipeline(data_dir, cfg, tmp_path / "bundle", log=logs.append)
    bundle = read_bundle(bundle_dir)
    assert set(bundle.manifest["metrics"]["test"]) >= {"ndcg@10", "tail_recall@20", "coverage@20"}
    assert (bundle_dir / "encoder" / "model.safetensors").is_file()
    data = load_split_data(data_dir, "warm")
    result = evaluate(HybridRecommender(load_ranker(bundle)), data, "test")
    # the shelves fill slots 11-20 only: the model's own top 10 (so ndcg@10) is what the bundle reports
    assert result.metrics["ndcg@10"] == pytest.approx(bundle.manifest["metrics"]["test"]["ndcg@10"], abs=1e-6)
    shelved = evaluate(reranked(load_ranker(bundle), data, cfg.rerank), data, "test").metrics
    assert shelved == pytest.approx(bundle.manifest["metrics"]["test"], abs=1e-6, nan_ok=True)
    assert (tmp_path / "bundle-alpha-sweep.png").read_bytes()[:4] == b"\x89PNG"
    # a second run with the same inputs, through the console script, reuses every stage
    cli = Path(sys.executable).parent / "longtail"
    again = subprocess.run([str(cli), "train", "--config", str(ROOT / "train_configs" / "tiny.yaml"),
                            "--data", str(data_dir), "--out", str(tmp_path / "bundle2"), *overrides],
                           capture_output=True, text=True, timeout=600)  # fmt: skip
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stderr.count("reusing") == 4, again.stderr[-2000:]
    assert "ndcg@10" in again.stdout
    # the CLI evaluates the bundle next to a baseline
    report = tmp_path / "report.json"
    subprocess.run([str(cli), "eval", "--bundle", str(bundle_dir), "--model", "mostpop", "--data", str(data_dir),
                    "--out", str(report)], check=True, capture_output=True, timeout=300)  # fmt: skip
    results = json.loads(report.read_text())["results"]
    assert [r["model"] for r in results] == ["hybrid", "hybrid (no re-rank)", "mostpop"]
    assert results[0]["metrics"]["ndcg@10"] == pytest.approx(results[1]["metrics"]["ndcg@10"], abs=1e-6)

"""`ray job submit` against a real two-node cluster on this machine: the tiny training runs as a job,
its Ray Train workers land on both nodes, and the bundle comes out whole."""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import pytest
from harness.ray_head import cli, ray_head

from longtail.bundle import read_bundle, verify_bundle
from longtail.data.encoded import load_split_data
from longtail.eval.evaluate import evaluate
from longtail.recommend.build import load_pipeline
from longtail.recommend.recommender import PipelineRecommender
from tests.conftest import write_clustered_dataset

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_job_submit_trains_across_two_nodes(tiny_encoder, tmp_path, monkeypatch):
    data = write_clustered_dataset(tmp_path / "data")
    bundle = tmp_path / "bundle"
    monkeypatch.chdir(ROOT)  # `--runtime-env job_env.yaml` uploads this checkout, as a user would
    overrides = [
        f"encoder.name={tiny_encoder}",
        f"resources.storage_path={tmp_path / 'ray'}",
        "ranker.epochs=2",
        "ranker.examples_per_epoch=128",
        "graph.kg_k=0",
        "finetune.enabled=false",  # tiny.yaml fine-tunes; test_finetune and test_pipeline cover it
        "resources.num_workers=2",
        "resources.cpus_per_worker=1",
    ]  # 2 × 1 CPU: one worker per node
    with ray_head(tmp_path, num_cpus=1, workers=(1,)) as head:
        for _ in range(60):  # the second raylet registers within seconds
            status = cli("ray", "status", "--address", head["address"], env=head["env"]).stdout
            if "/2.0 CPU" in status:
                break
            time.sleep(1)
        assert "/2.0 CPU" in status, status
        submitted = cli(
            "ray",
            "job",
            "submit",
            "--address",
            head["dashboard"],
            "--runtime-env",
            "job_env.yaml",
            "--",
            sys.executable,
            "-m",
            "longtail.cli",
            "train",
            "--config",
            "train_configs/tiny.yaml",
            "--data",
            str(data),
            "--out",
            str(bundle),
            "--no-mlflow",
            *overrides,
            timeout=900,
            env=head["env"],
        )
        logs = submitted.stdout + submitted.stderr
    assert "succeeded" in logs.lower(), logs[-4000:]
    nodes = set(re.findall(r"\[fit\] worker \d/2 on node ([0-9a-f]+)", logs))
    assert len(nodes) == 2, logs[-4000:]  # the two Ray Train workers ran on different nodes
    manifest = verify_bundle(bundle)  # every file present and matching its sha256
    # the metrics the job wrote down are what the bundle gives here (same split, same code)
    pipe = load_pipeline(read_bundle(bundle))
    here = evaluate(PipelineRecommender(pipe), load_split_data(data, "warm"), "test").metrics
    assert here == pytest.approx(manifest.metrics["test"], abs=1e-6, nan_ok=True)
    assert 0 < here["ndcg@10"] <= here["hit@10"] <= 1
    assert not (bundle.parent / "mlflow.db").exists()  # --no-mlflow
    assert manifest.config.resources.num_workers == 2

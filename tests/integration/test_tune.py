"""`longtail tune` on real local Ray: a 2-trial sweep with the tiny config, interrupted after its first
trial and resumed, whose best config is a valid train config."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from longtail.config import TrainConfig, load_config
from tests.conftest import write_clustered_dataset

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
CLI = str(Path(sys.executable).parent / "longtail")


def finished_trials(experiment: Path) -> int:
    done = 0
    for result in experiment.glob("*/result.json"):
        done += any(json.loads(line).get("final") for line in result.read_text().splitlines() if line.strip())
    return done


def test_sweep_interrupted_resumed_and_best_config_is_a_train_config(tiny_encoder, tmp_path):
    data = write_clustered_dataset(tmp_path / "data")
    space = tmp_path / "space.yaml"
    space.write_text(
        "ranker.alpha: {uniform: [0.0, 1.0]}  # (float) mix\n"
        "ranker.lr: {loguniform: [1.0e-3, 1.0e-2]}  # (float) lr\n"
        "ranker.dim: {choice: [8, 16]}  # (int) size\n"
    )
    out = tmp_path / "sweep"
    overrides = [
        f"encoder.name={tiny_encoder}",
        "ranker.epochs=2",
        "ranker.examples_per_epoch=128",
        "graph.kg_k=0",
        "finetune.enabled=false",  # tiny.yaml fine-tunes; test_finetune and test_pipeline cover it
        "resources.num_workers=1",
    ]
    command = [
        CLI,
        "tune",
        "--space",
        str(space),
        "--config",
        str(ROOT / "train_configs" / "tiny.yaml"),
        "--data",
        str(data),
        "--out",
        str(out),
        "--samples",
        "2",
        "--objective",
        "0.5*ndcg@10+0.5*tail_recall@20",
        "--cpus-per-trial",
        "1",
        *overrides,
    ]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 600
    while time.time() < deadline and first.poll() is None and finished_trials(out / "experiment") < 1:
        time.sleep(1)
    assert first.poll() is None, first.communicate()[0][-4000:]  # still running: interrupt it mid-sweep
    first.send_signal(signal.SIGINT)
    log = first.communicate(timeout=300)[0]
    assert finished_trials(out / "experiment") < 2, log[-3000:]
    # the same command again without --resume refuses to overwrite the sweep, before it starts Ray
    again = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and "--resume" in again.stderr and "Ray" not in again.stderr
    resumed = subprocess.run([*command, "--resume"], capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, (resumed.stdout + resumed.stderr)[-4000:]
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["trials"]) == 2 and all(t["status"] != "error" for t in summary["trials"])
    assert summary["pareto_front"] and (out / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "trials.csv").read_text().count("\n") == 3
    best = yaml.safe_load((out / "best-config.yaml").read_text())
    assert best["ranker"]["alpha"] == pytest.approx(summary["best"]["ranker.alpha"])
    assert best["ranker"]["epochs"] == 2  # the base config's values survive
    # best-config.yaml is a complete train config (`longtail train --config` accepts it: that command
    # itself is covered by the pipeline and CLI tests)
    trainable = load_config(TrainConfig, out / "best-config.yaml", [])
    assert trainable.ranker.alpha == pytest.approx(best["ranker"]["alpha"])
    assert trainable.encoder.name == str(tiny_encoder)
    # every trial is an MLflow run beside the sweep (params and each epoch's report), plus a summary run
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("longtail-tune-sweep")
    runs = client.search_runs([experiment.experiment_id])
    trials = {r.data.tags["trial_name"]: r for r in runs if "trial_name" in r.data.tags}
    ended = {f"run_trial_{t['trial']}" for t in summary["trials"]}
    # every trial of the summary is a run (a trial interrupted by Ctrl-C has one too, though it ran again)
    assert ended <= set(trials) and len(trials) <= 3, [r.data.tags for r in runs]
    trials = {name: run for name, run in trials.items() if name in ended}
    finished = [r for r in trials.values() if "valid_ndcg_at_10" in r.data.metrics]
    assert finished and all("ranker.lr" in r.data.params for r in trials.values())
    epochs = client.get_metric_history(finished[0].info.run_id, "objective")
    assert len(epochs) >= 2 and len({m.step for m in epochs}) == len(epochs)  # one point per report
    summary_runs = [r for r in runs if r.data.tags.get("kind") == "sweep_summary"]
    assert len(summary_runs) == 1
    assert summary_runs[0].data.metrics["best/objective"] == pytest.approx(summary["best"]["objective"])

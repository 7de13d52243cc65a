"""Experiment tracking in MLflow: `longtail train` logs one run per bundle, `longtail tune` one per trial
(``longtail.tune.tracking``) and a summary run.

Where runs go: ``--mlflow-uri``, else ``$MLFLOW_TRACKING_URI``, else a SQLite file beside the output
(``<out>/../mlflow.db``; no server needed). Look at them with ``mlflow ui --backend-store-uri URI``
(the ``mlflow`` package; longtail itself depends only on ``mlflow-skinny``). ``--no-mlflow`` turns it off.

MLflow names allow letters, digits and ``_-. :/`` only, so ``ndcg@10`` is logged as ``ndcg_at_10``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

TRAIN_EXPERIMENT = "longtail-train"
_NOT_ALLOWED = re.compile(r"[^\w\-. :/]")


def tracking_uri(out: Path, uri: str | None = None) -> str:
    """The explicit URI, else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///<out's parent>/mlflow.db``."""
    chosen = uri or os.environ.get("MLFLOW_TRACKING_URI")
    if chosen:
        return chosen
    parent = Path(out).resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{parent / 'mlflow.db'}"


def metric_name(key: str) -> str:
    """``valid_ndcg@10`` → ``valid_ndcg_at_10``: a name MLflow accepts."""
    return _NOT_ALLOWED.sub("_", key.replace("@", "_at_"))


def flat(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}``; lists and None as JSON text."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flat(value, f"{name}."))
        else:
            out[name] = json.dumps(value) if isinstance(value, list | type(None)) else value
    return out


def numeric(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """The finite numbers of ``metrics`` under MLflow names (NaN marks a metric without data: left out)."""
    out = {}
    for key, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            continue
        out[metric_name(prefix + key)] = float(value)
    return out


def quiet() -> None:
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


def log_train_run(
    uri: str, bundle: Path, plots: Iterable[Path] = (), experiment: str = TRAIN_EXPERIMENT
) -> str:
    """One MLflow run for a trained bundle, from its manifest: the config as params, the fit's per-epoch
    metrics (step = epoch), the final valid/test metrics of each variant, the shelf choice, the manifest
    and ``plots`` as artifacts. Returns the run id."""
    import mlflow

    from longtail.bundle import read_manifest

    quiet()
    bundle = Path(bundle)
    manifest = read_manifest(bundle, verify=False)
    metrics = manifest.metrics
    client = mlflow.MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else client.create_experiment(experiment)
    version = bundle.resolve().name.rsplit("@", 1)[-1]
    run = client.create_run(
        experiment_id,
        run_name=f"{bundle.name}@{version}",
        tags={
            "bundle": str(bundle.resolve()),
            "bundle_version": version,
            "data": manifest.data.get("path", ""),
            "data_fingerprint": manifest.data.get("fingerprint", ""),
        },
    )
    run_id = run.info.run_id
    params = flat(manifest.config.model_dump())
    for selected in metrics.get("selection", {}).values():  # the fit's (id_dropout) and the shelves' choices
        params.update({f"selected.{k}": v for k, v in selected.get("chosen", {}).items()})
    items = list(params.items())
    for start in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
        client.log_batch(
            run_id, params=[mlflow.entities.Param(k, str(v)[:6000]) for k, v in items[start : start + 100]]
        )
    for row in metrics.get("fit_history", []):
        step = int(row.get("epoch", 0))
        for key, value in numeric(row).items():
            if key != "epoch":
                client.log_metric(run_id, f"fit/{key}", value, step=step)
    final = {}
    for part in ("valid", "test"):
        final.update(numeric(metrics.get(part, {}), f"{part}/"))
    for variant in ("own_lists", "retriever"):
        for part, values in metrics.get(variant, {}).items():
            final.update(numeric(values, f"{variant}/{part}/"))
    if "seconds" in metrics:
        final["seconds"] = float(metrics["seconds"])
    final.update(numeric(metrics.get("stage_seconds", {}), "seconds/"))
    for key, value in final.items():
        client.log_metric(run_id, key, value)
    client.log_artifact(run_id, str(bundle / "manifest.json"))
    for plot in plots:
        if Path(plot).is_file():
            client.log_artifact(run_id, str(plot), artifact_path="plots")
    client.set_terminated(run_id)
    return run_id


def log_sweep_summary(uri: str, experiment: str, files: Iterable[Path], best: Mapping[str, Any]) -> str:
    """A summary run of the sweep beside its trials (replacing an earlier one: a resumed sweep has one):
    the best trial's params and objective, the trials table, the Pareto plot and the best config."""
    import mlflow

    quiet()
    client = mlflow.MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else client.create_experiment(experiment)
    for earlier in client.search_runs([experiment_id], "tags.kind = 'sweep_summary'"):
        client.delete_run(
            earlier.info.run_id
        )  # an interrupted sweep summarised what it had; this replaces it
    run = client.create_run(experiment_id, run_name="sweep summary", tags={"kind": "sweep_summary"})
    for key, value in best.items():
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            client.log_metric(run.info.run_id, metric_name(f"best/{key}"), float(value))
        elif value is not None:
            client.log_param(run.info.run_id, f"best.{metric_name(key)}", str(value)[:6000])
    for path in files:
        if Path(path).is_file():
            client.log_artifact(run.info.run_id, str(path))
    client.set_terminated(run.info.run_id)
    return run.info.run_id

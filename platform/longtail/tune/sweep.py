"""`longtail tune`: Ray Tune over a search space, each trial a driver function that builds a ``TorchTrainer``.

Search: Optuna (TPE) through Ray Tune's integration; scheduler: ASHA on the per-epoch validation
objective the ranker's workers report (forwarded to Tune by ``ObjectiveCallback``). Upstream stages
(fine-tune, embed, graph) come from the stage cache: when the space changes only ranker knobs they are
built once, before the first trial, and every trial reuses them; a space over encoder knobs rebuilds
them per distinct configuration. Selection uses validation metrics only; test metrics are recorded
for the report.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import yaml
from pydantic import BaseModel, ConfigDict
from ray import tune
from ray.tune.integration.ray_train import TuneReportCallback

from longtail.config import ConfigError, TrainConfig
from longtail.eval.evaluate import evaluate
from longtail.recommend.recommender import PipelineRecommender
from longtail.train.fit import fit_models
from longtail.train.pipeline import prepare_stages, trained_pipeline
from longtail.tune.space import Param, touches_upstream

METRICS = ("ndcg@10", "recall@20", "tail_recall@20", "coverage@20")
DRIVER_CPUS = 0.01  # each trial's driver function; its Ray Train workers get the rest of --cpus-per-trial


class Objective(BaseModel):
    """What a sweep maximises: a weighted sum of validation metrics (one weight = one metric)."""

    model_config = ConfigDict(extra="forbid")
    weights: dict[str, float]

    @classmethod
    def parse(cls, text: str) -> Objective:
        """``ndcg@10``, ``tail_recall@20``, or a weighted sum like ``0.7*ndcg@10+0.3*tail_recall@20``."""
        weights: dict[str, float] = {}
        for term in text.replace(" ", "").split("+"):
            weight, star, name = term.rpartition("*")
            try:
                w = float(weight) if star else 1.0
            except ValueError:
                raise ConfigError(f"objective {text!r}: {weight!r} is not a number") from None
            if name not in METRICS:
                raise ConfigError(f"objective {text!r}: unknown metric {name!r}; expected one of {METRICS}")
            weights[name] = weights.get(name, 0.0) + w
        return cls(weights=weights)

    def value(self, metrics: dict[str, float], prefix: str = "valid_") -> float | None:
        parts = [metrics.get(prefix + name) for name in self.weights]
        if any(p is None or (isinstance(p, float) and math.isnan(p)) for p in parts):
            return None
        return sum(w * p for w, p in zip(self.weights.values(), parts, strict=True))


class ObjectiveCallback(TuneReportCallback):
    """Forwards each epoch's worker report to Tune with the objective added (what ASHA compares)."""

    def __init__(self, objective: Objective) -> None:
        super().__init__()
        self.objective = objective

    def after_report(self, run_context, metrics, checkpoint) -> None:
        value = self.objective.value(metrics[0])
        rows = [{**metrics[0], "objective": value if value is not None else float("-inf")}, *metrics[1:]]
        super().after_report(run_context, rows, None)


@dataclass
class SweepJob:
    """What every trial reads (put in the object store once by ``tune.with_parameters``)."""

    data_dir: str
    base: dict[str, Any]  # TrainConfig as a dict
    work: str  # stage cache directory
    storage: str  # Ray Train storage for the trials' trainers
    objective: Objective


def apply_params(base: dict[str, Any], params: dict[str, Any]) -> TrainConfig:
    """The base config with dotted-key values set (validated by ``TrainConfig``)."""
    tree = json.loads(json.dumps(base))
    for key, value in params.items():
        node = tree
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return TrainConfig.model_validate(tree)


def run_trial(params: dict[str, Any], job: SweepJob) -> None:
    """One trial: cached upstream stages, a ``TorchTrainer`` fit reporting per epoch, then valid+test."""
    config = apply_params(job.base, params)
    if config.ranker.dim % config.ranker.heads:
        tune.report({"objective": float("-inf"), "invalid": f"dim {config.ranker.dim} % heads {config.ranker.heads}"})
        return
    stages = prepare_stages(Path(job.data_dir), config, Path(job.work), log=lambda m: print(f"[trial] {m}", flush=True))
    config.resources.storage_path = job.storage
    trial_id = tune.get_context().get_trial_id()
    result = fit_models(stages.data, stages.vectors, stages.graph, config.ranker, config.retriever, config.retrieval,
                        config.resources, run_name=f"fit-{trial_id}", callbacks=[ObjectiveCallback(job.objective)],
                        events=config.events)  # fmt: skip
    pipe = trained_pipeline(config, stages.vectors, stages.graph, stages.data.train_counts(), result.retriever_state,
                            result.ranker_state, stages.data.recent_counts(config.ranker.trend_window))  # fmt: skip
    final = {part: evaluate(PipelineRecommender(pipe), stages.data, part).metrics for part in ("valid", "test")}
    report = {f"{part}_{name}": final[part][name] for part in final for name in METRICS}
    report["objective"] = job.objective.value(report)
    report["epochs_run"] = len(result.history)
    report["final"] = True
    tune.report(report)


@dataclass
class SweepResult:
    trials: list[dict[str, Any]]  # one row per trial: params, valid_* and test_* metrics, status
    best: dict[str, Any]
    best_config: Path
    table: Path
    pareto_plot: Path


def run_sweep(
    params: list[Param],
    base: TrainConfig,
    data_dir: Path,
    out: Path,
    objective: Objective,
    samples: int,
    concurrency: int,
    cpus_per_trial: float,
    gpus_per_trial: float = 0,
    resume: bool = False,
    seed: int = 0,
    stages: Path | None = None,
    callbacks: list | None = None,
    log=print,
) -> SweepResult:
    """Run (or resume) the sweep in ``out/experiment``; write best-config.yaml, trials.csv/.md, pareto.png."""
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    out = Path(out).resolve()
    experiment = out / "experiment"
    if experiment.exists() and not resume:
        raise ConfigError(f"{out}: a sweep already exists there; pass --resume to continue it or choose another --out")
    if resume and not experiment.exists():
        raise ConfigError(f"{out}: no sweep to resume (no {experiment})")
    base = base.model_copy(deep=True)
    if gpus_per_trial:
        base.resources.use_gpu, base.resources.num_workers = True, max(1, int(gpus_per_trial))
    if cpus_per_trial <= DRIVER_CPUS:
        raise ConfigError(f"--cpus-per-trial must be more than {DRIVER_CPUS}, got {cpus_per_trial}")
    base.resources.cpus_per_worker = (cpus_per_trial - DRIVER_CPUS) / base.resources.num_workers
    work = Path(stages).resolve() if stages else out / "stages"
    job = SweepJob(str(Path(data_dir).resolve()), base.model_dump(), str(work), str(out / "trainers"), objective)
    if not touches_upstream(params):
        log("upstream stages: building once, reused by every trial")
        prepare_stages(Path(data_dir), base, work, log)
    trainable = tune.with_resources(tune.with_parameters(run_trial, job=job), {"cpu": DRIVER_CPUS})
    if resume:
        log(f"resuming {experiment}")
        tuner = tune.Tuner.restore(str(experiment), trainable, resume_unfinished=True, resume_errored=True)
    else:
        search = ConcurrencyLimiter(OptunaSearch(seed=seed), max_concurrent=concurrency)
        scheduler = ASHAScheduler(time_attr="training_iteration", max_t=base.ranker.epochs + 1,
                                  grace_period=min(2, base.ranker.epochs), reduction_factor=2)  # fmt: skip
        tuner = tune.Tuner(
            trainable,
            param_space={p.key: p.to_tune() for p in params},
            tune_config=tune.TuneConfig(metric="objective", mode="max", search_alg=search, scheduler=scheduler,
                                        num_samples=samples, max_concurrent_trials=concurrency),
            run_config=tune.RunConfig(name="experiment", storage_path=str(out), verbose=1, callbacks=callbacks,
                                      failure_config=tune.FailureConfig(max_failures=1)),
        )  # fmt: skip
    grid = tuner.fit()
    return summarise(grid, params, job, out, log)


def summarise(grid, params: list[Param], job: SweepJob, out: Path, log=print) -> SweepResult:
    """Trials table, Pareto front plot and the best trial's config as a train config."""
    rows = []
    for result in grid:
        metrics = result.metrics or {}
        config = result.config or {}
        trial = "_".join(Path(result.path).name.split("_")[:3]) if result.path else "?"  # run_trial_<id>
        row = {"trial": trial, **{p.key: config.get(p.key) for p in params},
               "status": "done" if metrics.get("final") else ("error" if result.error else "stopped early"),
               "objective": metrics.get("objective") if metrics.get("final") else None}  # fmt: skip
        for part in ("valid", "test"):
            for name in METRICS:
                row[f"{part}_{name}"] = metrics.get(f"{part}_{name}") if metrics.get("final") else None
        rows.append(row)
    done = [r for r in rows if r["status"] == "done" and r["objective"] is not None]
    if not done:
        raise RuntimeError(f"{out}: no trial finished; see {out / 'experiment'}")
    best = max(done, key=lambda r: r["objective"])
    config = apply_params(job.base, {p.key: best[p.key] for p in params})
    config.resources.storage_path = None
    best_config = out / "best-config.yaml"
    header = (f"# Best of {len(done)} finished trials by validation objective "
              f"{job.objective.weights} = {best['objective']:.4f} (trial {best['trial']}).\n"
              f"# Train it: longtail train --config {best_config} --data {job.data_dir} --out bundles/best\n")  # fmt: skip
    best_config.write_text(header + yaml.safe_dump(config.model_dump(), sort_keys=False))
    table = out / "trials.csv"
    pacsv.write_csv(pa.Table.from_pylist([{k: (None if v is None else str(v) if isinstance(v, list) else v)
                                           for k, v in r.items()} for r in rows]), table)  # fmt: skip
    (out / "trials.md").write_text(markdown_table(rows))
    front = pareto_front(done)
    plot = plot_pareto(done, front, out / "pareto.png")
    (out / "summary.json").write_text(json.dumps({"best": best, "pareto_front": front, "trials": rows,
                                                  "objective": job.objective.weights}, indent=2, default=str))  # fmt: skip
    log(f"best trial {best['trial']}: objective {best['objective']:.4f}; config {best_config}")
    return SweepResult(rows, best, best_config, table, plot)


def pareto_front(rows: list[dict]) -> list[dict]:
    """Trials not dominated on (valid ndcg@10, valid tail_recall@20), by ndcg@10 descending."""
    x, y = "valid_ndcg@10", "valid_tail_recall@20"
    front = [r for r in rows if not any(o[x] >= r[x] and o[y] >= r[y] and (o[x] > r[x] or o[y] > r[y]) for o in rows)]
    return sorted(front, key=lambda r: -r[x])


def plot_pareto(rows: list[dict], front: list[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.scatter([r["valid_ndcg@10"] for r in rows], [r["valid_tail_recall@20"] for r in rows], c="0.6", label="trials")
    ax.plot([r["valid_ndcg@10"] for r in front], [r["valid_tail_recall@20"] for r in front], "o-", c="C3",
            label="Pareto front")  # fmt: skip
    ax.set(xlabel="valid ndcg@10", ylabel="valid tail_recall@20", title="Sweep: accuracy vs tail")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def markdown_table(rows: list[dict]) -> str:
    keys = list(rows[0])

    def cell(v: Any) -> str:
        return "" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(cell(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines) + "\n"

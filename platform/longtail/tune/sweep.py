"""`longtail tune`: Ray Tune over a search space, each trial a driver function that builds a ``TorchTrainer``.

Search: Optuna (TPE) through Ray Tune's integration; scheduler: ASHA on the per-epoch validation
objective the ranker's workers report (forwarded to Tune by ``ObjectiveCallback``). Upstream stages
(fine-tune, embed, graph) come from the stage cache: when the space changes only ranker knobs they are
built once, before the first trial, and every trial reuses them; a space over encoder knobs rebuilds
them per distinct configuration. Selection uses validation metrics only; test metrics are recorded
for the report.

Every trial that ends (finished, stopped early by ASHA, or failed) is appended to ``OUT/trials.jsonl`` by
``TrialLedger``. ``--resume`` reads that ledger (JSON) and never Ray Tune's own experiment state, which is
pickled and lives in storage another job may write: the ended trials are told to Optuna as evaluated
points, and the rest of the samples run as a new experiment beside the first (``experiment-2``, …).
A trial that was running when the sweep stopped runs again from its start.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ray import tune
from ray.tune import Callback
from ray.tune.integration.ray_train import TuneReportCallback

from longtail.config import ConfigError, TrainConfig
from longtail.data.encoded import SplitData
from longtail.eval.evaluate import evaluate
from longtail.recommend.pipeline import Pipeline
from longtail.recommend.recommender import PipelineRecommender
from longtail.train.chain import (
    choose_popularity_terms,
    choose_shelves,
    neighbours_stage,
    prepare_stages,
    trained_pipeline,
)
from longtail.train.fit import fit_models
from longtail.tune.space import Param, touches_upstream
from longtail.tune.trials import (
    METRICS,
    Objective,
    SweepJob,
    SweepResult,
    apply_params,
    read_ledger,
    summarise,
)

DRIVER_CPUS = 0.01  # each trial's driver function; its Ray Train workers get the rest of --cpus-per-trial


class ObjectiveCallback(TuneReportCallback):
    """Forwards each epoch's worker report to Tune with the objective added (what ASHA compares)."""

    def __init__(self, objective: Objective) -> None:
        super().__init__()
        self.objective = objective

    def after_report(self, run_context, metrics, checkpoint) -> None:
        value = self.objective.value(metrics[0])
        rows = [{**metrics[0], "objective": value if value is not None else float("-inf")}, *metrics[1:]]
        super().after_report(run_context, rows, None)


class TrialLedger(Callback):
    """Appends one JSON line per ended trial to ``path``: its params, status and last report."""

    def __init__(self, path: Path, params: list[Param]) -> None:
        self.path, self.keys = path, [p.key for p in params]

    def _write(self, trial, status: str) -> None:
        last = {k: v for k, v in (trial.last_result or {}).items() if isinstance(v, int | float | str | bool)}
        row = {
            "trial": trial.trial_id,
            "params": {k: trial.config.get(k) for k in self.keys},
            "status": status,
            "result": last,
        }
        with self.path.open("a") as file:
            file.write(json.dumps(row, default=str) + "\n")

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        self._write(trial, "done" if (trial.last_result or {}).get("final") else "stopped early")

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        self._write(trial, "error")


def select_like_train(
    config: TrainConfig, pipe: Pipeline, data: SplitData, history: list[dict]
) -> tuple[TrainConfig, Pipeline]:
    """What ``longtail train`` chooses on valid after its fit, on this trial's one fit: the popularity
    adjustment γ and trend boost δ, then the shelves (each where ``select:`` asks for it). A trial fits once,
    with its config's ID dropout (``ranker.id_dropout`` in the space searches it), where train fits once per
    ``select.id_dropout`` value; so a trial's objective is that of the model train ships from its fit."""
    quiet = lambda message: None  # noqa: E731 - the trial's logs would repeat train's lines per trial
    select = config.select
    if select.popularity_adjustments is not None or select.trend_boosts is not None:
        _, config, pipe, _ = choose_popularity_terms([(config, pipe, history)], data, quiet)
    if select.shelves:
        config, pipe, _ = choose_shelves(config, pipe, data, quiet)
    return config, pipe


def run_trial(params: dict[str, Any], job: SweepJob) -> None:
    """One trial: cached upstream stages, a ``TorchTrainer`` fit reporting per epoch, then valid+test."""
    config = apply_params(job.base, params)
    log = lambda m: print(f"[trial] {m}", flush=True)  # noqa: E731
    if config.ranker.dim % config.ranker.heads:
        tune.report(
            {"objective": float("-inf"), "invalid": f"dim {config.ranker.dim} % heads {config.ranker.heads}"}
        )
        return
    stages = prepare_stages(Path(job.data_dir), config, Path(job.work), log=log)
    config.resources.storage_path = job.storage
    trial_id = tune.get_context().get_trial_id()
    result = fit_models(
        stages.data,
        stages.vectors,
        stages.graph,
        config.ranker,
        config.retriever,
        config.retrieval,
        config.resources,
        run_name=f"fit-{trial_id}",
        callbacks=[ObjectiveCallback(job.objective)],
        events=config.events,
    )
    pipe = trained_pipeline(
        config,
        stages.vectors,
        stages.graph,
        stages.data.train_counts(),
        result.retriever_state,
        result.ranker_state,
        stages.data.recent_counts(config.ranker.trend_window),
    )
    pipe = dataclasses.replace(pipe, neighbours=neighbours_stage(config, stages, pipe.tail, log))  # as train
    config, pipe = select_like_train(config, pipe, stages.data, result.history)
    final = {
        part: evaluate(PipelineRecommender(pipe), stages.data, part).metrics for part in ("valid", "test")
    }
    report = {f"{part}_{name}": final[part][name] for part in final for name in METRICS}
    report["objective"] = job.objective.value(report)
    report["epochs_run"] = len(result.history)
    report["final"] = True
    tune.report(report)


def check_sweep(out: Path, resume: bool, cpus_per_trial: float) -> None:
    """A ``ConfigError`` for a sweep that cannot start: a sweep already in ``out`` without ``resume``, none to
    resume, or ``cpus_per_trial`` that leaves a trial's workers nothing (the CLI checks before Ray starts)."""
    experiment = Path(out).resolve() / "experiment"
    if experiment.exists() and not resume:
        raise ConfigError(
            f"{out}: a sweep already exists there; pass --resume to continue it or choose another --out"
        )
    if resume and not experiment.exists():
        raise ConfigError(f"{out}: no sweep to resume (no {experiment})")
    if cpus_per_trial <= DRIVER_CPUS:
        raise ConfigError(f"--cpus-per-trial must be more than {DRIVER_CPUS}, got {cpus_per_trial}")


def run_sweep(
    params: list[Param],
    base: TrainConfig,
    *,
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
    log: Callable[[str], None] = print,
) -> SweepResult:
    """Run (or resume) the sweep in ``out/experiment``; write best-config.yaml, trials.csv/.md, pareto.png."""
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    out = Path(out).resolve()
    check_sweep(out, resume, cpus_per_trial)
    ledger_path = out / "trials.jsonl"
    ended = read_ledger(ledger_path) if resume else []
    base = base.model_copy(deep=True)
    if gpus_per_trial:
        base.resources.use_gpu, base.resources.num_workers = True, max(1, int(gpus_per_trial))
    base.resources.cpus_per_worker = (cpus_per_trial - DRIVER_CPUS) / base.resources.num_workers
    work = Path(stages).resolve() if stages else out / "stages"
    job = SweepJob(
        str(Path(data_dir).resolve()), base.model_dump(), str(work), str(out / "trainers"), objective
    )
    if not touches_upstream(params):
        log("upstream stages: building once, reused by every trial")
        prepare_stages(Path(data_dir), base, work, log)
    trainable = tune.with_resources(tune.with_parameters(run_trial, job=job), {"cpu": DRIVER_CPUS})
    remaining = samples - len(ended)
    name = "experiment"
    if resume:
        runs = 1 + sum(1 for p in out.glob("experiment-*") if p.is_dir())
        name = f"experiment-{runs + 1}"
        log(
            f"resuming: {len(ended)} of {samples} trials ended before; {max(remaining, 0)} more in "
            f"{out / name}"
        )
    if remaining > 0:
        space = OptunaSearch.convert_search_space({p.key: p.to_tune() for p in params})
        told = [(row["params"], _reward(row)) for row in ended if _reward(row) is not None]
        search = OptunaSearch(
            space=space,
            metric="objective",
            mode="max",
            seed=seed,
            points_to_evaluate=[p for p, _ in told] or None,
            evaluated_rewards=[r for _, r in told] or None,
        )
        scheduler = ASHAScheduler(
            time_attr="training_iteration",
            max_t=base.ranker.epochs + 1,
            grace_period=min(2, base.ranker.epochs),
            reduction_factor=2,
        )
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                metric="objective",
                mode="max",
                num_samples=remaining,
                scheduler=scheduler,
                search_alg=ConcurrencyLimiter(search, max_concurrent=concurrency),
                max_concurrent_trials=concurrency,
            ),
            run_config=tune.RunConfig(
                name=name,
                storage_path=str(out),
                verbose=1,
                callbacks=[TrialLedger(ledger_path, params), *(callbacks or [])],
                failure_config=tune.FailureConfig(max_failures=1),
            ),
        )
        tuner.fit()
    return summarise(read_ledger(ledger_path), params, job, out, log)


def _reward(row: dict[str, Any]) -> float | None:
    """What Optuna is told an ended trial scored: its final objective, or the last epoch's when ASHA stopped
    it (None for a failed trial)."""
    value = row["result"].get("objective")
    return None if row["status"] == "error" or value is None or not math.isfinite(value) else float(value)

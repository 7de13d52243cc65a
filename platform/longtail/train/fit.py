"""Fitting the two stages with Ray Train: a ``TorchTrainer`` of DDP workers (gloo on CPU, NCCL on GPU).

The factorized retriever and the hybrid ranker train together: one pass over the next-item examples, one
optimizer, the sum of their sampled-softmax losses (``NextItemObjective``). Each worker trains on its share
of the examples; after every epoch the workers run the two-stage pipeline (retrieve → rank, exact MIPS) on
the valid part (all users, or a seeded sample of ``ranker.valid_users``), each on its share of the users,
and rank 0 gathers the lists, scores them, keeps the best weights by ndcg@10 and decides early stopping,
which it broadcasts. Checkpoints each epoch (weights, Adam's moments, the early-stopping state) let a
restarted worker group continue, and a finished fit's end state lets a longer fit continue it
(``FitResult.end``, ``FitSpec.start``: ``longtail train`` fits every ID-dropout value for part of the
epochs, then only the chosen one on). One worker group trains a job's fits one after the other
(``fit_many``: the ID-dropout values' shorter fits pay for one worker-group start-up, not one each). Each
epoch draws its examples from a generator seeded by the epoch, so a continued fit sees the examples an
uninterrupted one would.
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import ray
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
from pydantic import BaseModel, ConfigDict
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer
from scipy import sparse

from longtail.config import EventsConfig, RankerConfig, ResourcesConfig, RetrievalConfig, RetrieverConfig
from longtail.data.encoded import Histories, SplitData
from longtail.eval.evaluate import eval_users, score_lists
from longtail.eval.evaluate import rank as rank_lists
from longtail.model.factory import build_ranker, build_retriever
from longtail.model.objective import (
    LossSpec,
    NextItemObjective,
    next_item_examples,
    next_item_strengths,
    popularity_log_prior,
    train_epoch,
)
from longtail.recommend.build import make_pipeline
from longtail.recommend.pipeline import Pipeline
from longtail.recommend.recommender import PipelineRecommender
from longtail.train.collective import gather_rows
from longtail.train.fit_state import (
    FitEnd,
    early_stop,
    epoch_generator,
    load_optimizer_tensors,
    lr_scale_after,
    optimizer_tensors,
    read_end,
    write_end,
)


class FitSpec(BaseModel):
    """One fit of a job: both stages' configs, its examples per epoch and, to continue a shorter fit of the
    same configuration up to ``ranker.epochs``, that fit's end (an ObjectRef of a ``FitEnd``) or None."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)
    ranker: RankerConfig
    retriever: RetrieverConfig
    examples_per_epoch: int
    start: Any = None


class FitJob(BaseModel):
    """Everything a fit worker reads: the fits to train in turn, an object-store reference to the arrays."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)
    fits: list[FitSpec]
    retrieval: RetrievalConfig
    events: EventsConfig = EventsConfig()
    inputs: Any  # ObjectRef of (SplitData, vectors, graph)
    threads: int


@dataclass
class FitResult:
    """Best weights of both stages (by the pipeline's valid ndcg@10), the per-epoch history of rank 0 and
    the state to continue the fit from."""

    retriever_state: dict[str, torch.Tensor]
    ranker_state: dict[str, torch.Tensor]
    history: list[dict[str, float]]
    end: FitEnd


def split_state(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The objective's ``scorers.retriever.*`` and ``scorers.ranker.*`` weights as two state dicts."""
    parts: dict[str, dict[str, torch.Tensor]] = {"retriever": {}, "ranker": {}}
    for key, value in state.items():
        _, model, name = key.split(".", 2)
        parts[model][name] = value
    return parts["retriever"], parts["ranker"]


def default_examples_per_epoch(n_examples: int) -> int:
    """A quarter of the examples, at least 8,192 and at most 50,000 (or all of them)."""
    return int(min(n_examples, max(8192, min(50_000, n_examples // 4))))


def _cpu_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()}


def fit_loop(config: dict[str, Any]) -> None:
    """Ray Train worker entry point: the job's fits in turn, each skipped when the checkpoint a restarted
    worker group resumes from holds it finished."""
    job = FitJob.model_validate(config)
    torch.set_num_threads(job.threads)
    # subnormal floats (attention weights and their gradients near zero, as the attention sharpens) run far
    # slower on x86; flushed to zero, food's epoch-6 step took 166 ms instead of 456 ms (toy: −4 %)
    torch.set_flush_denormal(True)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    print(f"[fit] worker {rank}/{world} on node {ray.get_runtime_context().get_node_id()}", flush=True)
    inputs = ray.get(job.inputs)
    ends: dict[int, FitEnd] = {}
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:  # a restarted worker group: this run's last epoch
        with checkpoint.as_directory() as ckpt:
            ends = {i: end for i in range(len(job.fits)) if (end := read_end(Path(ckpt) / _fit_dir(i)))}
    for index, spec in enumerate(job.fits):
        start = ends.get(index)
        if start is not None and start.finished(spec.ranker.epochs):
            continue
        if start is None and spec.start is not None:  # a longer fit continuing a finished one
            start = ray.get(spec.start)
        ends[index] = _fit_one(spec, job, inputs, start, lambda end, i=index: {**ends, i: end})


def _fit_one(
    spec: FitSpec,
    job: FitJob,
    inputs: tuple[SplitData, np.ndarray, sparse.csr_matrix],
    start: FitEnd | None,
    checkpoint_of: Any,
) -> FitEnd:
    """One fit from ``start`` (or from scratch) up to ``spec.ranker.epochs``; ``checkpoint_of(end)``: every
    fit's end to checkpoint after an epoch (the finished fits' and this one's). Returns where it ended."""
    cfg = spec.ranker
    rank, world = ray.train.get_context().get_world_rank(), ray.train.get_context().get_world_size()
    data, vectors, graph = inputs
    counts = data.train_counts()
    ranker = build_ranker(cfg, vectors, graph, counts)
    retriever = build_retriever(spec.retriever, cfg.max_history, vectors, graph, counts, cfg.seed)
    train = data.histories(("train",))
    prefixes, targets = next_item_examples(train, cfg.max_history, data.n_items)
    strengths, weights = example_strengths(train, cfg.max_history, job.events)
    mine = np.arange(rank, len(targets), world)
    share = np.bincount(targets[mine], minlength=data.n_items) / max(len(mine), 1)
    loss = LossSpec(cfg.popularity_correction, cfg.temperature, {"retriever": spec.retriever.loss_weight})
    objective = NextItemObjective(
        {"retriever": retriever, "ranker": ranker},
        loss,
        torch.as_tensor(share),
        torch.as_tensor(popularity_log_prior(counts)),
    )
    state: dict[str, Any] = {"epoch": 0, "best": -1.0, "bad": 0, "lr_scale": 1.0, "history": []}
    best, adam = _cpu_state(objective), None
    if start is not None:
        objective.load_state_dict(start.current)
        best, adam, state = start.best, start.optimizer, dict(start.state)
    device = ray.train.torch.get_device()
    ddp = ray.train.torch.prepare_model(
        objective, parallel_strategy_kwargs={"broadcast_buffers": False, "find_unused_parameters": True}
    )
    core = ddp.module if hasattr(ddp, "module") else ddp
    prefixes, targets = torch.as_tensor(prefixes[mine]).to(device), torch.as_tensor(targets[mine]).to(device)
    strengths, weights = (
        None if a is None else torch.as_tensor(a[mine]).to(device) for a in (strengths, weights)
    )
    optimizer = torch.optim.Adam(ddp.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    if adam:
        load_optimizer_tensors(optimizer, adam)
    _set_lr(optimizer, cfg.lr * state.get("lr_scale", 1.0))  # a continued fit keeps its reductions
    per_worker = max(1, spec.examples_per_epoch // world)
    validation = job.retrieval.model_copy(update={"index": "exact"})  # no ANN build per epoch
    users = eval_users(data, "valid", cfg.valid_users, cfg.seed)  # (u,) every epoch's valid users
    for epoch in range(state["epoch"], cfg.epochs):
        generator = epoch_generator(cfg.seed, rank, epoch)
        started = time.monotonic()
        pick = torch.randperm(len(targets), generator=generator)[:per_worker].to(device)
        loss = train_epoch(
            ddp,
            prefixes[pick],
            targets[pick],
            optimizer,
            max(2, cfg.batch_size // world),
            cfg.negatives,
            data.n_items,
            generator,
            strengths=_take(strengths, pick),
            weights=_take(weights, pick),
        )
        trained = time.monotonic()
        decision = torch.tensor([0.0, state.get("lr_scale", 1.0)], device=device)  # (stop, lr scale)
        metrics = {"epoch": float(epoch + 1), "train_loss": loss}
        pipe = make_pipeline(
            retriever=core.scorers["retriever"],
            ranker=core.scorers["ranker"],
            vectors=vectors,
            graph=graph,
            train_counts=counts,
            retrieval=validation,
            history_strengths=job.events.in_history,
        )
        lists = valid_lists(pipe, data, users, device)
        if lists is not None:  # rank 0
            result = score_lists("hybrid", lists, data, "valid", users)
            metrics.update({f"valid_{k}": v for k, v in result.metrics.items() if not math.isnan(v)})
            improved = result.metrics["ndcg@10"] > state["best"]
            if improved:
                state["best"], state["bad"], best = result.metrics["ndcg@10"], 0, _cpu_state(core)
            else:
                state["bad"] += 1
            decision[0] = float(early_stop(epoch + 1, state["bad"], cfg.patience, cfg.min_epochs))
            decision[1] = lr_scale_after(
                float(decision[1]), improved, epoch + 1, cfg.min_epochs, cfg.lr_plateau
            )
            print(
                f"[fit] id_dropout {cfg.id_dropout:g} epoch {epoch + 1}/{cfg.epochs} lr "
                f"{optimizer.param_groups[0]['lr']:.3g} loss {loss:.4f} valid ndcg@10 "
                f"{result.metrics['ndcg@10']:.4f} (best {state['best']:.4f}; "
                f"train {trained - started:.0f} s, valid {time.monotonic() - trained:.0f} s)",
                flush=True,
            )
        dist.broadcast(decision, src=0)
        state["epoch"], state["stopped"] = epoch + 1, bool(decision[0].item())
        state["lr_scale"] = float(decision[1].item())
        _set_lr(optimizer, cfg.lr * state["lr_scale"])
        state["history"].append(metrics)
        end = FitEnd(_cpu_state(core), best, optimizer_tensors(optimizer), state) if rank == 0 else None
        _report(end, checkpoint_of, metrics)
        if state["stopped"]:
            break
    return FitEnd(_cpu_state(core), best, optimizer_tensors(optimizer), state)


def _set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def valid_lists(
    pipe: Pipeline, data: SplitData, users: np.ndarray, device: torch.device
) -> np.ndarray | None:
    """The pipeline's top-20 lists (u, 20) of ``users`` on valid (history: train) on rank 0, None on the
    other ranks: each worker ranks a contiguous share of the users (the lists ``evaluate`` makes, in a
    1/world of the time)."""
    shares = np.array_split(users, dist.get_world_size())
    history = data.histories(("train",))
    mine = rank_lists(PipelineRecommender(pipe), data, shares[dist.get_rank()], history, k=20)
    return gather_rows(mine, [len(share) for share in shares], device)


def example_strengths(
    train: Histories, max_history: int, events: EventsConfig
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(prefix strengths (N, L), target loss weights (N,) with mean 1) of the next-item examples, each None
    when the data carries no strengths or ``events`` turns that use off."""
    found = next_item_strengths(train, max_history)
    if found is None:
        return None, None
    prefix, target = found
    return (prefix if events.in_history else None), (target / target.mean() if events.in_loss else None)


def _take(values: torch.Tensor | None, pick: torch.Tensor) -> torch.Tensor | None:
    return None if values is None else values[pick]


def _fit_dir(index: int) -> str:
    return f"fit-{index}"


def _report(end: FitEnd | None, checkpoint_of: Any, metrics: dict) -> None:
    """Rank 0 (``end`` given) checkpoints every fit's end; the other ranks report the metrics alone."""
    if end is None:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory() as tmp:
        for index, fit_end in checkpoint_of(end).items():
            write_end(fit_end, Path(tmp) / _fit_dir(index))
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))


def fit_models(
    data: SplitData,
    vectors: np.ndarray,
    graph: sparse.csr_matrix,
    ranker: RankerConfig,
    retriever: RetrieverConfig,
    retrieval: RetrievalConfig,
    resources: ResourcesConfig,
    run_name: str = "fit",
    callbacks: list | None = None,
    events: EventsConfig | None = None,
    start: FitEnd | None = None,
) -> FitResult:
    """Train retriever and ranker on ``data.train`` with early stopping on ``data.valid``; best weights
    back. ``start``: the end of a fit of the same configuration with fewer epochs, continued up to
    ``ranker.epochs``."""
    [result] = fit_many(
        FitInputs(data, vectors, graph),
        [FitSpec(ranker=ranker, retriever=retriever, examples_per_epoch=examples_per_epoch(data, ranker))],
        retrieval,
        resources,
        FitRun(run_name, callbacks, events, [start]),
    )
    return result


@dataclass(frozen=True)
class FitInputs:
    """The arrays every fit reads: the split, the item text vectors (n, d) and the item graph (n, n)."""

    data: SplitData
    vectors: np.ndarray
    graph: sparse.csr_matrix


@dataclass(frozen=True)
class FitRun:
    """How a job runs: its Ray Train run name, callbacks, the events' use, and per fit a shorter fit's end
    to continue (None: from scratch)."""

    name: str = "fit"
    callbacks: list | None = None
    events: EventsConfig | None = None  # None: the defaults
    starts: list[FitEnd | None] | None = None


def examples_per_epoch(data: SplitData, ranker: RankerConfig) -> int:
    """``ranker.examples_per_epoch``, or ``default_examples_per_epoch`` of the split's next-item examples."""
    n_examples = int(np.maximum(data.histories(("train",)).lengths() - 1, 0).sum())
    if n_examples == 0:
        raise ValueError("no next-item examples: every train history has fewer than two items")
    return ranker.examples_per_epoch or default_examples_per_epoch(n_examples)


def fit_many(
    inputs: FitInputs,
    fits: list[FitSpec],
    retrieval: RetrievalConfig,
    resources: ResourcesConfig,
    run: FitRun,
) -> list[FitResult]:
    """Every fit of ``fits`` in one Ray Train run (one worker-group start-up), one after the other; their
    results in order. ``run.starts`` puts each fit's ``start`` (a shorter fit's end) in the object store."""
    starts = run.starts or [None] * len(fits)
    job = FitJob(
        fits=[
            spec.model_copy(update={"start": None if end is None else ray.put(end)})
            for spec, end in zip(fits, starts, strict=True)
        ],
        retrieval=retrieval,
        events=run.events or EventsConfig(),
        inputs=ray.put((inputs.data, inputs.vectors, inputs.graph)),
        threads=max(1, math.floor(resources.cpus_per_worker)),
    )
    trainer = TorchTrainer(
        fit_loop,
        train_loop_config=dict(job),
        scaling_config=ScalingConfig(
            num_workers=resources.num_workers,
            use_gpu=resources.use_gpu,
            resources_per_worker={"CPU": resources.cpus_per_worker},
        ),
        run_config=RunConfig(
            name=run.name,
            storage_path=resources.storage_path,
            failure_config=FailureConfig(max_failures=resources.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=1),
            callbacks=run.callbacks,
        ),
        torch_config=TorchConfig(backend="nccl" if resources.use_gpu else "gloo"),
    )
    result = trainer.fit()
    if result.error is not None:
        raise result.error
    with result.checkpoint.as_directory() as ckpt:
        ends = [read_end(Path(ckpt) / _fit_dir(i)) for i in range(len(fits))]
    results = []
    for index, end in enumerate(ends):
        if end is None:
            raise RuntimeError(
                f"the fit's last checkpoint {result.checkpoint.path} holds no complete state of fit {index}"
            )
        results.append(FitResult(*split_state(end.best), end.state["history"], end))
    return results

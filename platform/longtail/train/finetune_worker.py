"""The fine-tuning loop that runs on every Ray Train worker: DeepSpeed engine, checkpoints, resume.

Reads only its ``config`` argument (a ``FinetuneJob`` as a dict); data arrives as Ray Data shards.

Checkpoints hold no pickle (they live in shared storage another job or user may write): the encoder's
weights as safetensors (ZeRO-3 shards gathered first) and the step counts as JSON. A restarted worker group
loads the weights before DeepSpeed builds its optimizer and continues at the saved micro-step with the
learning-rate schedule where it was; AdamW's moment estimates start over (DeepSpeed's own checkpoints,
which keep them, are ``torch.load`` pickles).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import ray.train
import torch
import torch.distributed as dist
from pydantic import BaseModel, ConfigDict
from safetensors.torch import load_file, save_file

from longtail.config import EncoderConfig, FinetuneConfig
from longtail.model.contrastive import in_batch_accuracy, info_nce
from longtail.model.encoder import load_encoder, load_tokenizer, save_encoder, tokenize

STATE_FILE = "state.json"
WEIGHTS_FILE = "weights.safetensors"
LOG_EVERY = 10


class FaultInjection(BaseModel):
    """Test hook: rank ``rank`` dies with ``os._exit(1)`` at micro-step ``at_step``, once (marker file)."""

    model_config = ConfigDict(extra="forbid")
    at_step: int
    rank: int
    marker: str


class FinetuneJob(BaseModel):
    """Everything a worker needs, computed once by the driver."""

    model_config = ConfigDict(extra="forbid")
    encoder: EncoderConfig
    finetune: FinetuneConfig
    deepspeed: dict[str, Any]
    use_gpu: bool
    threads: int
    micro_steps_per_epoch: int
    epochs: int
    fault: FaultInjection | None = None


def _batch_tensors(batch: dict[str, np.ndarray], tokenizer, max_length: int, device) -> dict[str, Any]:
    a = {k: v.to(device) for k, v in tokenize(tokenizer, list(batch["a_text"]), max_length).items()}
    p = {k: v.to(device) for k, v in tokenize(tokenizer, list(batch["p_text"]), max_length).items()}
    tens = {k: torch.as_tensor(batch[k]).to(device) for k in ("a_item", "p_item", "log_q_a", "log_q_p")}
    return {"a": a, "p": p, **tens}


def _loss(engine, t: dict[str, Any], ft: FinetuneConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    va = engine(**t["a"])  # (B, d)
    vp = engine(**t["p"])  # (B, d)
    loss = info_nce(
        va,
        vp,
        t["a_item"],
        t["p_item"],
        t["log_q_a"].float(),
        t["log_q_p"].float(),
        ft.temperature,
        ft.logq_weight,
    )
    return loss, va, vp


def _validate(engine, tokenizer, job: FinetuneJob) -> dict[str, float]:
    """Mean valid loss and in-batch accuracy over every worker's valid shard (all-reduced)."""
    engine.eval()
    sums = torch.zeros(3, dtype=torch.float64)  # loss·n, accuracy·n, n
    shard = ray.train.get_dataset_shard("valid")
    with torch.no_grad():
        for batch in shard.iter_batches(batch_size=job.finetune.micro_batch_size, batch_format="numpy"):
            if len(batch["a_item"]) < 2:
                continue
            t = _batch_tensors(batch, tokenizer, job.encoder.max_length, engine.device)
            loss, va, vp = _loss(engine, t, job.finetune)
            n = len(batch["a_item"])
            sums += torch.tensor([loss.item() * n, in_batch_accuracy(va, vp) * n, n], dtype=torch.float64)
    sums = sums.to(engine.device)
    dist.all_reduce(sums)
    sums = sums.cpu()
    engine.train()
    n = max(sums[2].item(), 1.0)
    return {"valid_loss": sums[0].item() / n, "valid_accuracy": sums[1].item() / n}


def _gathered(engine, zero_stage: int):
    """A context in which every rank sees the module's full parameters (ZeRO-3 partitions them)."""
    import deepspeed

    if zero_stage != 3:
        return contextlib.nullcontext()
    return deepspeed.zero.GatheredParameters(list(engine.module.parameters()), modifier_rank=None)


def _save_checkpoint(engine, step: int, metrics: dict[str, float], zero_stage: int) -> None:
    """Rank 0 writes the weights (safetensors) and the step counts (JSON); every rank reports."""
    with _gathered(engine, zero_stage), tempfile.TemporaryDirectory() as tmp:
        if ray.train.get_context().get_world_rank() == 0:
            weights = {
                k: v.detach().float().cpu().contiguous() for k, v in engine.module.state_dict().items()
            }
            save_file(weights, str(Path(tmp, WEIGHTS_FILE)))
            Path(tmp, STATE_FILE).write_text(
                json.dumps({"micro_step": step, "optimizer_steps": engine.global_steps})
            )
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))
        else:
            ray.train.report(metrics)


def _save_final(engine, tokenizer, job: FinetuneJob, metrics: dict[str, float]) -> None:
    """Rank 0 writes one consolidated Hugging Face directory (safetensors), gathering ZeRO-3 shards first."""
    import deepspeed

    module = engine.module
    rank = ray.train.get_context().get_world_rank()
    gather = job.finetune.zero_stage == 3
    params = list(module.parameters())
    ctx = (
        deepspeed.zero.GatheredParameters(params, modifier_rank=None) if gather else contextlib.nullcontext()
    )
    with ctx, tempfile.TemporaryDirectory() as tmp:
        if rank == 0:
            module.float()
            save_encoder(module, tokenizer, Path(tmp) / "encoder", max_length=job.encoder.max_length)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))
        else:
            ray.train.report(metrics)


def _resume(encoder, job: FinetuneJob) -> tuple[int, int]:
    """Load the last checkpoint's weights into ``encoder`` (not yet wrapped by DeepSpeed); returns (micro-step
    to continue from, optimizer steps taken). A finished run's checkpoint holds the final encoder: its
    weights,
    and every step done."""
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return 0, 0
    with checkpoint.as_directory() as ckpt:
        if (Path(ckpt) / "encoder").is_dir():
            encoder.load_state_dict(load_encoder(str(Path(ckpt) / "encoder")).state_dict())
            done = job.micro_steps_per_epoch * job.epochs
            return done, done // job.finetune.grad_accum
        encoder.load_state_dict(load_file(str(Path(ckpt, WEIGHTS_FILE))))
        state = json.loads(Path(ckpt, STATE_FILE).read_text())
        return int(state["micro_step"]), int(state["optimizer_steps"])


def finetune_loop(config: dict[str, Any]) -> None:
    """Ray Train worker entry point."""
    import deepspeed

    job = FinetuneJob.model_validate(config)
    ft = job.finetune
    torch.set_num_threads(job.threads)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.manual_seed(ft.seed)
    encoder = load_encoder(job.encoder.name, job.encoder.pooling, job.encoder.projection_dim)
    start, optimizer_steps = _resume(encoder, job)  # weights in place before DeepSpeed copies them
    encoder.train_top_layers(ft.train_top_layers)
    tokenizer = load_tokenizer(job.encoder.name)
    trainable = [p for p in encoder.parameters() if p.requires_grad]
    engine, _, _, _ = deepspeed.initialize(
        model=encoder, model_parameters=trainable, config=job.deepspeed, dist_init_required=False
    )
    if optimizer_steps:  # the schedule continues where the checkpoint was
        engine.global_steps = optimizer_steps
        engine.lr_scheduler.step(optimizer_steps - 1)
    total = job.micro_steps_per_epoch * job.epochs
    shard = ray.train.get_dataset_shard("train")
    engine.train()
    step, timed_samples, timed_seconds, loss_sum, loss_n = 0, 0, 0.0, 0.0, 0
    metrics: dict[str, float] = {"resumed_from": float(start), "micro_step": float(start)}
    batches = shard.iter_batches(batch_size=ft.micro_batch_size, batch_format="numpy", drop_last=True)
    for batch in batches:
        if step >= total:
            break
        if step < start:  # already trained before the restart: skip without compute
            step += 1
            continue
        if (
            job.fault
            and rank == job.fault.rank
            and step == job.fault.at_step
            and not os.path.exists(job.fault.marker)
        ):
            Path(job.fault.marker).write_text(str(step))
            os._exit(1)
        tick = time.perf_counter()
        t = _batch_tensors(batch, tokenizer, job.encoder.max_length, engine.device)
        loss, _, _ = _loss(engine, t, ft)
        engine.backward(loss)
        engine.step()
        if step - start >= 2:  # skip warm-up steps in the throughput figure
            timed_seconds += time.perf_counter() - tick
            timed_samples += len(batch["a_item"]) * world
        loss_sum, loss_n = loss_sum + loss.item(), loss_n + 1
        step += 1
        boundary = step % ft.grad_accum == 0
        epoch_end = step % job.micro_steps_per_epoch == 0
        metrics = {
            "resumed_from": float(start),
            "micro_step": float(step),
            "epoch": step / job.micro_steps_per_epoch,
            "train_loss": loss_sum / max(loss_n, 1),
            "samples_per_s": timed_samples / timed_seconds if timed_seconds else 0.0,
        }
        if rank == 0 and (step % LOG_EVERY == 0 or step == total):
            print(
                f"[finetune] step {step}/{total} epoch {metrics['epoch']:.2f} loss "
                f"{metrics['train_loss']:.4f}"
                f" {metrics['samples_per_s']:.1f} samples/s",
                flush=True,
            )
        if epoch_end:
            metrics.update(_validate(engine, tokenizer, job))
            loss_sum, loss_n = 0.0, 0
        if epoch_end or (boundary and step % (ft.checkpoint_every * ft.grad_accum) == 0):
            _save_checkpoint(engine, step, metrics, ft.zero_stage)
    if step < total and step >= start:
        raise RuntimeError(f"rank {rank}: train shard ran out after {step} of {total} micro-steps")
    _save_final(engine, tokenizer, job, metrics)

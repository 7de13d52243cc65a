"""Driver of encoder fine-tuning: pairs from the train split → Ray Data → Ray Train ``TorchTrainer`` whose
workers run DeepSpeed (``finetune_worker``) → one consolidated Hugging Face directory.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import ray
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer

from longtail.config import TrainConfig
from longtail.data.encoded import SplitData
from longtail.model.contrastive import cooccurrence_pairs, pair_weights, sample_pairs, slot_log_q
from longtail.model.encoder import load_encoder, load_tokenizer, save_encoder
from longtail.train.deepspeed_config import deepspeed_config
from longtail.train.finetune_worker import FaultInjection, FinetuneJob, finetune_loop

VALID_PAIRS = 2048


@dataclass
class FinetuneResult:
    """Where the encoder went and what the run reported last (rank 0's metrics)."""

    encoder_dir: Path
    metrics: dict[str, float]


def default_pairs_per_epoch(n_train: int, pool: int) -> int:
    """Scale with the data: an eighth of the train interactions, clipped to [2,048, 20,000] and the pool.

    About 35 pairs/s fit on 2 CPU cores with MiniLM, so the cap keeps a CPU run near 10 minutes.
    """
    return int(min(pool, max(2048, min(20_000, n_train // 8)))) if pool else 0


def pair_table(data: SplitData, anchors: np.ndarray, positives: np.ndarray, log_q: np.ndarray) -> pa.Table:
    """Rows of (anchor, positive) items with their texts and log sampling shares."""
    text = data.item_text if data.item_text is not None else data.item_ids.astype(str)
    return pa.table(
        {
            "a_item": anchors,
            "p_item": positives,
            "a_text": pa.array(text[anchors].tolist(), pa.string()),
            "p_text": pa.array(text[positives].tolist(), pa.string()),
            "log_q_a": log_q[anchors].astype(np.float32),
            "log_q_p": log_q[positives].astype(np.float32),
        }
    )


def build_pairs(data: SplitData, config: TrainConfig) -> tuple[pa.Table, pa.Table, int]:
    """Train pairs for every epoch (a fresh popularity-corrected draw each), valid pairs, pairs per epoch.

    Valid pairs join each valid interaction with the user's most recent train item; they never enter training.
    """
    ft = config.finetune
    rng = np.random.default_rng(ft.seed)
    anchors, positives = cooccurrence_pairs(data.histories(("train",)), ft.window)
    if len(anchors) == 0:
        raise ValueError(
            "no co-occurrence pairs in the train split: need users with at least two train items"
        )
    per_epoch = ft.pairs_per_epoch or default_pairs_per_epoch(len(data.train), len(anchors))
    weights = pair_weights(anchors, positives, data.train_counts(), ft.popularity_exponent)
    drawn = [sample_pairs(anchors, positives, weights, per_epoch, rng) for _ in range(ft.epochs)]
    a = np.concatenate([d[0] for d in drawn])
    p = np.concatenate([d[1] for d in drawn])
    log_q = slot_log_q(a, p, data.n_items)
    train_hist = data.histories(("train",))
    ends = train_hist.indptr[1:]  # (n_users,) one past each user's newest train item
    last = np.where(train_hist.lengths() > 0, train_hist.items[np.maximum(ends - 1, 0)], -1)
    va, vp = last[data.valid.users], data.valid.items
    keep = (va >= 0) & (va != vp)
    va, vp = va[keep], vp[keep]
    if len(va) > VALID_PAIRS:
        pick = rng.choice(len(va), VALID_PAIRS, replace=False)
        va, vp = va[pick], vp[pick]
    return pair_table(data, a, p, log_q), pair_table(data, va, vp, log_q), per_epoch


def finetune(
    data: SplitData,
    config: TrainConfig,
    out: Path,
    *,
    run_name: str = "finetune",
    fault: FaultInjection | None = None,
) -> FinetuneResult:
    """Fine-tune the configured encoder on ``data.train`` and write it to ``out`` (HF dir, safetensors).

    With ``finetune.enabled = false`` the pretrained encoder is written unchanged. A run of the same
    ``run_name`` under the same storage path resumes from its last checkpoint.
    """
    out = Path(out)
    ft, res = config.finetune, config.resources
    if not ft.enabled:
        encoder = load_encoder(config.encoder.name, config.encoder.pooling, config.encoder.projection_dim)
        save_encoder(encoder, load_tokenizer(config.encoder.name), out, max_length=config.encoder.max_length)
        return FinetuneResult(out, {})
    train_pairs, valid_pairs, per_epoch = build_pairs(data, config)
    world = res.num_workers
    micro_per_epoch = per_epoch // (world * ft.micro_batch_size)
    micro_per_epoch -= micro_per_epoch % ft.grad_accum
    if micro_per_epoch < 1:
        raise ValueError(
            f"{per_epoch} pairs per epoch do not fill one step of {world} workers × {ft.micro_batch_size} "
            f"pairs"
            f" × {ft.grad_accum} accumulation; lower finetune.micro_batch_size or raise "
            f"finetune.pairs_per_epoch"
        )
    optimizer_steps = micro_per_epoch * ft.epochs // ft.grad_accum
    threads = ft.torch_threads or max(1, math.floor(res.cpus_per_worker))
    job = FinetuneJob(
        encoder=config.encoder,
        finetune=ft,
        deepspeed=deepspeed_config(ft, res.use_gpu, optimizer_steps),
        use_gpu=res.use_gpu,
        threads=threads,
        micro_steps_per_epoch=micro_per_epoch,
        epochs=ft.epochs,
        fault=fault,
    )
    trainer = TorchTrainer(
        finetune_loop,
        train_loop_config=job.model_dump(),
        scaling_config=ScalingConfig(
            num_workers=world, use_gpu=res.use_gpu, resources_per_worker={"CPU": res.cpus_per_worker}
        ),
        run_config=RunConfig(
            name=run_name,
            storage_path=res.storage_path,
            failure_config=FailureConfig(max_failures=res.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
        ),
        datasets={"train": ray.data.from_arrow(train_pairs), "valid": ray.data.from_arrow(valid_pairs)},
        torch_config=TorchConfig(backend="nccl" if res.use_gpu else "gloo"),
    )
    result = trainer.fit()
    if result.error is not None:
        raise result.error
    with result.checkpoint.as_directory() as ckpt:
        src = Path(ckpt) / "encoder"
        if not src.is_dir():
            raise RuntimeError(
                f"fine-tuning finished without a consolidated encoder in {result.checkpoint.path}"
            )
        _copy_atomic(src, out)
    return FinetuneResult(out, dict(result.metrics or {}))


def _copy_atomic(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    shutil.copytree(src, tmp, dirs_exist_ok=True)
    if dest.exists():
        shutil.rmtree(dest)
    os.replace(tmp, dest)

"""A plain single-process torch fine-tuning loop: the reference the Ray Train + DeepSpeed path is timed
against.

Same model, objective, pairs and batch size as ``longtail.train.finetune``; no Ray, no DeepSpeed.
"""

from __future__ import annotations

import time

import numpy as np
import pyarrow as pa
import torch

from longtail.config import TrainConfig
from longtail.model.contrastive import info_nce
from longtail.model.encoder import TextEncoder, load_encoder, load_tokenizer, tokenize


def plain_finetune(
    pairs: pa.Table, config: TrainConfig, threads: int, max_steps: int | None = None, log_every: int = 0
) -> tuple[TextEncoder, float]:
    """Train on ``pairs`` in order with AdamW + linear warm-up/decay; returns the encoder and samples/s
    (excluding the first two warm-up steps)."""
    torch.set_num_threads(threads)
    torch.manual_seed(config.finetune.seed)
    ft, enc_cfg = config.finetune, config.encoder
    encoder = load_encoder(enc_cfg.name, enc_cfg.pooling, enc_cfg.projection_dim)
    encoder.train_top_layers(ft.train_top_layers)
    tokenizer = load_tokenizer(enc_cfg.name)
    params = [p for p in encoder.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=ft.lr, weight_decay=ft.weight_decay)
    n_steps = len(pairs) // ft.micro_batch_size if max_steps is None else max_steps
    warm = max(1, int(ft.warmup_ratio * n_steps))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warm, max(0.0, (n_steps - s) / max(1, n_steps - warm)))
    )
    cols = {c: pairs.column(c).to_numpy(zero_copy_only=False) for c in pairs.column_names}
    encoder.train()
    seconds, samples = 0.0, 0
    for step in range(n_steps):
        sl = slice(step * ft.micro_batch_size, (step + 1) * ft.micro_batch_size)
        tick = time.perf_counter()
        va = encoder(**tokenize(tokenizer, list(cols["a_text"][sl]), enc_cfg.max_length))
        vp = encoder(**tokenize(tokenizer, list(cols["p_text"][sl]), enc_cfg.max_length))
        loss = info_nce(
            va,
            vp,
            torch.as_tensor(cols["a_item"][sl]),
            torch.as_tensor(cols["p_item"][sl]),
            torch.as_tensor(cols["log_q_a"][sl]).float(),
            torch.as_tensor(cols["log_q_p"][sl]).float(),
            ft.temperature,
            ft.logq_weight,
        )
        opt.zero_grad()
        loss.backward()
        if ft.grad_clip:
            torch.nn.utils.clip_grad_norm_(params, ft.grad_clip)
        opt.step()
        sched.step()
        if step >= 2:
            seconds += time.perf_counter() - tick
            samples += len(cols["a_item"][sl])
        if log_every and step % log_every == 0:
            print(f"step {step}/{n_steps} loss {loss.item():.3f}", flush=True)
    return encoder, (samples / seconds if seconds else float("nan"))


def pairs_fingerprint(pairs: pa.Table) -> str:
    """Short content hash of a pair table (to check both paths saw the same pairs)."""
    return str(abs(hash(np.asarray(pairs.column("a_item")).tobytes())) % 10**8)

"""The DeepSpeed config, derived once from the fine-tuning config (no other source of truth)."""

from __future__ import annotations

from typing import Any

from longtail.config import FinetuneConfig


def resolve_precision(precision: str, use_gpu: bool) -> str:
    """``auto`` → bf16 on GPU, fp32 on CPU; half precision on CPU is refused."""
    if precision == "auto":
        return "bf16" if use_gpu else "fp32"
    if precision in ("bf16", "fp16") and not use_gpu:
        raise ValueError(f"finetune.precision={precision} needs a GPU; use fp32 or auto on CPU")
    return precision


def deepspeed_config(ft: FinetuneConfig, use_gpu: bool, optimizer_steps: int) -> dict[str, Any]:
    """DeepSpeed JSON config: ZeRO stage, micro-batch, accumulation, precision, AdamW and warm-up/decay.

    AdamW runs as torch's implementation (``torch_adam``) so no CUDA/C++ op has to be compiled on workers.
    """
    precision = resolve_precision(ft.precision, use_gpu)
    zero: dict[str, Any] = {"stage": ft.zero_stage}
    if ft.zero_stage == 3:
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    total = max(2, optimizer_steps)
    return {
        "train_micro_batch_size_per_gpu": ft.micro_batch_size,
        "gradient_accumulation_steps": ft.grad_accum,
        "gradient_clipping": ft.grad_clip,
        "zero_optimization": zero,
        "optimizer": {
            "type": "AdamW",
            "params": {
                "lr": ft.lr,
                "betas": [0.9, 0.999],
                "eps": 1e-8,
                "weight_decay": ft.weight_decay,
                "torch_adam": True,
            },
        },
        "scheduler": {
            "type": "WarmupDecayLR",
            "params": {
                "warmup_min_lr": 0.0,
                "warmup_max_lr": ft.lr,
                "warmup_type": "linear",
                "warmup_num_steps": max(1, int(ft.warmup_ratio * total)),
                "total_num_steps": total,
            },
        },
        "bf16": {"enabled": precision == "bf16"},
        "fp16": {"enabled": precision == "fp16"},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }

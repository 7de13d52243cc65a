"""The fine-tuning objective and the DeepSpeed config derivation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from longtail.config import FinetuneConfig
from longtail.data.encoded import Histories, Interactions
from longtail.model.contrastive import cooccurrence_pairs, info_nce, pair_weights, sample_pairs, slot_log_q
from longtail.train.deepspeed_config import deepspeed_config, resolve_precision


def test_cooccurrence_pairs_stay_within_window_and_user():
    inter = Interactions(np.array([0, 0, 0, 1, 1]), np.array([1, 2, 3, 4, 5]), np.zeros(5))
    h = Histories.from_interactions(inter, 2)
    a, p = cooccurrence_pairs(h, window=1)
    assert sorted(zip(a.tolist(), p.tolist(), strict=True)) == [(1, 2), (2, 3), (4, 5)]
    a, p = cooccurrence_pairs(h, window=5)
    assert (1, 3) in set(zip(a.tolist(), p.tolist(), strict=True)) and (3, 4) not in set(
        zip(a, p, strict=True)
    )


def test_popularity_correction_downweights_head_pairs():
    counts = np.array([100, 1, 1])
    w = pair_weights(np.array([0, 1]), np.array([1, 2]), counts, exponent=0.5)
    assert w[1] / w[0] == pytest.approx(10.0)
    assert pair_weights(np.array([0, 1]), np.array([1, 2]), counts, exponent=0.0).tolist() == [0.5, 0.5]
    a, _ = sample_pairs(np.array([0, 1]), np.array([1, 2]), w, 5, np.random.default_rng(0))
    assert len(a) == 5  # more than the pool: drawn with replacement after the pool is used


def test_info_nce_matches_hand_computation():
    a = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), dim=-1)
    p = torch.nn.functional.normalize(torch.tensor([[1.0, 0.2], [0.3, 1.0]]), dim=-1)
    items_a, items_p = torch.tensor([0, 1]), torch.tensor([2, 3])
    zeros = torch.zeros(2)
    loss = info_nce(a, p, items_a, items_p, zeros, zeros, temperature=0.5)
    sim = a @ p.T / 0.5
    rows = torch.nn.functional.cross_entropy(sim, torch.arange(2))
    cols = torch.nn.functional.cross_entropy(sim.T, torch.arange(2))
    assert loss.item() == pytest.approx(0.5 * (rows + cols).item(), rel=1e-6)


def test_logq_and_false_negative_masking():
    a = torch.nn.functional.normalize(torch.randn(3, 4, generator=torch.Generator().manual_seed(0)), dim=-1)
    p = a.clone()
    zeros = torch.zeros(3)
    # logQ: a popular negative (high q) is pushed down, so the loss gets smaller
    base = info_nce(a, p, torch.tensor([0, 1, 2]), torch.tensor([3, 4, 5]), zeros, zeros, 1.0)
    popular = info_nce(
        a,
        p,
        torch.tensor([0, 1, 2]),
        torch.tensor([3, 4, 5]),
        zeros,
        torch.log(torch.tensor([0.9, 0.05, 0.05])),
        1.0,
    )
    assert popular.item() != pytest.approx(base.item())
    # the same positive item twice in a batch is not a negative for the other row
    dup = info_nce(a, p, torch.tensor([0, 1, 2]), torch.tensor([3, 3, 5]), zeros, zeros, 1.0)
    assert dup.item() < base.item()


def test_slot_log_q_is_a_log_distribution():
    q = np.exp(slot_log_q(np.array([0, 0, 1]), np.array([1, 2, 2]), 4))
    assert q[:3].sum() == pytest.approx(1.0) and q[3] < q[0]


def test_deepspeed_config_derivation():
    ft = FinetuneConfig(zero_stage=2, micro_batch_size=16, grad_accum=4, lr=1e-4, warmup_ratio=0.25)
    cpu = deepspeed_config(ft, use_gpu=False, optimizer_steps=100)
    assert cpu["train_micro_batch_size_per_gpu"] == 16 and cpu["gradient_accumulation_steps"] == 4
    assert cpu["zero_optimization"] == {"stage": 2}
    assert not cpu["bf16"]["enabled"] and not cpu["fp16"]["enabled"]
    assert (
        cpu["scheduler"]["params"]["warmup_num_steps"] == 25
        and cpu["scheduler"]["params"]["total_num_steps"] == 100
    )
    assert cpu["optimizer"]["params"]["lr"] == 1e-4 and cpu["optimizer"]["params"]["torch_adam"]
    gpu = deepspeed_config(FinetuneConfig(zero_stage=3), use_gpu=True, optimizer_steps=10)
    assert gpu["bf16"]["enabled"] and gpu["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"]
    assert resolve_precision("fp16", True) == "fp16"
    with pytest.raises(ValueError, match="needs a GPU"):
        resolve_precision("bf16", False)
    assert cpu["gradient_clipping"] == FinetuneConfig().grad_clip  # the config's clip reaches DeepSpeed
    assert (
        deepspeed_config(FinetuneConfig(grad_clip=0.5), use_gpu=False, optimizer_steps=10)[
            "gradient_clipping"
        ]
        == 0.5
    )

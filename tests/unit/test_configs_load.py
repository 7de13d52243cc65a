"""Every shipped config loads through the typed config."""

from __future__ import annotations

from pathlib import Path

import pytest

from longtail.config import TrainConfig, load_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("path", sorted((ROOT / "train_configs").glob("*.yaml")), ids=lambda p: p.name)
def test_train_configs_load(path):
    cfg = load_config(TrainConfig, path)
    assert cfg.finetune.micro_batch_size >= 2

"""The README works as written: every repository path it names exists, every `python -m benchmarks.X`
is a module, every serve-config arg and every KEY=VALUE override it shows is a real config key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from longtail.config import BaselinesConfig, ConfigError, TrainConfig, load_config
from longtail.serve.knobs import AppArgs

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
PATH = re.compile(
    r"(?<![\w/.])((?:train_configs|serve_configs|tune_spaces|benchmarks|platform|docs|tests)/[A-Za-z0-9_./-]+)"
)
OVERRIDE = re.compile(
    r"(?<![\w.])((?:baselines|ranker|retriever|finetune|encoder|graph|rerank|select|retrieval|embed|resources)"
    r"\.[a-z_.]+)=([^\s`'\"\]]+)"
)


def test_every_path_the_readme_names_exists():
    paths = sorted({m.rstrip(".,:;)") for m in PATH.findall(README)})
    assert len(paths) > 10
    missing = [p for p in paths if not (ROOT / p).exists()]
    assert missing == []


def test_every_benchmark_module_exists():
    modules = set(re.findall(r"python -m benchmarks\.(\w+)", README))
    assert {"peers", "speed_ratios"} <= modules
    assert [
        m
        for m in sorted(modules)
        if not (ROOT / "benchmarks" / f"{m}.py").is_file()
        and not (ROOT / "benchmarks" / m / "__main__.py").is_file()
    ] == []


@pytest.mark.parametrize(("key", "value"), sorted(set(OVERRIDE.findall(README))))
def test_every_override_the_readme_shows_is_a_config_key(key, value):
    if key.startswith("baselines."):
        load_config(BaselinesConfig, None, [f"{key.removeprefix('baselines.')}={value}"])
    else:
        load_config(TrainConfig, None, [f"{key}={value}"])


def test_the_override_check_can_fail():
    with pytest.raises(ConfigError):
        load_config(TrainConfig, None, ["ranker.no_such_knob=1"])


@pytest.mark.parametrize("config", sorted((ROOT / "serve_configs").glob("*.yaml")), ids=lambda p: p.name)
def test_serve_args_the_readme_names_exist(config):
    args = yaml.safe_load(config.read_text())["applications"][0]["args"]
    AppArgs.model_validate(args)  # unknown keys fail
    for name in ("store", "create_store", "store_timeout_s", "auth", "protect_reads", "read_token_file"):
        assert name in AppArgs.model_fields and f"`{name}" in README, name

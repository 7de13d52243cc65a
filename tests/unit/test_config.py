"""Typed configs reject unknown keys and bad values with the file and key named."""

from __future__ import annotations

import pytest

from longtail.config import BaselinesConfig, ConfigError, load_config, parse_overrides


def test_overrides_are_typed_and_nested():
    assert parse_overrides(["bpr.epochs=10", "bpr.lr=1e-3", "x=true", "s=a b"]) == {
        "bpr": {"epochs": 10, "lr": 0.001},
        "x": True,
        "s": "a b",
    }


def test_yaml_then_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("bpr:\n  epochs: 3  # (int) passes\n  dim: 16\n")
    cfg = load_config(BaselinesConfig, f, ["bpr.dim=32"])
    assert (cfg.bpr.epochs, cfg.bpr.dim, cfg.itemknn.k) == (3, 32, 100)


@pytest.mark.parametrize(
    ("text", "override", "match"),
    [
        ("bpr:\n  epoch: 3\n", [], r"bpr\.epoch: Extra inputs are not permitted"),
        ("bpr:\n  epochs: -1\n", [], r"bpr\.epochs: Input should be greater than or equal to 1"),
        ("", ["itemknn.k=many"], r"itemknn\.k: Input should be a valid integer"),
        ("- 1\n- 2\n", [], r"expected a mapping"),
        ("bpr: [\n", [], r"not valid YAML"),
    ],
)
def test_bad_configs(tmp_path, text, override, match):
    f = tmp_path / "c.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=match) as info:
        load_config(BaselinesConfig, f, override)
    assert str(f) in str(info.value) or "override" in str(info.value)


def test_bad_override_syntax():
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_overrides(["bpr.epochs"])

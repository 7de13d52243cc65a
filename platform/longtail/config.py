"""Typed configs: pydantic models that reject unknown keys, loaded from YAML with dotted overrides.

    cfg = load_config(BaselinesConfig, "train_configs/x.yaml", ["bpr.epochs=10", "itemknn.k=50"])

Override values are parsed as YAML scalars (``10`` → int, ``true`` → bool, ``[1, 2]`` → list).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

T = TypeVar("T", bound="StrictModel")
_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


class ConfigError(ValueError):
    """A config file or override that does not fit its schema; names the file and the key."""


class StrictModel(BaseModel):
    """Base of every config: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


class MostPopConfig(StrictModel):
    """Most-popular: no knobs."""


class ItemKNNConfig(StrictModel):
    k: int = Field(100, ge=1, description="neighbours kept per item")
    shrink: float = Field(0.0, ge=0.0, description="added to the cosine denominator")


class BPRConfig(StrictModel):
    dim: int = Field(64, ge=1, description="factor size")
    epochs: int = Field(30, ge=1, description="passes over the train pairs")
    lr: float = Field(5e-3, gt=0.0, description="Adam learning rate")
    batch_size: int = Field(2048, ge=1, description="pairs per step")
    l2: float = Field(1e-5, ge=0.0, description="L2 weight on the batch's embeddings")
    seed: int = Field(0, description="initialisation and sampling seed")


class BaselinesConfig(StrictModel):
    """Knobs of the baseline recommenders, by name."""

    mostpop: MostPopConfig = MostPopConfig()
    itemknn: ItemKNNConfig = ItemKNNConfig()
    bpr: BPRConfig = BPRConfig()


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """``["a.b=1", "c=x"]`` → ``{"a": {"b": 1}, "c": "x"}``; values parsed as YAML scalars."""
    tree: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(f"override {item!r}: expected KEY=VALUE with a dotted key, e.g. bpr.epochs=10")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
            if isinstance(value, str) and _FLOAT.fullmatch(value):
                value = float(value)  # YAML 1.1 reads "1e-3" as a string
        except yaml.YAMLError as err:
            raise ConfigError(f"override {item!r}: value is not valid YAML ({err})") from None
        node = tree
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part!r} is already set to a value")
        node[leaf] = value
    return tree


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """``update`` laid over ``base`` recursively (new dict)."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_config(model: type[T], path: str | Path | None = None, overrides: list[str] | None = None) -> T:
    """Build ``model`` from an optional YAML file plus dotted overrides, with located errors."""
    raw: dict[str, Any] = {}
    where = "defaults"
    if path is not None:
        where = str(path)
        try:
            raw = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found") from None
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML: {err}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level, found {type(raw).__name__}")
    raw = deep_merge(raw, parse_overrides(overrides or []))
    try:
        return model.model_validate(raw)
    except ValidationError as err:
        lines = [
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']} (got {e.get('input')!r})" for e in err.errors()
        ]
        raise ConfigError(f"{where}: invalid {model.__name__}:\n  " + "\n  ".join(lines)) from None

"""Search spaces: one YAML file per space, parsed by a pure function (no ``eval``, no Ray).

    ranker.lr: {loguniform: [1.0e-4, 1.0e-2]}   # (float) Adam learning rate
    ranker.dim: {choice: [32, 64, 128]}          # (int) embedding size

Keys are dotted paths into ``TrainConfig``. Distributions:
    uniform [low, high]          float in [low, high]
    loguniform [low, high]       float, log-uniform, 0 < low < high
    quniform [low, high, q]      uniform rounded to multiples of q
    qloguniform [low, high, q]   log-uniform rounded to multiples of q
    randint [low, high]          int in [low, high)  (high exclusive, as in Ray Tune)
    qrandint [low, high, q]      int in [low, high], multiples of q
    choice [a, b, ...]           one of the listed values (any YAML scalars, null included)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from longtail.config import ConfigError, TrainConfig

DISTRIBUTIONS = {
    "uniform": 2,
    "loguniform": 2,
    "quniform": 3,
    "qloguniform": 3,
    "randint": 2,
    "qrandint": 3,
    "choice": None,
}
UPSTREAM = ("encoder.", "finetune.", "embed.", "graph.", "split")  # stages before fitting the ranker


@dataclass(frozen=True)
class Param:
    """One knob: its dotted config key, distribution name and arguments."""

    key: str
    kind: str
    args: tuple

    def to_tune(self):
        """The Ray Tune domain of this knob (imported lazily: parsing needs no Ray)."""
        from ray import tune

        if self.kind == "choice":
            return tune.choice(list(self.args))
        return getattr(tune, self.kind)(*self.args)


def parse_space(raw: Any, source: str = "<space>") -> list[Param]:
    """Validate a mapping ``{dotted key: {distribution: args}}``; errors name the file, key and problem."""
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"{source}: expected a non-empty mapping of config keys to distributions")
    params = []
    for key, spec in raw.items():
        where = f"{source}: {key}"
        _check_key(str(key), where)
        if not isinstance(spec, dict) or len(spec) != 1:
            raise ConfigError(
                f"{where}: expected one distribution, e.g. {{uniform: [0.0, 1.0]}}, got {spec!r}"
            )
        [(kind, args)] = spec.items()
        if kind not in DISTRIBUTIONS:
            raise ConfigError(
                f"{where}: unknown distribution {kind!r}; expected one of {sorted(DISTRIBUTIONS)}"
            )
        if not isinstance(args, list):
            raise ConfigError(f"{where}: {kind} takes a list, got {args!r}")
        params.append(Param(str(key), kind, tuple(_check_args(kind, args, where))))
    return params


def load_space(path: str | Path) -> list[Param]:
    """Parse a space file."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as err:
        raise ConfigError(f"{path}: cannot read ({err.strerror})") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from None
    return parse_space(raw, str(path))


def touches_upstream(params: list[Param]) -> bool:
    """True when a knob changes fine-tuning, embedding or the graph (those stages then run per trial)."""
    return any(p.key.startswith(UPSTREAM) for p in params)


def _check_key(key: str, where: str) -> None:
    model: type[BaseModel] | None = TrainConfig
    parts = key.split(".")
    for i, part in enumerate(parts):
        fields = model.model_fields if model is not None else {}
        if part not in fields:
            raise ConfigError(
                f"{where}: {'.'.join(parts[: i + 1])!r} is not a TrainConfig key; "
                f"expected one of {sorted(fields)}"
            )
        annotation = fields[part].annotation
        model = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
    if model is not None:
        raise ConfigError(
            f"{where}: {key!r} is a section; name one of its keys, e.g. "
            f"{key}.{next(iter(model.model_fields))}"
        )


def _number(value: Any, where: str, integer: bool = False) -> float:
    ok = isinstance(value, int) if integer else isinstance(value, int | float)
    if isinstance(value, bool) or not ok:
        raise ConfigError(f"{where}: expected {'an integer' if integer else 'a number'}, got {value!r}")
    return value


def _check_args(kind: str, args: list, where: str) -> list:
    if kind == "choice":
        if not args:
            raise ConfigError(f"{where}: choice needs at least one value")
        return args
    if len(args) != DISTRIBUTIONS[kind]:
        shape = "[low, high, q]" if DISTRIBUTIONS[kind] == 3 else "[low, high]"
        raise ConfigError(f"{where}: {kind} takes {shape}, got {args!r}")
    integer = kind in ("randint", "qrandint")
    low, high = (_number(a, where, integer) for a in args[:2])
    if not low < high:
        raise ConfigError(f"{where}: {kind} needs low < high, got [{low}, {high}]")
    if "log" in kind and low <= 0:
        raise ConfigError(f"{where}: {kind} needs low > 0, got {low}")
    if len(args) == 3:
        q = _number(args[2], where, integer)
        if q <= 0 or q > high - low:
            raise ConfigError(f"{where}: {kind} needs 0 < q ≤ high − low, got q={q}")
    return [float(a) if not integer else int(a) for a in args]

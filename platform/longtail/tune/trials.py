"""What a sweep decides and writes, without Ray: the objective, a trial's config, the ledger of ended
trials, and the summary (best config, trials table, Pareto front plot)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import yaml
from pydantic import BaseModel, ConfigDict

from longtail.config import ConfigError, TrainConfig
from longtail.tune.space import Param

METRICS = ("ndcg@10", "recall@20", "tail_recall@20", "coverage@20")


class Objective(BaseModel):
    """What a sweep maximises: a weighted sum of validation metrics (one weight = one metric)."""

    model_config = ConfigDict(extra="forbid")
    weights: dict[str, float]

    @classmethod
    def parse(cls, text: str) -> Objective:
        """``ndcg@10``, ``tail_recall@20``, or a weighted sum like ``0.7*ndcg@10+0.3*tail_recall@20``."""
        weights: dict[str, float] = {}
        for term in text.replace(" ", "").split("+"):
            weight, star, name = term.rpartition("*")
            try:
                w = float(weight) if star else 1.0
            except ValueError:
                raise ConfigError(f"objective {text!r}: {weight!r} is not a number") from None
            if name not in METRICS:
                raise ConfigError(f"objective {text!r}: unknown metric {name!r}; expected one of {METRICS}")
            weights[name] = weights.get(name, 0.0) + w
        return cls(weights=weights)

    def value(self, metrics: dict[str, float], prefix: str = "valid_") -> float | None:
        parts = [metrics.get(prefix + name) for name in self.weights]
        if any(p is None or (isinstance(p, float) and math.isnan(p)) for p in parts):
            return None
        return sum(w * p for w, p in zip(self.weights.values(), parts, strict=True))


@dataclass
class SweepJob:
    """What every trial reads (put in the object store once by ``tune.with_parameters``)."""

    data_dir: str
    base: dict[str, Any]  # TrainConfig as a dict
    work: str  # stage cache directory
    storage: str  # Ray Train storage for the trials' trainers
    objective: Objective


def apply_params(base: dict[str, Any], params: dict[str, Any]) -> TrainConfig:
    """The base config with dotted-key values set (validated by ``TrainConfig``)."""
    tree = json.loads(json.dumps(base))
    for key, value in params.items():
        node = tree
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return TrainConfig.model_validate(tree)


def read_ledger(path: Path) -> list[dict[str, Any]]:
    """The ended trials a ledger records, in order (a torn last line, from a killed driver, is skipped)."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


@dataclass
class SweepResult:
    trials: list[dict[str, Any]]  # one row per trial: params, valid_* and test_* metrics, status
    best: dict[str, Any]
    best_config: Path
    table: Path
    pareto_plot: Path


def summarise(
    ended: list[dict[str, Any]], params: list[Param], job: SweepJob, out: Path, log=print
) -> SweepResult:
    """Trials table, Pareto front plot and the best trial's config as a train config, from the ledger."""
    rows = []
    for entry in ended:
        metrics, config = entry["result"], entry["params"]
        row = {
            "trial": entry["trial"],
            **{p.key: config.get(p.key) for p in params},
            "status": entry["status"],
            "objective": metrics.get("objective") if metrics.get("final") else None,
        }
        for part in ("valid", "test"):
            for name in METRICS:
                row[f"{part}_{name}"] = metrics.get(f"{part}_{name}") if metrics.get("final") else None
        rows.append(row)
    done = [r for r in rows if r["status"] == "done" and r["objective"] is not None]
    if not done:
        raise RuntimeError(f"{out}: no trial finished; see {out / 'experiment'}")
    best = max(done, key=lambda r: r["objective"])
    config = apply_params(job.base, {p.key: best[p.key] for p in params})
    config.resources.storage_path = None
    best_config = out / "best-config.yaml"
    header = (
        f"# Best of {len(done)} finished trials by validation objective "
        f"{job.objective.weights} = {best['objective']:.4f} (trial {best['trial']}).\n"
        f"# Train it: longtail train --config {best_config} --data {job.data_dir} --out bundles/best\n"
    )
    best_config.write_text(header + yaml.safe_dump(config.model_dump(), sort_keys=False))
    table = out / "trials.csv"
    pacsv.write_csv(
        pa.Table.from_pylist(
            [
                {k: (None if v is None else str(v) if isinstance(v, list) else v) for k, v in r.items()}
                for r in rows
            ]
        ),
        table,
    )
    (out / "trials.md").write_text(markdown_table(rows))
    front = pareto_front(done)
    plot = plot_pareto(done, front, out / "pareto.png")
    (out / "summary.json").write_text(
        json.dumps(
            {"best": best, "pareto_front": front, "trials": rows, "objective": job.objective.weights},
            indent=2,
            default=str,
        )
    )
    log(f"best trial {best['trial']}: objective {best['objective']:.4f}; config {best_config}")
    return SweepResult(rows, best, best_config, table, plot)


def pareto_front(rows: list[dict]) -> list[dict]:
    """Trials not dominated on (valid ndcg@10, valid tail_recall@20), by ndcg@10 descending."""
    x, y = "valid_ndcg@10", "valid_tail_recall@20"
    front = [
        r
        for r in rows
        if not any(o[x] >= r[x] and o[y] >= r[y] and (o[x] > r[x] or o[y] > r[y]) for o in rows)
    ]
    return sorted(front, key=lambda r: -r[x])


def plot_pareto(rows: list[dict], front: list[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.scatter(
        [r["valid_ndcg@10"] for r in rows], [r["valid_tail_recall@20"] for r in rows], c="0.6", label="trials"
    )
    ax.plot(
        [r["valid_ndcg@10"] for r in front],
        [r["valid_tail_recall@20"] for r in front],
        "o-",
        c="C3",
        label="Pareto front",
    )
    ax.set(xlabel="valid ndcg@10", ylabel="valid tail_recall@20", title="Sweep: accuracy vs tail")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def markdown_table(rows: list[dict]) -> str:
    keys = list(rows[0])

    def cell(v: Any) -> str:
        return "" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(cell(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines) + "\n"

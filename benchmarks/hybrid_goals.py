"""Issue 7 figures: the hybrid's shelves chosen on validation, then test metrics on the warm and cold splits.

    python -m benchmarks.hybrid_goals --data DATA --warm-bundle B_WARM --cold-bundle B_COLD
        [--out reports/bench/hybrid_goals.json]

Both bundles come from `longtail train` with the same config (one on `--split warm`, one on `--split
cold`). For every point of a grid of shelves (tail_share, new_share, exposure_penalty) the script scores
valid on both splits; a point is eligible when its valid metrics reach the targets (tail_recall@20,
coverage@20 and cold_recall@20 of the cold split), and the eligible point with the best mean valid
recall@20 is chosen (ndcg@10 does not move: the first 10 slots stay the model's). Test metrics are read
for the chosen point only, and for "no shelves". Output: JSON, a Markdown table and a plot of every grid
point (valid tail_recall@20 vs recall@20).
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np

from longtail.bundle import read_bundle
from longtail.config import RerankConfig
from longtail.data.encoded import load_split_data
from longtail.eval.evaluate import evaluate
from longtail.recommend.build import load_pipeline, own_lists, shelves_of
from longtail.recommend.pipeline import Batch, arrange_lists, rank, retrieve

KEYS = ("ndcg@10", "recall@20", "tail_recall@20", "cold_recall@20", "coverage@20", "aplt@20")
TARGETS = {"tail_recall@20": 0.12, "coverage@20": 0.6}  # both splits
COLD_TARGET = 0.10  # cold_recall@20 on the cold split
GRID = {
    "tail_share": (0.2, 0.3, 0.4),
    "new_share": (0.0, 0.1, 0.2),
    "exposure_penalty": (0.0, 0.25, 0.5, 1.0),
}


class Ranked:
    """The pipeline's retrieve + rank, computed once per batch of users; every grid point only re-arranges."""

    def __init__(self, pipe) -> None:
        self.pipe, self.cache = own_lists(pipe), {}

    def with_shelves(self, rerank: RerankConfig):
        memo, pipe = self, self.pipe.with_knobs(shelves=shelves_of(rerank))

        class Arranged:
            name = "hybrid"
            exposure = np.zeros(pipe.n_items)

            def fit(self, data) -> None:
                """Already trained."""

            def recommend(self, users, histories, k):
                batch = Batch.of(histories)
                key = (users.tobytes(), histories.items.tobytes())
                if key not in memo.cache:
                    candidates = retrieve(pipe, batch, k)
                    memo.cache[key] = (candidates, rank(pipe, batch, candidates)[0])
                candidates, scores = memo.cache[key]
                cols = arrange_lists(pipe, batch, candidates, scores, k, self.exposure)
                return np.where(cols >= 0, np.take_along_axis(candidates, np.maximum(cols, 0), 1), -1)

        return Arranged()


def metrics_of(ranked: Ranked, data, rerank: RerankConfig, part: str) -> dict[str, float]:
    m = evaluate(ranked.with_shelves(rerank), data, part).metrics
    return {k: round(m[k], 4) for k in KEYS}


def eligible(valid: dict[str, dict[str, float]]) -> bool:
    ok = all(valid[s][k] >= v for s in valid for k, v in TARGETS.items())
    return ok and valid["cold"]["cold_recall@20"] >= COLD_TARGET


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--warm-bundle", type=Path, required=True)
    ap.add_argument("--cold-bundle", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=Path("reports/bench/hybrid_goals.json"))
    args = ap.parse_args()
    splits = {}
    for split, path in (("warm", args.warm_bundle), ("cold", args.cold_bundle)):
        splits[split] = (Ranked(load_pipeline(read_bundle(path))), load_split_data(args.data, split))
    points = []
    for values in itertools.product(*GRID.values()):
        rerank = RerankConfig(**dict(zip(GRID, values, strict=True)))
        valid = {s: metrics_of(ranked, data, rerank, "valid") for s, (ranked, data) in splits.items()}
        points.append({"shelves": rerank.model_dump(), "valid": valid, "eligible": eligible(valid)})
        print(json.dumps(points[-1]), flush=True)
    chosen = [p for p in points if p["eligible"]]
    best = max(chosen or points, key=lambda p: sum(v["recall@20"] for v in p["valid"].values()))
    report = {
        "grid": points,
        "targets": {**TARGETS, "cold_recall@20 (cold split)": COLD_TARGET},
        "chosen": best["shelves"],
        "any_eligible": bool(chosen),
        "test": {},
    }
    for label, rerank in (
        ("no shelves", RerankConfig()),
        ("chosen shelves", RerankConfig(**best["shelves"])),
    ):
        report["test"][label] = {
            s: metrics_of(ranked, data, rerank, "test") for s, (ranked, data) in splits.items()
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    lines = ["| shelves | split | " + " | ".join(KEYS) + " |", "|---|---|" + "---:|" * len(KEYS)]
    for label, by_split in report["test"].items():
        for split, m in by_split.items():
            lines.append(f"| {label} | {split} | " + " | ".join(f"{m[k]:.4f}" for k in KEYS) + " |")
    table = "\n".join(lines)
    args.out.with_suffix(".md").write_text(f"chosen on valid: {best['shelves']}\n\n{table}\n")
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for split, marker in (("warm", "o"), ("cold", "s")):
        xs = [p["valid"][split]["recall@20"] for p in points]
        ys = [p["valid"][split]["tail_recall@20"] for p in points]
        ax.scatter(xs, ys, marker=marker, alpha=0.6, label=f"{split} valid, grid")
        ax.scatter(
            [best["valid"][split]["recall@20"]],
            [best["valid"][split]["tail_recall@20"]],
            marker=marker,
            s=120,
            facecolors="none",
            edgecolors="red",
        )
    ax.axhline(TARGETS["tail_recall@20"], color="grey", linestyle=":", label="tail target")
    ax.set_xlabel("valid recall@20")
    ax.set_ylabel("valid tail_recall@20")
    ax.set_title("shelves grid (chosen point circled)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out.with_suffix(".png"), dpi=120)
    print(f"chosen on valid: {best['shelves']} (targets met on valid: {bool(chosen)})\n{table}")


if __name__ == "__main__":
    main()

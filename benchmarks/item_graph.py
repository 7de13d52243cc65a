"""How the item graph's sources are combined: each source's share of the graph and what a walk on it finds.

The item graph (``longtail.model.graph``) sums text-kNN, knowledge-graph and co-occurrence edges. It feeds the
ranker's association term, the graph-neighbour candidates and the retriever's neighbour text. This script
builds the sources of each dataset with the built-in defaults (the catalog embedded by the platform's own
stage, cached in ``--work``), then combines them by two rules:

- ``peak`` (the rule before GRAPH_RULE 2): each source divided by its largest value;
- ``rows`` (``longtail.model.graph.combine``): each source's rows scaled to sum to its weight;

and reports each source's share of the graph's mass, and the valid figures (never test) of a recommender
that walks the graph from each user's 5 newest items (weights 1 / (1 + age), as the graph-neighbour
channel does) for each rule and each source alone, next to item-kNN. ``--bundle LABEL=B@COMMIT`` adds the
valid and test figures of ``longtail train`` bundles (matched to a dataset by its fingerprint), e.g. the
defaults before and after the rule changed. Output: ``docs/results/item-graph.json``.

    python -m benchmarks.item_graph --data /tmp/data/ml-100k [--data ...] [--bundle "rows=B@abc123" ...]
        [--work /tmp/longtail-item-graph]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from scipy import sparse

from benchmarks.demo_runs import machine
from benchmarks.train_time import commit
from longtail.config import TrainConfig
from longtail.data.dataset import read_manifest
from longtail.data.encoded import Histories, SplitData
from longtail.eval.evaluate import evaluate
from longtail.model.base import ScoringRecommender
from longtail.model.baselines import ItemKNN
from longtail.model.factory import build_graph
from longtail.model.graph import combine
from longtail.train.chain import item_entities, prepare_stages

ROOT = Path(__file__).resolve().parents[1]
KEPT = ("ndcg@10", "recall@20", "tail_recall@20", "cold_recall@20", "coverage@20")
WALKED = ("ndcg@10", "recall@20", "tail_recall@20", "coverage@20")
RECENT = 5  # newest history items walked from (retrieval.graph_recent's default)


def combine_by_peak(parts: dict[str, sparse.csr_matrix], weights: dict[str, float]) -> sparse.csr_matrix:
    """The rule before GRAPH_RULE 2: Σ_s w_s · source s / its largest value, symmetrised, rows to 1."""
    n = next(iter(parts.values())).shape[0]
    total = sparse.csr_matrix((n, n), dtype=np.float32)
    for name, matrix in parts.items():
        peak = matrix.max() if matrix.nnz else 0.0
        if peak > 0 and weights.get(name, 0.0) > 0:
            total = total + (weights[name] / peak) * matrix
    total = sparse.csr_matrix(total.maximum(total.T))
    row_sum = np.asarray(total.sum(1)).ravel()
    return sparse.csr_matrix(sparse.diags(1.0 / np.maximum(row_sum, 1e-12)) @ total).astype(np.float32)


class GraphWalk(ScoringRecommender):
    """score(u, ·) = Σ_l A[h_l, ·] / (1 + age_l) over the user's ``RECENT`` newest items."""

    def __init__(self, name: str, graph: sparse.csr_matrix) -> None:
        self.name, self.graph = name, sparse.csr_matrix(graph)

    def score(self, users: np.ndarray, histories: Histories) -> np.ndarray:
        out = np.zeros((len(users), self.graph.shape[0]), np.float32)
        for row in range(len(users)):
            recent = histories.of(row)[-RECENT:]
            weights = 1.0 / (1.0 + np.arange(len(recent))[::-1])
            out[row] = np.asarray(self.graph[recent].T @ weights).ravel() if len(recent) else 0.0
        return out


def mass_shares(graph: sparse.csr_matrix, parts: dict[str, sparse.csr_matrix]) -> dict[str, float]:
    """Each source's share of the graph's total mass (an edge two sources share counts for both)."""
    total = float(graph.sum())
    shares = {}
    for name, matrix in parts.items():
        edges = (matrix > 0).astype(np.float32)
        shares[name] = round(float(graph.multiply(edges.maximum(edges.T)).sum()) / total, 4)
    return shares


def walked(model, data: SplitData) -> dict[str, float]:
    metrics = evaluate(model, data, "valid").metrics
    return {k: round(metrics[k], 6) for k in WALKED}


def one_dataset(data_dir: Path, work: Path) -> dict:
    config = TrainConfig()
    stages = prepare_stages(data_dir, config, work)
    data = stages.data
    _, parts = build_graph(
        config.graph, stages.vectors, item_entities(data_dir, data), data.histories(("train",))
    )
    parts = {name: matrix for name, matrix in parts.items() if matrix.nnz}
    weights = {
        "text": config.graph.text_weight,
        "kg": config.graph.kg_weight,
        "cooc": config.graph.cooc_weight,
    }
    graphs = {"peak": combine_by_peak(parts, weights), "rows": combine(parts, weights)}
    knn = ItemKNN()
    knn.fit(data)
    walks: dict[str, dict[str, float]] = {"itemknn": walked(knn, data)}
    for name, graph in [*graphs.items(), *((f"{s} only", combine({s: parts[s]}, weights)) for s in parts)]:
        start = time.time()
        walks[name] = walked(GraphWalk(name, graph), data)
        print(f"{data_dir.name} {name}: {walks[name]} ({time.time() - start:.0f} s)", flush=True)
    return {
        "dataset": read_manifest(data_dir)["source"],
        "fingerprint": read_manifest(data_dir)["fingerprint"],
        "items": data.n_items,
        "edges": {name: int(matrix.nnz) for name, matrix in parts.items()},
        "mass": {rule: mass_shares(graph, parts) for rule, graph in graphs.items()},
        "walks": walks,
        "bundles": [],
    }


def bundle_row(label: str, bundle: Path, code: str) -> tuple[str, dict]:
    """(data fingerprint, the bundle's valid and test figures, served and own lists)."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    metrics, own = manifest["metrics"], manifest["metrics"]["own_lists"]
    return manifest["data"]["fingerprint"], {
        "label": label,
        "code": code,
        "train_s": round(float(metrics["seconds"]), 1),
        "chosen": metrics.get("selection", {}).get("fit", {}).get("chosen"),
        "valid": {k: metrics["valid"].get(k) for k in KEPT},
        "own_valid": {k: own["valid"].get(k) for k in KEPT},
        "test": {k: metrics["test"].get(k) for k in KEPT},
        "own_test": {k: own["test"].get(k) for k in KEPT},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, action="append", required=True, help="a prepared dataset")
    parser.add_argument("--bundle", action="append", default=[], help="LABEL=BUNDLE@COMMIT")
    parser.add_argument("--work", type=Path, default=Path("/tmp/longtail-item-graph"))
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "item-graph.json")
    args = parser.parse_args()
    runs = [one_dataset(data, args.work) for data in args.data]
    for given in args.bundle:
        label, _, rest = given.rpartition("=")  # a label may hold "=" (an override), a path not
        path, _, code = rest.rpartition("@")
        fingerprint, row = bundle_row(label, Path(path), code)
        matching = [run for run in runs if run["fingerprint"] == fingerprint]
        if not matching:
            raise SystemExit(f"{path}: trained on none of the --data datasets")
        matching[0]["bundles"].append(row)
    result = {"machine": machine(), "code": commit(), "recent": RECENT, "runs": runs}
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

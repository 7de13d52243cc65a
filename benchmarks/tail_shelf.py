"""The tail shelf's order: the ranker's score alone, or with the item-kNN affinity to the history.

``longtail train`` orders the tail shelf by z(score) + w·z(item-kNN affinity) and chooses w
(``select.tail_knn_weights``) on valid before the shelf grid, on the largest tail shelf alone. For each
``--bundle`` (a ``longtail train`` bundle with the item-kNN matrix) this script reports that choice (read
from the bundle) and, by ranking the same valid users again, each w at the shares the grid then chose
(valid tail_recall@20, recall@20, coverage@20: what the one-weight choice may cost), then the bundle's test
figures (served and own lists) next to a ``--before`` bundle of the same dataset (trained before the tail
shelf read the affinity). Test is read for the chosen bundles only. Output: ``docs/results/tail-shelf.json``.

    python -m benchmarks.tail_shelf --data DIR [--data ...] --bundle "LABEL=BUNDLE@COMMIT" [--bundle ...]
        [--before "LABEL=BUNDLE@COMMIT" ...]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks.demo_runs import machine
from benchmarks.item_graph import KEPT
from benchmarks.train_time import commit
from longtail.bundle import read_bundle
from longtail.data.dataset import read_manifest
from longtail.data.encoded import load_split_data
from longtail.recommend.arrange import Shelves
from longtail.recommend.build import load_pipeline
from longtail.train.select import sample_users, variant_metrics

ROOT = Path(__file__).resolve().parents[1]


def read(given: str) -> tuple[str, Path, str, dict]:
    """(label, bundle, code, manifest) of ``LABEL=BUNDLE@COMMIT``."""
    label, _, rest = given.rpartition("=")
    path, _, code = rest.rpartition("@")
    manifest_path = Path(path) / "manifest.json"
    if not manifest_path.is_file():
        raise SystemExit(f"{path}: not a bundle (no manifest.json)")
    return label, Path(path), code, json.loads(manifest_path.read_text())


def figures(label: str, code: str, manifest: dict) -> dict:
    """A bundle's chosen shelves and its valid and test figures (served and own lists)."""
    metrics, own = manifest["metrics"], manifest["metrics"]["own_lists"]
    return {
        "label": label,
        "code": code,
        "chosen": metrics.get("selection", {}).get("shelves", {}).get("chosen"),
        "valid": {k: metrics["valid"].get(k) for k in KEPT},
        "own_valid": {k: own["valid"].get(k) for k in KEPT},
        "test": {k: metrics["test"].get(k) for k in KEPT},
        "own_test": {k: own["test"].get(k) for k in KEPT},
    }


def weight_rows(bundle: Path, data_dir: Path) -> list[dict]:
    """Valid figures at the bundle's chosen shelf shares with each weight of its ``select.tail_knn_weights``
    (the users ``select`` sampled), ranked once."""
    b = read_bundle(bundle)
    config = b.config
    pipe = load_pipeline(b)
    if pipe.neighbours is None:
        raise SystemExit(f"{bundle}: no item-kNN matrix (trained before the tail shelf read it)")
    data = load_split_data(data_dir, config.split, config.events)
    users = sample_users(data, "valid", config.select.users, config.ranker.seed)
    shares = pipe.shelves
    weights = sorted(set(config.select.tail_knn_weights) | {0.0})
    variants = [
        pipe.with_knobs(shelves=Shelves(shares.tail_share, shares.new_share, shares.exposure_penalty, w))
        for w in weights
    ]
    return [
        {"tail_knn": w, "chosen": w == shares.tail_knn}
        | {k: m[k] for k in ("recall@20", "tail_recall@20", "coverage@20")}
        for w, m in zip(weights, variant_metrics(variants, data, users), strict=True)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, action="append", required=True, help="a prepared dataset")
    parser.add_argument("--bundle", action="append", required=True, help="LABEL=BUNDLE@COMMIT")
    parser.add_argument("--before", action="append", default=[], help="LABEL=BUNDLE@COMMIT, same dataset")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "tail-shelf.json")
    args = parser.parse_args()
    datasets = {read_manifest(d)["fingerprint"]: d for d in args.data}
    runs: dict[str, dict] = {}
    for given in args.bundle:
        label, path, code, manifest = read(given)
        fingerprint = manifest["data"]["fingerprint"]
        if fingerprint not in datasets:
            raise SystemExit(f"{path}: trained on none of the --data datasets")
        runs[fingerprint] = {
            "dataset": read_manifest(datasets[fingerprint])["source"].rstrip("/").rsplit("/", 1)[-1],
            "choice": manifest["metrics"]["selection"]["shelves"]["tail_knn"],
            "weights": weight_rows(path, datasets[fingerprint]),
            "bundles": [figures(label, code, manifest)],
        }
        print(f"{label}: {runs[fingerprint]['weights']}", flush=True)
    for given in args.before:
        label, path, code, manifest = read(given)
        run = runs.get(manifest["data"]["fingerprint"])
        if run is None:
            raise SystemExit(f"{path}: trained on none of the --bundle datasets")
        run["bundles"].insert(0, figures(label, code, manifest))
    result = {"machine": machine(), "code": commit(), "runs": list(runs.values())}
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

"""`longtail train --data DATA` with the built-in defaults, timed per stage, on each dataset given: minutes
per 100k interactions (the whole run, encoder and embedding included, from an empty stage cache) and the
figures the run chose on valid, so a faster default can be checked for what it costs.

    python -m benchmarks.train_time --data /tmp/data/ml-100k --data /tmp/data/amazon2014-toy \
        [--before B_ML100K --before B_TOY --before-code COMMIT] [--previous OLD.json]
        [--work /tmp/longtail-train-time] [--out docs/results/train-time.json]

``--data``: prepared datasets (`longtail data prepare`). Each run starts from an empty work directory.
``--before``: bundles an earlier commit (``--before-code``) trained on the same data with the defaults, in
the order of ``--data``: their train seconds and figures are recorded beside the new run's.
``--previous``: this script's JSON from an earlier commit: its runs (and their "before" rows) of the same
datasets become "before" rows of the new ones, oldest first. ``--add``: keep the runs of other datasets
already in ``--out`` (each row says which commit ran it).
Writes the JSON that ``python -m harness.docs`` turns into the "Training time" section of docs/results.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.demo_runs import machine

ROOT = Path(__file__).resolve().parents[1]
CLI = str(Path(sys.executable).parent / "longtail")
KEPT = ("ndcg@10", "recall@20", "tail_recall@20", "cold_recall@20", "coverage@20")


def one_dataset(data: Path, work: Path) -> dict:
    """Train with the defaults into an empty ``work``; wall time, the manifest's stage times and figures."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    bundle = work / "bundle"
    started = time.monotonic()
    subprocess.run([CLI, "train", "--data", str(data), "--out", str(bundle), "--no-mlflow"], check=True)
    wall = time.monotonic() - started
    prepared = json.loads((data / "manifest.json").read_text())
    manifest = json.loads((bundle / "manifest.json").read_text())
    metrics = manifest["metrics"]
    interactions = int(prepared["rows"]["interactions"])
    fit = metrics.get("selection", {}).get("fit", {})
    return {
        "dataset": prepared["source"],
        "interactions": interactions,
        "items": int(prepared["catalog_size"]),
        "wall_s": round(wall, 1),
        "train_s": metrics["seconds"],
        "minutes_per_100k": round(wall / 60 / (interactions / 100_000), 2),
        "stage_seconds": metrics.get("stage_seconds", {}),
        "epochs": len(metrics.get("fit_history", [])),
        "chosen": fit.get("chosen"),
        "rung_chosen": fit.get("rung", {}).get("chosen"),
        "valid": {k: metrics["valid"].get(k) for k in KEPT},
        "test": {k: metrics["test"].get(k) for k in KEPT},
        "own_test": {k: metrics["own_lists"]["test"].get(k) for k in KEPT},
    }


def earlier(bundle: Path, interactions: int, code: str) -> dict:
    """A bundle trained earlier on the same data: its train seconds (no wall time was kept) and figures."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    metrics = manifest["metrics"]
    seconds = float(metrics["seconds"])
    return {
        "code": code,
        "wall_s": seconds,
        "minutes_per_100k": round(seconds / 60 / (interactions / 100_000), 2),
        "epochs": len(metrics.get("fit_history", [])),
        "chosen": metrics.get("selection", {}).get("fit", {}).get("chosen"),
        "test": {k: metrics["test"].get(k) for k in KEPT},
        "own_test": {k: metrics["own_lists"]["test"].get(k) for k in KEPT},
    }


def commit() -> str:
    found = subprocess.run(
        ["git", "describe", "--always", "--dirty"], capture_output=True, text=True, cwd=ROOT
    )
    return found.stdout.strip() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, action="append", required=True, help="a prepared dataset")
    parser.add_argument("--before", type=Path, action="append", default=[], help="an earlier bundle")
    parser.add_argument("--before-code", default="earlier", help="the commit that trained --before")
    parser.add_argument("--previous", type=Path, help="this script's JSON from an earlier commit")
    parser.add_argument("--add", action="store_true", help="keep --out's runs of other datasets")
    parser.add_argument("--work", type=Path, default=Path("/tmp/longtail-train-time"))
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "train-time.json")
    args = parser.parse_args()
    runs = [one_dataset(data, args.work / data.name) for data in args.data]
    for run, bundle in zip(runs, args.before, strict=False):
        run["before"] = [earlier(bundle, run["interactions"], args.before_code)]
    if args.previous is not None:
        old = json.loads(args.previous.read_text())
        for run in runs:
            for prior in (r for r in old["runs"] if r["dataset"] == run["dataset"]):
                rows = prior.pop("before", [])
                rows = rows if isinstance(rows, list) else [rows]
                run["before"] = [*rows, {"code": old["code"], **prior}, *run.get("before", [])]
    for run in runs:
        print(
            f"{run['dataset']}: {run['wall_s']:.0f} s for {run['interactions']:,} interactions = "
            f"{run['minutes_per_100k']:.2f} min per 100k ({run['stage_seconds']})"
        )
    code = commit()
    for run in runs:
        run["code"] = code
    if args.add and args.out.is_file():
        kept = json.loads(args.out.read_text())
        ours = {run["dataset"] for run in runs}
        others = [{"code": kept["code"], **r} for r in kept["runs"] if r["dataset"] not in ours]
        runs = [*others, *runs]
    result = {"command": "longtail train --data DATA", "machine": machine(), "code": code, "runs": runs}
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

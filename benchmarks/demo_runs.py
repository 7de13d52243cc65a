"""`make demo` twice from nothing, each run in its own empty directory (dataset, bundle, stage cache,
reports): how long each took, whether the two gave the same figures, and the first run's `longtail eval`
report. Writes ``docs/results/demo.json``, which ``python -m harness.docs`` turns into the README's headline
table and the demo section of docs/results.md.

    python -m benchmarks.demo_runs [--runs 2] [--out docs/results/demo.json]

The recbole wheel that ML-100K comes from stays in ``LONGTAIL_CACHE`` (a pip download, not part of a run).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def machine() -> str:
    cpus = os.cpu_count() or 0
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cpus} CPU cores ({platform.processor() or platform.machine()}), {memory_gib:.0f} GiB, no GPU"


def one_run(work: Path) -> dict:
    """`make demo` with every output under ``work``; its seconds, the train seconds and what it wrote."""
    paths = {"DATA": work / "data", "BUNDLE": work / "bundles" / "ml100k", "REPORTS": work / "reports"}
    started = time.monotonic()
    subprocess.run(
        ["make", "-s", "demo", *(f"{k}={v}" for k, v in paths.items())],
        cwd=ROOT,
        check=True,
    )
    total_s = time.monotonic() - started
    manifest = json.loads((paths["BUNDLE"] / "manifest.json").read_text())
    report = json.loads((paths["REPORTS"] / "ml100k-warm.json").read_text())
    recs = (paths["REPORTS"] / "recs-ml100k.jsonl").read_text()
    return {
        "total_s": round(total_s, 1),
        "train_s": manifest["metrics"]["seconds"],
        "report": report,
        "recs": recs,
    }


def same_figures(a: dict, b: dict) -> bool:
    metrics = [[r["model"], r["metrics"]] for r in a["results"]]
    return metrics == [[r["model"], r["metrics"]] for r in b["results"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "demo.json")
    args = parser.parse_args()
    subprocess.run(["make", "-s", "install"], cwd=ROOT, check=True)  # not timed
    runs = []
    for n in range(args.runs):
        work = Path(tempfile.mkdtemp(prefix=f"longtail-demo-{n}-"))
        try:
            runs.append(one_run(work))
        finally:
            shutil.rmtree(work, ignore_errors=True)
        print(f"run {n + 1}: {runs[-1]['total_s']:.0f} s (train {runs[-1]['train_s']:.0f} s)", flush=True)
    identical = all(
        same_figures(runs[0]["report"], r["report"]) and r["recs"] == runs[0]["recs"] for r in runs[1:]
    )
    record = {
        "command": "make demo",
        "machine": machine(),
        "report": runs[0]["report"],
        "runs": [{"total_s": r["total_s"], "train_s": r["train_s"]} for r in runs],
        "identical_runs": identical if len(runs) > 1 else None,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"identical figures and lists across runs: {identical}\nwrote {args.out}")


if __name__ == "__main__":
    main()

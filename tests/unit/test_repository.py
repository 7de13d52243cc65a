"""Nothing a run writes is tracked: stores, Prometheus files, bundles, reports, caches and datasets are
ignored by git, and none is committed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WRITTEN = [  # what `make demo`, `longtail train/eval/tune`, `longtail store init` and the Serve app write
    "state/longtail.sqlite",
    "state/longtail.sqlite-wal",
    "state/longtail.metrics/counter_795.db",
    "elsewhere/shop.sqlite",
    "elsewhere/shop.metrics/gauge_livemax_1.db",
    "bundles/ml100k@abc/manifest.json",
    "bundles/.longtail-stages/vectors-1.parquet",
    "bundles/.longtail-data/ml-100k-forget-1/manifest.json",
    "reports/ml100k-warm.json",
    "data/ml-100k/manifest.json",
    "sweeps/hybrid/best-config.yaml",
    "bundles/mlflow.db",
    "mlflow.db",
    "mlruns/0/meta.yaml",
    "encoders/ml100k/config.json",
]


def git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True)


pytestmark = pytest.mark.skipif(
    shutil.which("git") is None or git("rev-parse", "--git-dir").returncode != 0, reason="not a git checkout"
)


def test_what_runs_write_is_ignored():
    ignored = git("check-ignore", "--no-index", *WRITTEN).stdout.split()
    assert sorted(ignored) == sorted(WRITTEN), sorted(set(WRITTEN) - set(ignored))


def test_no_run_output_is_committed():
    tracked = git("ls-files").stdout.splitlines()
    outputs = [
        f
        for f in tracked
        if f.startswith(("state/", "bundles/", "reports/", "data/", "sweeps/"))
        or f.endswith((".sqlite", ".db", ".parquet", ".safetensors", ".faiss"))
    ]
    assert outputs == [], outputs

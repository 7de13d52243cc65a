"""SASRec, RecBole's implementation, run in its own virtual environment (RecBole pins an old Ray).

The bench creates the environment once (`--sasrec-venv`, default `.venv-recbole`): torch (the same
`TORCH_SPEC` as the Makefile), `recbole==1.2.1` without its dependency pins, the few libraries RecBole
imports, and this checkout of longtail without dependencies (for the split files and the metric code).
`sasrec_runner.py` then runs there and writes its figures as JSON, which this side reads.
"""

from __future__ import annotations

import json
import subprocess  # nosec B404 - fixed argument lists, no shell
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RECBOLE = "recbole==1.2.1"
# what RecBole 1.2.1 imports at `import recbole.model...` (its ray<=2.6.3 pin is left out on purpose)
RECBOLE_IMPORTS = [
    "numpy",
    "scipy",
    "pandas",
    "tqdm",
    "colorlog==4.7.2",
    "colorama==0.4.4",
    "scikit-learn",
    "pyyaml",
    "tensorboard",
    "thop",
    "tabulate",
    "texttable",
    "psutil",
    "pyarrow",
    "pydantic>=2",
]


def ensure_venv(path: Path, torch_spec: str) -> Path:
    """The environment's python, creating the environment when it is missing or incomplete."""
    python = path / "bin" / "python"
    marker = path / ".longtail-ready"
    if marker.exists():
        return python
    print(f"[sasrec] creating {path} ({RECBOLE}, {torch_spec}) ...", flush=True)
    venv.create(path, with_pip=True)
    pip = [str(python), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, *torch_spec.split()], check=True)  # nosec B603
    subprocess.run([*pip, *RECBOLE_IMPORTS], check=True)  # nosec B603
    subprocess.run([*pip, "--no-deps", RECBOLE], check=True)  # nosec B603
    subprocess.run([*pip, "--no-deps", "-e", str(ROOT)], check=True)  # nosec B603
    marker.write_text(RECBOLE + "\n")
    return python


def run_sasrec(
    data: Path,
    split: str,
    out: Path,
    venv_path: Path,
    torch_spec: str,
    threads: int,
    dropouts: str = "0.2,0.5",
    users: int | None = None,
) -> dict:
    """Grid on valid, test of the best config; the runner's JSON (one entry per part and config).
    ``users``: fit on a seeded sample of that many users and score on them (``users.py``)."""
    python = ensure_venv(venv_path, torch_spec)
    cmd = [
        str(python),
        "-m",
        "benchmarks.peers.sasrec_runner",
        "--data",
        str(data),
        "--split",
        split,
        "--out",
        str(out),
        "--threads",
        str(threads),
        "--dropouts",
        dropouts,
    ]
    if users is not None:
        cmd += ["--users", str(users)]
    # `-m` from the repository root finds the runner in this checkout's benchmarks/
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=sys.stdout, stderr=sys.stderr)  # nosec B603
    return json.loads(out.read_text())

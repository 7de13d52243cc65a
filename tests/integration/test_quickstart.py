"""The README's quick start, run verbatim: its shell block in an empty directory that holds only links to
``.venv``, ``train_configs`` and ``serve_configs`` (as a fresh clone after ``make install`` would), then its
Python block there. ML-100K comes from the recbole wheel (pip), hence ``network``.

The shell block ends with ``ray stop``, which stops every Ray process on the machine (the suite's other Ray
tests start and stop their own)."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.network]

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def block(heading: str, language: str) -> str:
    section = README[README.index(heading) :]
    return re.search(rf"```{language}\n(.*?)```", section, flags=re.S).group(1)


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("quickstart")
    for name in (".venv", "train_configs", "serve_configs"):
        (work / name).symlink_to(ROOT / name)
    return work


def run(command: list[str], cwd: Path, timeout: int) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "VIRTUAL_ENV")}
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_the_shell_quick_start_serves_a_list(clone):
    script = block("## Quick start", "bash")
    assert len([line for line in script.splitlines() if line.strip()]) <= 10
    try:
        done = run(["bash", "-euo", "pipefail", "-c", script], clone, timeout=900)
    finally:
        run([str(clone / ".venv/bin/ray"), "stop", "--force"], clone, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    start = done.stdout.index('{"user_id"')
    answer, _ = json.JSONDecoder().raw_decode(done.stdout[start:])
    assert answer["strategy"] == "hybrid" and len(answer["items"]) == 5
    assert (clone / "bundles/ml100k/manifest.json").is_file() and (clone / "state/longtail.sqlite").is_file()


def test_the_python_quick_start_runs_as_written(clone):
    code = block("## Python", "python")
    done = run([str(clone / ".venv/bin/python"), "-c", code], clone, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()[-4:]
    version, tail_recall = lines[0].split()
    assert version and 0.0 <= float(tail_recall) <= 1.0
    known, unseen, similar = (ast.literal_eval(line) for line in lines[1:])
    assert len(known) == len(unseen) == 5 and len(similar) == 3
    assert "new-1" not in similar

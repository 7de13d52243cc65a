"""The `longtail` console script, run as a user would."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import write_recbole, write_tabular

LONGTAIL = str(Path(sys.executable).parent / "longtail")


def run(*args: str, ok: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([LONGTAIL, *args], capture_output=True, text=True, timeout=300)
    if ok:
        assert result.returncode == 0, result.stderr
    return result


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cli")
    write_tabular(root / "raw", "csv")
    out = root / "data"
    result = run(
        "data",
        "prepare",
        "--source",
        str(root / "raw"),
        "--format",
        "csv",
        "--out",
        str(out),
        "--map",
        "uid=user_id",
        "--map",
        "iid=item_id",
        "--map",
        "ts=timestamp",
        "--template",
        "{title}. {genres}",
        "--list-field",
        "genres",
    )
    summary = json.loads(result.stdout)
    assert summary["splits"]["warm"] == {"train": 14, "valid": 3, "test": 3}
    return out


@pytest.mark.parametrize("command", [[], ["data"], ["data", "prepare"], ["eval"], ["recommend"]])
def test_help_everywhere(command):
    result = run(*command, "--help")
    assert "Usage" in result.stdout


def test_eval_writes_json_markdown_and_plot(prepared, tmp_path):
    out = tmp_path / "report.json"
    result = run(
        "eval",
        "--model",
        "mostpop",
        "--model",
        "bpr",
        "--data",
        str(prepared),
        "--out",
        str(out),
        "baselines.bpr.epochs=2",
    )
    assert "recall@20" in result.stdout
    report = json.loads(out.read_text())
    assert [r["model"] for r in report["results"]] == ["mostpop", "bpr"]
    assert set(report["results"][0]["metrics"]) == set(report["metric_keys"])
    assert len(report["results"][0]["recall@20_by_popularity_decile"]) == 10
    assert out.with_suffix(".md").read_text().count("| mostpop |") == 1
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"


def test_recommend_excludes_seen_items(prepared, tmp_path):
    out = tmp_path / "recs.jsonl"
    run(
        "recommend",
        "--model",
        "itemknn",
        "--data",
        str(prepared),
        "--users",
        "all",
        "--k",
        "5",
        "--out",
        str(out),
    )
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert {r["user_id"] for r in lines} == {"u1", "u2", "u3", "u4"}
    u1 = next(r for r in lines if r["user_id"] == "u1")
    assert not set(u1["items"]) & {str(i) for i in range(1, 10)}  # train + valid of u1 excluded
    users_file = tmp_path / "users.txt"
    users_file.write_text("u2\nnobody\n")
    bad = run("recommend", "--data", str(prepared), "--users", str(users_file), "--out", str(out), ok=False)
    assert bad.returncode == 2 and "unknown user 'nobody'" in bad.stderr and "line 2" in bad.stderr


def test_bad_input_is_one_clear_line_not_a_traceback(tmp_path):
    raw = write_recbole(tmp_path / "raw")
    (raw / "toy.inter").write_text("user_id:token\titem_id:token\nu1\t1\n\t2\n")
    result = run(
        "data", "prepare", "--source", str(raw), "--format", "recbole", "--out", str(tmp_path / "d"), ok=False
    )
    assert result.returncode == 2
    assert "empty id" in result.stderr and "line 3" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "d").exists()
    result = run("eval", "--data", str(tmp_path), "--out", str(tmp_path / "r.json"), ok=False)
    assert result.returncode == 2 and "not a prepared dataset" in result.stderr
    result = run(
        "eval", "--model", "svd", "--data", str(tmp_path), "--out", str(tmp_path / "r.json"), ok=False
    )
    assert result.returncode == 2

"""The leave-one-out benchmark's peers: rows of a peers run join the table only from the same prepared data,
every user, the loo split; the results section says where they came from."""

from __future__ import annotations

import json

import pytest
from benchmarks.loo import PROTOCOL, missing_sasrec, peer_rows
from harness.docs import loo_section


def prepared(path, fingerprint: str):
    path.mkdir()
    (path / "manifest.json").write_text(json.dumps({"fingerprint": fingerprint}))
    return path


def peers_file(tmp_path, data, split: str = "loo", users: int | None = None):
    metrics = {"ndcg@10": 0.03, "hit@10": 0.05, "tail_recall@20": 0.08}
    row = {"params": {"k": 1}, "test": {"users": 7, "metrics": metrics}, "valid": {}}
    models = {"mostpop": row, "als": row, "text": row}
    path = tmp_path / f"peers-{split}.json"
    path.write_text(json.dumps({"data": str(data), "split": split, "users": users, "models": models}))
    return path


def test_peer_rows_of_the_same_data_join_as_masked_tuned_rows(tmp_path):
    data = prepared(tmp_path / "data", "f" * 64)
    copy = prepared(tmp_path / "copy", "f" * 64)  # the same import elsewhere: the same fingerprint
    rows = peer_rows(peers_file(tmp_path, copy), data)
    assert [r["model"] for r in rows] == ["ALS (implicit), tuned", "text profile (frozen encoder), tuned"]
    assert all(r["masked"] and r["users"] == 7 and r["metrics"]["ndcg@10"] == 0.03 for r in rows)
    assert missing_sasrec(rows) and not missing_sasrec([])


@pytest.mark.parametrize(
    ("fingerprint", "split", "users"),
    [("0" * 64, "loo", None), ("f" * 64, "warm", None), ("f" * 64, "loo", 5)],
)
def test_peer_rows_of_other_data_a_split_or_a_user_sample_are_refused(tmp_path, fingerprint, split, users):
    data = prepared(tmp_path / "data", "f" * 64)
    other = prepared(tmp_path / "other", fingerprint)
    with pytest.raises(SystemExit, match="expected every user of the loo split"):
        peer_rows(peers_file(tmp_path, other, split, users), data)


def test_the_section_names_the_peers_run_only_when_it_has_peers():
    result = {"model": "hybrid", "masked": True, "users": 9, "metrics": {"ndcg@10": 0.06}}
    loo = {
        "dataset": "toy",
        "command": "longtail train --data DATA --split loo",
        "train_s": 60.0,
        "machine": "2 cores",
        "results": [result],
        "published": [],
        "protocol": PROTOCOL,
    }
    assert "tuned" not in loo_section(loo)
    section = loo_section(loo | {"peers": "python -m benchmarks.peers --split loo"})
    assert "Rows marked tuned come from `python -m benchmarks.peers --split loo`" in section

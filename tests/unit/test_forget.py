"""Erased users leave the training data: `longtail data forget` and `longtail train --forget`."""

from __future__ import annotations

import pyarrow.compute as pc
import pytest

from longtail.cli_support import forgotten_dataset
from longtail.data import DataError, read_manifest, read_split, read_table
from longtail.data.forget import forget_users
from longtail.store import Event, open_store
from tests.conftest import write_clustered_dataset


def users_of(data_dir) -> set[str]:
    return set(pc.unique(read_table(data_dir, "interactions").column("user_id")).to_pylist())


def test_forget_writes_a_new_version_without_the_users(tmp_path):
    data = write_clustered_dataset(tmp_path / "data", n_users=20)
    before = read_manifest(data)
    manifest = forget_users(data, {"u1", "u4"}, tmp_path / "forgotten")
    assert users_of(tmp_path / "forgotten") == users_of(data) - {"u1", "u4"}
    for part in ("train", "valid", "test"):
        assert not {"u1", "u4"} & set(
            read_split(tmp_path / "forgotten", "warm").part(part).column("user_id").to_pylist()
        )
    assert manifest["import"]["forgotten_users"] == 2 and manifest["import"]["forgotten_interactions"] == 16
    assert "u1" not in manifest["source"] and manifest["fingerprint"] != before["fingerprint"]
    assert read_manifest(data) == before  # the source version is untouched
    with pytest.raises(DataError, match="source dataset"):
        forget_users(data, {"u1"}, data)


def test_train_forget_reads_a_stores_erased_users_or_a_file(tmp_path):
    data = write_clustered_dataset(tmp_path / "data", n_users=20)
    store = open_store(str(tmp_path / "state.sqlite"), create=True)
    store.add_events([Event("e1", "u3", "1", "view", 1.0)])
    store.erase_user("u3")
    store.erase_user("u5")
    out, gone = forgotten_dataset(data, str(tmp_path / "state.sqlite"), tmp_path / "work")
    assert gone == {"u3", "u5"} and users_of(out) == users_of(data) - {"u3", "u5"}
    again, _ = forgotten_dataset(data, str(tmp_path / "state.sqlite"), tmp_path / "work")
    assert again == out  # the same users: the same version, written once
    ids = tmp_path / "erased.txt"
    ids.write_text("# erased on request\nu7\n\n")
    out7, gone7 = forgotten_dataset(data, str(ids), tmp_path / "work")
    assert gone7 == {"u7"} and out7 != out and "u7" not in users_of(out7)


def test_a_reimported_dataset_is_forgotten_again_not_served_from_the_old_copy(tmp_path):
    """The forgotten copy is keyed by the source's fingerprint: new interactions imported into the same
    directory are in the next --forget run (the cache used to hand back last month's rows)."""
    store = str(tmp_path / "state.sqlite")
    open_store(store, create=True).erase_user("u3")
    data = write_clustered_dataset(tmp_path / "data", n_users=20)
    first, _ = forgotten_dataset(data, store, tmp_path / "work")
    write_clustered_dataset(tmp_path / "data", n_users=30)  # re-imported into the same path, more users
    second, _ = forgotten_dataset(data, store, tmp_path / "work")
    assert second != first and users_of(second) == users_of(data) - {"u3"} and len(users_of(second)) == 29
    other = write_clustered_dataset(tmp_path / "elsewhere" / "data", n_users=10)  # same directory name
    third, _ = forgotten_dataset(other, store, tmp_path / "work")
    assert third not in (first, second) and len(users_of(third)) == 9


def _cli(*args: str) -> str:
    from typer.testing import CliRunner

    from longtail.cli import app

    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_batch_recommend_and_eval_leave_erased_users_out(tmp_path, tiny_bundle):
    """`longtail recommend` and `longtail eval` with --forget STORE: an erased user gets no line, not even
    with --explain, and evaluation reads no row of theirs."""
    import json

    data = write_clustered_dataset(tmp_path / "data")
    store = str(tmp_path / "state.sqlite")
    open_store(store, create=True).erase_user("u4")
    out = tmp_path / "recs.jsonl"
    _cli(
        "recommend",
        "--bundle",
        str(tiny_bundle),
        "--data",
        str(data),
        "--users",
        "all",
        "--k",
        "5",
        "--explain",
        "--no-ray",
        "--forget",
        store,
        "--out",
        str(out),
    )
    users = [json.loads(line)["user_id"] for line in out.read_text().splitlines()]
    assert "u4" not in users and len(users) == 59
    ids = tmp_path / "ids.txt"
    ids.write_text("u4\nu5\n")
    _cli(
        "recommend",
        "--bundle",
        str(tiny_bundle),
        "--data",
        str(data),
        "--users",
        str(ids),
        "--forget",
        store,
        "--out",
        str(out),
    )
    assert [json.loads(line)["user_id"] for line in out.read_text().splitlines()] == ["u5"]
    report = tmp_path / "r.json"
    _cli("eval", "--data", str(data), "--model", "mostpop", "--forget", store, "--out", str(report))
    forgotten = json.loads(report.read_text())
    _cli("eval", "--data", str(data), "--model", "mostpop", "--out", str(report))
    everyone = json.loads(report.read_text())
    assert forgotten["results"][0]["users"] == everyone["results"][0]["users"] - 1, (forgotten, everyone)

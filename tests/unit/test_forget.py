"""Erased users leave the training data: `longtail data forget` and `longtail train --forget`."""

from __future__ import annotations

import pyarrow.compute as pc
import pytest

from longtail.cli_support import forgotten_dataset
from longtail.data import DataError, read_manifest, read_split, read_table
from longtail.data.forget import forget_users
from longtail.serve.store import Event, open_store
from tests.conftest import write_clustered_dataset


def users_of(data_dir) -> set[str]:
    return set(pc.unique(read_table(data_dir, "interactions").column("user_id")).to_pylist())


def test_forget_writes_a_new_version_without_the_users(tmp_path):
    data = write_clustered_dataset(tmp_path / "data", n_users=20)
    before = read_manifest(data)
    manifest = forget_users(data, {"u1", "u4"}, tmp_path / "forgotten")
    assert users_of(tmp_path / "forgotten") == users_of(data) - {"u1", "u4"}
    for part in ("train", "valid", "test"):
        assert not {"u1", "u4"} & set(read_split(tmp_path / "forgotten", "warm").part(part).column("user_id").to_pylist())
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
    assert gone == 2 and users_of(out) == users_of(data) - {"u3", "u5"}
    again, _ = forgotten_dataset(data, str(tmp_path / "state.sqlite"), tmp_path / "work")
    assert again == out  # the same users: the same version, written once
    ids = tmp_path / "erased.txt"
    ids.write_text("# erased on request\nu7\n\n")
    out7, gone7 = forgotten_dataset(data, str(ids), tmp_path / "work")
    assert gone7 == 1 and out7 != out and "u7" not in users_of(out7)

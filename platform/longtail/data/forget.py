"""Forget users: a new dataset version without their interactions (the erasure path into training).

``forget_users`` reads a prepared dataset, drops every interaction of the given users (from the full log and
from a source-given split), and writes a new dataset with freshly made splits; the old one is left as it
is. The new manifest counts the users forgotten and names the source dataset's fingerprint, never the ids.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from longtail.data.dataset import Dataset, read_manifest, read_split, read_table, write_dataset
from longtail.data.errors import DataError
from longtail.data.splits import SplitTables


def read_user_ids(path: Path) -> set[str]:
    """User ids from a text file, one per line (blank lines and ``#`` comments ignored)."""
    if not Path(path).is_file():
        raise DataError(str(path), "no such file", expected="a text file with one user id per line")
    lines = (line.strip() for line in Path(path).read_text().splitlines())
    return {line for line in lines if line and not line.startswith("#")}


def users_digest(users: set[str]) -> str:
    return hashlib.sha256("\n".join(sorted(users)).encode()).hexdigest()[:12]


def forgotten_source(fingerprint: str, users: set[str]) -> str:
    """The ``source`` a forgotten dataset's manifest records: the source dataset's fingerprint and the users'
    digest (never the ids)."""
    return f"forget({fingerprint[:16]}, {len(users)} users, {users_digest(users)})"


def _without(table: pa.Table, users: pa.Array) -> pa.Table:
    return table.filter(pc.invert(pc.is_in(table.column("user_id"), value_set=users)))


def forget_users(data_dir: Path, users: set[str], out: Path) -> dict:
    """Write ``out``: the dataset at ``data_dir`` without ``users``' interactions; returns its manifest."""
    manifest = read_manifest(data_dir)
    if Path(out).resolve() == Path(data_dir).resolve():
        raise DataError(
            str(out), "the output is the source dataset", expected="a new directory (a new version)"
        )
    gone = pa.array(sorted(users), pa.string())
    interactions = read_table(data_dir, "interactions")
    if interactions is None:
        raise DataError(
            str(data_dir), "no interactions.parquet", expected="a dataset written by `longtail data prepare`"
        )
    given = None
    if "given" in manifest["splits"]:
        parts = read_split(data_dir, "given")
        given = SplitTables(*(_without(parts.part(p), gone) for p in ("train", "valid", "test")))
    kept = _without(interactions, gone)
    dataset = Dataset(
        read_table(data_dir, "items"),
        kept,
        read_table(data_dir, "kg"),
        read_table(data_dir, "kg_link"),
        given,
        stats={
            **manifest.get("import", {}),
            "forgotten_users": len(users),
            "forgotten_interactions": interactions.num_rows - kept.num_rows,
        },
    )
    return write_dataset(
        dataset,
        out,
        source=forgotten_source(manifest["fingerprint"], users),
        seed=int(manifest.get("cold_seed", 2024)),
    )

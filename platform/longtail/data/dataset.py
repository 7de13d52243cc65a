"""A prepared dataset: canonical Parquet tables, the protocol's splits and a manifest, written atomically.

Layout of a dataset directory::

    items.parquet  interactions.parquet  [kg.parquet  kg_link.parquet]  manifest.json
    splits/{warm,cold[,given]}/{train,valid,test}.parquet
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from longtail.data.errors import DataError
from longtail.data.ids import encode, naturally_sorted_unique
from longtail.data.splits import PARTS, SplitTables, cold_items, cold_split, loo_split, warm_split
from longtail.files import file_sha256

FORMAT_VERSION = 1
UnknownItems = Literal["error", "drop"]
TABLES = ("items", "interactions", "kg", "kg_link")


@dataclass
class Dataset:
    """Canonical tables of one dataset (see ``longtail.data.schema``) plus import statistics."""

    items: pa.Table
    interactions: pa.Table
    kg: pa.Table | None = None
    kg_link: pa.Table | None = None
    given: SplitTables | None = None
    stats: dict[str, int | str] = field(default_factory=dict)

    def catalog(self) -> np.ndarray:
        """Every item id of the item table or the interactions, in natural order."""
        return catalog_of(self.items, self.interactions)


def catalog_of(items: pa.Table, interactions: pa.Table) -> np.ndarray:
    """Distinct item ids of both tables in natural order."""
    ids = np.concatenate(
        [
            items.column("item_id").to_numpy(zero_copy_only=False),
            interactions.column("item_id").to_numpy(zero_copy_only=False),
        ]
    )
    return naturally_sorted_unique(ids)


def check_unique_items(items: pa.Table, file: str) -> None:
    """Refuse an item table with a repeated ``item_id``, naming both rows."""
    ids = items.column("item_id").to_numpy(zero_copy_only=False)
    _, first, counts = np.unique(np.asarray(ids, dtype=str), return_index=True, return_counts=True)
    if (counts > 1).any():
        dup_first = int(first[np.argmax(counts > 1)])
        dup_id = ids[dup_first]
        rows = np.flatnonzero(np.asarray(ids, dtype=str) == dup_id)[:2]
        raise DataError(
            file,
            f"duplicate item_id {dup_id!r}",
            where=f"rows {rows[0] + 1} and {rows[1] + 1}",
            expected="each item once in the item table",
        )


def apply_unknown_items(
    interactions: pa.Table, items: pa.Table, policy: UnknownItems, file: str
) -> tuple[pa.Table, int]:
    """Interactions whose item is absent from a non-empty item table: error, or drop and count."""
    if items.num_rows == 0:
        return interactions, 0
    known = pc.is_in(interactions.column("item_id"), value_set=items.column("item_id"))
    n_unknown = interactions.num_rows - pc.sum(known.cast(pa.int64())).as_py()
    if n_unknown == 0:
        return interactions, 0
    if policy == "error":
        row = pc.index(known, False).as_py()
        item = interactions.column("item_id")[row].as_py()
        raise DataError(
            file,
            f"interaction with unknown item {item!r} ({n_unknown} such rows)",
            where=f"row {row + 1}",
            expected="item ids present in the item table (or --unknown-items drop)",
        )
    return interactions.filter(known), n_unknown


def keep_first_pairs(interactions: pa.Table) -> tuple[pa.Table, int]:
    """One row per (user, item): the earliest by timestamp, then file order. Returns rows dropped."""
    n = interactions.num_rows
    users = interactions.column("user_id").to_numpy(zero_copy_only=False)
    items = interactions.column("item_id").to_numpy(zero_copy_only=False)
    user_code = encode(users, np.unique(np.asarray(users, dtype=str)))
    item_vocab = np.unique(np.asarray(items, dtype=str))
    key = user_code * len(item_vocab) + encode(items, item_vocab)
    order = np.lexsort((np.arange(n), interactions.column("timestamp").to_numpy(), key))
    first = order[np.r_[True, key[order][1:] != key[order][:-1]]]
    keep = np.sort(first)
    if len(keep) == n:
        return interactions, 0
    return interactions.take(pa.array(keep)), n - len(keep)


def make_splits(dataset: Dataset, seed: int) -> dict[str, SplitTables]:
    """The warm, cold and leave-one-out splits, plus ``given`` when the source came split."""
    catalog = dataset.catalog()
    warm = warm_split(dataset.interactions, catalog)
    splits = {
        "warm": warm,
        "cold": cold_split(warm, cold_items(dataset.interactions, catalog, seed)),
        "loo": loo_split(dataset.interactions),
    }
    if dataset.given is not None:
        splits["given"] = dataset.given
    return splits


def write_dataset(dataset: Dataset, out: Path, *, source: str, seed: int = 2024) -> dict:
    """Write tables, splits and manifest into ``out`` atomically; returns the manifest.

    Everything goes to a temporary sibling directory first, which replaces ``out`` by rename only once
    complete, so a failure never leaves a half-written dataset or damages the previous one.
    """
    out = Path(out)
    if out.exists() and not (out / "manifest.json").is_file():
        raise DataError(
            str(out), "output exists and is not a longtail dataset", expected="a new path or a dataset"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    splits = make_splits(dataset, seed)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        files: dict[str, pa.Table] = {name: getattr(dataset, name) for name in TABLES}
        for split_name, tables in splits.items():
            for part in PARTS:
                files[f"splits/{split_name}/{part}"] = tables.part(part)
        hashes = {}
        for rel, table in files.items():
            if table is None:
                continue
            path = tmp / f"{rel}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(table, path)
            hashes[f"{rel}.parquet"] = file_sha256(path)
        manifest = {
            "format_version": FORMAT_VERSION,
            "source": source,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "rows": {n: getattr(dataset, n).num_rows for n in TABLES if getattr(dataset, n) is not None},
            "catalog_size": len(dataset.catalog()),
            "users": len(pc.unique(dataset.interactions.column("user_id"))),
            "splits": {name: tables.counts() for name, tables in splits.items()},
            "cold_seed": seed,
            "import": dataset.stats,
            "files": hashes,
            "fingerprint": hashlib.sha256(json.dumps(hashes, sort_keys=True).encode()).hexdigest(),
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
        _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def _replace_dir(new: Path, target: Path) -> None:
    if not target.exists():
        os.replace(new, target)
        return
    if not (target / "manifest.json").is_file():
        raise DataError(
            str(target), "output exists and is not a longtail dataset", expected="a new or dataset dir"
        )
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    os.replace(target, old)
    os.replace(new, target)
    shutil.rmtree(old, ignore_errors=True)


def read_manifest(data_dir: Path) -> dict:
    """The manifest of a prepared dataset, with a clear error when the directory is not one."""
    path = Path(data_dir) / "manifest.json"
    if not path.is_file():
        raise DataError(
            str(data_dir),
            "not a prepared dataset (no manifest.json)",
            expected="a directory made by `longtail data prepare`",
        )
    return json.loads(path.read_text())


def read_table(data_dir: Path, name: str) -> pa.Table | None:
    """One canonical table of a prepared dataset (``None`` when it has none)."""
    path = Path(data_dir) / f"{name}.parquet"
    return pq.read_table(path) if path.is_file() else None


def read_split(data_dir: Path, split: str) -> SplitTables:
    """The train, valid and test tables of split ``split`` of a prepared dataset."""
    manifest = read_manifest(data_dir)
    if split not in manifest["splits"]:
        older = " (prepared before 0.2: `longtail data prepare` again writes it)" if split == "loo" else ""
        raise DataError(
            str(data_dir), f"no split {split!r}{older}", expected=f"one of {sorted(manifest['splits'])}"
        )
    base = Path(data_dir) / "splits" / split
    return SplitTables(*(pq.read_table(base / f"{p}.parquet") for p in PARTS))

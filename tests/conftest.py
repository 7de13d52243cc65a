"""Shared fixtures: small raw datasets written as real files in every supported format."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

# 4 users; u1 has 10 interactions, u2 5, u3 2 (stays in train), u4 3. Items 1..12; item 12 untouched.
INTERACTIONS = [
    *[("u1", str(i), 100 + i) for i in range(1, 11)],
    ("u2", "3", 50), ("u2", "1", 50), ("u2", "10", 50), ("u2", "2", 60), ("u2", "4", 70),
    ("u3", "5", 10), ("u3", "6", 20),
    ("u4", "7", 5), ("u4", "8", 6), ("u4", "9", 7),
]  # fmt: skip
ITEMS = [(str(i), f"Movie {i}", str(1990 + i), "Drama Comedy" if i % 2 else "Action") for i in range(1, 13)]


def write_recbole(directory: Path, name: str = "toy") -> Path:
    """A RecBole atomic dataset: .inter, .item, .kg, .link."""
    directory.mkdir(parents=True, exist_ok=True)
    inter = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    inter += [f"{u}\t{i}\t4\t{t}" for u, i, t in INTERACTIONS]
    (directory / f"{name}.inter").write_text("\n".join(inter) + "\n")
    item = ["item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq"]
    item += ["\t".join(row) for row in ITEMS]
    (directory / f"{name}.item").write_text("\n".join(item) + "\n")
    kg = ["head_id:token\trelation_id:token\ttail_id:token", "m.1\tfilm.actor\tm.99", "m.2\tfilm.actor\tm.99"]
    (directory / f"{name}.kg").write_text("\n".join(kg) + "\n")
    link = ["item_id:token\tentity_id:token", "1\tm.1", "2\tm.2"]
    (directory / f"{name}.link").write_text("\n".join(link) + "\n")
    return directory


def write_tabular(directory: Path, fmt: str) -> Path:
    """``interactions`` and ``items`` files in csv, parquet or jsonl with non-canonical column names."""
    directory.mkdir(parents=True, exist_ok=True)
    inter = {"uid": [u for u, _, _ in INTERACTIONS], "iid": [i for _, i, _ in INTERACTIONS],
             "ts": [float(t) for _, _, t in INTERACTIONS]}  # fmt: skip
    items = {"iid": [r[0] for r in ITEMS], "title": [r[1] for r in ITEMS], "genres": [r[3] for r in ITEMS]}
    for name, cols in (("interactions", inter), ("items", items)):
        path = directory / f"{name}.{fmt}"
        if fmt == "csv":
            keys = list(cols)
            lines = [",".join(keys)] + [
                ",".join(str(v) for v in row) for row in zip(*cols.values(), strict=True)
            ]
            path.write_text("\n".join(lines) + "\n")
        elif fmt == "parquet":
            pq.write_table(pa.table(cols), path)
        else:
            rows = [dict(zip(cols, row, strict=True)) for row in zip(*cols.values(), strict=True)]
            path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return directory


@pytest.fixture
def recbole_dir(tmp_path: Path) -> Path:
    return write_recbole(tmp_path / "raw")

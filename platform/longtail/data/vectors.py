"""Item vectors on disk: ``item_id`` plus a fixed-size list of float32 per row."""

from __future__ import annotations

import numpy as np
import pyarrow as pa


def vectors_table(item_ids: np.ndarray, vectors: np.ndarray) -> pa.Table:
    """``item_id`` + ``vector`` (fixed-size list of float32) — the on-disk form of item vectors."""
    flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).ravel())
    return pa.table(
        {
            "item_id": pa.array(item_ids, pa.string()),
            "vector": pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1]),
        }
    )


def vectors_of(table: pa.Table) -> np.ndarray:
    """(n, d) float32 matrix from a ``vector`` column."""
    column = table.column("vector").combine_chunks()
    dim = column.type.list_size
    return column.values.to_numpy(zero_copy_only=False).reshape(-1, dim).astype(np.float32)

"""Index-encoded splits for models: items and users become positions in naturally ordered vocabularies."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
from scipy import sparse

from longtail.data.dataset import catalog_of, read_split, read_table
from longtail.data.ids import encode, naturally_sorted_unique
from longtail.data.splits import PARTS, SplitTables


@dataclass(frozen=True)
class Interactions:
    """Encoded interactions sorted by (user, timestamp): parallel arrays of equal length."""

    users: np.ndarray  # (n,) int64 user index
    items: np.ndarray  # (n,) int64 catalog index
    timestamps: np.ndarray  # (n,) float64 seconds

    def __len__(self) -> int:
        return len(self.users)

    @staticmethod
    def concat(parts: Sequence[Interactions]) -> Interactions:
        """Parts joined and re-sorted by (user, timestamp); ties keep part order."""
        users = np.concatenate([p.users for p in parts])
        items = np.concatenate([p.items for p in parts])
        stamps = np.concatenate([p.timestamps for p in parts])
        order = np.lexsort((np.arange(len(users)), stamps, users))
        return Interactions(users[order], items[order], stamps[order])


@dataclass(frozen=True)
class Histories:
    """Each user's items in time order, as a ragged array: user u owns ``items[indptr[u]:indptr[u+1]]``."""

    indptr: np.ndarray  # (n_users + 1,) int64
    items: np.ndarray  # (nnz,) int64, oldest first within a user

    @staticmethod
    def from_interactions(inter: Interactions, n_users: int) -> Histories:
        """Histories of ``n_users`` users from interactions sorted by (user, time)."""
        counts = np.bincount(inter.users, minlength=n_users)
        return Histories(np.r_[0, np.cumsum(counts)].astype(np.int64), inter.items.astype(np.int64))

    @property
    def n_users(self) -> int:
        return len(self.indptr) - 1

    def lengths(self) -> np.ndarray:
        """History length per user, (n_users,)."""
        return np.diff(self.indptr)

    def of(self, user: int) -> np.ndarray:
        """One user's items, oldest first."""
        return self.items[self.indptr[user] : self.indptr[user + 1]]

    def rows(self, users: np.ndarray) -> Histories:
        """The histories of ``users`` only, in that order."""
        users = np.asarray(users, dtype=np.int64)
        starts, ends = self.indptr[users], self.indptr[users + 1]
        lengths = ends - starts
        take = np.repeat(starts - np.r_[0, np.cumsum(lengths)[:-1]], lengths) + np.arange(lengths.sum())
        return Histories(np.r_[0, np.cumsum(lengths)].astype(np.int64), self.items[take])

    def to_csr(self, n_items: int) -> sparse.csr_matrix:
        """Binary user × item matrix (float32)."""
        data = np.ones(len(self.items), dtype=np.float32)
        matrix = sparse.csr_matrix((data, self.items, self.indptr), shape=(self.n_users, n_items))
        matrix.sum_duplicates()
        matrix.data[:] = 1.0
        return matrix

    def padded(self, max_len: int) -> tuple[np.ndarray, np.ndarray]:
        """The last ``max_len`` items per user, left-aligned: items (b, L) with -1 padding, mask (b, L)."""
        lengths = np.minimum(self.lengths(), max_len)
        out = np.full((self.n_users, max_len), -1, dtype=np.int64)
        mask = np.arange(max_len)[None, :] < lengths[:, None]  # (b, L)
        rows = np.repeat(np.arange(self.n_users), lengths)
        cols = np.arange(lengths.sum()) - np.repeat(np.r_[0, np.cumsum(lengths)[:-1]], lengths)
        src = np.repeat(self.indptr[1:] - lengths, lengths) + cols
        out[rows, cols] = self.items[src]
        return out, mask


@dataclass(frozen=True)
class SplitData:
    """A split with ids encoded: the catalog and users in natural order, parts as ``Interactions``."""

    item_ids: np.ndarray  # (n_items,) object str, natural order: the catalog
    user_ids: np.ndarray  # (n_users,) object str, natural order
    train: Interactions
    valid: Interactions
    test: Interactions
    item_text: np.ndarray | None = None  # (n_items,) object str

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    def part(self, name: str) -> Interactions:
        """Encoded interactions of part ``name``."""
        if name not in PARTS:
            raise ValueError(f"unknown split part {name!r}; expected one of {PARTS}")
        return getattr(self, name)

    def train_counts(self) -> np.ndarray:
        """Train interactions per catalog item, (n_items,)."""
        return np.bincount(self.train.items, minlength=self.n_items)

    def histories(self, parts: Sequence[str] = ("train",)) -> Histories:
        """Every user's history made of the given parts, in time order."""
        return Histories.from_interactions(Interactions.concat([self.part(p) for p in parts]), self.n_users)


def encode_split(tables: SplitTables, items: pa.Table) -> SplitData:
    """Encode one split against the catalog of ``items`` plus every item in the split."""
    all_parts = pa.concat_tables([tables.train, tables.valid, tables.test])
    catalog = catalog_of(items, all_parts)
    users = naturally_sorted_unique(all_parts.column("user_id").to_numpy(zero_copy_only=False))

    def enc(table: pa.Table) -> Interactions:
        u = encode(table.column("user_id").to_numpy(zero_copy_only=False), users)
        i = encode(table.column("item_id").to_numpy(zero_copy_only=False), catalog)
        t = table.column("timestamp").to_numpy().astype(np.float64)
        order = np.lexsort((np.arange(len(u)), t, u))
        return Interactions(u[order], i[order], t[order])

    text = None
    if "text" in items.column_names:
        by_id = dict(zip(items.column("item_id").to_pylist(), items.column("text").to_pylist(), strict=True))
        text = np.array([by_id.get(i, "") for i in catalog], dtype=object)
    return SplitData(catalog, users, enc(tables.train), enc(tables.valid), enc(tables.test), text)


def load_split_data(data_dir: Path, split: str = "warm") -> SplitData:
    """Read and encode split ``split`` of a prepared dataset directory."""
    return encode_split(read_split(data_dir, split), read_table(data_dir, "items"))

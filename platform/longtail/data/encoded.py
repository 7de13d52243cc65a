"""Index-encoded splits for models: items and users become positions in naturally ordered vocabularies."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
from scipy import sparse

from longtail.config import EventsConfig
from longtail.data.dataset import catalog_of, read_split, read_table
from longtail.data.events import event_strengths, uniform
from longtail.data.ids import encode, naturally_sorted_unique
from longtail.data.splits import PARTS, SplitTables


@dataclass(frozen=True)
class Interactions:
    """Encoded interactions sorted by (user, timestamp): parallel arrays of equal length."""

    users: np.ndarray  # (n,) int64 user index
    items: np.ndarray  # (n,) int64 catalog index
    timestamps: np.ndarray  # (n,) float64 seconds
    strengths: np.ndarray | None = None  # (n,) float32 event strengths; None: every event counts 1

    def __len__(self) -> int:
        return len(self.users)

    @staticmethod
    def concat(parts: Sequence[Interactions]) -> Interactions:
        """Parts joined and re-sorted by (user, timestamp); ties keep part order."""
        users = np.concatenate([p.users for p in parts])
        items = np.concatenate([p.items for p in parts])
        stamps = np.concatenate([p.timestamps for p in parts])
        order = np.lexsort((np.arange(len(users)), stamps, users))
        strengths = None
        if any(p.strengths is not None for p in parts):
            strengths = np.concatenate(
                [np.ones(len(p), np.float32) if p.strengths is None else p.strengths for p in parts]
            )[order]
        return Interactions(users[order], items[order], stamps[order], strengths)


@dataclass(frozen=True)
class Histories:
    """Each user's items in time order, as a ragged array: user u owns ``items[indptr[u]:indptr[u+1]]``."""

    indptr: np.ndarray  # (n_users + 1,) int64
    items: np.ndarray  # (nnz,) int64, oldest first within a user
    strengths: np.ndarray | None = None  # (nnz,) float32 event strengths; None: every event counts 1

    @staticmethod
    def from_interactions(inter: Interactions, n_users: int) -> Histories:
        """Histories of ``n_users`` users from interactions sorted by (user, time)."""
        counts = np.bincount(inter.users, minlength=n_users)
        return Histories(
            np.r_[0, np.cumsum(counts)].astype(np.int64), inter.items.astype(np.int64), inter.strengths
        )

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
        strengths = None if self.strengths is None else self.strengths[take]
        return Histories(np.r_[0, np.cumsum(lengths)].astype(np.int64), self.items[take], strengths)

    def to_csr(self, n_items: int) -> sparse.csr_matrix:
        """Binary user × item matrix (float32)."""
        data = np.ones(len(self.items), dtype=np.float32)
        matrix = sparse.csr_matrix((data, self.items, self.indptr), shape=(self.n_users, n_items))
        matrix.sum_duplicates()
        matrix.data[:] = 1.0
        return matrix

    def padded(self, max_len: int) -> tuple[np.ndarray, np.ndarray]:
        """The last ``max_len`` items per user, left-aligned: items (b, L) with -1 padding, mask (b, L)."""
        rows, cols, src, mask = self._recent(max_len)
        out = np.full((self.n_users, max_len), -1, dtype=np.int64)
        out[rows, cols] = self.items[src]
        return out, mask

    def padded_strengths(self, max_len: int) -> np.ndarray | None:
        """Strengths of ``padded``'s items (b, L), 1 for padding; None when every event counts 1."""
        if self.strengths is None:
            return None
        rows, cols, src, _ = self._recent(max_len)
        out = np.ones((self.n_users, max_len), dtype=np.float32)
        out[rows, cols] = self.strengths[src]
        return out

    def _recent(self, max_len: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(rows, cols, source positions) of the last ``max_len`` items per user, and the (b, L) mask."""
        lengths = np.minimum(self.lengths(), max_len)
        mask = np.arange(max_len)[None, :] < lengths[:, None]  # (b, L)
        rows = np.repeat(np.arange(self.n_users), lengths)
        cols = np.arange(lengths.sum()) - np.repeat(np.r_[0, np.cumsum(lengths)[:-1]], lengths)
        src = np.repeat(self.indptr[1:] - lengths, lengths) + cols
        return rows, cols, src, mask


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

    def recent_counts(self, window: float) -> np.ndarray:
        """Train interactions per catalog item among the newest ``window`` share of train (by timestamp;
        every interaction at the cut counts), (n_items,): what is popular now rather than overall."""
        if not 0.0 < window <= 1.0:
            raise ValueError(f"window must be in (0, 1], got {window}")
        stamps = np.asarray(self.train.timestamps, dtype=np.float64)
        if len(stamps) == 0:
            return np.zeros(self.n_items, dtype=np.int64)
        cut = np.quantile(stamps, 1.0 - window, method="higher")
        return np.bincount(self.train.items[stamps >= cut], minlength=self.n_items)

    def histories(self, parts: Sequence[str] = ("train",)) -> Histories:
        """Every user's history made of the given parts, in time order."""
        return Histories.from_interactions(Interactions.concat([self.part(p) for p in parts]), self.n_users)


def encode_split(tables: SplitTables, items: pa.Table, events: EventsConfig | None = None) -> SplitData:
    """Encode one split against the catalog of ``items`` plus every item in the split; with ``events``, each
    interaction's strength from its ``event_type`` and ``weight`` (kept only where strengths differ)."""
    all_parts = pa.concat_tables([tables.train, tables.valid, tables.test])
    catalog = catalog_of(items, all_parts)
    users = naturally_sorted_unique(all_parts.column("user_id").to_numpy(zero_copy_only=False))

    parts = (tables.train, tables.valid, tables.test)
    strengths: list[np.ndarray | None] = [None, None, None]
    if events is not None:
        computed = [table_strengths(t, events) for t in parts]
        if not uniform(np.concatenate(computed)):
            strengths = list(computed)

    def enc(table: pa.Table, s: np.ndarray | None) -> Interactions:
        u = encode(table.column("user_id").to_numpy(zero_copy_only=False), users)
        i = encode(table.column("item_id").to_numpy(zero_copy_only=False), catalog)
        t = table.column("timestamp").to_numpy().astype(np.float64)
        order = np.lexsort((np.arange(len(u)), t, u))
        return Interactions(u[order], i[order], t[order], None if s is None else s[order])

    text = None
    if "text" in items.column_names:
        by_id = dict(zip(items.column("item_id").to_pylist(), items.column("text").to_pylist(), strict=True))
        text = np.array([by_id.get(i, "") for i in catalog], dtype=object)
    train, valid, test = (enc(t, st) for t, st in zip(parts, strengths, strict=True))
    return SplitData(catalog, users, train, valid, test, text)


def table_strengths(table: pa.Table, events: EventsConfig) -> np.ndarray:
    """(rows,) strengths of an interactions table (``event_type``, ``weight`` columns; absent ones count
    1)."""
    n = table.num_rows
    types = table.column("event_type").to_pylist() if "event_type" in table.column_names else [""] * n
    weights = table.column("weight").to_pylist() if "weight" in table.column_names else [None] * n
    return event_strengths(types, weights, events)


def load_split_data(data_dir: Path, split: str = "warm", events: EventsConfig | None = None) -> SplitData:
    """Read and encode split ``split`` of a prepared dataset directory; ``events``: compute event
    strengths."""
    return encode_split(read_split(data_dir, split), read_table(data_dir, "items"), events)

"""Maximum-inner-product search over the retriever's item vectors: exact (a matmul) or FAISS (IVF, HNSW).

``exact`` is a torch matmul + top-k over every item — the right choice while a catalog is small enough
for one matrix product per request (the default below ``retrieval.exact_below`` items). ``ivf``
(FAISS ``IVF{nlist},Flat``, inner product, nlist = 4·√n by default) and ``hnsw`` (``HNSW{M}``) search a
large catalog approximately. Every kind excludes given items (each user's history) exactly and can be
restricted to a subset of the catalog (the tail channel) without a second copy of the vectors. A FAISS
index round-trips through FAISS's own binary format (``to_bytes``), which the bundle stores and hashes.
"""

from __future__ import annotations

import math

import faiss
import numpy as np
import torch
from scipy import sparse

from longtail.eval.metrics import hit_matrix
from longtail.topk import top_k_torch

KINDS = ("exact", "ivf", "ivf_sq8", "hnsw")


def choose_kind(kind: str, n_items: int, exact_below: int) -> str:
    """``kind``, with ``auto`` resolved by catalog size."""
    if kind == "auto":
        return "exact" if n_items < exact_below else "ivf_sq8"
    if kind not in KINDS:
        raise ValueError(f"unknown index kind {kind!r}; expected auto or one of {KINDS}")
    return kind


class ItemIndex:
    """Top-k item ids by inner product with query vectors, with exclusions and an optional allowed subset."""

    def __init__(
        self,
        kind: str,
        vectors: np.ndarray | None = None,
        faiss_index=None,
        nprobe: int = 64,
        ef_search: int = 256,
    ) -> None:
        self.kind, self.nprobe, self.ef_search = kind, nprobe, ef_search
        self.vectors = (
            None if vectors is None else torch.from_numpy(np.ascontiguousarray(vectors, np.float32))
        )
        self.faiss = faiss_index

    @classmethod
    def build(
        cls,
        vectors: np.ndarray,
        kind: str,
        nlist: int | None = None,
        nprobe: int = 64,
        hnsw_m: int = 32,
        ef_search: int = 256,
        seed: int = 0,
    ) -> ItemIndex:
        """An index over ``vectors`` (n, D). FAISS kinds train on a seeded sample (IVF) and add every row."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if kind == "exact":
            return cls("exact", vectors.copy())
        n, dim = vectors.shape
        if kind in ("ivf", "ivf_sq8"):
            lists = max(1, min(nlist or int(4 * math.sqrt(n)), n // 39 or 1))
            codes = "SQ8" if kind == "ivf_sq8" else "Flat"  # 8-bit scalar codes: a quarter of the memory
            index = faiss.index_factory(dim, f"IVF{lists},{codes}", faiss.METRIC_INNER_PRODUCT)
            index.cp.seed = seed  # type: ignore[attr-defined]  # FAISS's stubs lack the IVF clustering params
            sample = vectors[np.random.default_rng(seed).choice(n, min(n, 64 * lists), replace=False)]
            index.train(sample)
        elif kind == "hnsw":
            index = faiss.index_factory(dim, f"HNSW{hnsw_m},Flat", faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = max(40, 2 * hnsw_m)  # type: ignore[attr-defined]
        else:
            raise ValueError(f"unknown index kind {kind!r}; expected one of {KINDS}")
        index.add(vectors)
        return cls(kind, faiss_index=index, nprobe=nprobe, ef_search=ef_search)

    @classmethod
    def from_bytes(cls, kind: str, data: bytes, nprobe: int = 64, ef_search: int = 256) -> ItemIndex:
        """A FAISS index read from its own binary format."""
        return cls(
            kind,
            faiss_index=faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8)),
            nprobe=nprobe,
            ef_search=ef_search,
        )

    def to_bytes(self) -> bytes:
        """FAISS's binary serialisation of the index (FAISS kinds only)."""
        if self.faiss is None:
            raise ValueError("an exact index has no FAISS form: its vectors are the retriever's item vectors")
        return faiss.serialize_index(self.faiss).tobytes()

    def _vectors(self) -> torch.Tensor:
        """The item vectors of an exact index (a FAISS one keeps its own)."""
        if self.vectors is None:
            raise ValueError(f"a {self.kind} index holds no raw vectors")
        return self.vectors

    @property
    def n_items(self) -> int:
        return int(self.faiss.ntotal) if self.faiss is not None else len(self._vectors())

    def add(self, vectors: np.ndarray) -> None:
        """Append items (m, D); they get the next ids."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if self.faiss is not None:
            self.faiss.add(vectors)
        else:
            self.vectors = torch.cat([self._vectors(), torch.from_numpy(vectors)])

    def search(
        self,
        queries: np.ndarray,
        k: int,
        exclude: sparse.csr_matrix | None = None,
        allowed: np.ndarray | None = None,
    ) -> np.ndarray:
        """(b, k) item ids by inner product with ``queries`` (b, D), best first, -1 padded.

        ``exclude`` (b, n) marks each row's items that may not be returned; ``allowed`` (n,) bool restricts
        every row to a subset of the catalog.
        """
        return self.search_many(queries, [(k, allowed)], exclude)[0]

    def search_many(
        self,
        queries: np.ndarray,
        wanted: list[tuple[int, np.ndarray | None]],
        exclude: sparse.csr_matrix | None = None,
        ordered: bool = True,
    ) -> list[np.ndarray]:
        """``search`` for several (k, allowed) pairs over the same queries: the exact kind scores the catalog
        once for all of them. ``ordered=False``: each row's ids in any order (real ids first, then -1), which
        saves the exact kind a sort."""
        b, n = len(queries), self.n_items
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if self.faiss is None and b and n:
            return self._exact(queries, [(min(k, n), allowed) for k, allowed in wanted], exclude, ordered)
        return [self._search(queries, min(k, n), exclude, allowed) for k, allowed in wanted]

    def _search(
        self, queries: np.ndarray, k: int, exclude: sparse.csr_matrix | None, allowed: np.ndarray | None
    ) -> np.ndarray:
        b, n = len(queries), self.n_items
        if b == 0 or k == 0:
            return np.full((b, k), -1, dtype=np.int64)
        extra = 0 if exclude is None else int(np.diff(exclude.indptr).max(initial=0))
        fetch = min(n, k + extra)
        params = self._params(allowed, fetch)
        _, ids = self.faiss.search(queries, fetch, params=params)  # (b, fetch), -1 padded
        if exclude is not None:
            ids = np.where((ids >= 0) & ~hit_matrix(ids, exclude), ids, -1)
        order = np.argsort(ids < 0, axis=1, kind="stable")  # real ids first, in their search order
        return np.take_along_axis(ids, order, 1)[:, :k]

    def _exact(
        self, queries: np.ndarray, wanted: list[tuple[int, np.ndarray | None]], exclude, ordered: bool
    ) -> list[np.ndarray]:
        out = []
        with torch.no_grad():
            scores = torch.from_numpy(queries) @ self._vectors().T  # (b, n)
            if exclude is not None:
                rows = np.repeat(np.arange(len(queries)), np.diff(exclude.indptr))
                scores[
                    torch.from_numpy(rows), torch.from_numpy(exclude.indices.astype(np.int64))
                ] = -torch.inf
            for k, allowed in wanted:
                if k == 0:
                    out.append(np.full((len(queries), 0), -1, dtype=np.int64))
                    continue
                subset = scores if allowed is None else scores + self._allowed_bias(allowed)
                out.append(top_k_torch(subset, k, ordered).numpy())
        return out

    def _allowed_bias(self, allowed: np.ndarray) -> torch.Tensor:
        """(n,) 0 for allowed items, -inf for the rest; built once per mask (the tail mask is reused per
        request)."""
        if getattr(self, "_bias_of", None) is not allowed:
            self._bias_of = allowed
            self._bias = torch.where(torch.from_numpy(np.asarray(allowed, bool)), 0.0, -torch.inf)
        return self._bias

    def _params(self, allowed: np.ndarray | None, fetch: int):
        selector = None
        if allowed is not None:
            if getattr(self, "_allowed", None) is not allowed:  # packed once per mask, not per request
                self._allowed, self._bits = allowed, np.packbits(np.asarray(allowed, bool), bitorder="little")
            selector = faiss.IDSelectorBitmap(len(allowed), faiss.swig_ptr(self._bits))
        if self.kind.startswith("ivf"):
            return faiss.SearchParametersIVF(nprobe=self.nprobe, sel=selector)  # type: ignore[call-arg]
        return faiss.SearchParametersHNSW(efSearch=max(self.ef_search, fetch), sel=selector)  # type: ignore[attr-defined]

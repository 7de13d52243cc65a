"""The model bundle: one directory that training writes and serving and evaluation read.

    manifest.json       format version, resolved config, data fingerprint, metrics, sha256 of every file
    encoder/            Hugging Face model directory (safetensors) + tokenizer + pooling/head
    items.parquet       item_id, text, train_count, recent_count, vector — in catalog order (the vocabulary);
                        recent_count: train interactions in the newest ``ranker.trend_window`` of train
    graph.parquet       src, dst, weight: the item graph's edges (catalog indices)
    neighbours.parquet  src, dst, weight: item-kNN (cosine over train users), every item's most similar tail
                        items: the tail shelf's order (``rerank.tail_knn``); absent when ``rerank.knn_k`` is 0
    ranker.safetensors  hybrid ranker weights (the second stage)
    retriever.safetensors  factorized retriever weights (the first stage)
    index.faiss         the retriever's FAISS index in FAISS's own binary format, for ivf/hnsw retrieval; an
                        exact index needs no file (it is the retriever's item vectors, rebuilt at load)
    vocab.parquet       item_id in catalog order (the index every other file refers to)
    histories.parquet   user_id, item_id, timestamp[, weight, event_type]: the interactions the model was
    trained
                        and tuned on (weight and event_type give each one's strength, ``events``)

No pickle anywhere: loading never executes code. A file whose sha256 differs from the manifest is
refused with an error naming it, and so is a manifest entry that points outside the bundle.
``read_manifest`` (the manifest alone, typed and checked) and ``read_bundle`` (everything) are the only
readers of a bundle's files.

Permissions: files 0640 and directories 0750 (``histories.parquet`` holds personal data): the writer and
its group, e.g. the serving user's, read a bundle; other users of the machine cannot.

Versions: ``write_bundle(out)`` writes an immutable directory ``<out>@<version>`` beside ``out`` and then
points the symlink ``out`` at it in one atomic rename, so a reader of ``out`` sees the old version or the
new one, never a half-written or missing bundle; replicas that resolved ``out`` keep their version's files.
Old versions stay until deleted (``rm -r <out>@<version>`` once nothing serves them). The version is a
hash of the files' sha256, the config and the data record: the same run twice is one version.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from safetensors.torch import load_file, save_file
from scipy import sparse

from longtail.config import TrainConfig
from longtail.data.vectors import vectors_of, vectors_table
from longtail.errors import BundleError
from longtail.files import file_sha256

FORMAT_VERSION = 2  # 2: two-stage (retriever + ranker); 1 had the ranker only
FILE_MODE, DIR_MODE = 0o640, 0o750
FILES = (
    "items.parquet",
    "graph.parquet",
    "ranker.safetensors",
    "retriever.safetensors",
    "vocab.parquet",
    "histories.parquet",
)
INDEX_FILE = "index.faiss"
NEIGHBOURS_FILE = "neighbours.parquet"


__all__ = [
    "FORMAT_VERSION",
    "Bundle",
    "BundleError",
    "Manifest",
    "read_bundle",
    "read_manifest",
    "write_bundle",
]


@dataclass(frozen=True)
class Manifest:
    """A bundle's manifest, checked: format, file hashes, and its config validated as a ``TrainConfig``."""

    path: Path  # the bundle directory
    version: str
    created: str
    config: TrainConfig
    data: dict[str, Any]  # where it was trained: dataset path, fingerprint, split
    metrics: dict[str, Any]  # valid/test metrics of the served lists, own lists and retriever; selection
    files: dict[str, str]  # relative path → sha256

    @property
    def encoder_id(self) -> str:
        """Fingerprint of the bundle's text encoder (its files' sha256): item vectors stored while serving are
        keyed by it, so a bundle with another encoder never mixes in vectors it did not make."""
        files = {k: v for k, v in self.files.items() if k.startswith("encoder/")}
        return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()[:16]

    def as_dict(self) -> dict[str, Any]:
        """The manifest as written (JSON-able)."""
        return {
            "format_version": FORMAT_VERSION,
            "created": self.created,
            "version": self.version,
            "config": self.config.model_dump(),
            "data": self.data,
            "metrics": self.metrics,
            "files": self.files,
        }


@dataclass
class Bundle:
    """Everything scoring needs, loaded and verified; ``config`` is the validated train config it was made
    with."""

    path: Path
    manifest: Manifest
    item_ids: np.ndarray  # (n,) str, catalog order
    texts: np.ndarray  # (n,) str
    train_counts: np.ndarray  # (n,) int64
    recent_counts: (
        np.ndarray | None
    )  # (n,) int64 over the newest ranker.trend_window of train; None in older bundles
    vectors: np.ndarray  # (n, d) float32
    graph: sparse.csr_matrix  # (n, n)
    neighbours: sparse.csr_matrix | None  # (n, n) item-kNN of the tail shelf; None in older bundles
    ranker_state: dict[str, torch.Tensor]
    retriever_state: dict[str, torch.Tensor]
    index_bytes: bytes | None  # FAISS's serialisation of the retriever index (ivf/hnsw), None for exact
    histories: pa.Table  # user_id, item_id, timestamp[, weight, event_type]

    @property
    def config(self) -> TrainConfig:
        return self.manifest.config

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def encoder_dir(self) -> Path:
        return self.path / "encoder"

    @property
    def encoder_id(self) -> str:
        return self.manifest.encoder_id


def write_bundle(
    out: Path,
    *,
    encoder_dir: Path,
    item_ids: np.ndarray,
    texts: np.ndarray,
    train_counts: np.ndarray,
    vectors: np.ndarray,
    graph: sparse.csr_matrix,
    ranker_state: dict[str, torch.Tensor],
    retriever_state: dict[str, torch.Tensor],
    histories: pa.Table,
    config: dict[str, Any],
    data: dict[str, Any],
    metrics: dict[str, Any],
    index_bytes: bytes | None = None,
    recent_counts: np.ndarray | None = None,
    neighbours: sparse.csr_matrix | None = None,
) -> Path:
    """Write a complete bundle atomically (temporary sibling, then rename) and return its path."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        shutil.copytree(encoder_dir, tmp / "encoder")
        items = vectors_table(np.asarray(item_ids, dtype=str), vectors)
        items = items.add_column(1, "text", pa.array([str(t) for t in texts], pa.string()))
        items = items.add_column(2, "train_count", pa.array(np.asarray(train_counts, dtype=np.int64)))
        if recent_counts is not None:
            items = items.add_column(3, "recent_count", pa.array(np.asarray(recent_counts, dtype=np.int64)))
        pq.write_table(items, tmp / "items.parquet")
        write_edges(graph, tmp / "graph.parquet")
        if neighbours is not None:
            write_edges(neighbours, tmp / NEIGHBOURS_FILE)
        save_file({k: v.contiguous() for k, v in ranker_state.items()}, str(tmp / "ranker.safetensors"))
        save_file({k: v.contiguous() for k, v in retriever_state.items()}, str(tmp / "retriever.safetensors"))
        if index_bytes is not None:
            (tmp / INDEX_FILE).write_bytes(index_bytes)
        pq.write_table(
            pa.table({"item_id": pa.array(np.asarray(item_ids, dtype=str))}), tmp / "vocab.parquet"
        )
        pq.write_table(histories, tmp / "histories.parquet")
        files = {str(p.relative_to(tmp)): file_sha256(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
        # the version names what a server reads: the files and the config (the shelves and the popularity
        # adjustment chosen on valid live in the config only; the same weights with another choice are
        # another version, never a silently kept old one)
        named = {"files": files, "config": config, "data": data}
        version = hashlib.sha256(json.dumps(named, sort_keys=True, default=str).encode()).hexdigest()[:16]
        manifest = {
            "format_version": FORMAT_VERSION,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "version": version,
            "config": config,
            "data": data,
            "metrics": metrics,
            "files": files,
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
        return publish_version(tmp, out, version)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_edges(matrix: sparse.spmatrix, path: Path) -> None:
    """A sparse (n, n) matrix as an edge table: src, dst (catalog indices), weight."""
    coo = sparse.coo_matrix(matrix)
    weight = coo.data.astype(np.float32)
    pq.write_table(
        pa.table({"src": coo.row.astype(np.int64), "dst": coo.col.astype(np.int64), "weight": weight}), path
    )


def read_edges(path: Path, n: int) -> sparse.csr_matrix:
    """``write_edges``'s table back as a CSR matrix (n, n)."""
    edges = pq.read_table(path)
    return sparse.csr_matrix(
        (edges.column("weight").to_numpy(), (edges.column("src").to_numpy(), edges.column("dst").to_numpy())),
        shape=(n, n),
    )


def publish_version(tmp: Path, out: Path, version: str) -> Path:
    """Move a finished bundle directory to ``<out>@<version>`` and point the symlink ``out`` at it atomically.

    A bundle written by an older longtail as a plain directory at ``out`` is first moved aside to
    ``<out>@<its version>`` (nothing is deleted). Returns ``out``.
    """
    target = out.parent / f"{out.name}@{version}"
    restrict(tmp)
    if out.exists() and not out.is_symlink():
        if not (out / "manifest.json").is_file():
            raise BundleError(f"{out}: exists and is not a bundle; refusing to replace it")
        old = read_manifest(out, verify=False).version
        aside = out.parent / f"{out.name}@{old}"
        os.replace(out, aside if not aside.exists() else out.parent / f"{out.name}@{old}-{time.time_ns()}")
    if target.exists():
        shutil.rmtree(tmp)  # the same files and config again: the version names its content
    else:
        os.replace(tmp, target)
    link = out.parent / f".{out.name}.link-{os.getpid()}"
    link.unlink(missing_ok=True)
    link.symlink_to(target.name)
    os.replace(link, out)  # atomic: readers of `out` see one version or the other
    return out


def restrict(directory: Path) -> None:
    """Owner and group only: files ``FILE_MODE``, directories ``DIR_MODE`` (the tree and its root)."""
    for item in directory.rglob("*"):
        if not item.is_symlink():
            os.chmod(item, DIR_MODE if item.is_dir() else FILE_MODE)
    os.chmod(directory, DIR_MODE)


def read_manifest(path: Path, verify: bool = True) -> Manifest:
    """A bundle's manifest, checked: its format, its fields' types, its config (a valid ``TrainConfig``) and,
    with ``verify``, the sha256 of every listed file. Reads no weights."""
    path = Path(path)
    manifest_path = path / "manifest.json"
    if not manifest_path.is_file():
        raise BundleError(f"{path}: not a bundle (no manifest.json)")
    try:
        raw = json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BundleError(f"{manifest_path}: not valid JSON ({err})") from None
    if not isinstance(raw, dict):
        raise BundleError(f"{manifest_path}: expected a JSON object, found {type(raw).__name__}")
    if raw.get("format_version") != FORMAT_VERSION:
        raise BundleError(
            f"{manifest_path}: format_version {raw.get('format_version')!r}, expected {FORMAT_VERSION}"
        )
    expected = {"version": str, "config": dict, "data": dict, "metrics": dict, "files": dict}
    for key, kind in expected.items():
        if not isinstance(raw.get(key), kind):
            found = "nothing" if key not in raw else type(raw[key]).__name__
            raise BundleError(
                f"{manifest_path}: field {key!r} must be a JSON {_json_kind(kind)}, found {found}"
            )
    files = raw["files"]
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
        raise BundleError(f"{manifest_path}: field 'files' must map file names to sha256 strings")
    if verify:
        _verify_files(path, manifest_path, files)
    try:
        config = TrainConfig.model_validate(raw["config"])
    except ValueError as err:
        raise BundleError(f"{manifest_path}: its config is not a valid train config: {err}") from None
    return Manifest(
        path, raw["version"], str(raw.get("created", "")), config, raw["data"], raw["metrics"], files
    )


def _json_kind(kind: type) -> str:
    return "string" if kind is str else "object"


def verify_bundle(path: Path) -> Manifest:
    """The manifest, after checking the format and the sha256 of every listed file (``read_manifest``)."""
    return read_manifest(path, verify=True)


def _verify_files(path: Path, manifest_path: Path, files: dict[str, str]) -> None:
    root = path.resolve()
    for rel, expected in files.items():
        file = path / rel
        if Path(rel).is_absolute() or root not in (root / rel).resolve().parents:
            raise BundleError(
                f"{manifest_path}: file entry {rel!r} points outside the bundle; refusing to load"
            )
        if not file.is_file():
            raise BundleError(f"{file}: listed in the manifest but missing")
        actual = file_sha256(file)
        if actual != expected:
            raise BundleError(
                f"{file}: sha256 {actual} does not match the manifest's {expected}; refusing to load"
            )
    for name in FILES:
        if name not in files:
            raise BundleError(f"{path}: the manifest lists no {name}")


def read_item_ids(path: Path) -> np.ndarray:
    """(n,) the bundle's item ids in catalog order (``vocab.parquet``), after ``read_manifest`` checked it."""
    read_manifest(path)
    return np.asarray(pq.read_table(Path(path) / "vocab.parquet").column("item_id").to_pylist(), dtype=object)


def read_bundle(path: Path) -> Bundle:
    """Verify and load a bundle (no code is executed: Parquet, JSON, safetensors and FAISS's index format);
    its config is validated here, once, so every reader gets a ``TrainConfig``."""
    path = Path(path)
    manifest = read_manifest(path)
    items = pq.read_table(path / "items.parquet")
    n = items.num_rows
    index = path / INDEX_FILE
    return Bundle(
        path=path,
        manifest=manifest,
        item_ids=np.asarray(items.column("item_id").to_pylist(), dtype=object),
        texts=np.asarray(items.column("text").to_pylist(), dtype=object),
        train_counts=items.column("train_count").to_numpy(),
        recent_counts=items.column("recent_count").to_numpy()
        if "recent_count" in items.column_names
        else None,
        vectors=vectors_of(items),
        graph=read_edges(path / "graph.parquet", n),
        neighbours=read_edges(path / NEIGHBOURS_FILE, n) if NEIGHBOURS_FILE in manifest.files else None,
        ranker_state=load_file(str(path / "ranker.safetensors")),
        retriever_state=load_file(str(path / "retriever.safetensors")),
        index_bytes=index.read_bytes() if INDEX_FILE in manifest.files else None,
        histories=pq.read_table(path / "histories.parquet"),
    )


def load_models(bundle: Bundle):
    """The bundle's trained (retriever, ranker), eval mode, rebuilt from explicit arguments; weights load
    strictly (a missing or unexpected tensor is an error naming the file)."""
    from longtail.model.factory import build_ranker, build_retriever

    cfg = bundle.config
    ranker = build_ranker(cfg.ranker, bundle.vectors, bundle.graph, bundle.train_counts)
    retriever = build_retriever(
        cfg.retriever,
        cfg.ranker.max_history,
        bundle.vectors,
        bundle.graph,
        bundle.train_counts,
        cfg.ranker.seed,
    )
    for name, model, state in (
        ("ranker", ranker, bundle.ranker_state),
        ("retriever", retriever, bundle.retriever_state),
    ):
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as err:
            detail = " ".join(str(err).split())
            raise BundleError(
                f"{bundle.path / (name + '.safetensors')}: does not fit the config's {name}: {detail}"
            ) from None
    return retriever.eval(), ranker.eval()


def check_catalog(bundle: Bundle, item_ids: np.ndarray, where: str) -> None:
    """Refuse to score a dataset whose catalog is not the bundle's (indices would point at other items)."""
    if len(item_ids) != len(bundle.item_ids) or not np.array_equal(
        np.asarray(item_ids, str), bundle.item_ids.astype(str)
    ):
        raise BundleError(
            f"{bundle.path}: its catalog ({len(bundle.item_ids)} items) differs from {where} "
            f"({len(item_ids)} items);"
            " train a bundle on this dataset"
        )

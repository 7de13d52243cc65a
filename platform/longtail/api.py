"""The Python API: prepare a dataset, train a bundle, evaluate it, and recommend from it in a notebook.

    import longtail

    data = longtail.prepare(dataset="ml-100k", out="data/ml-100k")
    bundle = longtail.train(data, out="bundles/ml100k")        # the built-in defaults, chosen on valid
    print(bundle.version, bundle.metrics["test"]["ndcg@10"])
    rec = longtail.load(bundle.path)
    rec.recommend(user_id="196", k=10)                         # a user the bundle knows
    rec.recommend(history=["50", "181", "172"], k=10)          # anyone, by the items they touched
    rec.similar("50", k=5)
    rec.add_items({"new-1": "A quiet space drama about a lighthouse keeper"})

``longtail data prepare``, ``longtail train``, ``longtail eval`` and ``longtail recommend`` call these same
functions: the command line is a thin layer over them. ``train`` starts (or joins, with ``RAY_ADDRESS``) a Ray
cluster; ``prepare``, ``evaluate`` and ``load`` need no Ray.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from longtail.eval.evaluate import EvalResult
    from longtail.serve.live import LivePipeline

Log = Callable[[str], None]
PathLike = str | Path


@dataclass(frozen=True)
class Dataset:
    """A prepared dataset: its directory and manifest (row counts, fingerprint, splits)."""

    path: Path
    manifest: dict[str, Any]

    @property
    def fingerprint(self) -> str:
        return str(self.manifest["fingerprint"])


@dataclass(frozen=True)
class Bundle:
    """A trained bundle: ``path`` (the version symlink), ``version``, and its ``metrics`` (valid and test of
    the served lists; ``own_lists`` and ``retriever``; what the selection chose, ``selection``)."""

    path: Path
    version: str
    metrics: dict[str, Any]


@dataclass(frozen=True)
class Report:
    """What ``evaluate`` measured: one result per model on one part of a split."""

    results: list[EvalResult]
    split: str
    part: str

    def table(self) -> dict[str, dict[str, float]]:
        """{model: {metric: value}}."""
        return {r.model: dict(r.metrics) for r in self.results}


@dataclass(frozen=True)
class Recommended:
    """One item of a list: its id, the score that placed it, whether it is a tail item, its bucket (head,
    tail, new), the shelf that filled its slot, and (with ``explain``) each score term's contribution and the
    history items the attention read."""

    item_id: str
    score: float
    tail: bool
    bucket: str | None = None
    shelf: str | None = None
    reason: str | None = None
    explanation: dict[str, Any] | None = field(default=None, compare=False)


def prepare(
    source: PathLike | None = None,
    *,
    dataset: str | None = None,
    out: PathLike,
    format: str | None = None,
    mapping: Mapping[str, str] | None = None,
    template: str | None = None,
    list_fields: Sequence[str] = (),
    unknown_items: Literal["error", "drop"] = "error",
    seed: int = 2024,
) -> Dataset:
    """Import a named dataset (``dataset="ml-100k"``) or your files (``source`` in ``format`` recbole,
    movielens, csv, parquet or jsonl), validate it, make the warm, cold and leave-one-out splits and write it
    as Parquet to ``out``.

    >>> data = prepare(dataset="ml-100k", out="data/ml-100k")  # doctest: +SKIP
    >>> data.manifest["users"]  # doctest: +SKIP
    943
    """
    from longtail.config import ConfigError
    from longtail.data import ImportOptions, import_source, load_named, write_dataset

    if (dataset is None) == (source is None):
        raise ConfigError("give exactly one of source=PATH (with format=...) or dataset=NAME")
    if dataset is not None:
        loaded, label = load_named(dataset, unknown_items=unknown_items), dataset
    else:
        if format is None:
            raise ConfigError("source= needs format= (recbole, movielens, csv, parquet or jsonl)")
        options = ImportOptions(dict(mapping or {}), template, tuple(list_fields), unknown_items)
        loaded, label = import_source(Path(source), format, options), f"{format}:{source}"  # type: ignore[arg-type]
    manifest = write_dataset(loaded, Path(out), source=label, seed=seed)
    return Dataset(Path(out), manifest)


def dataset_path(data: Dataset | PathLike) -> Path:
    return data.path if isinstance(data, Dataset) else Path(data)


def train(
    data: Dataset | PathLike,
    *,
    out: PathLike,
    config: PathLike | None = None,
    overrides: Sequence[str] | Mapping[str, Any] | None = None,
    split: str | None = None,
    forget: str | None = None,
    log: Log = print,
) -> Bundle:
    """Fine-tune → embed → graph → fit → select on valid → evaluate → write the bundle ``out``; stages are
    cached
    beside it. ``config``: a train config YAML (default: the built-in defaults, which scale with the data);
    ``overrides``: dotted keys, ``["ranker.epochs=3"]`` or ``{"ranker.epochs": 3}``; ``forget``: a store (its
    erased users) or a file of user ids left out of the data. A named dataset (``"ml-100k"``) is prepared into
    ``data/NAME`` first.

    >>> bundle = train("data/ml-100k", out="bundles/ml100k")  # doctest: +SKIP
    >>> bundle.metrics["test"]["ndcg@10"] > 0  # doctest: +SKIP
    True
    """
    from longtail.bundle import read_manifest
    from longtail.config import TrainConfig, load_config
    from longtail.data import load_named, write_dataset
    from longtail.train.chain import train_pipeline
    from longtail.train.cluster import connect

    cfg = load_config(TrainConfig, config, _override_list(overrides))
    if split:
        cfg.split = split
    data_dir = dataset_path(data)
    if not data_dir.is_dir() and isinstance(data, str) and not Path(data).exists():
        data_dir = Path("data") / data
        if not (data_dir / "manifest.json").is_file():
            log(f"preparing {data} into {data_dir}")
            write_dataset(load_named(data), data_dir, source=data)
    if forget:
        from longtail.cli_support import forgotten_dataset

        data_dir, gone = forgotten_dataset(data_dir, forget, Path(out).parent / ".longtail-data")
        log(f"training without {len(gone)} forgotten users: {data_dir}")
    connect()
    path = train_pipeline(data_dir, cfg, Path(out), log=log)
    manifest = read_manifest(path, verify=False)
    return Bundle(Path(path), manifest.version, manifest.metrics)


def evaluate(
    bundle: Bundle | PathLike | None,
    data: Dataset | PathLike,
    *,
    split: str = "warm",
    part: Literal["valid", "test"] = "test",
    models: Sequence[str] = (),
    config: PathLike | None = None,
    overrides: Sequence[str] | Mapping[str, Any] | None = None,
    forget: str | None = None,
    keep_seen: bool = False,
    progress: Callable[[str], Callable[[int, int], None]] | None = None,
) -> Report:
    """Full-ranking evaluation on ``part`` of ``split``: the bundle's served lists, its own lists and its
    retriever alone, then each baseline in ``models`` (mostpop, itemknn, bpr; knobs from ``config``'s
    ``baselines:``). ``forget``: leave a store's erased users (or a file's ids) out of the data.
    ``keep_seen``: the bundle may list a user's history again (the unmasked protocol of some published
    tables; the baselines always mask, so it refuses ``models``).

    >>> report = evaluate("bundles/ml100k", "data/ml-100k", models=["mostpop"])  # doctest: +SKIP
    >>> report.table()["hybrid"]["ndcg@10"]  # doctest: +SKIP
    0.15...
    """
    from longtail.bundle import read_manifest
    from longtail.cli_support import bundle_pipeline, bundle_recommenders, forgotten_dataset
    from longtail.config import ConfigError, TrainConfig, load_config
    from longtail.data.encoded import load_split_data
    from longtail.eval.evaluate import evaluate as evaluate_model
    from longtail.model.factory import build_baseline

    if keep_seen and (models or bundle is None):
        raise ConfigError("keep_seen evaluates a bundle alone: the baselines always mask seen items")
    data_dir = dataset_path(data)
    if forget:
        data_dir, _ = forgotten_dataset(data_dir, forget, data_dir.parent / ".longtail-data")
    bundle_dir = None if bundle is None else (bundle.path if isinstance(bundle, Bundle) else Path(bundle))
    events = None if bundle_dir is None else read_manifest(bundle_dir, verify=False).config.events
    split_data = load_split_data(data_dir, split, events)
    baselines = load_config(TrainConfig, config, _override_list(overrides)).baselines
    fitted: list = []
    if bundle_dir is not None:
        fitted += bundle_recommenders(bundle_pipeline(bundle_dir, split_data, data_dir), not keep_seen)
    for name in models:
        model = build_baseline(name, baselines)
        model.fit(split_data)
        fitted.append(model)
    results = [evaluate_model(m, split_data, part, progress(m.name) if progress else None) for m in fitted]
    return Report(results, split, part)


def load(path: Bundle | PathLike, *, seed: int = 0) -> Recommender:
    """A trained bundle in memory, verified (no Ray): recommend, find similar items, add items.

    >>> rec = load("bundles/ml100k")  # doctest: +SKIP
    >>> [r.item_id for r in rec.recommend(history=["50", "181"], k=3)]  # doctest: +SKIP
    ['172', '174', '100']
    """
    from longtail.bundle import read_bundle
    from longtail.serve.live import LivePipeline

    bundle_dir = path.path if isinstance(path, Bundle) else Path(path)
    loaded = read_bundle(bundle_dir)
    return Recommender(LivePipeline(loaded, seed), bundle_dir.resolve())


class Recommender:
    """A bundle's two-stage pipeline over a catalog that can grow: what ``load`` returns."""

    def __init__(self, live: LivePipeline, path: Path) -> None:
        self.live, self.path = live, path
        self._encoder: Any = None

    @property
    def version(self) -> str:
        return self.live.version

    @property
    def item_ids(self) -> list[str]:
        return list(self.live.item_ids)

    def recommend(
        self,
        *,
        user_id: str | None = None,
        history: Sequence[str] | None = None,
        k: int = 20,
        exclude_seen: bool = True,
        explain: bool = False,
    ) -> list[Recommended]:
        """Top-k for a user the bundle knows (``user_id``), or for a raw ``history`` of item ids (oldest
        first; a user the bundle never saw). Both: the bundle's history, then ``history``. A user with no
        usable history gets the cold-start list (popular items with a share of random tail items)."""
        from longtail.config import ConfigError
        from longtail.serve.live import Query

        if user_id is None and history is None:
            raise ConfigError("recommend() needs user_id=, history=, or both")
        unknown = [i for i in history or () if i not in self.live.index]
        if unknown:
            raise ConfigError(f"history holds item ids not in the catalog: {unknown[:5]}")
        items, strengths, _ = self.live.weighted_history(user_id or "", user_id is None, list(history or ()))
        query = Query(user_id or "", items, k, exclude_seen, None, explain, strengths)
        (ranked,) = self.live.recommend([query])
        return [Recommended(**item) for item in ranked.items]

    def similar(self, item_id: str, k: int = 20) -> list[Recommended]:
        """Graph neighbours of an item, then its nearest items by text."""
        from longtail.config import ConfigError

        if item_id not in self.live.index:
            raise ConfigError(f"no item {item_id!r} in the catalog")
        return [Recommended(**item) for item in self.live.similar(item_id, k)]

    def add_items(self, items: Mapping[str, str] | Iterable[tuple[str, str]]) -> int:
        """New items (id → text), encoded with the bundle's encoder and recommendable at once; returns how
        many were new (ids already in the catalog are skipped). Texts are read as ``longtail data prepare``
        composes them (HTML character references unescaped)."""
        import numpy as np

        from longtail.config import ConfigError
        from longtail.data.text import plain_text
        from longtail.store import StoredItem

        pairs = list(items.items() if isinstance(items, Mapping) else items)
        fresh = [(i, plain_text(t)) for i, t in pairs if i not in self.live.index]
        if empty := [i for i, t in fresh if not t]:
            raise ConfigError(f"items {empty[:5]}: text holds only whitespace; the encoder reads nothing")
        if not fresh:
            return 0
        vectors = self._encode([t for _, t in fresh])
        stored = [
            StoredItem(self.live.last_item_seq + n + 1, i, t, {}, np.asarray(v, np.float32))
            for n, ((i, t), v) in enumerate(zip(fresh, vectors, strict=True))
        ]
        return self.live.add_items(stored)

    def _encode(self, texts: list[str]) -> Any:
        from longtail.bundle import read_manifest
        from longtail.model.encoder import embed_texts, load_encoder, load_tokenizer

        if self._encoder is None:
            manifest = read_manifest(self.path, verify=False)
            directory = str(self.path / "encoder")
            self._encoder = (
                load_encoder(directory).eval(),
                load_tokenizer(directory),
                manifest.config.encoder,
            )
        encoder, tokenizer, config = self._encoder
        return embed_texts(encoder, tokenizer, texts, config.max_length)


def _override_list(overrides: Sequence[str] | Mapping[str, Any] | None) -> list[str]:
    if overrides is None:
        return []
    if isinstance(overrides, Mapping):
        return [f"{k}={json.dumps(v)}" for k, v in overrides.items()]
    return list(overrides)

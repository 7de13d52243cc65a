"""Peers against the platform's hybrid on the same split, through the same metric code.

    python -m benchmarks.peers --data DATA [--format csv] [--split warm] [--bundle BUNDLE]
        [--rerank tail_share=0.2 ...] [--only als,bpr,...] [--skip-sasrec | --sasrec-json FILE]
        [--users N] [--out reports/bench]

`--data` is a dataset prepared by `longtail data prepare`, or a source directory in any importer format
(give `--format`; it is imported into OUT/peers-data first). Every peer with hyper-parameters runs a
small grid: fit on train, valid ndcg@10 chooses; the chosen config is refit on train+valid and scored on
test (their user vectors would otherwise never see the valid interactions). Models that read history at
scoring time (the hybrid, SASRec, the text profile, item-kNN's history · similarity) are given
train+valid history at test time. SASRec is RecBole's, run in its own environment (`sasrec.py`).
Writes peers-SPLIT.{json,md}, a tail_recall@20 vs ndcg@10 plot, recall@20 by popularity decile and the
valid ndcg@10 curves of the peers trained until it stopped rising (SASRec, LightGCN).

`--users N` is for catalogs where those two cannot train on every user in a reasonable time: they fit on
a seeded sample of N users' interactions (`users.py`), every row of the run is scored on those N users
(popularity buckets from the whole train part), and the files are named peers-SPLIT-usersN.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from benchmarks.peers.users import restricted, sample_users
from longtail.data import ImportOptions, import_source, read_manifest, write_dataset
from longtail.data.encoded import Interactions, SplitData, load_split_data
from longtail.eval.evaluate import EvalResult, evaluate
from longtail.eval.report import markdown_table, place_labels, plot_deciles
from longtail.model.base import Recommender

SAMPLED = ("lightgcn", "sasrec")  # the peers that fit on the user sample under --users

KEYS = ("ndcg@10", "recall@20", "tail_recall@20", "cold_recall@20", "coverage@20")


def grid(**axes) -> list[dict]:
    """Every combination of the axes' values."""
    return [dict(zip(axes, values, strict=True)) for values in itertools.product(*axes.values())]


def peer_grids() -> dict[str, tuple[Callable[..., Recommender], list[dict]]]:
    """name -> (factory(**params), grid). Each peer's library is imported when that peer first runs."""

    def implicit_factors(kind: str) -> Callable[..., Recommender]:
        def make(**params) -> Recommender:
            from benchmarks.peers.implicit_peers import ImplicitFactors

            return ImplicitFactors(kind, **params)

        return make

    def item_knn(**params) -> Recommender:
        from benchmarks.peers.implicit_peers import ImplicitItemKNN

        return ImplicitItemKNN(**params)

    def lightfm(**params) -> Recommender:
        from benchmarks.peers.lightfm_peer import LightFMWarp

        return LightFMWarp(**params)

    def lightgcn(**params) -> Recommender:
        from benchmarks.peers.lightgcn_peer import LightGCNPeer

        return LightGCNPeer(**params)

    return {
        "als": (
            implicit_factors("als"),
            grid(factors=(64, 128), regularization=(0.01, 0.1), alpha=(1.0, 10.0), iterations=(15,)),
        ),
        "bpr": (
            implicit_factors("bpr"),
            grid(factors=(64, 128), learning_rate=(0.01, 0.05), regularization=(0.01,), iterations=(100,)),
        ),
        "itemknn": (item_knn, grid(weighting=("cosine", "bm25"), neighbours=(50, 200))),
        "lightfm": (lightfm, grid(no_components=(32, 64), epochs=(10, 30))),
        "lightgcn": (lightgcn, grid(num_layers=(3,), lr=(5e-3, 2e-2))),  # epochs: until valid stops rising
    }


def with_valid_in_train(data: SplitData) -> SplitData:
    """The split with valid interactions moved into train (for the test-time refit)."""
    return dataclasses.replace(data, train=Interactions.concat([data.train, data.valid]))


def tune(
    name: str,
    factory,
    points: list[dict],
    data: SplitData,
    fit_data: SplitData | None = None,
    among: np.ndarray | None = None,
) -> dict:
    """Grid on valid, refit of the best point on train+valid, test. ``fit_data`` (default ``data``) is what
    the model trains on; ``among`` the users it is scored on (default: every user with a target)."""
    fit_data = data if fit_data is None else fit_data
    log = []
    for params in points:
        t0 = time.time()
        model = factory(**params)
        model.fit(fit_data)
        valid = evaluate(model, data, "valid", among=among)
        row = {"params": params, "valid": valid, "seconds": round(time.time() - t0, 1)}
        if getattr(model, "curve", None):  # trained until valid stopped rising: the refit trains that long
            row |= {"best_epoch": model.best_epoch, "curve": model.curve}
        log.append(row)
        print(
            f"[{name}] {params}: valid ndcg@10 {valid.metrics['ndcg@10']:.4f} ({time.time() - t0:.0f} s)",
            flush=True,
        )
    best = max(log, key=lambda row: row["valid"].metrics["ndcg@10"])
    refit = best["params"] | (
        {"epochs": best["best_epoch"], "early_stop": False} if "best_epoch" in best else {}
    )
    model = factory(**refit)
    model.fit(with_valid_in_train(fit_data))
    test = evaluate(model, data, "test", among=among)
    return {
        "params": refit,
        "valid": best["valid"],
        "test": test,
        "grid": [
            {
                "params": r["params"],
                "valid_ndcg@10": round(r["valid"].metrics["ndcg@10"], 4),
                "seconds": r["seconds"],
                **{k: r[k] for k in ("best_epoch", "curve") if k in r},
            }
            for r in log
        ],
    }


def fixed(make: Callable[[], Recommender], data: SplitData, among: np.ndarray | None = None) -> dict:
    """A model without a grid, made fresh per part (re-rankers count exposure per pass): fit on train,
    valid and test (test reads train+valid history), scored on ``among`` (default: every user)."""
    results = {}
    for part in ("valid", "test"):
        model = make()
        model.fit(data)
        results[part] = evaluate(model, data, part, among=among)
    return {"params": {}, **results}


def frozen_text(data: SplitData) -> Recommender:
    """Mean of history text vectors from the default encoder, frozen (no fine-tuning)."""
    from benchmarks.peers.text_profile import TextMeanProfile
    from longtail.model.encoder import DEFAULT_ENCODER, embed_texts, load_encoder, load_tokenizer

    encoder, tokenizer = load_encoder(DEFAULT_ENCODER), load_tokenizer(DEFAULT_ENCODER)
    vectors = embed_texts(encoder, tokenizer, list(data.item_text), 64)
    return TextMeanProfile(vectors, "text, frozen encoder")


def hybrid_rows(
    bundle: Path, data: SplitData, rerank_overrides: list[str], among: np.ndarray | None = None
) -> dict[str, dict]:
    """The bundle's two-stage pipeline on its own lists, re-ranked as served (the bundle's `rerank`, with
    ``rerank_overrides`` such as ``tail_share=0.2``) when that re-rank does anything, and its retriever
    alone."""
    from longtail.bundle import check_catalog, read_bundle
    from longtail.config import RerankConfig
    from longtail.recommend.build import load_pipeline, own_lists, shelves_of
    from longtail.recommend.recommender import PipelineRecommender, RetrieverRecommender

    loaded = read_bundle(bundle)
    check_catalog(loaded, data.item_ids, str(bundle))
    pipe = load_pipeline(loaded)
    rerank = RerankConfig(
        **{**loaded.config.rerank.model_dump(), **dict(kv.split("=", 1) for kv in rerank_overrides)}
    )
    served = pipe.with_knobs(shelves=shelves_of(rerank), tail_boost=rerank.tail_boost)
    label = f"longtail hybrid + shelves {rerank.tail_share}/{rerank.new_share}/λ {rerank.exposure_penalty}"
    rows = {
        "hybrid": fixed(
            lambda: PipelineRecommender(own_lists(pipe), "longtail hybrid (own lists)"), data, among
        ),
        "retriever": fixed(
            lambda: RetrieverRecommender(pipe, "longtail retriever (first stage)"), data, among
        ),
    }
    if (
        served.knobs.shelves.active or served.knobs.tail_boost > 0
    ):  # one recommender per pass: exposure counts start at zero
        rows["hybrid + shelves"] = fixed(lambda: PipelineRecommender(served, label), data, among)
    return rows


def prepared(data: Path, fmt: str | None, work: Path) -> Path:
    """``data`` when it is a prepared dataset, else its import (format ``fmt``) under ``work``."""
    if (data / "manifest.json").exists():
        return data
    if fmt is None:
        raise SystemExit(f"{data}: not a prepared dataset (no manifest.json); give --format to import it")
    target = work / "peers-data"
    if not (target / "manifest.json").exists() or read_manifest(target).get("source") != f"{fmt}:{data}":
        write_dataset(import_source(data, fmt, ImportOptions()), target, source=f"{fmt}:{data}")
    return target


def from_json(entry: dict) -> EvalResult:
    """An EvalResult from ``EvalResult.to_json`` output (SASRec's runner writes those)."""
    metrics = {k: float("nan") if v is None else v for k, v in entry["metrics"].items()}
    deciles = [float("nan") if v is None else v for v in entry["recall@20_by_popularity_decile"]]
    return EvalResult(entry["model"], entry["part"], entry["users"], metrics, deciles)


def plot_tradeoff(results: list[EvalResult], path: Path, title: str) -> Path:
    """tail_recall@20 against ndcg@10, one labelled point per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.8))
    xs = [r.metrics["ndcg@10"] for r in results]
    ys = [r.metrics["tail_recall@20"] for r in results]
    for x, y in zip(xs, ys, strict=True):
        ax.scatter(x, y, s=40)
    ax.set_xlim(0, max(xs) * 1.75)  # room for the labels right of the points
    pad = 0.08 * max(max(ys), 1e-3)
    ax.set_ylim(-pad, max(ys) * 1.15 + pad)  # relative: food's tail recall is 0.004
    place_labels(ax, list(zip(xs, ys, strict=True)), [r.model for r in results])  # no label on another
    ax.set_xlabel("ndcg@10 (test)")
    ax.set_ylabel("tail_recall@20 (test)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_curves(rows: dict[str, dict], path: Path, title: str) -> Path | None:
    """Valid ndcg@10 by epoch of every grid point trained until it stopped rising (SASRec, LightGCN)."""
    curves = [
        (f"{name} {point['params']}", point["curve"])
        for name, row in rows.items()
        for point in (row.get("grid") or [])
        if point.get("curve")
    ]
    if not curves:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.8))
    for label, curve in curves:
        ax.plot([c["epoch"] for c in curve], [c["valid_ndcg@10"] for c in curve], marker=".", label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("valid ndcg@10")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_reports(
    rows: dict[str, dict], stem: Path, data_dir: Path, split: str, users: int | None = None
) -> None:
    """JSON, Markdown table and both plots of the rows so far (rewritten after every model)."""
    tests = [row["test"] for row in rows.values()]
    table = markdown_table(tests)
    title = f"{read_manifest(data_dir).get('source', data_dir)}, {split} split, test"
    title += "" if users is None else f", {users} sampled users"
    stem.with_suffix(".md").write_text(f"# Peers: {title}\n\n{table}\n")
    report = {
        name: {
            "params": row["params"],
            "grid": row.get("grid"),
            "valid": row["valid"].to_json(),
            "test": row["test"].to_json(),
        }
        for name, row in rows.items()
    }
    summary = {"data": str(data_dir), "split": split, "users": users, "models": report}
    stem.with_suffix(".json").write_text(json.dumps(summary, indent=2))
    plot_tradeoff(tests, Path(f"{stem}-tradeoff.png"), title)
    plot_deciles(tests, Path(f"{stem}-deciles.png"), f"recall@20 by popularity decile ({title})")
    plot_curves(rows, Path(f"{stem}-curves.png"), f"valid curves ({title})")
    print(table, flush=True)
    print(f"wrote {stem}.json, .md, -tradeoff.png, -deciles.png", flush=True)


class Rows(dict):
    """The table's rows; every new row rewrites the reports, so a long run that stops keeps what it has."""

    def __init__(self, stem: Path, data_dir: Path, split: str, users: int | None = None) -> None:
        super().__init__()
        self.stem, self.data_dir, self.split, self.users = stem, data_dir, split, users

    def __setitem__(self, name: str, row: dict) -> None:
        super().__setitem__(name, row)
        write_reports(self, self.stem, self.data_dir, self.split, self.users)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--format", default=None, help="importer format when --data is a source directory")
    ap.add_argument("--split", default="warm", choices=("warm", "cold", "loo"))
    ap.add_argument(
        "--bundle", type=Path, default=None, help="a `longtail train` bundle of this data and split"
    )
    ap.add_argument(
        "--rerank",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="override the bundle's rerank config, e.g. tail_share=0.2 new_share=0.2",
    )
    ap.add_argument(
        "--only",
        default=None,
        help="comma-separated subset of: mostpop,text,als,bpr,itemknn,lightfm,lightgcn,sasrec,hybrid",
    )
    ap.add_argument("--skip-sasrec", action="store_true")
    ap.add_argument(
        "--sasrec-json",
        type=Path,
        default=None,
        help="use a finished `benchmarks.peers.sasrec_runner` output instead of running it",
    )
    ap.add_argument("--sasrec-venv", type=Path, default=Path(".venv-recbole"))
    ap.add_argument("--sasrec-dropouts", default="0.2,0.5", help="SASRec's grid (hidden = attention dropout)")
    ap.add_argument("--out", type=Path, default=Path("reports/bench"))
    ap.add_argument(
        "--users",
        type=int,
        default=None,
        metavar="N",
        help=f"fit {' and '.join(SAMPLED)} on a seeded sample of N users and score every row on them",
    )
    ap.add_argument(
        "--merge",
        action="store_true",
        help="keep the rows of an earlier run's OUT/peers-SPLIT.json that this run does not redo",
    )
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    data_dir = prepared(args.data, args.format, args.out)
    data = load_split_data(data_dir, args.split)
    wanted = set(args.only.split(",")) if args.only else None

    def on(name: str) -> bool:
        return wanted is None or name in wanted

    among = None if args.users is None else sample_users(data, args.users)
    sampled = data if among is None else restricted(data, among)
    suffix = "" if args.users is None else f"-users{args.users}"
    rows = Rows(args.out / f"peers-{args.split}{suffix}", data_dir, args.split, args.users)
    if args.merge and rows.stem.with_suffix(".json").is_file():
        for name, row in json.loads(rows.stem.with_suffix(".json").read_text())["models"].items():
            dict.__setitem__(
                rows, name, {**row, "valid": from_json(row["valid"]), "test": from_json(row["test"])}
            )
    if on("hybrid") and args.bundle is not None:
        for name, row in hybrid_rows(args.bundle, data, args.rerank, among).items():
            rows[name] = row
    if on("mostpop"):
        from longtail.model.baselines import MostPop

        rows["mostpop"] = fixed(MostPop, data, among)
    if on("text") and data.item_text is not None:
        text_model = frozen_text(data)
        rows["text"] = fixed(lambda: text_model, data, among)
    for name, (factory, points) in peer_grids().items():
        if on(name):
            try:
                rows[name] = tune(name, factory, points, data, sampled if name in SAMPLED else data, among)
            except ModuleNotFoundError as missing:  # e.g. LightFM, whose build breaks on some setuptools
                if wanted is not None:
                    raise
                print(f"[{name}] skipped: {missing} (install it, or leave it out with --only)", flush=True)
    if on("sasrec") and not args.skip_sasrec:
        from benchmarks.peers.sasrec import run_sasrec

        if args.sasrec_json is not None:
            out = json.loads(args.sasrec_json.read_text())
        else:
            spec = os.environ.get("TORCH_SPEC", "torch==2.13.0")
            out = run_sasrec(
                data_dir,
                args.split,
                args.out / f"sasrec-{args.split}{suffix}.json",
                args.sasrec_venv,
                spec,
                2,
                args.sasrec_dropouts,
                args.users,
            )
        rows["sasrec"] = {
            "params": out["chosen"],
            "valid": from_json(out["valid"]),
            "test": from_json(out["test"]),
            "grid": [
                {k: g[k] for k in ("params", "best_epoch", "valid_ndcg@10", "curve")} for g in out["grid"]
            ],
        }

    print(f"done: {len(rows)} models")


if __name__ == "__main__":
    main()

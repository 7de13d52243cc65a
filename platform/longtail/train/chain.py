"""`longtail train`: fine-tune → embed → graph → fit (retriever + ranker) → index → evaluate → bundle.

Every stage writes into a work directory under a name derived from a hash of its inputs and its config
section, and skips itself when that output already exists, so re-running after a change redoes only
the stages downstream of it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from safetensors.torch import load_file, save_file
from scipy import sparse

from longtail.bundle import read_edges, write_bundle, write_edges
from longtail.config import TrainConfig
from longtail.data import read_manifest, read_split, read_table
from longtail.data.encoded import SplitData, load_split_data
from longtail.data.vectors import vectors_of
from longtail.eval.evaluate import EvalResult, eval_users, evaluate, history_parts, score_lists
from longtail.eval.report import plot_alpha_sweep
from longtail.model.factory import build_graph, build_ranker, build_retriever
from longtail.model.graph import GRAPH_RULE, cosine_neighbours, item_entity_matrix
from longtail.recommend.build import (
    build_index,
    knobs_of,
    make_pipeline,
    own_lists,
    popularity_penalty_of,
    shelves_of,
    trend_bonus_of,
)
from longtail.recommend.pipeline import Pipeline
from longtail.recommend.recommender import PipelineRecommender, RetrieverRecommender, pipeline_lists
from longtail.recommend.variants import RankMemo
from longtail.train.embed import embed_catalog
from longtail.train.finetune import finetune
from longtail.train.fit import FitInputs, FitRun, FitSpec, examples_per_epoch, fit_many
from longtail.train.fit_state import FitEnd, read_end, write_end
from longtail.train.select import (
    FIT_KEYS,
    choose_fit_point,
    choose_fit_trend_point,
    rung_epochs,
    sample_users,
    select_shelves,
    variant_metrics,
    with_epochs,
    with_id_dropout,
)

Log = Callable[[str], None]


def digest(*parts: Any) -> str:
    """Short, stable hash of JSON-able parts (pydantic models are dumped)."""
    plain = [p.model_dump() if hasattr(p, "model_dump") else p for p in parts]
    return hashlib.sha256(json.dumps(plain, sort_keys=True, default=str).encode()).hexdigest()[:12]


def item_entities(data_dir: Path, data: SplitData) -> sparse.csr_matrix | None:
    """The item × entity matrix of the dataset's knowledge graph, when it has one."""
    kg, link = read_table(data_dir, "kg"), read_table(data_dir, "kg_link")
    if kg is None or link is None:
        return None

    def col(t: pa.Table, n: str) -> np.ndarray:
        return t.column(n).to_numpy(zero_copy_only=False)

    return item_entity_matrix(
        data.item_ids, col(link, "item_id"), col(link, "entity_id"), col(kg, "head_id"), col(kg, "tail_id")
    )


def trained_pipeline(
    config: TrainConfig,
    vectors: np.ndarray,
    graph: sparse.csr_matrix,
    train_counts: np.ndarray,
    retriever_state: dict,
    ranker_state: dict,
    recent_counts: np.ndarray | None = None,
) -> Pipeline:
    """Both stages rebuilt from their weights (strictly), the MIPS index built, the config's shelves on;
    ``recent_counts`` (n,): the trend term's counts (``SplitData.recent_counts``), None: no trend term."""
    ranker = build_ranker(config.ranker, vectors, graph, train_counts)
    ranker.load_state_dict(ranker_state)
    retriever = build_retriever(
        config.retriever, config.ranker.max_history, vectors, graph, train_counts, config.ranker.seed
    )
    retriever.load_state_dict(retriever_state)
    return make_pipeline(
        retriever=retriever,
        ranker=ranker,
        vectors=vectors,
        graph=graph,
        train_counts=train_counts,
        retrieval=config.retrieval,
        knobs=knobs_of(config.ranker, config.rerank),
        index=build_index(retriever, config.retrieval, config.ranker.seed),
        recent_counts=recent_counts,
        history_strengths=config.events.in_history,
        seed=config.ranker.seed,
    )


def choose_shelves(
    config: TrainConfig, pipe: Pipeline, data: SplitData, log: Log = print, memo: RankMemo | None = None
) -> tuple[TrainConfig, Pipeline, dict]:
    """The shelves chosen on valid (``select:``), written into the config the bundle records; ``memo``: where
    the valid users' ranking pass may already be."""
    started = time.time()
    selection = select_shelves(pipe, data, config.select, config.ranker.seed, memo)
    chosen = selection["chosen"]
    row = next(r for r in selection["grid"] if {k: r[k] for k in chosen} == chosen)
    own = selection["grid"][0]
    log(
        f"select: shelves tail_share {chosen['tail_share']:g}, new_share {chosen['new_share']:g}, "
        f"exposure_penalty {chosen['exposure_penalty']:g}, tail_knn {chosen['tail_knn']:g} of "
        f"{len(selection['grid'])} on {selection['users']} valid users "
        f"({time.time() - started:.0f} s): tail_recall@20 {own['tail_recall@20']} → {row['tail_recall@20']}, "
        f"coverage@20 {own['coverage@20']} → {row['coverage@20']}, recall@20 {own['recall@20']} → "
        f"{row['recall@20']}"
    )
    config = config.model_copy(update={"rerank": config.rerank.model_copy(update=chosen)})
    return config, pipe.with_knobs(shelves=shelves_of(config.rerank)), selection


def candidate_knobs(config: TrainConfig) -> dict[str, int | None]:
    """The retrieval knobs that change which candidates the per-epoch validation ranks (so the fit)."""
    return config.retrieval.model_dump(
        include={"candidates", "graph_candidates", "graph_recent", "tail_candidates", "new_candidates"}
    )


def fitted_ranker_knobs(config: TrainConfig) -> dict:
    """The ranker knobs that change its fit (the post-hoc popularity terms are applied after it)."""
    return config.ranker.model_dump(exclude={"popularity_adjustment", "trend_boost", "trend_window"})


def evaluate_pipeline(
    pipe: Pipeline,
    data: SplitData,
    parts: tuple[str, ...] = ("valid", "test"),
    max_users: int | None = None,
    memo: RankMemo | None = None,
) -> dict[str, dict[str, EvalResult]]:
    """Results by variant and part: ``hybrid`` (the config's re-rank and shelves), ``own_lists`` (the two
    stages without them) and ``retriever`` (the first stage's own lists). ``memo``: ranking passes the
    choices made already (valid: the same users and models when ``select.users`` covers them all)."""
    results: dict[str, dict[str, EvalResult]] = {"hybrid": {}, "own_lists": {}, "retriever": {}}
    for part in parts:  # the hybrid and its own lists from one ranking pass
        users = eval_users(data, part, max_users)
        histories = data.histories(history_parts(part)).rows(users)
        lists = pipeline_lists([pipe, own_lists(pipe)], histories, 20, memo)
        for name, topk in zip(("hybrid", "own_lists"), lists, strict=True):
            results[name][part] = score_lists("hybrid", topk, data, part, users)
        results["retriever"][part] = evaluate(RetrieverRecommender(pipe), data, part, max_users=max_users)
    return results


def alpha_sweep(
    pipe: Pipeline,
    data: SplitData,
    alphas=(0.0, 0.25, 0.5, 0.75, 1.0),
    part: str = "test",
    max_users: int | None = 2000,
) -> list:
    """(α, ndcg@10, tail_recall@20) of the model's own lists with the ranker's α gate replaced by each value.

    Scored on a seeded sample of at most ``max_users`` users: it is a plot, five passes over a large
    dataset would cost more than the training.
    """
    points = []
    for alpha in alphas:
        m = evaluate(
            PipelineRecommender(own_lists(pipe).with_knobs(alpha=alpha)), data, part, max_users=max_users
        ).metrics
        points.append((alpha, m["ndcg@10"], m["tail_recall@20"]))
    return points


def forget_run(storage_path: str | None, run_name: str) -> None:
    """Delete a finished Ray Train run's storage once its output is in the stage cache.

    Ray Train restores a run of the same name from its storage (useful while a driver may crash), so a
    later, deliberate re-run — its stage output deleted, or the code changed — would get the old result.
    """
    root = storage_path or str(Path("~/ray_results").expanduser())
    fs, base = pafs.FileSystem.from_uri(root) if "://" in root else (pafs.LocalFileSystem(), root)
    with contextlib.suppress(FileNotFoundError, OSError):  # nothing stored, or not ours to delete
        fs.delete_dir(f"{base.rstrip('/')}/{run_name}")


@dataclass
class Stages:
    """The upstream stages' outputs that fitting the ranker reads."""

    data: SplitData
    encoder_dir: Path
    vectors: np.ndarray  # (n_items, d) unit text vectors
    graph: sparse.csr_matrix  # (n_items, n_items)
    key: str  # hash of everything upstream of the ranker
    work: Path


def prepare_stages(data_dir: Path, config: TrainConfig, work: Path, log: Log = print) -> Stages:
    """Fine-tune → embed → graph, each reused when its output for the same inputs and config exists."""
    work.mkdir(parents=True, exist_ok=True)
    fingerprint = read_manifest(data_dir)["fingerprint"]
    data = load_split_data(data_dir, config.split, config.events)
    key = digest(fingerprint, config.split, config.encoder, config.finetune)
    encoder_dir = work / f"encoder-{key}"
    if (encoder_dir / "config.json").is_file():
        log(f"fine-tune: reusing {encoder_dir}")
    else:
        log("fine-tune: start")
        finetune(data, config, encoder_dir, run_name=f"finetune-{key}")
        forget_run(config.resources.storage_path, f"finetune-{key}")
    key = digest(key, config.encoder.max_length)
    vectors_path = work / f"vectors-{key}.parquet"
    if vectors_path.is_file():
        log(f"embed: reusing {vectors_path}")
    else:
        log(f"embed: {data.n_items} items")
        embed = config.embed
        if config.resources.use_gpu and not embed.gpus_per_actor:  # use_gpu reaches the encoder actors too
            embed = embed.model_copy(update={"gpus_per_actor": 1.0})
        embed_catalog(
            data.item_ids, data.item_text, str(encoder_dir), config.encoder.max_length, embed, vectors_path
        )
    vectors = vectors_of(pq.read_table(vectors_path))
    key = digest(key, config.graph, GRAPH_RULE)
    graph_path = work / f"graph-{key}.parquet"
    if graph_path.is_file():
        edges = pq.read_table(graph_path)
        graph = sparse.csr_matrix(
            (edges["weight"].to_numpy(), (edges["src"].to_numpy(), edges["dst"].to_numpy())),
            shape=(data.n_items, data.n_items),
        )
        log(f"graph: reusing {graph_path}")
    else:
        graph, parts = build_graph(
            config.graph, vectors, item_entities(data_dir, data), data.histories(("train",))
        )
        coo = graph.tocoo()
        tmp = graph_path.with_suffix(f".{os.getpid()}.tmp")
        pq.write_table(pa.table({"src": coo.row, "dst": coo.col, "weight": coo.data}), tmp)
        os.replace(tmp, graph_path)  # atomic: concurrent sweep trials never read half a file
        log(f"graph: {graph.nnz} edges ({', '.join(f'{k} {v.nnz}' for k, v in parts.items())})")
    return Stages(data, encoder_dir, vectors, graph, key, work)


def neighbours_stage(
    config: TrainConfig, stages: Stages, tail: np.ndarray, log: Log = print
) -> sparse.csr_matrix | None:
    """Every item's ``rerank.knn_k`` most similar ``tail`` items, item-kNN cosine over the train users (the
    tail shelf's order, ``rerank.tail_knn``), reused when the stage cache has it; None when knn_k is 0."""
    k, n = config.rerank.knn_k, stages.data.n_items
    if k == 0:
        return None
    targets = hashlib.sha256(np.packbits(tail).tobytes()).hexdigest()
    path = stages.work / f"neighbours-{digest(stages.key, k, targets)}.parquet"
    if path.is_file():
        log(f"neighbours: reusing {path}")
        return read_edges(path, n)
    started = time.time()
    neighbours = cosine_neighbours(stages.data.histories(("train",)), n, k, targets=tail)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    write_edges(neighbours, tmp)
    os.replace(tmp, path)  # atomic, as the graph
    log(
        f"neighbours: {neighbours.nnz} item-kNN edges to {int(tail.sum())} tail items "
        f"({time.time() - started:.0f} s)"
    )
    return neighbours


def fit_stage(
    config: TrainConfig, stages: Stages, log: Log = print, start: FitEnd | None = None
) -> tuple[dict[str, dict], list[dict], FitEnd | None]:
    """Both stages' weights, the fit's per-epoch history and its end (to continue it; None for a cached fit
    without one), reused when this config's fit exists. ``start``: a shorter fit's end to continue up to
    ``ranker.epochs``."""
    [fitted] = fit_stages([config], stages, log, [start])
    return fitted


def fit_stages(
    configs: list[TrainConfig],
    stages: Stages,
    log: Log = print,
    starts: list[FitEnd | None] | None = None,
) -> list[tuple[dict[str, dict], list[dict], FitEnd | None]]:
    """``fit_stage`` of each config; the fits not in the stage cache train in one Ray Train run, one after
    the other (one worker-group start-up for all of them)."""
    starts = starts or [None] * len(configs)
    keys = [
        digest(stages.key, fitted_ranker_knobs(c), c.retriever, candidate_knobs(c), c.events) for c in configs
    ]
    paths = [
        {name: stages.work / f"{name}-{key}.safetensors" for name in ("retriever", "ranker")} for key in keys
    ]
    todo = []
    for index, (candidate, start, path) in enumerate(zip(configs, starts, paths, strict=True)):
        if all(file.is_file() for file in path.values()):
            log(f"fit: reusing {path['ranker']}")
            continue
        first = 1 if start is None else start.state["epoch"] + 1
        ranker = candidate.ranker
        log(f"fit: epochs {first}-{ranker.epochs} of id_dropout {ranker.id_dropout:g} (retriever + ranker)")
        todo.append(index)
    if todo:
        config = configs[todo[0]]  # the fits of one job share the data, retrieval, events and resources
        run = f"fit-{keys[todo[0]] if len(todo) == 1 else digest(*(keys[i] for i in todo))}"
        results = fit_many(
            FitInputs(stages.data, stages.vectors, stages.graph),
            [
                FitSpec(
                    ranker=configs[i].ranker,
                    retriever=configs[i].retriever,
                    examples_per_epoch=examples_per_epoch(stages.data, configs[i].ranker),
                )
                for i in todo
            ],
            config.retrieval,
            config.resources,
            FitRun(run, events=config.events, starts=[starts[i] for i in todo]),
        )
        for index, result in zip(todo, results, strict=True):
            write_end(result.end, stages.work / f"end-{keys[index]}")
            save_file(result.retriever_state, str(paths[index]["retriever"]))
            save_file(result.ranker_state, str(paths[index]["ranker"]))
            (stages.work / f"fit-{keys[index]}.json").write_text(json.dumps(result.history))
        forget_run(config.resources.storage_path, run)
    fitted = []
    for key, path in zip(keys, paths, strict=True):
        history_path = stages.work / f"fit-{key}.json"
        history = json.loads(history_path.read_text()) if history_path.is_file() else []
        states = {name: load_file(str(file)) for name, file in path.items()}
        fitted.append((states, history, read_end(stages.work / f"end-{key}")))
    return fitted


def choose_fit(
    config: TrainConfig, stages: Stages, log: Log = print, memo: RankMemo | None = None
) -> tuple[TrainConfig, dict[str, dict], list[dict], Pipeline, dict]:
    """One fit per ``select.id_dropout`` value (or the config's one fit when null) for ``rung_epochs``,
    ``choose_popularity_terms`` over them, then the chosen fit continued to ``ranker.epochs`` and its γ and
    δ chosen again (successive halving: the other values' second halves are never trained). The rung
    compares the fits at the config's trend boost alone: the trend term is chosen once, on the kept fit
    (on amazon2014-toy a third of the rung's variants; ML-100K, toy and food kept the same fit). Returns the
    chosen fit's config, weights, history and pipeline, and the record for the manifest
    (``metrics.selection.fit``; ``rung``: the choice among the shorter fits)."""
    select, epochs = config.select, config.ranker.epochs
    rung = rung_epochs(config)
    values = select.id_dropout if select.id_dropout is not None else [None]
    candidates = [with_epochs(config if v is None else with_id_dropout(config, v), rung) for v in values]
    fits, weights, ends = [], [], []
    for candidate, (states, history, end) in zip(
        candidates, fit_stages(candidates, stages, log), strict=True
    ):
        fits.append((candidate, _pipeline_of(candidate, stages, states), history))
        weights.append(states)
        ends.append(end)
    rung_first = rung < epochs
    best, chosen, pipe, record = choose_popularity_terms(fits, stages.data, log, memo, trend=not rung_first)
    states, history, end = weights[best], fits[best][2], ends[best]
    if rung_first:
        kept = fits[best]
        if not (end is not None and end.stopped):  # early stopping ended it: it is done
            full = with_epochs(kept[0], epochs)  # no end kept (a cache from elsewhere): from scratch
            states, history, _ = fit_stage(full, stages, log, start=end)
            kept = (full, _pipeline_of(full, stages, states), history)
        _, chosen, pipe, final = choose_popularity_terms([kept], stages.data, log, memo)
        record = {**final, "rung": {"epochs": rung, **record}}
    return with_epochs(chosen, epochs), states, history, pipe, record


def _pipeline_of(config: TrainConfig, stages: Stages, states: dict[str, dict]) -> Pipeline:
    return trained_pipeline(
        config,
        stages.vectors,
        stages.graph,
        stages.data.train_counts(),
        states["retriever"],
        states["ranker"],
        stages.data.recent_counts(config.ranker.trend_window),
    )


def choose_popularity_terms(
    fits: list[tuple[TrainConfig, Pipeline, list[dict]]],
    data: SplitData,
    log: Log = print,
    memo: RankMemo | None = None,
    trend: bool = True,
) -> tuple[int, TrainConfig, Pipeline, dict]:
    """Each fit's own lists scored on valid (the seeded ``select.users`` sample) at every pair of popularity
    adjustment γ (``select.popularity_adjustments``) and trend boost δ (``select.trend_boosts``; ``trend``
    False: the config's δ alone) — one ranking pass per fit; null lists: the config's value — and the rule of
    ``choose_fit_trend_point`` keeps one (fit, γ, δ) over the joint grid. ``fits``: (config, pipeline, fit
    history) each. Returns (which fit, its config
    with γ and δ set, its pipeline with them, the record for the manifest). ``longtail train`` and every
    ``longtail tune`` trial run this."""
    started, rows = time.time(), []
    config = fits[0][0]
    select = config.select
    users = sample_users(data, "valid", select.users, config.ranker.seed)
    adjustments = list(dict.fromkeys(select.popularity_adjustments or [config.ranker.popularity_adjustment]))
    boosts = list(dict.fromkeys((trend and select.trend_boosts) or [config.ranker.trend_boost]))
    points = [(g, d) for d in boosts for g in adjustments]
    for candidate, pipe, history in fits:
        variants = [
            own_lists(pipe).with_knobs(
                popularity_penalty=popularity_penalty_of(candidate.ranker, g),
                trend_bonus=trend_bonus_of(candidate.ranker, d),
            )
            for g, d in points
        ]
        first = len(rows)
        for (gamma, delta), valid in zip(points, variant_metrics(variants, data, users, memo), strict=True):
            rows.append(
                {
                    "id_dropout": candidate.ranker.id_dropout,
                    "popularity_adjustment": gamma,
                    "trend_boost": delta,
                    **{k: _rounded(valid[k]) for k in FIT_KEYS},
                    "epochs": len(history),
                }
            )
        for (
            delta
        ) in boosts:  # one line per trend boost: its best γ under the rule, and the γ = first value row
            mine = [r for r in rows[first:] if r["trend_boost"] == delta]
            top = mine[choose_fit_point(mine, select.ndcg_tolerance)]
            log(
                f"select: id_dropout {candidate.ranker.id_dropout:g}, trend_boost {delta:g}: "
                f"popularity_adjustment "
                f"{mine[0]['popularity_adjustment']:g} → valid ndcg@10 {mine[0]['ndcg@10']}, own "
                f"tail_recall@20 "
                f"{mine[0]['tail_recall@20']}; its pick {top['popularity_adjustment']:g} → {top['ndcg@10']}, "
                f"{top['tail_recall@20']} (coverage@20 {top['coverage@20']})"
            )
    best = choose_fit_trend_point(rows, select.ndcg_tolerance)
    which = best // len(points)
    chosen = {k: rows[best][k] for k in ("id_dropout", "popularity_adjustment", "trend_boost")}
    log(
        f"select: id_dropout {chosen['id_dropout']:g}, popularity_adjustment "
        f"{chosen['popularity_adjustment']:g}, "
        f"trend_boost {chosen['trend_boost']:g} of {len(fits)} fits × {len(adjustments)} adjustments × "
        f"{len(boosts)} "
        f"trend boosts ({time.time() - started:.0f} s)"
    )
    fit_config, fit_pipe, _ = fits[which]
    config = fit_config.model_copy(update={"ranker": fit_config.ranker.model_copy(update=chosen)})
    pipe = fit_pipe.with_knobs(
        popularity_penalty=popularity_penalty_of(config.ranker), trend_bonus=trend_bonus_of(config.ranker)
    )
    record = {
        "chosen": chosen,
        "grid": rows,
        "rule": f"own lists on valid ({len(users)} users): ndcg@10 within {select.ndcg_tolerance:g} "
        f"(relative) "
        "of the best tie; the most tail_recall@20 wins, then coverage@20 — over the rows without the "
        "trend term (trend_boost 0); a trend row replaces that pick only where its ndcg@10 and "
        "tail_recall@20 are both at least as high (the most tail_recall@20 among those)",
    }
    return which, config, pipe, record


def _rounded(x: float) -> float | None:
    return None if x != x else round(float(x), 6)


def train_pipeline(data_dir: Path, config: TrainConfig, out: Path, log: Log = print) -> Path:
    """Run every stage for ``config.split`` of the prepared dataset ``data_dir``; write the bundle ``out``."""
    data_dir, out = Path(data_dir), Path(out)
    started = lap = time.time()
    seconds: dict[str, float] = {}  # wall time per stage, into the manifest (metrics.stage_seconds)

    def done(stage: str) -> None:
        nonlocal lap
        seconds[stage], lap = round(time.time() - lap, 1), time.time()

    stages = prepare_stages(
        data_dir, config, out.parent / ".longtail-stages", log
    )  # shared by sibling bundles
    done("encoder_embed_graph")
    data, encoder_dir, vectors, graph = stages.data, stages.encoder_dir, stages.vectors, stages.graph
    fingerprint = read_manifest(data_dir)["fingerprint"]
    memo = RankMemo()  # the valid users' ranking passes: the chosen fit's, read again by shelves and eval
    select = config.select
    if (
        select.id_dropout is not None
        or select.popularity_adjustments is not None
        or select.trend_boosts is not None
    ):
        config, states, history, pipe, fit_selection = choose_fit(config, stages, log, memo)
    else:
        states, history, _ = fit_stage(config, stages, log)
        pipe = trained_pipeline(
            config,
            vectors,
            graph,
            data.train_counts(),
            states["retriever"],
            states["ranker"],
            data.recent_counts(config.ranker.trend_window),
        )
        fit_selection = None
    log(f"index: {pipe.index.kind} over {pipe.index.n_items} items")
    done("fit_and_popularity_terms")
    neighbours = neighbours_stage(config, stages, pipe.tail, log)
    pipe = dataclasses.replace(pipe, neighbours=neighbours)
    done("neighbours")
    selection = None
    if config.select.shelves:
        config, pipe, selection = choose_shelves(config, pipe, data, log, memo)
    done("shelves")
    results = evaluate_pipeline(pipe, data, memo=memo)
    memo.clear()  # the passes' memory back before the bundle is written
    metrics: dict[str, Any] = {part: r.metrics for part, r in results["hybrid"].items()}
    for variant in ("own_lists", "retriever"):
        metrics[variant] = {part: r.metrics for part, r in results[variant].items()}
    metrics["selection"] = {
        name: chosen
        for name, chosen in (("fit", fit_selection), ("shelves", selection))
        if chosen is not None
    }
    metrics["fit_history"] = history
    metrics["alpha_sweep_test"] = [
        dict(zip(("alpha", "ndcg@10", "tail_recall@20"), p, strict=True)) for p in alpha_sweep(pipe, data)
    ]
    done("evaluate")
    metrics["seconds"] = round(time.time() - started, 1)
    metrics["stage_seconds"] = seconds
    tables = read_split(data_dir, config.split)
    histories = pa.concat_tables([tables.train, tables.valid, tables.test]).select(
        ["user_id", "item_id", "timestamp", "weight", "event_type"]
    )
    write_bundle(
        out,
        encoder_dir=encoder_dir,
        item_ids=data.item_ids,
        texts=data.item_text,
        train_counts=data.train_counts(),
        vectors=vectors,
        graph=graph,
        ranker_state=states["ranker"],
        retriever_state=states["retriever"],
        histories=histories,
        config=config.model_dump(),
        metrics=metrics,
        data={"path": str(data_dir), "fingerprint": fingerprint, "split": config.split},
        index_bytes=None if pipe.index.kind == "exact" else pipe.index.to_bytes(),
        recent_counts=pipe.recent_counts,
        neighbours=neighbours,
    )
    sweep = [(p["alpha"], p["ndcg@10"], p["tail_recall@20"]) for p in metrics["alpha_sweep_test"]]
    plot = plot_alpha_sweep(
        sweep, out.with_name(out.name + "-alpha-sweep.png"), f"{config.split} test: α sweep"
    )
    log(
        f"bundle: {out} -> {out.resolve().name} (bundle_version {out.resolve().name.rsplit('@', 1)[-1]}; "
        f"{metrics['seconds']} s); α sweep plot: {plot}"
    )
    return out

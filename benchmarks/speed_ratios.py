"""Speed ratios, side by side: what the two-stage pipeline costs over the plain computation it wraps.

    python -m benchmarks.speed_ratios --data DATA --bundle BUNDLE [--sizes 10000,100000,1000000]
        [--ratio-users 0] [--out reports/bench]

Writes ``DIR/speed_ratios.json`` with (numbers, so a script can check them):
- ``retrieval_vs_matmul``: the retrieval stage's MIPS search (top-N candidates of every test user, history
  excluded, the bundle's index) over a raw torch matmul + topk of the same shapes (users × D @ D × items);
  ``retrieval_with_tower_vs_matmul`` counts the user tower (the retriever's sequence encoder) too.
- ``pipeline_vs_matmul``: retrieve → rank → arrange for every test user over a matmul + top-20 of the same
  shapes (today's exact path was 1/324).
- ``catalog``: ``{"10000": {"p50_ms", "p99_ms", "rss_mib", "index"}, …}``: one request at a time through the
  two-stage path on synthetic catalogs (random weights; one subprocess per size, so RSS is that size's:
  ``rss_mib`` after serving, ``peak_rss_mib`` including the build).
- ``ann_choice``: FAISS IVF (Flat, SQ8) and HNSW on the bundle's own item vectors and real user vectors:
  recall of the MIPS top-N against exact search, single-query latency, build time, and the two-stage
  recall@20 with that index over the exact index's.
- ``two_stage_recall_ratio``: test recall@20 of the two-stage lists over the exact ranking (the ranker
  scoring every item) of the same bundle, both the model's own lists; ``eval_s``: the served lists'
  full test evaluation (every test user, every metric).
- ``train_growth``: one epoch of both stages (the pipeline's examples per epoch) on 25/50/100% of users.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from longtail.bundle import read_bundle
from longtail.config import RetrievalConfig, TrainConfig
from longtail.data.encoded import SplitData, load_split_data
from longtail.eval.evaluate import evaluate, history_parts
from longtail.model.factory import build_ranker, build_retriever
from longtail.model.objective import (
    LossSpec,
    NextItemObjective,
    next_item_examples,
    popularity_log_prior,
    train_epoch,
)
from longtail.recommend.build import exact, load_pipeline, own_lists
from longtail.recommend.index import ItemIndex
from longtail.recommend.pipeline import Batch, recommend, user_vectors
from longtail.recommend.recommender import PipelineRecommender


def timed(fn, repeat: int = 1) -> float:
    """Median seconds of ``repeat`` calls."""
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def matmul_topk(users: int, dim: int, items: int, k: int) -> float:
    u, v = torch.randn(users, dim), torch.randn(dim, items)
    return timed(lambda: torch.topk(u @ v, k, dim=1), repeat=5)


def stage_ratios(pipe, data: SplitData) -> dict:
    """Retrieval and whole-pipeline throughput over matmul + topk for every test user."""
    users = np.unique(data.test.users)
    hist = data.histories(history_parts("test")).rows(users)
    batch = Batch.of(hist)
    recent = batch.recent(pipe.retriever.max_history, pipe.n_items)
    n_cand = pipe.retrieval.candidates or pipe.n_items
    tower_s = timed(lambda: user_vectors(pipe, recent), repeat=3)
    q = user_vectors(pipe, recent)
    excluded = batch.excluded(pipe.n_items)
    search_s = timed(lambda: pipe.index.search(q, n_cand, excluded), repeat=3)
    raw_s = matmul_topk(len(users), q.shape[1], pipe.n_items, n_cand)
    rec = PipelineRecommender(pipe)
    pipeline_s = timed(lambda: rec.recommend(np.arange(len(users)), hist, 20))
    raw20_s = matmul_topk(len(users), q.shape[1], pipe.n_items, 20)
    return {
        "users": len(users),
        "items": pipe.n_items,
        "candidates": n_cand,
        "index": pipe.index.kind,
        "dim": q.shape[1],
        "search_s": round(search_s, 4),
        "user_tower_s": round(tower_s, 4),
        "matmul_topk_s": round(raw_s, 4),
        "pipeline_s": round(pipeline_s, 3),
        "matmul_top20_s": round(raw20_s, 4),
        "retrieval_vs_matmul": round(raw_s / search_s, 3),
        "retrieval_with_tower_vs_matmul": round(raw_s / (search_s + tower_s), 3),
        "pipeline_vs_matmul": round(raw20_s / pipeline_s, 4),
    }


def recall_ratio(pipe, data: SplitData, max_users: int | None) -> dict:
    """Two-stage vs exact ranking of the same model (own lists), and the served lists' evaluation time."""
    t = time.perf_counter()
    served = evaluate(PipelineRecommender(pipe), data, "test")
    eval_s = time.perf_counter() - t
    two = evaluate(PipelineRecommender(own_lists(pipe)), data, "test", max_users=max_users)
    t = time.perf_counter()
    one = evaluate(PipelineRecommender(own_lists(exact(pipe))), data, "test", max_users=max_users)
    exact_s = time.perf_counter() - t
    keys = ("recall@20", "ndcg@10", "tail_recall@20", "coverage@20")
    return {
        "users": two.n_users,
        "two_stage": {k: round(two.metrics[k], 4) for k in keys},
        "exact": {k: round(one.metrics[k], 4) for k in keys},
        "exact_s": round(exact_s, 1),
        "two_stage_recall_ratio": round(two.metrics["recall@20"] / one.metrics["recall@20"], 4),
        "eval_s": round(eval_s, 1),
        "eval_users": served.n_users,
    }


def epoch_cost(part: SplitData, vectors: np.ndarray, graph, cfg: TrainConfig) -> dict:
    """Seconds of one epoch of both stages (the pipeline's examples per epoch)."""
    from longtail.train.fit import default_examples_per_epoch  # imports Ray: kept out of the catalog workers

    counts = part.train_counts()
    r = cfg.ranker
    ranker = build_ranker(r, vectors, graph, counts)
    retriever = build_retriever(cfg.retriever, r.max_history, vectors, graph, counts)
    prefixes, targets = next_item_examples(part.histories(("train",)), r.max_history, part.n_items)
    per_epoch = r.examples_per_epoch or default_examples_per_epoch(len(targets))
    take = np.random.default_rng(0).permutation(len(targets))[:per_epoch]
    share = torch.tensor(np.bincount(targets, minlength=part.n_items) / len(targets), dtype=torch.float32)
    objective = NextItemObjective(
        {"retriever": retriever, "ranker": ranker},
        LossSpec(r.popularity_correction, r.temperature),
        share,
        torch.tensor(popularity_log_prior(counts)),
    )
    optim = torch.optim.Adam(objective.parameters(), lr=r.lr)
    epoch_s = timed(
        lambda: train_epoch(
            objective,
            torch.from_numpy(prefixes[take]),
            torch.from_numpy(targets[take]),
            optim,
            r.batch_size,
            r.negatives,
            part.n_items,
            torch.Generator().manual_seed(0),
        )
    )
    return {
        "train_interactions": len(part.train),
        "examples_per_epoch": len(take),
        "epoch_s": round(epoch_s, 2),
    }


def subset(data: SplitData, share: float, seed: int = 0) -> SplitData:
    """The split restricted to a random ``share`` of the users (all of their interactions)."""
    keep = np.random.default_rng(seed).random(data.n_users) < share

    def part(p):
        mask = keep[p.users]
        return type(p)(p.users[mask], p.items[mask], p.timestamps[mask])

    return SplitData(
        data.item_ids, data.user_ids, part(data.train), part(data.valid), part(data.test), data.item_text
    )


def rss_mib() -> tuple[float, float]:
    """(current, peak) resident memory of this process, MiB."""
    status = dict(
        line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line
    )
    return int(status["VmRSS"].split()[0]) / 1024, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def catalog_worker(n: int, threads: int, requests: int, index: str) -> dict:
    """In a fresh process: build a synthetic pipeline of n items, time single requests, report RSS."""
    from benchmarks.synthetic_pipeline import synthetic_pipeline

    torch.set_num_threads(threads)
    t = time.perf_counter()
    pipe = synthetic_pipeline(n, RetrievalConfig(index=index))
    build_s = time.perf_counter() - t
    rng = np.random.default_rng(1)
    exposure = np.zeros(n)
    batches = [Batch.of(_history(rng.integers(0, n, 30))) for _ in range(requests + 5)]
    for b in batches[:5]:
        recommend(pipe, b, 20, exposure, record=False)  # warm
    lat = [timed(lambda b=b: recommend(pipe, b, 20, exposure, record=False)) for b in batches[5:]]
    current, peak = rss_mib()
    return {
        "p50_ms": round(1000 * float(np.median(lat)), 2),
        "p99_ms": round(1000 * float(np.percentile(lat, 99)), 2),
        "rss_mib": round(current),
        "peak_rss_mib": round(peak),
        "index": pipe.index.kind,
        "build_s": round(build_s, 1),
        "requests": requests,
    }


def ann_choice(pipe, data: SplitData, users: int = 2000, queries: int = 300) -> dict:
    """Index kinds on the bundle's own item vectors and real user vectors: MIPS recall of the top-N against
    exact search, single-query latency, build time, and the two-stage recall@20 over the exact index's."""
    import dataclasses

    from longtail.recommend.build import item_vectors

    vectors = item_vectors(pipe.retriever)
    n_cand = pipe.retrieval.candidates or 400
    test_users = np.unique(data.test.users)
    sample = np.sort(np.random.default_rng(0).choice(test_users, min(users, len(test_users)), replace=False))
    batch = Batch.of(data.histories(history_parts("test")).rows(sample))
    q = user_vectors(pipe, batch.recent(pipe.retriever.max_history, pipe.n_items))
    excluded = batch.excluded(pipe.n_items)
    exact_index = ItemIndex.build(vectors, "exact")
    truth = exact_index.search(q, n_cand, excluded)

    def two_stage_recall(index: ItemIndex) -> float:
        rec = PipelineRecommender(own_lists(dataclasses.replace(pipe, index=index)))
        return evaluate(rec, data, "test", max_users=users).metrics["recall@20"]

    base = two_stage_recall(exact_index)
    out: dict = {"items": pipe.n_items, "users": len(sample), "candidates": n_cand}
    variants = (
        [("ivf", "nprobe", v) for v in (16, 48, 128)]
        + [("ivf_sq8", "nprobe", 48)]
        + [("hnsw", "ef_search", v) for v in (256, 512)]
    )
    built: dict[str, tuple[ItemIndex, float]] = {}
    for kind, knob, value in variants:
        if kind not in built:
            t = time.perf_counter()
            built[kind] = (ItemIndex.build(vectors, kind), time.perf_counter() - t)
        index, build_s = built[kind]
        setattr(index, knob, value)
        found = index.search(q, n_cand, excluded)
        recall = np.mean(
            [
                len(set(a[a >= 0]) & set(b[b >= 0])) / max(int((b >= 0).sum()), 1)
                for a, b in zip(found, truth, strict=True)
            ]
        )
        lat = [
            timed(lambda i=i, index=index: index.search(q[i : i + 1], n_cand, excluded[i]))
            for i in range(queries)
        ]
        key = f"{kind} {knob}={value}"
        out[key] = {
            "build_s": round(build_s, 1),
            "mips_recall": round(float(recall), 4),
            "p50_ms": round(1000 * float(np.median(lat)), 3),
            "p99_ms": round(1000 * float(np.percentile(lat, 99)), 3),
            "two_stage_recall_ratio": round(two_stage_recall(index) / base, 4),
        }
        print(f"[speed] ann {key} {out[key]}", flush=True)
    return out


def _history(items: np.ndarray):
    from longtail.data.encoded import Histories

    return Histories(np.array([0, len(items)], dtype=np.int64), np.asarray(items, dtype=np.int64))


def run_worker(n: int, threads: int, requests: int, index: str) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.speed_ratios",
        "--catalog-worker",
        str(n),
        "--threads",
        str(threads),
        "--requests",
        str(requests),
        "--index",
        index,
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def plot_catalog(rows: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    n = [int(k) for k in rows]
    ax.plot(n, [r["p50_ms"] for r in rows.values()], marker="o", label="p50")
    ax.plot(n, [r["p99_ms"] for r in rows.values()], marker="o", label="p99")
    for x, r in zip(n, rows.values(), strict=True):
        ax.annotate(
            f"{r['index']}, {r['rss_mib']} MiB",
            (x, r["p99_ms"]),
            textcoords="offset points",
            xytext=(4, 6),
            fontsize=8,
        )
    ax.set(
        xscale="log",
        xlabel="catalog items",
        ylabel="latency per request, ms",
        title="Two-stage request latency by catalog size (2 threads)",
    )
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path)
    ap.add_argument("--bundle", type=Path)
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--index", default="auto", help="index kind of the catalog runs")
    ap.add_argument("--ratio-users", type=int, default=0, help="users sampled for the recall ratio; 0 = all")
    ap.add_argument("--skip", default="", help="comma list of parts to skip: stages,ratio,growth,catalog,ann")
    ap.add_argument("--catalog-worker", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=Path("reports/bench"))
    args = ap.parse_args()
    if args.catalog_worker is not None:
        print(json.dumps(catalog_worker(args.catalog_worker, args.threads, args.requests, args.index)))
        return
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    skip = set(args.skip.split(",")) - {""}
    report: dict = {"threads": args.threads}
    if args.bundle is not None:
        bundle = read_bundle(args.bundle)
        pipe = load_pipeline(bundle)
        data = load_split_data(args.data, bundle.config.split)
        report["data"] = str(args.data)
        if "stages" not in skip:
            report["stages"] = stage_ratios(pipe, data)
            print(f"[speed] stages {report['stages']}", flush=True)
            for key in ("retrieval_vs_matmul", "retrieval_with_tower_vs_matmul", "pipeline_vs_matmul"):
                report[key] = report["stages"][key]
        if "ratio" not in skip:
            report["recall"] = recall_ratio(pipe, data, args.ratio_users or None)
            print(f"[speed] recall {report['recall']}", flush=True)
            report["two_stage_recall_ratio"] = report["recall"]["two_stage_recall_ratio"]
            report["eval_s"] = report["recall"]["eval_s"]
        if "growth" not in skip:
            report["train_growth"] = [
                {"share": s, **epoch_cost(subset(data, s), bundle.vectors, bundle.graph, bundle.config)}
                for s in (0.25, 0.5, 1.0)
            ]
    if "catalog" not in skip:
        report["catalog"] = {}
        for n in (int(s) for s in args.sizes.split(",")):
            report["catalog"][str(n)] = run_worker(n, args.threads, args.requests, args.index)
            print(f"[speed] catalog {n}: {report['catalog'][str(n)]}", flush=True)
        plot_catalog(report["catalog"], args.out / "speed-catalog.png")
    if "ann" not in skip and args.bundle is not None:
        report["ann_choice"] = ann_choice(pipe, data)
    path = args.out / "speed_ratios.json"
    previous = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps({**previous, **report}, indent=2))  # parts skipped now keep their last figures
    print(json.dumps(report, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

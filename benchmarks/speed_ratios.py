"""Speed ratios, side by side: what the platform's layers cost over the plain computation they wrap.

    python -m benchmarks.speed_ratios --data DATA --bundle BUNDLE [--ann-bundle B --ann-data D]
        [--sizes 10000,100000,1000000] [--out reports/bench]

Measured here, in this process:
- batch scoring: the hybrid scoring every test user over the whole catalog (+ top-20, history excluded)
  vs a raw torch matmul + topk of the same shapes (users × dim @ dim × items);
- train growth: one ranker epoch (the pipeline's examples per epoch) on 25/50/100% of the users'
  train interactions, plus the full validation pass that follows each epoch;
- catalog size: per-request latency of exact hybrid scoring on synthetic catalogs (random weights,
  10 graph neighbours per item, 50-item histories) against FAISS candidate retrieval (IVF, inner
  product over [projected text | id vector]) + exact hybrid scoring of the candidates only;
- ANN quality on a trained bundle (`--ann-bundle`, e.g. the 12k-item synthetic catalog): test
  recall@20/ndcg@10 and top-20 overlap of ANN + rerank vs exact.
Read from the other benchmarks' JSON when present (same `make bench` run): Serve /recommend vs an empty
deployment (serve.json), Ray Data embedding and Ray Train + DeepSpeed vs plain loops
(language_model.json). Writes speed_ratios.json and speed-catalog.png.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from scipy import sparse

from longtail.bundle import load_ranker, read_bundle
from longtail.config import RankerConfig
from longtail.data.encoded import Histories, SplitData, load_split_data
from longtail.eval.evaluate import evaluate, history_parts, rank
from longtail.model.factory import build_ranker
from longtail.model.hybrid import HybridRanker
from longtail.model.ranker_train import (
    HybridRecommender,
    next_item_examples,
    popularity_log_prior,
    train_epoch,
)
from longtail.train.fit import default_examples_per_epoch


def timed(fn, repeat: int = 1) -> float:
    """Median seconds of ``repeat`` calls."""
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def batch_scoring(data: SplitData, model: HybridRanker) -> dict:
    users = np.unique(data.test.users)
    histories = data.histories(history_parts("test"))
    rec = HybridRecommender(model)
    hybrid_s = timed(lambda: rank(rec, data, users, histories, k=20))
    u = torch.randn(len(users), model.item_emb.embedding_dim)
    items = torch.randn(model.item_emb.embedding_dim, data.n_items)
    raw_s = timed(lambda: torch.topk(u @ items, 20, dim=1), repeat=3)
    return {"users": len(users), "items": data.n_items, "hybrid_s": round(hybrid_s, 3), "matmul_topk_s": round(raw_s, 4),
            "ratio": round(hybrid_s / raw_s, 1)}  # fmt: skip


def subset(data: SplitData, share: float, seed: int = 0) -> SplitData:
    """The split restricted to a random ``share`` of the users (all of their interactions)."""
    keep = np.random.default_rng(seed).random(data.n_users) < share

    def part(p):
        mask = keep[p.users]
        return type(p)(p.users[mask], p.items[mask], p.timestamps[mask])

    return SplitData(data.item_ids, data.user_ids, part(data.train), part(data.valid), part(data.test), data.item_text)


def epoch_cost(part: SplitData, vectors: np.ndarray, graph: sparse.csr_matrix, cfg: RankerConfig) -> dict:
    """Seconds of one training epoch (the pipeline's examples per epoch) and of the valid pass after it."""
    counts = part.train_counts()
    model = build_ranker(cfg, vectors, graph, counts)
    prefixes, targets = next_item_examples(part.histories(("train",)), cfg.max_history, part.n_items)
    per_epoch = cfg.examples_per_epoch or default_examples_per_epoch(len(targets))
    take = np.random.default_rng(0).permutation(len(targets))[:per_epoch]
    target_share = torch.tensor(np.bincount(targets, minlength=part.n_items) / len(targets), dtype=torch.float32)
    prior = torch.tensor(popularity_log_prior(counts))
    optim = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    epoch_s = timed(lambda: train_epoch(model, torch.from_numpy(prefixes[take]), torch.from_numpy(targets[take]), optim,
                                        cfg.batch_size, cfg.negatives, target_share, prior, cfg.popularity_correction,
                                        torch.Generator().manual_seed(0), temperature=cfg.temperature))  # fmt: skip
    model.eval()
    valid_s = timed(lambda: evaluate(HybridRecommender(model), part, "valid"))
    return {"train_interactions": len(part.train), "examples_per_epoch": len(take), "epoch_s": round(epoch_s, 2),
            "valid_pass_s": round(valid_s, 2)}  # fmt: skip


def train_growth(data: SplitData, vectors: np.ndarray, graph: sparse.csr_matrix, cfg: RankerConfig) -> list[dict]:
    rows = []
    for share in (0.25, 0.5, 1.0):
        rows.append({"share": share, **epoch_cost(subset(data, share), vectors, graph, cfg)})
        print(f"[speed] train growth {rows[-1]}", flush=True)
    for r in rows:
        r["epoch_ratio_vs_25"] = round(r["epoch_s"] / rows[0]["epoch_s"], 2)
        r["valid_ratio_vs_25"] = round(r["valid_pass_s"] / rows[0]["valid_pass_s"], 2)
    return rows


def ann_index(model: HybridRanker, nlist: int):
    """FAISS IVF (inner product) over each item's [projected text | id vector], (n, 2·dim)."""
    import faiss

    with torch.no_grad():
        keys = torch.cat([model.projected_text(), model.item_id(torch.arange(model.n_items))], 1).numpy()
    keys = np.ascontiguousarray(keys, dtype=np.float32)
    quantizer = faiss.IndexFlatIP(keys.shape[1])
    index = faiss.IndexIVFFlat(quantizer, keys.shape[1], nlist, faiss.METRIC_INNER_PRODUCT)
    sample = keys[np.random.default_rng(0).choice(len(keys), min(len(keys), 40 * nlist), replace=False)]
    index.train(sample)
    index.add(keys)
    index.nprobe = 16
    return index


def ann_scores(model: HybridRanker, index, history: torch.Tensor, n_candidates: int) -> np.ndarray:
    """(b, n) scores: the hybrid's on each user's FAISS candidates, -inf elsewhere."""
    mask = (history < model.n_items).unsqueeze(-1).float()  # (b, L, 1)
    with torch.no_grad():
        text = (model.item_text(history) * mask).sum(1)
        ids = (model.item_id(history) * mask).sum(1)
        query = torch.cat([text, ids], 1) / mask.sum(1).clamp_min(1)  # (b, 2·dim)
    _, cand = index.search(np.ascontiguousarray(query.numpy(), dtype=np.float32), n_candidates)  # (b, C)
    out = np.full((len(history), model.n_items), -np.inf, dtype=np.float32)
    with torch.no_grad():
        for row in range(len(history)):
            c = cand[row][cand[row] >= 0]
            out[row, c] = model(history[row : row + 1], torch.from_numpy(c)).score[0].numpy()
    return out


class AnnRecommender:
    """The hybrid restricted to FAISS candidates (for the metric code)."""

    def __init__(self, model: HybridRanker, n_candidates: int) -> None:
        self.model, self.n_candidates, self.name = model, n_candidates, f"hybrid, ANN top-{n_candidates} + rerank"
        self.index = ann_index(model, max(16, int(4 * np.sqrt(model.n_items))))

    def fit(self, data: SplitData) -> None:
        """Already trained."""

    def score(self, users: np.ndarray, histories: Histories) -> np.ndarray:
        items, mask = histories.padded(self.model.max_history)
        history = torch.from_numpy(np.where(mask, items, self.model.n_items))
        return ann_scores(self.model, self.index, history, self.n_candidates)


def synthetic_model(n: int, dim_text: int = 384, neighbours: int = 10, seed: int = 0) -> HybridRanker:
    """A HybridRanker over ``n`` random items (latency only: the weights are untrained)."""
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, dim_text), dtype=np.float32)
    rows = np.repeat(np.arange(n), neighbours)
    graph = sparse.csr_matrix((rng.random(n * neighbours, dtype=np.float32), (rows, rng.integers(0, n, n * neighbours))),
                              shape=(n, n))  # fmt: skip
    counts = rng.zipf(1.3, n).clip(0, 10_000)
    return build_ranker(RankerConfig(), vectors, graph, counts).eval()


def latency_at(n: int, n_candidates: int, requests: int = 20) -> dict:
    """Exact vs ANN + rerank per-request latency on a synthetic catalog of ``n`` items."""
    t = time.perf_counter()
    model = synthetic_model(n)
    built_s = time.perf_counter() - t
    rng = np.random.default_rng(1)
    histories = [torch.from_numpy(rng.integers(0, n, (1, model.max_history))) for _ in range(requests)]
    with torch.no_grad():
        model(histories[0])  # caches the projected text
        exact = [timed(lambda h=h: torch.topk(model(h).score, 20)) for h in histories]
    t = time.perf_counter()
    index = ann_index(model, max(16, int(4 * np.sqrt(n))))
    index_s = time.perf_counter() - t
    ann = [timed(lambda h=h: ann_scores(model, index, h, n_candidates)) for h in histories]
    return {"items": n, "exact_p50_ms": round(1000 * float(np.median(exact)), 1),
            "exact_p99_ms": round(1000 * float(np.percentile(exact, 99)), 1),
            "ann_p50_ms": round(1000 * float(np.median(ann)), 1),
            "ann_p99_ms": round(1000 * float(np.percentile(ann, 99)), 1),
            "ann_candidates": n_candidates, "index_build_s": round(index_s, 1), "model_build_s": round(built_s, 1)}  # fmt: skip


def catalog_latency(sizes: list[int], n_candidates: int) -> list[dict]:
    rows = []
    for n in sizes:
        rows.append(latency_at(n, n_candidates))
        print(f"[speed] catalog {rows[-1]}", flush=True)
    return rows


def ann_quality(bundle: Path, data_dir: Path, n_candidates: int, max_users: int = 1000) -> dict:
    loaded = read_bundle(bundle)
    model = load_ranker(loaded).eval()
    data = load_split_data(data_dir, loaded.manifest["data"]["split"])
    exact = evaluate(HybridRecommender(model), data, "test", max_users=max_users)
    t = time.perf_counter()
    ann = evaluate(AnnRecommender(model, n_candidates), data, "test", max_users=max_users)
    keys = ("recall@20", "ndcg@10", "tail_recall@20", "coverage@20")
    return {"items": data.n_items, "users": exact.n_users, "candidates": n_candidates,
            "exact": {k: round(exact.metrics[k], 4) for k in keys}, "ann": {k: round(ann.metrics[k], 4) for k in keys},
            "ann_eval_s": round(time.perf_counter() - t, 1)}  # fmt: skip


def plot_catalog(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    n = [r["items"] for r in rows]
    ax.plot(n, [r["exact_p50_ms"] for r in rows], marker="o", label="exact hybrid, whole catalog")
    ax.plot(n, [r["ann_p50_ms"] for r in rows], marker="o", label=f"FAISS top-{rows[0]['ann_candidates']} + hybrid")
    ax.set(xscale="log", yscale="log", xlabel="catalog items", ylabel="p50 latency per request, ms",
           title="Ranker latency by catalog size (1 request, 2 CPU threads)")  # fmt: skip
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--bundle", type=Path, required=True)
    ap.add_argument("--ann-bundle", type=Path, default=None)
    ap.add_argument("--ann-data", type=Path, default=None)
    ap.add_argument("--ann-candidates", type=int, default=1000)
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("reports/bench"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    bundle = read_bundle(args.bundle)
    model = load_ranker(bundle).eval()
    data = load_split_data(args.data, bundle.manifest["data"]["split"])
    report: dict = {"threads": args.threads}
    report["batch_scoring"] = batch_scoring(data, model)
    print(f"[speed] batch scoring {report['batch_scoring']}", flush=True)
    cfg = RankerConfig(**bundle.manifest["config"]["ranker"])
    report["train_growth"] = train_growth(data, bundle.vectors, bundle.graph, cfg)
    report["catalog_latency"] = catalog_latency([int(s) for s in args.sizes.split(",")], args.ann_candidates)
    if args.ann_bundle is not None:
        report["ann_quality"] = ann_quality(args.ann_bundle, args.ann_data, args.ann_candidates)
        print(f"[speed] ANN quality {report['ann_quality']}", flush=True)
    for name, keys in (("serve.json", ("throughput_ratio", "p99_ratio")), ("language_model.json", ("speed",))):
        path = args.out / name
        if path.exists():
            found = json.loads(path.read_text())
            report[name.removesuffix(".json")] = {k: found[k] for k in keys if k in found}
    (args.out / "speed_ratios.json").write_text(json.dumps(report, indent=2))
    plot_catalog(report["catalog_latency"], args.out / "speed-catalog.png")
    print(json.dumps({k: v for k, v in report.items() if k != "train_growth"}, indent=2))
    print(f"wrote {args.out / 'speed_ratios.json'} and {args.out / 'speed-catalog.png'}")


if __name__ == "__main__":
    main()

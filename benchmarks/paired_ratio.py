"""How sure is a ratio to a peer? A paired bootstrap over test users.

    python -m benchmarks.paired_ratio --data DATA --bundle BUNDLE --peers-json OUT/peers-warm.json --peer als
        [--rounds 2000] [--out reports/bench/paired_ratio.json]

The bundle's own lists and the peer (its chosen config from a `benchmarks.peers` JSON, refit on
train+valid as there) rank the test part of the bundle's split; each user's ndcg@10 and tail_recall@20
are computed with the metric code's definitions; users are resampled with replacement, the same users
for both models, and the ratio of the two means is read at the 5th and 95th percentiles. A goal such as
"≥ 1.05× the best peer" is only resolved where the interval lies on one side of it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy import sparse

from benchmarks.peers.__main__ import peer_grids, with_valid_in_train
from longtail.bundle import read_bundle
from longtail.data.encoded import SplitData, load_split_data
from longtail.data.splits import popularity_buckets
from longtail.eval.evaluate import history_parts, rank
from longtail.eval.metrics import hit_matrix, ndcg, restrict, target_counts
from longtail.model.base import Recommender
from longtail.recommend.build import load_pipeline, own_lists
from longtail.recommend.recommender import PipelineRecommender


def per_user(topk: np.ndarray, targets: sparse.csr_matrix, tail: np.ndarray) -> dict[str, np.ndarray]:
    """Each user's ndcg@10 and tail_recall@20 (NaN where the user has no tail target)."""
    hits, n = hit_matrix(topk, targets), target_counts(targets)
    ndcgs = np.array([ndcg(hits[u : u + 1], n[u : u + 1], 10) for u in range(len(n))])
    tail_targets = restrict(targets, tail)
    tail_hits, n_tail = hit_matrix(topk, tail_targets), target_counts(tail_targets)
    tails = np.where(n_tail > 0, tail_hits[:, :20].sum(1) / np.maximum(n_tail, 1), np.nan)
    return {"ndcg@10": ndcgs, "tail_recall@20": tails}


def interval(a: np.ndarray, b: np.ndarray, rounds: int, seed: int = 0) -> dict[str, float]:
    """mean(a) / mean(b) over the users where both are defined, and its 90% paired-bootstrap interval."""
    keep = ~np.isnan(a) & ~np.isnan(b)
    a, b = a[keep], b[keep]
    draws = np.random.default_rng(seed).integers(0, len(a), (rounds, len(a)))
    ratios = a[draws].mean(1) / b[draws].mean(1)
    return {
        "ratio": float(a.mean() / b.mean()),
        "low": float(np.quantile(ratios, 0.05)),
        "high": float(np.quantile(ratios, 0.95)),
        "users": len(a),
    }


def test_lists(model: Recommender, data: SplitData, users: np.ndarray) -> np.ndarray:
    return rank(model, data, users, data.histories(history_parts("test")), k=20)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--bundle", type=Path, required=True)
    ap.add_argument(
        "--peers-json", type=Path, required=True, help="a `benchmarks.peers` output with --peer in it"
    )
    ap.add_argument("--peer", required=True, help=f"one of: {', '.join(peer_grids())}")
    ap.add_argument("--rounds", type=int, default=2000)
    ap.add_argument("--out", type=Path, default=Path("reports/bench/paired_ratio.json"))
    args = ap.parse_args()
    models = json.loads(args.peers_json.read_text())["models"]
    if args.peer not in models or args.peer not in peer_grids():
        raise SystemExit(f"{args.peers_json}: no peer {args.peer!r} with a grid (has {', '.join(models)})")
    bundle = read_bundle(args.bundle)
    data = load_split_data(args.data, bundle.config.split)
    targets = data.histories(("test",)).to_csr(data.n_items)
    users = np.flatnonzero(np.diff(targets.indptr) > 0)
    targets = targets[users]
    tail = popularity_buckets(data.train_counts())["tail"]
    ours = per_user(
        test_lists(PipelineRecommender(own_lists(load_pipeline(bundle)), "own lists"), data, users),
        targets,
        tail,
    )
    factory, _ = peer_grids()[args.peer]
    peer = factory(**models[args.peer]["params"])
    peer.fit(with_valid_in_train(data))
    theirs = per_user(test_lists(peer, data, users), targets, tail)
    result = {
        "data": str(args.data),
        "bundle": str(args.bundle),
        "peer": args.peer,
        "rounds": args.rounds,
        **{key: interval(ours[key], theirs[key], args.rounds) for key in ours},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    for key in ours:
        r = result[key]
        print(
            f"{key}: own lists / {args.peer} = {r['ratio']:.3f} (90% {r['low']:.3f}–{r['high']:.3f}, "
            f"{r['users']} users)",
            flush=True,
        )


if __name__ == "__main__":
    main()

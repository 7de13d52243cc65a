"""Replay simulator (issue 36): arms of the serving ranker compared on a dataset's held-out future.

    python -m benchmarks.online_sim --bundle BUNDLE --data DATA [--users 4000]
        [--out docs/results/online-sim-NAME.json]

How it runs (in-process, no HTTP): each arm gets its own world — a ``LivePipeline`` over the bundle (the class
a Serve replica ranks with, fresh exposure window) and a real SQLite store with the service's impression and
attribution code (``Store.add_impressions``, ``Store.add_events``, ``Store.engagement``). The warm split's
test interactions arrive in time order (ties in row order); each one is a request of its user for k items
(seen items excluded), ranked in batches of ``--batch`` requests with the histories and item engagement as of
the batch's start. Each list is stored as an impression.

Click model (the standard replay method): a user clicks a served item when it is among their held-out future
interactions not consumed yet; the click is sent back as an event with the list's recommendation_id and
position (so it is attributed to the slot and its shelf), joins the user's history, and is consumed. The
interaction that triggered the request joins the history too (the user found it anyway). Bias: only items the
user interacted with in the logged data can be clicked, so the replay under-counts clicks on items the logging
system never showed (the tail, above all) and favours lists that resemble the logging policy; the comparison
between arms is what it is for, not the absolute rates.

Arms: ``none`` (no shelves), ``fixed`` (the bundle's shelves, chosen on valid), ``feedback`` (the same
shelves, their items also ranked by ``shelf_feedback: 1.0``: each item's engagement rate on the shelves,
shrunk to the overall rate), ``trend`` (the same shelves with ``shelf_trend: 1.0``: each item's stored events
in the window). Weights were fixed before any run; ``--part valid`` replays the valid part (test hidden too)
for choices, ``--part test`` reports. Per arm: cumulative clicks, tail clicks (items outside the head, never-
touched included), new-item clicks (never touched in train), coverage (share of the catalog shown at least
once), with 95% intervals from a bootstrap over users (paired across arms for ratios), as JSON and a plot."""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np

from longtail.bundle import read_bundle
from longtail.data.dataset import read_split
from longtail.serve.knobs import ListKnobs
from longtail.serve.live import LivePipeline, Query
from longtail.store import Event, Impression, Tracking, open_store

ARMS = {
    "none": ListKnobs(tail_share=0.0, new_share=0.0),
    "fixed": ListKnobs(),
    "feedback": ListKnobs(shelf_feedback=1.0),
    "trend": ListKnobs(shelf_trend=1.0),
}
BOOTSTRAP = 1000


@dataclass
class World:
    """One arm's replay: its ranker, store, users' live histories and what happened."""

    name: str
    ranker: LivePipeline
    store: object
    live: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    clicks: dict[str, dict[str, int]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(int)))
    shown: set[int] = field(default_factory=set)
    curve: list[tuple[int, int, int, int]] = field(default_factory=list)  # (requests, clicks, tail, new)


def requests_of(data: Path, part: str, users: int | None, seed: int) -> list[tuple[str, str, float]]:
    """(user, item, time) of the warm split's ``part`` (valid or test) in time order (ties in row order);
    ``users``: a random sample of that many of its users."""
    test = read_split(data, "warm").part(part)
    user = np.asarray(test.column("user_id").to_pylist(), dtype=object).astype(str)
    item = np.asarray(test.column("item_id").to_pylist(), dtype=object).astype(str)
    when = test.column("timestamp").to_numpy().astype(np.float64)
    keep = np.ones(len(user), bool)
    if users is not None and users < len(set(user)):
        chosen = set(np.random.default_rng(seed).choice(sorted(set(user)), users, replace=False))
        keep = np.asarray([u in chosen for u in user])
    order = np.lexsort((np.arange(len(user)), when))
    return [(user[i], item[i], float(when[i])) for i in order if keep[i]]


def without_future(ranker: LivePipeline, hidden: list) -> None:
    """Drop ``hidden`` (user, item, time) interactions from the bundle's histories (a bundle holds every
    interaction of its dataset, test included, so that serving knows them; the replay reveals the replayed
    part one by one, and a replay of valid never sees test)."""
    future: dict[str, set[int]] = defaultdict(set)
    for u, i, _ in hidden:
        future[u].add(ranker.index[i])
    for u, items in future.items():
        history = ranker.histories.get(u)
        if history is None:
            continue
        keep = ~np.isin(history, list(items))
        ranker.histories[u] = history[keep]
        if u in ranker.history_strengths:
            ranker.history_strengths[u] = ranker.history_strengths[u][keep]


def run_arm(
    name: str, knobs: ListKnobs, bundle: Path, requests: list, hidden: list, k: int, batch: int, work: Path
) -> World:
    ranker = LivePipeline(read_bundle(bundle))
    ranker.configure(knobs)
    without_future(ranker, hidden)
    store = open_store(str(work / f"{name}.sqlite"), create=True, tracking=Tracking(keep_s=None))
    world = World(name, ranker, store)
    future: dict[str, set[str]] = defaultdict(set)
    for u, i, _ in requests:
        future[u].add(i)
    total = tail = new = 0
    for start in range(0, len(requests), batch):
        chunk = requests[start : start + batch]
        if ranker.learns_from_feedback:
            since = chunk[0][2] - ranker.knobs.feedback_window_s
            ranker.set_engagement(store.engagement(since, ("tail", "new")))
            ranker.set_activity(store.item_activity(since))
        queries = []
        for u, _, _ in chunk:
            history, strengths, _ = ranker.weighted_history(u, False, world.live[u])
            queries.append(Query(u, history, k, True, strengths=strengths))
        impressions, events = [], []
        for (u, i, t), ranked, n in zip(
            chunk, ranker.recommend(queries), range(start, start + len(chunk)), strict=True
        ):
            rid = f"{name}-{n}"
            slots = tuple((it["item_id"], it.get("shelf", "model"), it["bucket"]) for it in ranked.items)
            impressions.append(Impression(rid, u, t, name, ranker.version, ranked.strategy, "{}", slots))
            world.shown.update(ranker.index[s[0]] for s in slots)
            for position, (item, _shelf, bucket) in enumerate(slots):
                if item in future[u]:
                    future[u].discard(item)
                    world.live[u].append(item)
                    events.append(
                        Event(
                            f"{rid}-{position}", u, item, "click", t, recommendation_id=rid, position=position
                        )
                    )
                    world.clicks[u]["all"] += 1
                    world.clicks[u][bucket] += 1
                    total, tail, new = total + 1, tail + (bucket != "head"), new + (bucket == "new")
            if i in future[u]:  # the interaction happened anyway (an event of its own, not from the list)
                future[u].discard(i)
                world.live[u].append(i)
                events.append(Event(f"{name}-{n}-own", u, i, "view", t))
        store.add_impressions(impressions)
        if events:
            store.add_events(events)
        world.curve.append((start + len(chunk), total, tail, new))
    return world


def per_user(world: World, users: list[str], key: str) -> np.ndarray:
    if key == "tail":
        return np.asarray([world.clicks[u]["tail"] + world.clicks[u]["new"] for u in users], float)
    return np.asarray([world.clicks[u][key] for u in users], float)


def interval(values: np.ndarray, rng: np.random.Generator) -> list[float]:
    """95% bootstrap interval of the sum over users."""
    draws = rng.integers(0, len(values), (BOOTSTRAP, len(values)))
    sums = values[draws].sum(1)
    return [float(np.percentile(sums, 2.5)), float(np.percentile(sums, 97.5))]


def ratio(a: np.ndarray, b: np.ndarray, rng: np.random.Generator) -> dict:
    """sum(a) / sum(b) with a paired bootstrap 95% interval over users."""
    draws = rng.integers(0, len(a), (BOOTSTRAP, len(a)))
    ratios = a[draws].sum(1) / np.maximum(b[draws].sum(1), 1e-9)
    return {
        "ratio": float(a.sum() / max(b.sum(), 1e-9)),
        "interval": [float(np.percentile(ratios, 2.5)), float(np.percentile(ratios, 97.5))],
    }


def summarise(worlds: dict[str, World], requests: list, seconds: dict[str, float], n_items: int) -> dict:
    rng = np.random.default_rng(0)
    users = sorted({u for u, _, _ in requests})
    arms = {}
    for name, w in worlds.items():
        arms[name] = {
            "seconds": round(seconds[name], 1),
            **{
                key: {
                    "clicks": int(per_user(w, users, key).sum()),
                    "interval": interval(per_user(w, users, key), rng),
                }
                for key in ("all", "tail", "new")
            },
            "coverage": len(w.shown) / n_items,
            "shelves": {
                "tail_share": w.ranker.shelves.tail_share,
                "new_share": w.ranker.shelves.new_share,
                "exposure_penalty": w.ranker.shelves.exposure_penalty,
            },
        }
    compare = {}
    others = sorted(set(worlds) - {"fixed", "none"}) if "fixed" in worlds else []
    for name in others:
        f, x = worlds[name], worlds["fixed"]
        compare[f"{name}_vs_fixed"] = {
            key: ratio(per_user(f, users, key), per_user(x, users, key), rng)
            for key in ("all", "tail", "new")
        }
    return {"requests": len(requests), "users": len(users), "arms": arms, "compare": compare}


def plot(worlds: dict[str, World], title: str, path: Path) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    for name, w in worlds.items():
        curve = np.asarray(w.curve)
        for ax, col, label in zip(axes, (1, 2, 3), ("clicks", "tail clicks", "new-item clicks"), strict=True):
            ax.plot(curve[:, 0], curve[:, col], label=name)
            ax.set_title(label)
            ax.set_xlabel("requests (time order)")
    axes[0].legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--name", default=None, help="dataset name in the output (default: the data dir's)")
    parser.add_argument("--part", choices=("valid", "test"), default="test", help="the part replayed")
    parser.add_argument("--arms", nargs="+", choices=sorted(ARMS), default=list(ARMS), help="arms to run")
    parser.add_argument("--users", type=int, default=None, help="sample this many of its users")
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=Path("reports/online-sim"))
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    name = args.name or args.data.name
    requests = requests_of(args.data, args.part, args.users, args.seed)
    hidden = requests if args.part == "test" else requests + requests_of(args.data, "test", None, args.seed)
    work = args.work / name
    work.mkdir(parents=True, exist_ok=True)
    for old in work.glob("*.sqlite*"):
        old.unlink()
    worlds, seconds = {}, {}
    for arm, knobs in ((a, ARMS[a]) for a in args.arms):
        began = time.perf_counter()
        worlds[arm] = run_arm(arm, knobs, args.bundle, requests, hidden, args.k, args.batch, work)
        seconds[arm] = time.perf_counter() - began
        last = worlds[arm].curve[-1]
        print(
            f"[{name}] {arm}: {last[1]} clicks, {last[2]} tail, {last[3]} new ({seconds[arm]:.0f} s)",
            flush=True,
        )
    first = next(iter(worlds.values())).ranker
    result = {
        "dataset": name,
        "bundle_version": first.version,
        "part": args.part,
        "k": args.k,
        "batch": args.batch,
        "sampled_users": args.users,
        **summarise(worlds, requests, seconds, first.n_items),
    }
    out = args.out or work / "online-sim.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    plot(worlds, f"replay on {name}: cumulative clicks per arm", out.with_suffix(".png"))
    print(json.dumps(result["compare"], indent=2))
    print(f"wrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()

"""Helpers of the CLI's eval and recommend commands: bundle loading, user selection, explained examples."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from longtail.config import ConfigError
from longtail.data import DataError
from longtail.data.encoded import SplitData
from longtail.data.ids import encode


def bundle_recommender(bundle: Path, split_data: SplitData, data: Path, k: int = 20):
    """A verified bundle as a Recommender named "hybrid" (with its tail boost and shelves when configured)."""
    from longtail.bundle import check_catalog, load_ranker, read_bundle
    from longtail.config import RerankConfig
    from longtail.model.ranker_train import HybridRecommender
    from longtail.model.rerank import Shelves, with_exposure_rerank

    loaded = read_bundle(bundle)
    check_catalog(loaded, split_data.item_ids, str(data))
    rerank = RerankConfig(**loaded.manifest["config"].get("rerank", {}))
    shelves = Shelves(rerank.tail_share, rerank.new_share, rerank.exposure_penalty)
    return with_exposure_rerank(HybridRecommender(load_ranker(loaded)), loaded.train_counts, rerank.tail_boost,
                                shelves, k, text_vectors=loaded.vectors)  # fmt: skip


def select_users(users: str, split_data: SplitData, part: str) -> np.ndarray:
    """User indices for --users all|test|valid|FILE (unknown ids in a file are an error naming the line)."""
    if users == "all":
        return np.arange(split_data.n_users)
    if users in ("test", "valid"):
        return np.unique(split_data.part(users).users)
    path = Path(users)
    wanted = (
        [line.strip() for line in path.read_text().splitlines() if line.strip()] if path.is_file() else None
    )
    if wanted is None:
        raise ConfigError(
            f"--users {users!r}: expected all, test, valid or a file of user ids (one per line)"
        )
    codes = encode(wanted, split_data.user_ids)
    if (codes < 0).any():
        bad = int(np.argmax(codes < 0))
        raise DataError(
            str(path),
            f"unknown user {wanted[bad]!r}",
            where=f"line {bad + 1}",
            expected="user ids present in the dataset",
        )
    return codes


def explanations(fitted, histories, users, lists, split_data: SplitData) -> list[list[dict]]:
    """Explanations of every picked item for each user (term contributions, attended history)."""
    import torch

    from longtail.model.explain import explain

    while hasattr(fitted, "inner"):  # re-rank wrappers
        fitted = fitted.inner
    model = fitted.model
    items, mask = histories.rows(users).padded(model.max_history)
    history = np.where(mask, items, model.n_items)
    notes: list[list[dict]] = []
    with torch.no_grad():
        for start in range(0, len(users), 256):
            top = lists[start : start + 256]
            cands = np.unique(top[top >= 0])
            out = model(torch.as_tensor(history[start : start + 256]), torch.as_tensor(cands))
            picks = np.searchsorted(cands, np.where(top >= 0, top, cands[0]))
            notes += explain(out, history[start : start + 256], picks, split_data.item_ids)
    return notes


def print_example(line: dict, user: int, histories, split_data: SplitData) -> None:
    """Print one user's recent history and top items with their explanations."""
    from longtail.console import out as stdout

    text = dict(zip(split_data.item_ids, split_data.item_text if split_data.item_text is not None else split_data.item_ids,
                    strict=True))  # fmt: skip
    recent = [text[split_data.item_ids[i]] for i in histories.of(user)[-3:]]
    stdout.print(f"\n[bold]user {line['user_id']}[/bold] — recently: {'; '.join(recent)}")
    for rank_no, item in enumerate(line["items"][:5], start=1):
        note = ""
        if "explanations" in line:
            e = line["explanations"][rank_no - 1]
            because = " · ".join(text[b["item_id"]] for b in e["because"][:2])
            terms = " ".join(f"{k}={v:+.2f}" for k, v in e["contributions"].items())
            note = f"  [dim]({terms}; because you watched {because})[/dim]"
        stdout.print(f"  {rank_no}. {text[item]}{note}")

"""Helpers of the CLI's eval and recommend commands: bundle loading, user selection, explained examples."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from longtail.config import ConfigError
from longtail.data import DataError
from longtail.data.encoded import SplitData
from longtail.data.ids import encode


def bundle_pipeline(bundle: Path, split_data: SplitData, data: Path):
    """A verified bundle's two-stage pipeline (its shelves on), refused when its catalog is not the
    dataset's."""
    from longtail.bundle import check_catalog, read_bundle
    from longtail.recommend.build import load_pipeline

    loaded = read_bundle(bundle)
    check_catalog(loaded, split_data.item_ids, str(data))
    return load_pipeline(loaded)


def bundle_events(bundle: Path | None):
    """The ``EventsConfig`` a bundle was trained with (how its data's events count), or None without a
    bundle."""
    from longtail.bundle import read_manifest

    return None if bundle is None else read_manifest(bundle, verify=False).config.events


def bundle_recommenders(pipe, exclude_seen: bool = True) -> list:
    """What ``longtail eval --bundle`` compares: the served lists, the model's own lists (when the bundle
    re-ranks) and the retriever's own lists (the first stage alone)."""
    from longtail.recommend.build import own_lists
    from longtail.recommend.recommender import PipelineRecommender, RetrieverRecommender

    models = [PipelineRecommender(pipe, "hybrid", exclude_seen=exclude_seen)]
    knobs = pipe.knobs
    if knobs.shelves.active or knobs.tail_boost > 0 or knobs.exploration > 0:
        models.append(PipelineRecommender(own_lists(pipe), "hybrid (own lists)", exclude_seen=exclude_seen))
    models.append(RetrieverRecommender(pipe, "retriever (first stage)", exclude_seen=exclude_seen))
    return models


def report_term_shares(pipe, split_data: SplitData, part: str, out: Path) -> Path:
    """Each score term's share over the served lists of ``part``'s users, per popularity bucket: printed,
    written as ``OUT-terms.json`` and plotted as ``OUT-terms.png``."""
    import json

    from rich.table import Table

    from longtail.console import out as stdout
    from longtail.eval.evaluate import history_parts
    from longtail.eval.report import plot_term_shares
    from longtail.recommend.terms import TERMS, term_shares

    targets = split_data.histories((part,)).to_csr(split_data.n_items)
    users = np.flatnonzero(np.diff(targets.indptr) > 0)
    table = term_shares(pipe, split_data.histories(history_parts(part)), users)
    path = out.with_name(out.stem + "-terms.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"part": part, "users": len(users), "buckets": table}, indent=2))
    view = Table(title=f"score terms over the served {part} lists (mean share of |score|; mean contribution)")
    adjusted = (
        pipe.knobs.popularity_penalty > 0 or pipe.knobs.trend_bonus > 0
    )  # the post-hoc popularity terms: their mean
    for column in ("bucket", "listed", *TERMS, *(("popularity",) if adjusted else ())):
        view.add_column(column, justify="left" if column == "bucket" else "right")
    for name, row in table.items():
        cells = [f"{row[f'share_{t}']:.2f} ({row[f'mean_{t}']:+.3f})" if row["items"] else "-" for t in TERMS]
        if adjusted:
            cells.append(f"({row['mean_popularity']:+.3f})" if row["items"] else "-")
        view.add_row(name, str(row["items"]), *cells)
    stdout.print(view)
    plot = plot_term_shares(table, path.with_suffix(".png"), f"score terms, served {part} lists")
    stdout.print(f"terms: {path}  plot: {plot}")
    return path


def select_users(
    users: str, split_data: SplitData, part: str, forgotten: set[str] = frozenset()
) -> np.ndarray:
    """User indices for --users all|test|valid|FILE (unknown ids in a file are an error naming the line;
    ``forgotten`` users, absent from a forgotten dataset, are skipped)."""
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
    wanted = [u for u in wanted if u not in forgotten]
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


def explained_lists(pipe, histories, users: np.ndarray, k: int, item_ids: np.ndarray, batch: int = 256):
    """(lists (len(users), k), explanations per user) from one pass of the pipeline."""
    from longtail.model.explain import explain
    from longtail.recommend.pipeline import Batch, popularity_terms, recommend

    lists, notes = np.full((len(users), k), -1, dtype=np.int64), []
    exposure = np.zeros(pipe.n_items)
    for start in range(0, len(users), batch):
        rows = users[start : start + batch]
        out = recommend(pipe, Batch.of(histories.rows(rows)), k, exposure)
        lists[start : start + len(rows)] = out.items
        notes += explain(
            out.ranked, out.recent, out.columns, item_ids, popularity=popularity_terms(pipe, out.candidates)
        )
    return lists, notes


def print_example(line: dict, user: int, histories, split_data: SplitData) -> None:
    """Print one user's recent history and top items with their explanations."""
    from longtail.console import out as stdout

    text = dict(
        zip(
            split_data.item_ids,
            split_data.item_text if split_data.item_text is not None else split_data.item_ids,
            strict=True,
        )
    )
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


def forgotten_users(source: str) -> set[str]:
    """User ids to leave out: a store's erased users (postgresql:// URL or a SQLite store file), else a
    text file of ids."""
    from longtail.data.forget import read_user_ids
    from longtail.store import is_postgres, is_store_file, open_store

    if is_postgres(source) or is_store_file(Path(source)):
        return set(open_store(source).erased_users())
    return read_user_ids(Path(source))


def forgotten_dataset(data_dir: Path, source: str, work: Path) -> tuple[Path, set[str]]:
    """The dataset version without ``source``'s users and the users forgotten. Written under ``work`` once
    per source dataset (its fingerprint: a re-import into the same directory is another source) and set of
    users, and reused only when its manifest names that source."""
    from longtail.data import read_manifest
    from longtail.data.forget import forget_users, forgotten_source, users_digest

    gone = forgotten_users(source)
    fingerprint = read_manifest(data_dir)["fingerprint"]
    out = Path(work) / f"{Path(data_dir).name}-{fingerprint[:12]}-forget-{users_digest(gone)}"
    if not (out / "manifest.json").is_file() or read_manifest(out)["source"] != forgotten_source(
        fingerprint, gone
    ):
        forget_users(data_dir, gone, out)
    return out, gone

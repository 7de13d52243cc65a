"""`longtail recommend --bundle` for a large user set: a Ray Data job over a pool of pipeline actors.

Each actor loads the bundle and the split once and runs the same ``retrieve → rank → arrange`` pipeline
as evaluation and Serve on its share of the users; Ray Data shows the progress. Shelf exposure is counted
per actor (each spreads its own reserved slots), where one in-process pass counts it over all users.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from longtail.bundle import read_bundle
from longtail.data.encoded import load_split_data
from longtail.eval.evaluate import history_parts
from longtail.recommend.build import load_pipeline
from longtail.recommend.pipeline import Batch, recommend


class PipelineActor:
    """One pipeline per actor, built from the bundle; each call recommends for a batch of user indices."""

    def __init__(self, bundle: str, data: str, split: str, part: str, k: int, threads: int = 1) -> None:
        torch.set_num_threads(threads)
        loaded = read_bundle(Path(bundle))
        self.pipeline = load_pipeline(loaded)
        self.histories = load_split_data(Path(data), split, loaded.config.events).histories(
            history_parts(part)
        )
        self.k = k
        self.exposure = np.zeros(self.pipeline.n_items)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        users = batch["user"].astype(np.int64)
        lists = recommend(self.pipeline, Batch.of(self.histories.rows(users)), self.k, self.exposure)
        return {"user": users, "items": lists.items}


def recommend_job(
    bundle: Path,
    data: Path,
    split: str,
    part: str,
    users: np.ndarray,
    k: int,
    actors: int = 2,
    cpus_per_actor: float = 1.0,
    batch_size: int = 256,
) -> np.ndarray:
    """(len(users), k) lists for user indices ``users`` of the split, in their order; -1 pads short lists."""
    import ray  # only the job needs Ray: importing this module does not

    kwargs = {
        "bundle": str(Path(bundle).resolve()),
        "data": str(Path(data).resolve()),
        "split": split,
        "part": part,
        "k": k,
        "threads": max(1, int(cpus_per_actor)),
    }
    ds = ray.data.from_arrow(pa.table({"user": np.asarray(users, dtype=np.int64)})).map_batches(
        PipelineActor,
        fn_constructor_kwargs=kwargs,
        batch_size=batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=cpus_per_actor,
    )
    position = {int(u): row for row, u in enumerate(users)}
    out = np.full((len(users), k), -1, dtype=np.int64)
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        rows = np.fromiter((position[int(u)] for u in batch["user"]), np.int64, len(batch["user"]))
        items = np.asarray(batch["items"])
        out[rows] = np.stack(list(items)) if items.dtype == object else items
    return out

"""Catalog embedding with Ray Data: items → ``map_batches`` over a pool of encoder actors → vectors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray
import torch

from longtail.config import EmbedConfig
from longtail.data.vectors import vectors_table
from longtail.model.encoder import embed_texts, load_encoder, load_tokenizer


class EncoderActor:
    """One encoder per actor, loaded once; each call embeds a batch of item texts."""

    def __init__(self, encoder: str, max_length: int, threads: int | None = None) -> None:
        if threads:
            torch.set_num_threads(threads)
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.encoder = load_encoder(encoder).to(self.device)
        self.tokenizer = load_tokenizer(encoder)
        self.max_length = max_length

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        texts = [str(t) for t in batch["text"]]
        vectors = embed_texts(self.encoder, self.tokenizer, texts, self.max_length, len(texts), self.device)
        return {"row": batch["row"], "vector": vectors}


def actor_cpus(actors: int) -> float:
    """Each actor's share of the CPUs free now, whole CPUs, at least one. On 41k food.com titles one actor
    with both of 2 cores ran at 0.87× a plain 2-thread loop, two actors with one each at 0.54×."""
    free = ray.available_resources().get("CPU", 1.0)
    return float(max(1, int(free // max(1, actors))))


def embed_catalog(
    item_ids: np.ndarray,
    texts: np.ndarray,
    encoder: str,
    max_length: int,
    config: EmbedConfig,
    out: Path | None = None,
) -> pa.Table:
    """Embed every item text with an autoscaling-free pool of ``config.actors`` encoder actors.

    Returns (and writes to ``out`` when given) a table of ``item_id`` and ``vector`` in input order.
    """
    texts = [str(t) for t in texts]
    by_length = np.argsort(
        [len(t) for t in texts], kind="stable"
    )  # similar lengths share a batch: less padding
    table = pa.table({"row": by_length, "text": pa.array([texts[i] for i in by_length], pa.string())})
    cpus = config.cpus_per_actor or actor_cpus(config.actors)
    threads = max(1, int(cpus))
    ds = ray.data.from_arrow(table).map_batches(
        EncoderActor,
        fn_constructor_kwargs={"encoder": encoder, "max_length": max_length, "threads": threads},
        batch_size=config.batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=config.actors),
        num_cpus=cpus,
        num_gpus=config.gpus_per_actor,
    )
    rows, vectors = [], []
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        rows.append(batch["row"])
        vectors.append(batch["vector"])
    order = np.argsort(np.concatenate(rows))
    result = vectors_table(np.asarray(item_ids, dtype=str), np.concatenate(vectors)[order])
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(result, out)
    return result

"""Shared fixtures: small raw datasets written as real files in every supported format."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from longtail.data.encoded import SplitData, encode_split
from longtail.data.splits import SplitTables

# 4 users; u1 has 10 interactions, u2 5, u3 2 (stays in train), u4 3. Items 1..12; item 12 untouched.
INTERACTIONS = [
    *[("u1", str(i), 100 + i) for i in range(1, 11)],
    ("u2", "3", 50),
    ("u2", "1", 50),
    ("u2", "10", 50),
    ("u2", "2", 60),
    ("u2", "4", 70),
    ("u3", "5", 10),
    ("u3", "6", 20),
    ("u4", "7", 5),
    ("u4", "8", 6),
    ("u4", "9", 7),
]
ITEMS = [(str(i), f"Movie {i}", str(1990 + i), "Drama Comedy" if i % 2 else "Action") for i in range(1, 13)]


def write_recbole(directory: Path, name: str = "toy") -> Path:
    """A RecBole atomic dataset: .inter, .item, .kg, .link."""
    directory.mkdir(parents=True, exist_ok=True)
    inter = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    inter += [f"{u}\t{i}\t4\t{t}" for u, i, t in INTERACTIONS]
    (directory / f"{name}.inter").write_text("\n".join(inter) + "\n")
    item = ["item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq"]
    item += ["\t".join(row) for row in ITEMS]
    (directory / f"{name}.item").write_text("\n".join(item) + "\n")
    kg = ["head_id:token\trelation_id:token\ttail_id:token", "m.1\tfilm.actor\tm.99", "m.2\tfilm.actor\tm.99"]
    (directory / f"{name}.kg").write_text("\n".join(kg) + "\n")
    link = ["item_id:token\tentity_id:token", "1\tm.1", "2\tm.2"]
    (directory / f"{name}.link").write_text("\n".join(link) + "\n")
    return directory


def write_tabular(directory: Path, fmt: str) -> Path:
    """``interactions`` and ``items`` files in csv, parquet or jsonl with non-canonical column names."""
    directory.mkdir(parents=True, exist_ok=True)
    inter = {
        "uid": [u for u, _, _ in INTERACTIONS],
        "iid": [i for _, i, _ in INTERACTIONS],
        "ts": [float(t) for _, _, t in INTERACTIONS],
    }
    items = {"iid": [r[0] for r in ITEMS], "title": [r[1] for r in ITEMS], "genres": [r[3] for r in ITEMS]}
    for name, cols in (("interactions", inter), ("items", items)):
        path = directory / f"{name}.{fmt}"
        if fmt == "csv":
            keys = list(cols)
            lines = [",".join(keys)] + [
                ",".join(str(v) for v in row) for row in zip(*cols.values(), strict=True)
            ]
            path.write_text("\n".join(lines) + "\n")
        elif fmt == "parquet":
            pq.write_table(pa.table(cols), path)
        else:
            rows = [dict(zip(cols, row, strict=True)) for row in zip(*cols.values(), strict=True)]
            path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return directory


@pytest.fixture
def recbole_dir(tmp_path: Path) -> Path:
    return write_recbole(tmp_path / "raw")


def write_tiny_encoder(directory: Path, hidden: int = 32) -> Path:
    """A 2-layer BERT (hidden 32 unless told) with the packaged MiniLM tokenizer, as a Hugging Face
    directory."""
    import torch
    from transformers import BertConfig, BertModel

    from longtail.model.encoder import DEFAULT_ENCODER, load_tokenizer

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=hidden,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(directory, safe_serialization=True)
    load_tokenizer(DEFAULT_ENCODER).save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory) -> Path:
    return write_tiny_encoder(tmp_path_factory.mktemp("tiny_bert"))


def clustered_split(n_users: int = 60, seed: int = 0) -> SplitData:
    """Two user groups that each consume one half of a 20-item catalog; the last item of each user is test."""
    rng = np.random.default_rng(seed)
    rows = {"train": [], "valid": [], "test": []}
    for u in range(n_users):
        group = np.arange(10) if u % 2 == 0 else np.arange(10, 20)
        seq = rng.permutation(group)[:8]
        for t, item in enumerate(seq):
            part = "test" if t == 7 else "valid" if t == 6 else "train"
            rows[part].append((f"u{u}", str(item), float(t)))

    def table(rs):
        u, i, t = zip(*rs, strict=True)
        return pa.table(
            {
                "user_id": u,
                "item_id": i,
                "timestamp": t,
                "weight": pa.array([1.0] * len(u), pa.float32()),
                "event_type": ["x"] * len(u),
            }
        )

    tables = SplitTables(*(table(rows[p]) for p in ("train", "valid", "test")))
    words = ["drama", "comedy", "war", "romance", "noir", "space", "robots", "aliens", "heist", "western"]
    texts = [f"{'A' if i < 10 else 'B'} story of {words[i % 10]} number {i}" for i in range(20)]
    items = pa.table({"item_id": [str(i) for i in range(20)], "text": texts})
    return encode_split(tables, items)


def write_clustered_dataset(out: Path, n_users: int = 60) -> Path:
    """The clustered toy data as a prepared dataset directory (warm and cold splits made by the protocol)."""
    from longtail.data import Dataset, write_dataset

    data = clustered_split(n_users)
    parts = [data.train, data.valid, data.test]
    users = np.concatenate([p.users for p in parts])
    items = np.concatenate([p.items for p in parts])
    stamps = np.concatenate([p.timestamps for p in parts])
    interactions = pa.table(
        {
            "user_id": pa.array(data.user_ids[users].astype(str)),
            "item_id": pa.array(data.item_ids[items].astype(str)),
            "timestamp": stamps,
            "weight": pa.array(np.ones(len(users)), pa.float32()),
            "event_type": pa.array(["x"] * len(users)),
        }
    )
    item_table = pa.table(
        {"item_id": pa.array(data.item_ids.astype(str)), "text": pa.array(data.item_text.astype(str))}
    )
    write_dataset(Dataset(item_table, interactions), out, source="clustered")
    return out


def write_tiny_bundle(
    out: Path, encoder_dir: Path, epochs: int = 1, rerank: dict | None = None, neighbours: bool = False
) -> Path:
    """A real bundle (write_bundle) over the clustered toy data: tiny encoder, text-kNN graph, ``epochs``
    ranker epochs (another count: another version), ``rerank`` the knobs it records as chosen; with
    ``neighbours``, the item-kNN matrix of the tail shelf (5 tail items per item)."""
    import torch

    from longtail.bundle import write_bundle
    from longtail.config import TrainConfig
    from longtail.data.splits import popularity_buckets
    from longtail.model.encoder import embed_texts, load_encoder, load_tokenizer
    from longtail.model.factory import build_ranker, build_retriever
    from longtail.model.graph import combine, cosine_neighbours, text_knn
    from longtail.model.objective import (
        LossSpec,
        NextItemObjective,
        next_item_examples,
        popularity_log_prior,
        train_epoch,
    )

    data = clustered_split()
    config = TrainConfig.model_validate(
        {
            "encoder": {"name": str(encoder_dir), "max_length": 24},
            "ranker": {"dim": 16, "max_history": 8, "negatives": 8},
            "retriever": {"dim": 16, "layers": 1},
            "rerank": rerank or {},
        }
    )
    vectors = embed_texts(
        load_encoder(str(encoder_dir)), load_tokenizer(str(encoder_dir)), list(data.item_text), 24
    )
    graph = combine({"text": text_knn(vectors, 4)}, {"text": 1.0})
    counts = data.train_counts()
    model = build_ranker(config.ranker, vectors, graph, counts)
    retriever = build_retriever(config.retriever, config.ranker.max_history, vectors, graph, counts)
    train = data.histories(("train",))
    prefixes, targets = next_item_examples(train, config.ranker.max_history, data.n_items)
    share = torch.as_tensor(np.bincount(targets, minlength=data.n_items) / len(targets), dtype=torch.float32)
    objective = NextItemObjective(
        {"retriever": retriever, "ranker": model},
        LossSpec(),
        share,
        torch.as_tensor(popularity_log_prior(counts)),
    )
    optimizer, generator = torch.optim.Adam(objective.parameters(), 0.01), torch.Generator().manual_seed(0)
    for _ in range(epochs):
        train_epoch(
            objective,
            torch.as_tensor(prefixes),
            torch.as_tensor(targets),
            optimizer,
            32,
            8,
            data.n_items,
            generator,
        )
    parts = [data.train, data.valid]
    histories = pa.table(
        {
            "user_id": pa.array(np.concatenate([data.user_ids[p.users] for p in parts]).astype(str)),
            "item_id": pa.array(np.concatenate([data.item_ids[p.items] for p in parts]).astype(str)),
            "timestamp": np.concatenate([p.timestamps for p in parts]).astype(np.float64),
        }
    )
    return write_bundle(
        out,
        encoder_dir=encoder_dir,
        item_ids=data.item_ids,
        texts=data.item_text,
        train_counts=counts,
        vectors=vectors,
        graph=graph,
        ranker_state=model.state_dict(),
        retriever_state=retriever.state_dict(),
        histories=histories,
        recent_counts=data.recent_counts(config.ranker.trend_window),
        config=config.model_dump(),
        data={"path": "clustered"},
        metrics={},
        neighbours=cosine_neighbours(train, data.n_items, 5, targets=~popularity_buckets(counts)["head"])
        if neighbours
        else None,
    )


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory, tiny_encoder) -> Path:
    return write_tiny_bundle(tmp_path_factory.mktemp("bundle") / "tiny", tiny_encoder)


@pytest.fixture(scope="session")
def postgres_url():
    """A real PostgreSQL server for the whole session (started here, stopped at the end)."""
    from harness.postgres_server import postgres_server

    with postgres_server() as url:
        yield url

"""Bundle round trip, and refusal of altered or foreign directories."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
import torch

from longtail.bundle import BundleError, read_bundle, write_bundle
from longtail.config import GraphConfig, RankerConfig
from longtail.model.factory import build_graph, build_ranker
from tests.conftest import clustered_split


@pytest.fixture
def bundle(tmp_path, tiny_encoder):
    data = clustered_split()
    vectors = np.random.default_rng(0).normal(size=(data.n_items, 8)).astype(np.float32)
    graph, _ = build_graph(GraphConfig(kg_k=0), vectors, None, data.histories())
    model = build_ranker(RankerConfig(dim=8), vectors, graph, data.train_counts())
    histories = pa.table({"user_id": ["u0"], "item_id": ["1"], "timestamp": [1.0]})
    path = write_bundle(
        tmp_path / "bundle", encoder_dir=tiny_encoder, item_ids=data.item_ids, texts=data.item_text,
        train_counts=data.train_counts(), vectors=vectors, graph=graph, ranker_state=model.state_dict(),
        histories=histories, config={"ranker": RankerConfig(dim=8).model_dump()}, data={"split": "warm"},
        metrics={"test": {"ndcg@10": 0.1}},
    )  # fmt: skip
    return path, data, vectors, graph, model


def test_round_trip(bundle):
    path, data, vectors, graph, model = bundle
    b = read_bundle(path)
    assert list(b.item_ids) == list(data.item_ids) and np.allclose(b.vectors, vectors)
    assert (b.graph != graph).nnz == 0
    again = build_ranker(RankerConfig(**b.manifest["config"]["ranker"]), b.vectors, b.graph, b.train_counts)
    again.load_state_dict(b.ranker_state, strict=False)
    hist = torch.tensor([[0, 1, 2]])
    model.eval(), again.eval()
    assert torch.allclose(model(hist).score, again(hist).score)
    assert not list(path.rglob("*.pt")) and not list(path.rglob("*.bin")) and not list(path.rglob("*.pkl"))


def test_tampered_file_is_refused(bundle):
    path = bundle[0]
    raw = bytearray((path / "ranker.safetensors").read_bytes())
    raw[-1] ^= 0xFF
    (path / "ranker.safetensors").write_bytes(bytes(raw))
    with pytest.raises(BundleError, match=r"ranker\.safetensors: sha256 .* does not match"):
        read_bundle(path)


def test_missing_file_and_foreign_dirs(bundle, tmp_path):
    path = bundle[0]
    (path / "graph.parquet").unlink()
    with pytest.raises(BundleError, match="missing"):
        read_bundle(path)
    with pytest.raises(BundleError, match="not a bundle"):
        read_bundle(tmp_path)
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["format_version"] = 99
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="format_version"):
        read_bundle(path)

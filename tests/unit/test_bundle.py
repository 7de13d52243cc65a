"""Bundle round trip (both stages and the FAISS index), and refusal of altered or foreign directories."""

from __future__ import annotations

import json
import re

import numpy as np
import pyarrow as pa
import pytest
import torch
from safetensors.torch import load_file, save_file

from longtail.bundle import BundleError, load_models, read_bundle, write_bundle
from longtail.config import GraphConfig, RankerConfig, RetrievalConfig, RetrieverConfig
from longtail.model.factory import build_graph, build_ranker, build_retriever
from longtail.model.graph import cosine_neighbours
from longtail.recommend.build import build_index, load_pipeline
from tests.conftest import clustered_split

CONFIG = {
    "ranker": RankerConfig(dim=8).model_dump(),
    "retriever": RetrieverConfig(dim=8, layers=1).model_dump(),
    "retrieval": RetrievalConfig(index="ivf", nlist=2, nprobe=2).model_dump(),
}


@pytest.fixture
def bundle(tmp_path, tiny_encoder):
    data = clustered_split()
    vectors = np.random.default_rng(0).normal(size=(data.n_items, 8)).astype(np.float32)
    graph, _ = build_graph(GraphConfig(kg_k=0), vectors, None, data.histories())
    counts = data.train_counts()
    model = build_ranker(RankerConfig(dim=8), vectors, graph, counts)
    retriever = build_retriever(RetrieverConfig(dim=8, layers=1), 30, vectors, graph, counts)
    index = build_index(retriever, RetrievalConfig.model_validate(CONFIG["retrieval"]))
    neighbours = cosine_neighbours(data.histories(("train",)), data.n_items, 3)
    histories = pa.table({"user_id": ["u0"], "item_id": ["1"], "timestamp": [1.0]})
    path = write_bundle(
        tmp_path / "bundle",
        encoder_dir=tiny_encoder,
        item_ids=data.item_ids,
        texts=data.item_text,
        train_counts=counts,
        vectors=vectors,
        graph=graph,
        ranker_state=model.state_dict(),
        retriever_state=retriever.state_dict(),
        histories=histories,
        config=CONFIG,
        data={"split": "warm"},
        metrics={"test": {"ndcg@10": 0.1}},
        index_bytes=index.to_bytes(),
        neighbours=neighbours,
    )
    return path, data, vectors, graph, model, retriever, index


def test_round_trip(bundle):
    path, data, vectors, graph, model, retriever, index = bundle
    b = read_bundle(path)
    assert list(b.item_ids) == list(data.item_ids) and np.allclose(b.vectors, vectors)
    assert (b.graph != graph).nnz == 0
    assert (
        b.neighbours is not None
        and (b.neighbours != cosine_neighbours(data.histories(("train",)), data.n_items, 3)).nnz == 0
    )
    assert b.config.retriever.dim == 8 and b.version == b.manifest.version  # a typed config, read once
    again_retriever, again = load_models(b)
    hist = torch.tensor([[0, 1, 2]])
    model.eval(), retriever.eval()
    with torch.no_grad():
        assert torch.allclose(model(hist).score, again(hist).score)
        assert torch.allclose(retriever(hist).score, again_retriever(hist).score, atol=1e-6)
    pipe = load_pipeline(b)  # the stored FAISS index, read back in its own format
    assert pipe.index.kind == "ivf" and pipe.index.n_items == data.n_items
    assert pipe.neighbours is not None and (pipe.neighbours != b.neighbours).nnz == 0
    q = np.random.default_rng(1).normal(size=(3, 24)).astype(np.float32)
    assert np.array_equal(pipe.index.search(q, 5), index.search(q, 5))
    assert not list(path.rglob("*.pt")) and not list(path.rglob("*.bin")) and not list(path.rglob("*.pkl"))


@pytest.mark.parametrize(
    "name", ["ranker.safetensors", "index.faiss", "retriever.safetensors", "neighbours.parquet"]
)
def test_tampered_file_is_refused(bundle, name):
    path = bundle[0]
    raw = bytearray((path / name).read_bytes())
    raw[-1] ^= 0xFF
    (path / name).write_bytes(bytes(raw))
    with pytest.raises(BundleError, match=re.escape(name) + r": sha256 .* does not match"):
        read_bundle(path)


def test_weights_that_do_not_fit_and_bad_configs_are_refused(bundle):
    path = bundle[0]
    state = load_file(str(path / "retriever.safetensors"))
    state.pop("cf_head.bias")
    save_file(state, str(path / "retriever.safetensors"))
    manifest = json.loads((path / "manifest.json").read_text())
    from longtail.files import file_sha256

    manifest["files"]["retriever.safetensors"] = file_sha256(path / "retriever.safetensors")
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"retriever\.safetensors: does not fit .*cf_head\.bias"):
        load_models(read_bundle(path))  # strict loading: a missing tensor is no silent default
    manifest["config"]["ranker"]["surprise"] = 1
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="not a valid train config"):
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


def test_manifest_entries_outside_the_bundle_are_refused(bundle, tmp_path):
    path = bundle[0]
    outside = tmp_path / "secret.txt"
    outside.write_text("not yours")
    from longtail.files import file_sha256

    for entry in ("../secret.txt", str(outside)):
        manifest = json.loads((path / "manifest.json").read_text())
        manifest["files"][entry] = file_sha256(outside)
        (path / "manifest.json").write_text(json.dumps(manifest))
        with pytest.raises(BundleError, match="points outside the bundle"):
            read_bundle(path)
        manifest["files"].pop(entry)
        (path / "manifest.json").write_text(json.dumps(manifest))


def _rewrite(path, data, vectors, graph, model, retriever, seed_metric: float, publish=None, config=None):
    """Write another version to the same ``path`` (different ranker weights: a different version)."""
    import longtail.bundle as bundle_module

    state = {k: v + seed_metric for k, v in model.state_dict().items()}
    if publish is not None:
        original, bundle_module.publish_version = bundle_module.publish_version, publish
    try:
        return write_bundle(
            path,
            encoder_dir=path / "encoder",
            item_ids=data.item_ids,
            texts=data.item_text,
            train_counts=data.train_counts(),
            vectors=vectors,
            graph=graph,
            ranker_state=state,
            retriever_state=retriever.state_dict(),
            histories=pa.table({"user_id": ["u0"], "item_id": ["1"], "timestamp": [1.0]}),
            config=config or CONFIG,
            data={"split": "warm"},
            metrics={},
        )
    finally:
        if publish is not None:
            bundle_module.publish_version = original


def test_versions_are_immutable_directories_behind_an_atomic_symlink(bundle):
    path, data, vectors, graph, model, retriever, _ = bundle
    first = read_bundle(path).version
    first_dir = path.resolve()
    assert path.is_symlink() and first_dir.name == f"bundle@{first}"
    _rewrite(path, data, vectors, graph, model, retriever, 1.0)
    second = read_bundle(path).version
    assert second != first and path.resolve().name == f"bundle@{second}"
    assert read_bundle(first_dir).version == first  # a replica that resolved the old version still reads it

    def interrupted(tmp, out, version):
        raise KeyboardInterrupt  # killed after writing, before publishing

    with pytest.raises(KeyboardInterrupt):
        _rewrite(path, data, vectors, graph, model, retriever, 2.0, publish=interrupted)
    assert read_bundle(path).version == second  # the served version is intact
    assert not [
        p for p in path.parent.iterdir() if p.name.startswith(".bundle.")
    ]  # no half-written leftovers


def test_the_same_files_with_another_config_are_another_version(bundle):
    path, data, vectors, graph, model, retriever, _ = bundle
    first = read_bundle(_rewrite(path, data, vectors, graph, model, retriever, 5.0)).version
    assert (
        read_bundle(_rewrite(path, data, vectors, graph, model, retriever, 5.0)).version == first
    )  # same content
    shelves = {**CONFIG, "rerank": {**CONFIG.get("rerank", {}), "tail_share": 0.3}}  # a choice made on valid
    moved = read_bundle(_rewrite(path, data, vectors, graph, model, retriever, 5.0, config=shelves))
    assert moved.version != first and moved.config.rerank.tail_share == 0.3  # served, not the old manifest's


def test_a_plain_bundle_directory_from_before_is_moved_aside_not_deleted(bundle, tmp_path):
    path, data, vectors, graph, model, retriever, _ = bundle
    import shutil

    plain = tmp_path / "old-layout"
    shutil.copytree(path.resolve(), plain)  # what an older longtail wrote: a real directory
    old_version = read_bundle(plain).version
    _rewrite(plain, data, vectors, graph, model, retriever, 3.0)
    assert plain.is_symlink() and read_bundle(plain).version != old_version
    assert read_bundle(tmp_path / f"old-layout@{old_version}").version == old_version


def test_a_manifest_of_the_wrong_shape_is_a_bundle_error_naming_the_field(tmp_path, tiny_bundle):
    import json
    import shutil

    from longtail.bundle import BundleError, read_manifest

    copy = tmp_path / "copy"
    shutil.copytree(tiny_bundle.resolve(), copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    (copy / "manifest.json").write_text(json.dumps({**manifest, "files": list(manifest["files"])}))
    with pytest.raises(BundleError, match="field 'files' must be a JSON object, found list"):
        read_manifest(copy)
    (copy / "manifest.json").write_text("[1, 2]")
    with pytest.raises(BundleError, match="expected a JSON object"):
        read_manifest(copy)


def test_a_written_bundle_is_readable_by_owner_and_group_only(tiny_bundle):
    """histories.parquet is personal data: no file of a bundle is readable by other users."""
    import stat

    version = tiny_bundle.resolve()
    modes = {p.relative_to(version).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in version.rglob("*")}
    assert modes["histories.parquet"] == 0o640 and modes["ranker.safetensors"] == 0o640
    assert all(mode & 0o007 == 0 for mode in modes.values()), modes
    assert stat.S_IMODE(version.stat().st_mode) == 0o750

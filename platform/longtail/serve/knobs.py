"""Typed arguments of the Serve app: the builder's ``args`` and each deployment's ``user_config``.

``args`` fix what a replica is built from (changing them restarts replicas); ``user_config`` knobs are
applied live through ``reconfigure()`` when an edited config is deployed with ``serve deploy``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from longtail.serve.api import Limits
from longtail.serve.auth import AuthSources
from longtail.serve.schemas import MAX_K
from longtail.store import Retention, Store, open_store


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AppArgs(Strict):
    bundle: str | None = Field(
        None, description="bundle directory (or its version symlink); $LONGTAIL_BUNDLE wins when set"
    )
    bundle_version: str | None = Field(
        None, description="serve <bundle>@<version>; change it and `serve deploy` to switch"
    )
    store: str = Field(
        "state/longtail.sqlite", description="SQLite file, or a postgresql:// URL for multi-node"
    )
    create_store: bool = Field(
        False, description="create the store when missing; false: a missing store fails the deploy"
    )
    store_timeout_s: float = Field(
        5.0, gt=0.0, le=60.0, description="wait for a locked/unreachable store before 503"
    )
    metrics_dir: str | None = Field(
        None,
        description="Prometheus multiprocess directory; null: <store>.metrics, or state/longtail.metrics for "
        "PostgreSQL",
    )
    auth: Literal["token", "none"] = Field(
        "token", description="token: refuse to start without one; none: no auth at all"
    )
    token_env: str | None = Field("LONGTAIL_TOKEN", description="env var holding the write token")
    token_file: str | None = Field(None, description="file holding the write token (wins over token_env)")
    read_token_env: str | None = Field("LONGTAIL_READ_TOKEN", description="env var holding the read token")
    read_token_file: str | None = Field(
        None, description="file holding the read token (wins over read_token_env)"
    )
    protect_reads: bool = Field(
        False,
        description="reads that concern no user (text search, similar items, health) need a token too; a "
        "user's list always does",
    )
    max_body_bytes: int = Field(1_000_000, ge=1024, description="larger request bodies get 413")
    max_body_messages: int = Field(
        10_000, ge=16, description="a body arriving in more pieces gets 413 (a chunk flood)"
    )
    max_clock_skew_s: float = Field(
        300.0, ge=0.0, le=86_400.0, description="event timestamps later than now + this are refused (422)"
    )
    store_threads: int = Field(
        4, ge=1, le=64, description="threads (PostgreSQL: connections) per replica for store calls"
    )
    events_per_user: int | None = Field(
        1000, ge=1, description="newest events the store keeps per user (older ones deleted); null: all"
    )
    max_stored_items: int | None = Field(
        100_000, ge=1, description="items POST /items may add before it answers 507; null: no cap"
    )
    torch_threads: int = Field(1, ge=1, description="intra-op threads per ranker/encoder replica")
    ranker_deployment: bool = Field(
        False,
        description="true: a separate Ranker deployment (scales apart, e.g. on "
        "GPU nodes); false: each Ingress replica ranks in-process (one hop less)",
    )


class ListKnobs(Strict):
    alpha: float | None = Field(None, ge=0.0, le=1.0, description="text+graph vs CF mix; null: as trained")
    beta: float | None = Field(
        None, ge=0.0, le=1.0, description="graph share of the text side; null: as trained"
    )
    popularity_adjustment: float | None = Field(
        None,
        ge=0.0,
        description="γ: scores / τ lose γ·log(1 + train count); null: the bundle's (chosen on valid)",
    )
    trend_boost: float | None = Field(
        None,
        ge=0.0,
        description="δ: scores / τ gain δ·log(1 + recent train count); null: the bundle's (chosen on valid)",
    )
    tail_boost: float | None = Field(
        None, ge=0.0, le=1.0, description="default rarity blend (requests may override); null: the bundle's"
    )
    exploration: float | None = Field(
        None, ge=0.0, le=1.0, description="random lift of tail items (Gumbel weight); null: the bundle's"
    )
    tail_share: float | None = Field(
        None, ge=0.0, le=1.0, description="list share kept for tail items; null: bundle's"
    )
    new_share: float | None = Field(
        None, ge=0.0, le=1.0, description="list share for never-touched items; null: bundle's"
    )
    exposure_penalty: float | None = Field(
        None, ge=0.0, description="λ: shelf items lose λ·log(1 + shown); null: bundle's"
    )
    candidates: Annotated[int, Field(ge=1)] | Literal["exact"] | None = Field(
        None, description="retriever candidates per user; exact: rank every item; null: the bundle's"
    )
    cold_start_tail_share: float = Field(
        0.3, ge=0.0, le=1.0, description="share of cold-start slots for tail items"
    )
    coverage_window: int = Field(1000, ge=1, description="served lists in the coverage gauge's window")
    stored_history: int = Field(
        200, ge=1, le=10_000, description="newest stored events per user read per request"
    )
    max_batch_size: int = Field(16, ge=1, le=256, description="requests scored in one forward pass")
    batch_wait_timeout_s: float = Field(0.002, ge=0.0, le=1.0, description="wait for a batch to fill")

    @model_validator(mode="after")
    def _shares_fit(self) -> ListKnobs:
        total = (self.tail_share or 0.0) + (self.new_share or 0.0)
        if total > 1.0:
            raise ValueError(f"tail_share + new_share must be ≤ 1, got {total}")
        return self


class IngressKnobs(Strict):
    max_k: int = Field(100, ge=1, le=MAX_K, description="largest k a request may ask for")
    recommend_batch_size: int = Field(
        16, ge=1, le=256, description="concurrent /recommend requests sent as one ranker call"
    )
    recommend_batch_wait_s: float = Field(
        0.025, ge=0.0, le=1.0, description="wait for a /recommend batch to fill"
    )
    ranker: ListKnobs | None = Field(
        None, description="the in-process ranker's knobs (ranker_deployment: false)"
    )


class EncoderKnobs(Strict):
    max_batch_size: int = Field(32, ge=1, le=1024, description="texts encoded in one call")
    batch_wait_timeout_s: float = Field(0.005, ge=0.0, le=1.0, description="wait for a batch to fill")


@dataclass(frozen=True)
class ReplicaSpec:
    """What every replica of one deploy is built from: the app args, resolved by the builder (the bundle's
    version symlink resolved, paths absolute, the store checked to exist)."""

    bundle: str
    store: str
    metrics_dir: str
    store_timeout_s: float = 5.0
    store_threads: int = 4
    torch_threads: int = 1
    auth: AuthSources = field(default_factory=AuthSources)
    limits: Limits = field(default_factory=Limits)
    retention: Retention = field(default_factory=Retention)

    def open_store(self) -> Store:
        """This deploy's store, as a replica opens it (checked to exist by the builder)."""
        return open_store(self.store, timeout_s=self.store_timeout_s, retention=self.retention)

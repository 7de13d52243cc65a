"""Typed arguments of the Serve app: the builder's ``args`` and each deployment's ``user_config``.

``args`` fix what a replica is built from (changing them restarts replicas); ``user_config`` knobs are
applied live through ``reconfigure()`` when an edited config is deployed with ``serve deploy``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from longtail.serve.api import Limits
from longtail.serve.auth import AuthSources
from longtail.serve.schemas import MAX_K
from longtail.store import Retention, Store, Tracking, open_store


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
    record_impressions: bool = Field(
        True, description="record each served list (impression) in the store, for attribution and KPIs"
    )
    attribution_window_s: float = Field(
        86_400.0, gt=0.0, description="an event is attributed to a list shown at most this long before it"
    )
    attribute_unlabelled: bool = Field(
        True, description="events without a recommendation_id are attributed by (user, item, window)"
    )
    impressions_keep_days: float | None = Field(
        30.0, gt=0.0, description="impressions and their attributions are deleted after this; null: kept"
    )
    torch_threads: int = Field(1, ge=1, description="intra-op threads per ranker/encoder replica")
    ranker_deployment: bool = Field(
        False,
        description="true: a separate Ranker deployment (scales apart, e.g. on "
        "GPU nodes); false: each Ingress replica ranks in-process (one hop less)",
    )


PER_DEPLOY = frozenset(  # knobs one replica applies to every arm alike (batching, windows, the arms)
    {
        "arms",
        "experiment",
        "max_batch_size",
        "batch_wait_timeout_s",
        "stored_history",
        "coverage_window",
        "feedback_refresh_s",
    }
)


class Arm(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.:-]{1,32}$", description="named in every response and KPI")
    share: float = Field(ge=0.0, le=1.0, description="share of users in this arm (shares sum to 1)")
    knobs: dict[str, Any] = Field(
        default_factory=dict, description="list knobs of this arm, over the ranker's (e.g. tail_share: 0.3)"
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
    tail_knn: float | None = Field(
        None,
        ge=0.0,
        description="w: the tail shelf orders by z(score) + w·z(item-kNN affinity); null: bundle's",
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
    shelf_feedback: float = Field(
        0.0,
        ge=0.0,
        le=10.0,
        description="feedback-driven shelves: tail and new-item shelf items gain this · log(their engagement "
        "rate on the shelves, shrunk to the overall rate, / the overall rate); 0: fixed shelves",
    )
    shelf_trend: float = Field(
        0.0,
        ge=0.0,
        le=10.0,
        description="live trend on the tail and new-item shelves: an item gains this · log(1 + its stored "
        "events in the last feedback_window_s); 0: off",
    )
    feedback_window_s: float = Field(
        7 * 86_400.0, gt=0.0, description="showings and engagement the feedback-driven shelves learn from"
    )
    feedback_refresh_s: float = Field(
        10.0, ge=0.0, le=3600.0, description="re-read item engagement from the store at most this often"
    )
    experiment: str = Field(
        "longtail",
        min_length=1,
        max_length=64,
        description="salt of the arm assignment (a new one reshuffles)",
    )
    arms: list[Arm] | None = Field(
        None,
        description="A/B arms: a user's arm is a hash of (experiment, user id); null: one arm, 'default'",
    )

    @model_validator(mode="after")
    def _shares_fit(self) -> ListKnobs:
        total = (self.tail_share or 0.0) + (self.new_share or 0.0)
        if total > 1.0:
            raise ValueError(f"tail_share + new_share must be ≤ 1, got {total}")
        if self.arms is not None:
            self.arm_knobs()  # every arm's knobs checked at deploy time
        return self

    def arm_knobs(self) -> dict[str, tuple[float, ListKnobs]]:
        """arm name → (share, the arm's knobs: these knobs with the arm's overrides); one arm 'default' with
        share 1 when no arms are set. Raises ValueError naming what is wrong with ``arms``."""
        if not self.arms:
            return {"default": (1.0, self)}
        names = [a.name for a in self.arms]
        if len(set(names)) != len(names):
            raise ValueError(f"arms: names must be unique, got {names}")
        total = sum(a.share for a in self.arms)
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"arms: shares must sum to 1, got {total:g} ({', '.join(map(str, names))})")
        base = self.model_dump(exclude={"arms"})
        out = {}
        for arm in self.arms:
            shared = sorted(set(arm.knobs) & PER_DEPLOY)
            if shared:
                raise ValueError(f"arms[{arm.name}]: {shared} apply to every arm; set them beside `arms`")
            unknown = sorted(set(arm.knobs) - set(ListKnobs.model_fields))
            if unknown:
                raise ValueError(f"arms[{arm.name}]: unknown knob(s) {unknown}")
            try:
                out[arm.name] = (arm.share, ListKnobs.model_validate({**base, **arm.knobs}))
            except ValueError as err:
                raise ValueError(f"arms[{arm.name}]: {err}") from None
        return out


def arm_of(user_id: str, experiment: str, shares: list[tuple[str, float]]) -> str:
    """A user's arm: sha256(experiment, user id) as a point in [0, 1), placed on the arms' cumulative
    shares in their listed order. Sticky across requests, replicas and restarts; changing shares moves only
    the users between the old and the new boundaries."""
    digest = hashlib.sha256(f"{experiment}\x00{user_id}".encode()).digest()
    point = int.from_bytes(digest[:8], "big") / 2.0**64
    edge = 0.0
    for name, share in shares:
        edge += share
        if point < edge:
            return name
    return shares[-1][0]  # rounding at the top edge


class IngressKnobs(Strict):
    max_k: int = Field(100, ge=1, le=MAX_K, description="largest k a request may ask for")
    recommend_batch_size: int = Field(
        16, ge=1, le=256, description="the most /recommend requests one ranking pass (or Ranker call) takes"
    )
    recommend_batch_wait_s: float = Field(
        0.025,
        ge=0.0,
        le=1.0,
        description="in-process: the most a pass waits for the previous pass's requests to come back (a lone "
        "request never waits); ranker_deployment: true: wait for a batch to fill before the Ranker call",
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
    tracking: Tracking = field(default_factory=Tracking)
    record_impressions: bool = True

    def open_store(self) -> Store:
        """This deploy's store, as a replica opens it (checked to exist by the builder)."""
        return open_store(
            self.store, timeout_s=self.store_timeout_s, retention=self.retention, tracking=self.tracking
        )

"""Request and response bodies of the HTTP API (strict: unknown fields and wrong types are 422s)."""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Id = Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[^\x00-\x1f\x7f]+$")]
Knob = Annotated[float, Field(ge=0.0, le=1.0)]
MAX_K = 1000  # hard cap; the ingress user_config's max_k can lower it at run time


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class RecommendRequest(Strict):
    user_id: Id
    k: int = Field(20, ge=1, le=MAX_K, description="items to return")
    exclude_seen: bool = Field(True, description="leave out items the user already interacted with")
    tail_boost: Knob | None = Field(
        None, description="0..1 rarity blend for this request; null: the server's"
    )
    explain: bool = Field(False, description="add term contributions and the attended history items")


class TextQuery(Strict):
    query: str = Field(min_length=1, max_length=2000, description="free text, e.g. 'quiet space drama'")
    k: int = Field(20, ge=1, le=MAX_K)


class RecommendedItem(BaseModel):
    item_id: str
    score: float
    tail: bool = Field(description="outside the head (the top 20% of items by train interactions)")
    bucket: str | None = Field(None, description="'head', 'tail', or 'new' (never touched in train)")
    shelf: str | None = Field(
        None, description="what filled the slot: 'model', 'tail', 'new' ('popular', 'explore' for new users)"
    )
    reason: str | None = Field(None, description="cold start only: 'popular' or 'explore'")
    explanation: dict[str, Any] | None = None


class RecommendResponse(BaseModel):
    user_id: str | None = None
    strategy: str = Field(description="'hybrid', 'cold_start' or 'text'")
    items: list[RecommendedItem]
    bundle_version: str
    arm: str | None = Field(None, description="the user's A/B arm")
    recommendation_id: str | None = Field(
        None,
        description="send it back with the events this list led to (attribution); absent when lists "
        "are not recorded",
    )


class EventIn(Strict):
    event_id: Id = Field(description="idempotency key: a repeated event_id is stored once")
    user_id: Id
    item_id: Id
    type: str = Field(pattern=r"^[A-Za-z0-9_.:-]{1,32}$", description="e.g. view, click, purchase, rating")
    timestamp: float | None = Field(None, ge=0.0, description="unix seconds; null: time of arrival")
    weight: float | None = Field(
        None,
        ge=0.0,
        le=1e6,
        description="multiplies the event type's strength when the bundle has events.use_weight; null: 1",
    )
    recommendation_id: Id | None = Field(
        None, description="the recommendation_id of the list the event came from (attribution)"
    )
    position: int | None = Field(None, ge=0, le=MAX_K, description="the item's 0-based slot in that list")

    @model_validator(mode="after")
    def _position_needs_a_list(self) -> EventIn:
        if self.position is not None and self.recommendation_id is None:
            raise ValueError("position is a slot of a list: send it with that list's recommendation_id")
        return self

    @field_validator("timestamp", "weight")
    @classmethod
    def _finite(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value


class EventBatch(Strict):
    events: list[EventIn] = Field(min_length=1, max_length=1000)


class EventsResponse(BaseModel):
    stored: int = Field(description="events newly stored")
    duplicates: int = Field(description="events whose event_id was already stored (ignored)")
    erased: int = Field(0, description="events refused: their user was erased after they were sent")
    attributed: int = Field(0, description="stored events attributed to a served list")


class ItemIn(Strict):
    item_id: Id
    text: str = Field(min_length=1, max_length=10_000, description="the text the encoder reads")
    fields: dict[Annotated[str, Field(max_length=64)], str | int | float | bool] | None = Field(
        None, max_length=64, description="extra attributes, stored with the item"
    )


class ItemResponse(BaseModel):
    item_id: str
    added: bool
    catalog_items: int | None = None


class SimilarResponse(BaseModel):
    item_id: str
    items: list[RecommendedItem]
    bundle_version: str


class EraseRequest(Strict):
    user_id: Id


class EraseResponse(BaseModel):
    user_id: str
    events_deleted: int


class Health(BaseModel):
    status: str
    bundle_version: str
    catalog_items: int

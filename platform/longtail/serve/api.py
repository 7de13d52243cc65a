"""The HTTP app: ``create_app(recommender, store, auth, limits)`` → a FastAPI app, with or without Ray.

The Serve ``Ingress`` mounts this same app (``longtail.serve.ingress``); tests drive it in-process with
FastAPI's ``TestClient`` over an in-process recommender and a real SQLite store. Validation, auth, body
limits, status codes and headers live here and nowhere else.

Writes (events, items, erasure) are committed to the store before the reply, so any ranker replica sees them
on its next request; a locked or unreachable store answers 503 with ``Retry-After``. Every response carries
``x-longtail-bundle-version``: for lists, the version of the ranker that made them.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Protocol

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, Security
from fastapi.responses import JSONResponse, Response

from longtail.data.text import plain_text
from longtail.serve.auth import Tokens, bearer_scheme, require_personal, require_read, require_write
from longtail.serve.guard import VERSION_HEADER, GuardMiddleware
from longtail.serve.impressions import ImpressionLog
from longtail.serve.metrics import CONTENT_TYPE, ServeMetrics
from longtail.serve.pooled_store import PooledStore
from longtail.serve.schemas import (
    MAX_K,
    EraseRequest,
    EraseResponse,
    EventBatch,
    EventIn,
    EventsResponse,
    Health,
    Id,
    ItemIn,
    ItemResponse,
    RecommendRequest,
    RecommendResponse,
    SimilarResponse,
    TextQuery,
)
from longtail.store import Event, EventConflict, Impression, StoreFull, StoreUnavailable

log = logging.getLogger("longtail.serve")
RETRY_AFTER_S = "1"
RANKER_HEADER = "x-longtail-ranker"


@dataclass(frozen=True)
class Limits:
    """What one request may ask; ``max_k`` changes live with the Ingress's ``user_config``."""

    max_body_bytes: int = 1_000_000  # larger bodies get 413
    max_body_messages: int = 10_000  # a body in more ASGI pieces gets 413 (a flood of tiny chunks)
    max_k: int = 100  # the largest list a request may ask for
    max_clock_skew_s: float = 300.0  # event timestamps later than now + this are refused (422)


class Recommender(Protocol):
    """What the app reads through: lists, neighbours, text search and the encoder, over one bundle."""

    @property
    def version(self) -> str:
        """The bundle version of this side (a ranker's answers carry their own)."""
        ...

    def in_bundle(self, item_ids: Iterable[str]) -> set[str]:
        """The ids among ``item_ids`` that are in the bundle's catalog (items added later are in the
        store)."""
        ...

    async def recommend(self, request: dict) -> dict:
        """A ``RecommendRequest`` as a dict → the ranked list (``RecommendResponse`` fields with ``arm``, +
        ``served_by`` and ``knobs``: the arm's list knobs, recorded with the impression)."""
        ...

    async def similar(self, item_id: str, k: int) -> dict:
        """{"items": neighbours, or None for an unknown item; "bundle_version": …}."""
        ...

    async def search(self, query: str, k: int) -> dict:
        """Items nearest a free-text query: {"items": …, "bundle_version": …}."""
        ...

    async def embed(self, text: str) -> dict:
        """{"encoder": the encoder's id, "vector": the text's unit vector}."""
        ...

    async def catalog(self) -> dict:
        """{"version": …, "items": how many items a ranker can recommend now}."""
        ...


def create_app(
    recommender: Recommender,
    store: PooledStore,
    auth: Tokens,
    limits: Limits,
    *,
    metrics: ServeMetrics,
    record_impressions: bool = True,
) -> FastAPI:
    """The HTTP app over one recommender and store; ``app.state`` holds ``auth``, ``limits`` (replace it to
    change limits live), ``metrics``, ``replica`` (the ``x-longtail-replica`` header), ``version`` and
    ``impressions`` (the served lists' write-behind log; None when ``record_impressions`` is off)."""
    log_ = ImpressionLog(store, metrics) if record_impressions else None

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        if log_ is not None:
            await log_.close()  # what is queued reaches the store before the replica goes

    app = FastAPI(
        title="longtail",
        description="Recommendations that surface the long tail: hybrid text + graph + CF ranking, live "
        "events.",
        version="1",
        lifespan=lifespan,
    )
    app.state.impressions = log_
    app.state.auth, app.state.limits, app.state.metrics = auth, limits, metrics
    app.state.replica, app.state.version = "local", recommender.version
    app.add_middleware(GuardMiddleware)
    app.add_exception_handler(StoreUnavailable, _store_unavailable)
    app.add_exception_handler(Exception, _unexpected)
    app.include_router(_reads(recommender))
    app.include_router(_writes(recommender, store))
    return app


def _limits(request: Request) -> Limits:
    return request.app.state.limits


def _metrics(request: Request) -> ServeMetrics:
    return request.app.state.metrics


def _check_k(request: Request, k: int) -> None:
    max_k = _limits(request).max_k
    if not 1 <= k <= max_k:
        raise HTTPException(422, f"k={k} is outside 1..{max_k} (max_k of the Ingress user_config)")


def versioned(body: dict, version: str) -> JSONResponse:
    return JSONResponse(body, headers={VERSION_HEADER.decode(): version})


PERSONAL = [Security(bearer_scheme), Depends(require_personal)]
READ = [Security(bearer_scheme), Depends(require_read)]
WRITE = [Security(bearer_scheme), Depends(require_write)]


def _reads(recommender: Recommender) -> APIRouter:
    router = APIRouter()

    @router.post(
        "/recommend",
        response_model=RecommendResponse,
        response_model_exclude_none=True,
        dependencies=PERSONAL,
    )
    async def recommend(body: RecommendRequest, request: Request) -> JSONResponse:
        """Top-k items for a user; unknown users get popular items mixed with tail exploration."""
        _check_k(request, body.k)
        ranked = await recommender.recommend(body.model_dump())
        served_by = ranked.pop("served_by", "")
        knobs = ranked.pop("knobs", {})
        impressions: ImpressionLog | None = request.app.state.impressions
        if impressions is not None:
            ranked["recommendation_id"] = uuid.uuid4().hex
            impressions.record(_impression(ranked, knobs, _metrics(request)))
        # the ranker's dicts already have the documented shape: no re-validation of k items per request
        response = versioned(ranked, ranked["bundle_version"])
        response.headers[RANKER_HEADER] = served_by  # node/replica of the ranker that made the list
        return response

    @router.post(
        "/recommend/text",
        response_model=RecommendResponse,
        response_model_exclude_none=True,
        dependencies=READ,
    )
    async def recommend_text(body: TextQuery, request: Request) -> JSONResponse:
        """Items whose text is closest to a free-text query (through the encoder)."""
        _check_k(request, body.k)
        found = await recommender.search(body.query, body.k)
        answer = {"strategy": "text", "items": found["items"], "bundle_version": found["bundle_version"]}
        return versioned(answer, found["bundle_version"])

    @router.get(
        "/items/{item_id}/similar",
        response_model=SimilarResponse,
        response_model_exclude_none=True,
        dependencies=READ,
    )
    async def similar(item_id: Id, request: Request, k: Annotated[int, Query(le=MAX_K)] = 20) -> JSONResponse:
        """Graph neighbours of an item, then its nearest items by text."""
        _check_k(request, k)
        found = await recommender.similar(item_id, k)
        if found["items"] is None:
            raise HTTPException(404, f"no item {item_id!r} in the catalog")
        return versioned({"item_id": item_id, **found}, found["bundle_version"])

    @router.get("/healthz", response_model=Health)
    async def healthz() -> JSONResponse:
        catalog = await recommender.catalog()
        body = {"status": "ok", "bundle_version": catalog["version"], "catalog_items": catalog["items"]}
        return versioned(body, catalog["version"])

    @router.get("/metrics")
    async def metrics(request: Request) -> Response:
        """Prometheus text format, summed over every replica on this node."""
        return Response(_metrics(request).scrape(), media_type=CONTENT_TYPE)

    return router


def _writes(recommender: Recommender, store: PooledStore) -> APIRouter:
    router = APIRouter()

    @router.post("/events", response_model=EventsResponse, dependencies=WRITE)
    async def events(body: EventIn | EventBatch, request: Request) -> dict:
        """One event or {"events": [...]}: the batch is stored in one transaction before the reply (all or
        nothing); a resent event_id is a duplicate; events of an erased user sent before the erasure are
        refused; a timestamp later than now (plus the allowed clock skew) is a 422."""
        batch = body.events if isinstance(body, EventBatch) else [body]
        impressions: ImpressionLog | None = request.app.state.impressions
        if impressions is not None:
            await impressions.flush()  # this replica's lists are in the store before its events match them
        now = time.time()
        _check_timestamps(batch, now, _limits(request).max_clock_skew_s, isinstance(body, EventBatch))
        unknown = sorted({e.item_id for e in batch} - recommender.in_bundle(e.item_id for e in batch))
        missing = set(unknown) - (await store.known_items(unknown) if unknown else set())
        if missing:
            rows = [i for i, e in enumerate(batch) if e.item_id in missing]
            raise HTTPException(
                422,
                f"unknown item_id {sorted(missing)[:5]} in event(s) at index {rows[:5]}; add items with POST "
                f"/items first",
            )
        stored = [
            Event(
                e.event_id,
                e.user_id,
                e.item_id,
                e.type,
                now if e.timestamp is None else e.timestamp,
                weight=e.weight,
                stamped=e.timestamp is not None,
                recommendation_id=e.recommendation_id,
                position=e.position,
            )
            for e in batch
        ]
        try:
            added = await store.add_events(stored)
        except EventConflict as exc:
            raise HTTPException(409, str(exc)) from None
        metrics = _metrics(request)
        metrics.events.inc(added.stored)
        metrics.duplicate_events.inc(added.duplicates)
        metrics.erased_events.inc(added.erased)
        for (arm, shelf, bucket), n in Counter(e[:3] for e in added.engaged).items():
            metrics.attributed.labels(arm, shelf, bucket).inc(n)
        return {
            "stored": added.stored,
            "duplicates": added.duplicates,
            "erased": added.erased,
            "attributed": added.attributed,
        }

    @router.post("/items", response_model=ItemResponse, dependencies=WRITE)
    async def items(body: ItemIn, request: Request) -> dict:
        """A new item: encoded, stored, and recommendable on every ranker replica at its next request."""
        if recommender.in_bundle([body.item_id]) or await store.known_items([body.item_id]):
            raise HTTPException(409, f"item_id {body.item_id!r} is already in the catalog")
        text = plain_text(body.text)  # as `longtail data prepare` composes it: D&amp;D reads D&D
        if not text:
            raise HTTPException(422, "text holds only whitespace: the encoder would read nothing")
        embedded = await recommender.embed(text)
        try:
            added = await store.add_item(
                body.item_id, text, body.fields or {}, embedded["encoder"], embedded["vector"]
            )
        except StoreFull as exc:
            raise HTTPException(507, str(exc)) from None
        if not added:
            raise HTTPException(409, f"item_id {body.item_id!r} is already in the catalog")
        _metrics(request).items_added.inc()
        catalog = await recommender.catalog()
        return {"item_id": body.item_id, "added": True, "catalog_items": catalog["items"]}

    async def erase(user_id: str, request: Request) -> dict:
        deleted = await store.erase_user(user_id)
        _metrics(request).users_erased.inc()
        return {"user_id": user_id, "events_deleted": deleted}

    @router.delete("/users/{user_id:path}", response_model=EraseResponse, dependencies=WRITE)
    async def erase_user(user_id: Id, request: Request) -> dict:
        """Erase a user (percent-encode ``/`` and other reserved characters): see POST /users/erase."""
        return await erase(user_id, request)

    @router.post("/users/erase", response_model=EraseResponse, dependencies=WRITE)
    async def erase_user_body(body: EraseRequest, request: Request) -> dict:
        """Erase a user's stored events, stop using their trained history, and refuse their events sent
        before now (replays included); events stamped later start a new history."""
        return await erase(body.user_id, request)

    return router


def _impression(ranked: dict, knobs: dict, metrics: ServeMetrics) -> Impression:
    """The impression of a served list (``ranked``: the recommender's answer with its recommendation_id;
    ``knobs``: the list knobs of its arm), counted in the metrics as it is recorded."""
    arm = ranked.get("arm", "default")
    slots = tuple(
        (i["item_id"], i.get("shelf") or "model", i.get("bucket") or ("tail" if i["tail"] else "head"))
        for i in ranked["items"]
    )
    metrics.impressions.labels(arm, ranked["strategy"]).inc()
    for (shelf, bucket), n in Counter(s[1:] for s in slots).items():
        metrics.impression_slots.labels(arm, shelf, bucket).inc(n)
    return Impression(
        recommendation_id=ranked["recommendation_id"],
        user_id=ranked["user_id"],
        shown_at=time.time(),
        arm=arm,
        bundle_version=ranked["bundle_version"],
        strategy=ranked["strategy"],
        knobs=json.dumps(knobs, sort_keys=True),
        items=slots,
    )


def _check_timestamps(batch: list[EventIn], now: float, skew_s: float, in_list: bool) -> None:
    """422 naming the first event whose timestamp lies beyond now + ``skew_s`` (a clock in the future, or
    milliseconds where seconds are expected: it would sort as the user's newest event forever, and an event
    sent before an erasure would pass as sent after it)."""
    for i, event in enumerate(batch):
        if event.timestamp is not None and event.timestamp > now + skew_s:
            where = f"events[{i}].timestamp" if in_list else "timestamp"
            hint = (
                " (milliseconds? send unix seconds, e.g. Date.now() / 1000)"
                if event.timestamp > now * 100
                else ""
            )
            raise HTTPException(
                422,
                f"{where}: {event.timestamp:.3f} is in the future{hint}; accepted up to now + {skew_s:g} s "
                f"({now + skew_s:.0f}), or leave it out to stamp the event on arrival",
            )


async def _store_unavailable(request: Request, exc: Exception) -> JSONResponse:
    log.warning("store unavailable on %s: %s", request.url.path, exc)
    return JSONResponse(
        {"detail": "the state store is busy or unreachable; retry"},
        status_code=503,
        headers={"Retry-After": RETRY_AFTER_S},
    )


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, StoreUnavailable):  # raised in a ranker replica, re-raised here wrapped by Ray
        return await _store_unavailable(request, exc)
    if isinstance(exc, HTTPException):  # raised in a ranker replica (e.g. its reads all failed)
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)
    log.exception("unexpected error on %s", request.url.path)
    return JSONResponse({"detail": f"internal error: {type(exc).__name__}"}, status_code=500)

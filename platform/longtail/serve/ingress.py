"""The HTTP ingress: FastAPI routes, validation, auth, body limits and Prometheus metrics.

Reads go to the Ranker deployment; writes (events, items, erasure) are committed to the store here,
before the reply, so any ranker replica sees them on its next request.
"""

import logging
import time

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from ray import serve
from ray.exceptions import RayActorError
from ray.serve.handle import DeploymentHandle

from longtail.serve.deployments import bundle_catalog, bundle_version
from longtail.serve.http import GuardMiddleware, configure_replica, read_token, require_token
from longtail.serve.knobs import IngressKnobs
from longtail.serve.metrics import CONTENT_TYPE
from longtail.serve.schemas import (
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
)  # fmt: skip
from longtail.serve.store import Event, SqliteStore

log = logging.getLogger("longtail.serve")
READ_RETRIES = 2  # a ranker read whose replica died is sent again (reads change nothing)

app = FastAPI(
    title="longtail ranker",
    description="Recommendations that surface the long tail: hybrid text + graph + CF ranking, live events.",
    version="1",
)
app.add_middleware(GuardMiddleware)


@app.exception_handler(Exception)
async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error on %s", request.url.path)
    return JSONResponse({"detail": f"internal error: {type(exc).__name__}"}, status_code=500)


@serve.deployment(name="Ingress", ray_actor_options={"num_cpus": 0.2}, max_ongoing_requests=200)
@serve.ingress(app)
class Ingress:
    def __init__(
        self,
        ranker: DeploymentHandle,
        encoder: DeploymentHandle,
        bundle: str,
        store: str,
        metrics_dir: str,
        token_env: str | None,
        token_file: str | None,
        max_body_bytes: int,
    ) -> None:
        self.ranker, self.encoder = ranker, encoder
        self.store = SqliteStore(store)
        self.catalog = bundle_catalog(bundle)
        self.version = bundle_version(bundle)
        self.knobs = IngressKnobs()
        token = read_token(token_env, token_file)
        replica = serve.get_replica_context().replica_id.unique_id
        self.metrics = configure_replica(metrics_dir, token, max_body_bytes, replica)
        if token is None:
            log.warning("no token configured (%s / %s): write routes are open", token_env, token_file)

    def reconfigure(self, config: dict) -> None:
        self.knobs = IngressKnobs.model_validate(config)

    async def _read(self, method: str, *args):
        """A ranker call that changes nothing, retried on another replica when its replica dies mid-call
        (killed, OOM, node lost); 503 when every try failed."""
        for attempt in range(READ_RETRIES + 1):
            try:
                return await getattr(self.ranker, method).remote(*args)
            except RayActorError as exc:  # includes ActorDiedError and ActorUnavailableError
                if attempt == READ_RETRIES:
                    raise HTTPException(503, f"no ranker replica answered ({type(exc).__name__}); retry") from exc
                self.metrics.read_retries.inc()
                log.warning("ranker %s: replica lost (%s), retrying", method, type(exc).__name__)

    def _check_k(self, k: int) -> None:
        if k > self.knobs.max_k:
            raise HTTPException(422, f"k={k} is over max_k={self.knobs.max_k} (the Ingress user_config)")

    @app.post("/recommend", response_model=RecommendResponse, response_model_exclude_none=True)
    async def recommend(self, body: RecommendRequest) -> JSONResponse:
        """Top-k items for a user; unknown users get popular items mixed with tail exploration."""
        self._check_k(body.k)
        # the ranker's dicts already have the documented shape: skip re-validating 20 items per request
        return JSONResponse(await self._read("recommend", body.model_dump()))

    @app.post("/recommend/text", response_model=RecommendResponse, response_model_exclude_none=True)
    async def recommend_text(self, body: TextQuery) -> dict:
        """Items whose text is closest to a free-text query (through the encoder)."""
        self._check_k(body.k)
        vector = await self.encoder.embed.remote(body.query)
        items = await self._read("search", vector, body.k)
        return {"strategy": "text", "items": items, "bundle_version": self.version}

    @app.post("/events", response_model=EventsResponse, dependencies=[Depends(require_token)])
    async def events(self, body: EventIn | EventBatch) -> dict:
        """One event or {"events": [...]}: stored durably before the reply; repeated event_ids are ignored."""
        batch = body.events if isinstance(body, EventBatch) else [body]
        unknown = sorted({e.item_id for e in batch} - self.catalog)
        missing = set(unknown) - self.store.known_items(unknown)
        if missing:
            rows = [i for i, e in enumerate(batch) if e.item_id in missing]
            raise HTTPException(422, f"unknown item_id {sorted(missing)[:5]} in event(s) at index {rows[:5]}; "
                                     "add items with POST /items first")  # fmt: skip
        now = time.time()
        stored, duplicates = self.store.add_events(
            [Event(e.event_id, e.user_id, e.item_id, e.type, now if e.timestamp is None else e.timestamp) for e in batch]
        )
        self.metrics.events.inc(stored)
        self.metrics.duplicate_events.inc(duplicates)
        return {"stored": stored, "duplicates": duplicates}

    @app.post("/items", response_model=ItemResponse, dependencies=[Depends(require_token)])
    async def items(self, body: ItemIn) -> dict:
        """A new item: encoded, stored, and recommendable on every ranker replica at its next request."""
        if body.item_id in self.catalog or self.store.known_items([body.item_id]):
            raise HTTPException(409, f"item_id {body.item_id!r} is already in the catalog")
        vector = await self.encoder.embed.remote(body.text)
        added = self.store.add_item(body.item_id, body.text, body.fields or {}, vector)
        if not added:
            raise HTTPException(409, f"item_id {body.item_id!r} is already in the catalog")
        self.metrics.items_added.inc()
        catalog = await self._read("catalog")
        return {"item_id": body.item_id, "added": True, "catalog_items": catalog["items"]}

    @app.delete("/users/{user_id}", response_model=EraseResponse, dependencies=[Depends(require_token)])
    async def erase_user(self, user_id: Id) -> dict:
        """Erase a user's stored events and stop using their trained history; they become a new user."""
        deleted = self.store.erase_user(user_id)
        self.metrics.users_erased.inc()
        return {"user_id": user_id, "events_deleted": deleted}

    @app.get("/items/{item_id}/similar", response_model=SimilarResponse, response_model_exclude_none=True)
    async def similar(self, item_id: Id, k: int = 20) -> dict:
        """Graph neighbours of an item, then its nearest items by text."""
        if not 1 <= k <= self.knobs.max_k:
            raise HTTPException(422, f"k must be in 1..{self.knobs.max_k}, got {k}")
        items = await self._read("similar", item_id, k)
        if items is None:
            raise HTTPException(404, f"no item {item_id!r} in the catalog")
        return {"item_id": item_id, "items": items, "bundle_version": self.version}

    @app.get("/healthz", response_model=Health)
    async def healthz(self) -> dict:
        catalog = await self._read("catalog")
        return {"status": "ok", "bundle_version": catalog["version"], "catalog_items": catalog["items"]}

    @app.get("/metrics")
    async def metrics(self) -> Response:
        """Prometheus text format, summed over every replica on this node."""
        return Response(self.metrics.scrape(), media_type=CONTENT_TYPE)

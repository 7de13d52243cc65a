"""The HTTP ingress: FastAPI routes, validation, auth, body limits and Prometheus metrics.

Reads go to the Ranker deployment, or with ``ranker_deployment: false`` to this replica's own in-process
ranker (``RankerCore``); writes (events, items, erasure) are committed to the store here,
before the reply, so any ranker replica sees them on its next request. Store calls run in worker threads,
never on the event loop; a locked or unreachable store answers 503 with ``Retry-After``. Every response
carries ``x-longtail-bundle-version``: for lists, the version of the ranker that made them (a response is
made by one replica of one version; a text query whose encoder and ranker replicas are of different
versions, mid-rollout, is sent again).
"""

import asyncio
import logging
import time

import ray
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from ray import serve
from ray.exceptions import RayActorError
from ray.serve.handle import DeploymentHandle

from longtail.serve.deployments import EncoderMismatch, bundle_catalog, bundle_version
from longtail.serve.http import (
    VERSION_HEADER,
    GuardMiddleware,
    configure_replica,
    load_tokens,
    require_history_access,
    require_read,
    require_token,
)
from longtail.serve.knobs import IngressKnobs, RankerKnobs
from longtail.serve.metrics import CONTENT_TYPE
from longtail.serve.ranker_core import RankerCore
from longtail.serve.schemas import (
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
)  # fmt: skip
from longtail.serve.store import Event, EventConflict, StoreUnavailable, open_store

log = logging.getLogger("longtail.serve")
READ_RETRIES = 2  # a ranker read whose replica died is sent again (reads change nothing)
MISMATCH_WAIT_S = 45.0  # a text query whose encoder and ranker serve different bundles (a rollout) is resent
# until a matching pair answers; a rollout replaces both deployments within this on the shipped configs
RETRY_AFTER_S = "1"
RANKER_HEADER = "x-longtail-ranker"
RANKER_CALLS = 2  # /recommend batches one Ingress replica has in flight at once

app = FastAPI(
    title="longtail ranker",
    description="Recommendations that surface the long tail: hybrid text + graph + CF ranking, live events.",
    version="1",
)
app.add_middleware(GuardMiddleware)


@app.exception_handler(StoreUnavailable)
async def _store_unavailable(request: Request, exc: StoreUnavailable) -> JSONResponse:
    log.warning("store unavailable on %s: %s", request.url.path, exc)
    return JSONResponse({"detail": "the state store is busy or unreachable; retry"}, status_code=503,
                        headers={"Retry-After": RETRY_AFTER_S})  # fmt: skip


@app.exception_handler(Exception)
async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, StoreUnavailable):  # raised in a ranker replica, re-raised here wrapped by Ray
        return await _store_unavailable(request, exc)
    log.exception("unexpected error on %s", request.url.path)
    return JSONResponse({"detail": f"internal error: {type(exc).__name__}"}, status_code=500)


def versioned(body: dict, version: str) -> JSONResponse:
    return JSONResponse(body, headers={VERSION_HEADER.decode(): version})


@serve.deployment(name="Ingress", ray_actor_options={"num_cpus": 0.2}, max_ongoing_requests=200)
@serve.ingress(app)
class Ingress:
    def __init__(
        self,
        ranker: DeploymentHandle | None,
        encoder: DeploymentHandle,
        bundle: str,
        store: str,
        store_timeout_s: float,
        metrics_dir: str,
        auth: dict,
        max_body_bytes: int,
        torch_threads: int = 1,
    ) -> None:
        self.ranker, self.encoder = ranker, encoder
        self.store = open_store(store, timeout_s=store_timeout_s)
        self.catalog = bundle_catalog(bundle)
        self.version = bundle_version(bundle)
        self.knobs = IngressKnobs()
        tokens = load_tokens(**auth)  # fails the replica (and the deploy) when auth is on without a token
        replica = serve.get_replica_context().replica_id.unique_id
        self.metrics = configure_replica(metrics_dir, tokens, max_body_bytes, replica, self.version)
        # no Ranker deployment: this replica ranks in-process (reads skip one Serve hop)
        self.local = None if ranker is not None else RankerCore(
            bundle, store, store_timeout_s, metrics_dir, torch_threads,
            f"{ray.get_runtime_context().get_node_id()[:12]}/{replica}", None,
        )  # fmt: skip
        if not tokens.enabled:
            log.warning("auth: none — every route is open to anyone who can reach this port")

    def reconfigure(self, config: dict) -> None:
        knobs = IngressKnobs.model_validate(config)
        if self.local is not None:
            self.local.configure(knobs.ranker or RankerKnobs())
        elif knobs.ranker is not None:
            raise ValueError("the Ingress's `ranker:` knobs apply only with `ranker_deployment: false`; "
                             "set them in the Ranker deployment's user_config")  # fmt: skip
        self.knobs = knobs
        for batched in (self._recommend_batch, self._recommend_local):
            batched.set_max_batch_size(self.knobs.recommend_batch_size)
            batched.set_batch_wait_timeout_s(self.knobs.recommend_batch_wait_s)

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.01, max_concurrent_batches=RANKER_CALLS)
    async def _recommend_batch(self, requests: list[dict]) -> list[dict]:
        """Concurrent /recommend requests of this replica as one Ranker call: one hop and one pipeline pass
        for the batch instead of one per request (up to ``RANKER_CALLS`` batches in flight, so several Ranker
        replicas work at once and the autoscaler sees the load)."""
        return await self._read("recommend_many", requests)

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.025, max_concurrent_batches=1)
    async def _recommend_local(self, requests: list[dict]) -> list[dict]:
        """The same, ranked in-process: one batch at a time, so requests that arrive while one is ranked
        all join the next (batch 8 costs a third per user of batch 1 on the ML-100K bundle)."""
        return await self.local.recommend_many(requests)

    async def _read(self, method: str, *args):
        """A ranker call that changes nothing: in-process, or to the Ranker deployment, retried on another
        replica when its replica dies mid-call (killed, OOM, node lost); 503 when every try failed."""
        if self.local is not None:
            return await getattr(self.local, method)(*args)
        for attempt in range(READ_RETRIES + 1):
            try:
                return await getattr(self.ranker, method).remote(*args)
            except RayActorError as exc:  # includes ActorDiedError and ActorUnavailableError
                if attempt == READ_RETRIES:
                    raise HTTPException(503, f"no ranker replica answered ({type(exc).__name__}); retry",
                                        headers={"Retry-After": RETRY_AFTER_S}) from exc  # fmt: skip
                self.metrics.read_retries.inc()
                log.warning("ranker %s: replica lost (%s), retrying", method, type(exc).__name__)

    def _check_k(self, k: int) -> None:
        if k > self.knobs.max_k:
            raise HTTPException(422, f"k={k} is over max_k={self.knobs.max_k} (the Ingress user_config)")

    @app.post("/recommend", response_model=RecommendResponse, response_model_exclude_none=True,
              dependencies=[Depends(require_read)])  # fmt: skip
    async def recommend(self, body: RecommendRequest, request: Request) -> JSONResponse:
        """Top-k items for a user; unknown users get popular items mixed with tail exploration."""
        self._check_k(body.k)
        if body.explain or not body.exclude_seen:
            require_history_access(request)
        batched = self._recommend_batch if self.local is None else self._recommend_local
        ranked = await batched(body.model_dump())
        served_by = ranked.pop("served_by")
        # the ranker's dicts already have the documented shape: skip re-validating 20 items per request
        response = versioned(ranked, ranked["bundle_version"])
        response.headers[RANKER_HEADER] = served_by  # node/replica of the ranker that made the list
        return response

    @app.post("/recommend/text", response_model=RecommendResponse, response_model_exclude_none=True,
              dependencies=[Depends(require_read)])  # fmt: skip
    async def recommend_text(self, body: TextQuery) -> JSONResponse:
        """Items whose text is closest to a free-text query (through the encoder)."""
        self._check_k(body.k)
        deadline = time.monotonic() + MISMATCH_WAIT_S
        while True:
            embedded = await self.encoder.embed.remote(body.query)
            try:
                found = await self._read("search", embedded["vector"], body.k, embedded["encoder"])
                break
            except EncoderMismatch as exc:  # mid-rollout: this encoder and that ranker serve different bundles
                if time.monotonic() > deadline:
                    raise HTTPException(503, "a new bundle is rolling out; retry", headers={"Retry-After": RETRY_AFTER_S}) from exc
                self.metrics.read_retries.inc()
                await asyncio.sleep(0.25)
        body_out = {"strategy": "text", "items": found["items"], "bundle_version": found["bundle_version"]}
        return versioned(body_out, found["bundle_version"])

    @app.post("/events", response_model=EventsResponse, dependencies=[Depends(require_token)])
    async def events(self, body: EventIn | EventBatch) -> dict:
        """One event or {"events": [...]}: the batch is stored in one transaction before the reply (all or
        nothing); a resent event_id is a duplicate; events of an erased user sent before the erasure are refused."""
        batch = body.events if isinstance(body, EventBatch) else [body]
        unknown = sorted({e.item_id for e in batch} - self.catalog)
        missing = set(unknown) - (await asyncio.to_thread(self.store.known_items, unknown) if unknown else set())
        if missing:
            rows = [i for i, e in enumerate(batch) if e.item_id in missing]
            raise HTTPException(422, f"unknown item_id {sorted(missing)[:5]} in event(s) at index {rows[:5]}; "
                                     "add items with POST /items first")  # fmt: skip
        now = time.time()
        events = [Event(e.event_id, e.user_id, e.item_id, e.type, now if e.timestamp is None else e.timestamp,
                        e.weight, e.timestamp is not None) for e in batch]  # fmt: skip
        try:
            added = await asyncio.to_thread(self.store.add_events, events)
        except EventConflict as exc:
            raise HTTPException(409, str(exc)) from None
        self.metrics.events.inc(added.stored)
        self.metrics.duplicate_events.inc(added.duplicates)
        self.metrics.erased_events.inc(added.erased)
        return {"stored": added.stored, "duplicates": added.duplicates, "erased": added.erased}

    @app.post("/items", response_model=ItemResponse, dependencies=[Depends(require_token)])
    async def items(self, body: ItemIn) -> dict:
        """A new item: encoded, stored, and recommendable on every ranker replica at its next request."""
        if body.item_id in self.catalog or await asyncio.to_thread(self.store.known_items, [body.item_id]):
            raise HTTPException(409, f"item_id {body.item_id!r} is already in the catalog")
        embedded = await self.encoder.embed.remote(body.text)
        added = await asyncio.to_thread(self.store.add_item, body.item_id, body.text, body.fields or {},
                                        embedded["encoder"], embedded["vector"])  # fmt: skip
        if not added:
            raise HTTPException(409, f"item_id {body.item_id!r} is already in the catalog")
        self.metrics.items_added.inc()
        catalog = await self._read("catalog")
        return {"item_id": body.item_id, "added": True, "catalog_items": catalog["items"]}

    async def _erase(self, user_id: str) -> dict:
        deleted = await asyncio.to_thread(self.store.erase_user, user_id)
        self.metrics.users_erased.inc()
        return {"user_id": user_id, "events_deleted": deleted}

    @app.delete("/users/{user_id:path}", response_model=EraseResponse, dependencies=[Depends(require_token)])
    async def erase_user(self, user_id: Id) -> dict:
        """Erase a user (percent-encode ``/`` and other reserved characters): see POST /users/erase."""
        return await self._erase(user_id)

    @app.post("/users/erase", response_model=EraseResponse, dependencies=[Depends(require_token)])
    async def erase_user_body(self, body: EraseRequest) -> dict:
        """Erase a user's stored events, stop using their trained history, and refuse their events sent
        before now (replays included); events stamped later start a new history."""
        return await self._erase(body.user_id)

    @app.get("/items/{item_id}/similar", response_model=SimilarResponse, response_model_exclude_none=True,
             dependencies=[Depends(require_read)])  # fmt: skip
    async def similar(self, item_id: Id, k: int = 20) -> JSONResponse:
        """Graph neighbours of an item, then its nearest items by text."""
        if not 1 <= k <= self.knobs.max_k:
            raise HTTPException(422, f"k must be in 1..{self.knobs.max_k}, got {k}")
        found = await self._read("similar", item_id, k)
        if found["items"] is None:
            raise HTTPException(404, f"no item {item_id!r} in the catalog")
        return versioned({"item_id": item_id, **found}, found["bundle_version"])

    @app.get("/healthz", response_model=Health)
    async def healthz(self) -> JSONResponse:
        catalog = await self._read("catalog")
        body = {"status": "ok", "bundle_version": catalog["version"], "catalog_items": catalog["items"]}
        return versioned(body, catalog["version"])

    @app.get("/metrics")
    async def metrics(self) -> Response:
        """Prometheus text format, summed over every replica on this node."""
        return Response(self.metrics.scrape(), media_type=CONTENT_TYPE)

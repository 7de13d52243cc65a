"""The Serve ``Ingress``: the HTTP app of ``longtail.serve.api`` mounted on a Serve deployment.

Each replica builds its app after its constructor (``__serve_build_asgi_app__``), over itself as the
``Recommender``: reads go to the Ranker deployment, or with ``ranker_deployment: false`` to this replica's
own in-process ``Reader``, and concurrent ``/recommend`` requests of one replica are ranked as one
batch (``@serve.batch``). What needs Serve stays here: batching, the handles, resending a read whose Ranker
replica died, and resending a text query whose encoder and ranker replicas serve different bundle versions
mid-rollout.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Iterable

import ray
from fastapi import FastAPI, HTTPException
from ray import serve
from ray.exceptions import RayActorError
from ray.serve.handle import DeploymentHandle

from longtail.bundle import read_item_ids, read_manifest
from longtail.serve.api import RETRY_AFTER_S, create_app
from longtail.serve.auth import load_tokens
from longtail.serve.batching import PassBatcher
from longtail.serve.knobs import IngressKnobs, ListKnobs, ReplicaSpec
from longtail.serve.metrics import ServeMetrics
from longtail.serve.pooled_store import PooledStore
from longtail.serve.reader import EncoderMismatch, Reader, set_torch_threads

log = logging.getLogger("longtail.serve")
READ_RETRIES = 2  # a ranker read whose replica died is sent again (reads change nothing)
MISMATCH_WAIT_S = 45.0  # a text query whose encoder and ranker serve different bundles (a rollout) is resent
# until a matching pair answers; a rollout replaces both deployments within this on the shipped configs
RANKER_CALLS = 2  # /recommend batches one Ingress replica has in flight at once (Ranker deployment)


async def resend_on_replica_loss(call, retried, *args):
    """``await call.remote(*args)``, sent again (up to ``READ_RETRIES`` more times) when the replica that took
    it dies mid-call (killed, OOM, node lost); 503 when every try failed. Only for calls that change
    nothing."""
    for attempt in range(READ_RETRIES + 1):
        try:
            return await call.remote(*args)
        except RayActorError as exc:  # includes ActorDiedError and ActorUnavailableError
            if attempt == READ_RETRIES:
                raise HTTPException(
                    503,
                    f"no ranker replica answered ({type(exc).__name__}); retry",
                    headers={"Retry-After": RETRY_AFTER_S},
                ) from exc
            retried()
            log.warning("ranker call: replica lost (%s), retrying", type(exc).__name__)
    raise AssertionError("unreachable")


@serve.deployment(name="Ingress", ray_actor_options={"num_cpus": 0.2}, max_ongoing_requests=200)
@serve.ingress()
class Ingress:
    def __init__(self, ranker: DeploymentHandle | None, encoder: DeploymentHandle, spec: ReplicaSpec) -> None:
        set_torch_threads(spec.torch_threads)
        self.ranker, self.encoder = ranker, encoder
        self.store = PooledStore(spec.open_store(), spec.store_threads)
        self.catalog_ids = frozenset(str(i) for i in read_item_ids(spec.bundle))
        self._version = read_manifest(spec.bundle, verify=False).version  # verified by the builder
        self.tokens = load_tokens(
            spec.auth
        )  # fails the replica (and the deploy) when auth is on without a token
        self.replica = serve.get_replica_context().replica_id.unique_id
        self.metrics = ServeMetrics.open(spec.metrics_dir)
        self.metrics.replicas.labels("Ingress").set(1)
        self.limits = spec.limits
        self.record_impressions = spec.record_impressions
        self.http_app: FastAPI | None = None
        # no Ranker deployment: this replica ranks in-process (reads skip one Serve hop)
        node = ray.get_runtime_context().get_node_id()[:12]
        self.local = (
            None
            if ranker is not None
            else Reader(spec.bundle, self.store, self.metrics, f"{node}/{self.replica}")
        )
        # in-process: the requests that arrive while a pass ranks form the next pass (no fixed wait)
        self.passes = None if self.local is None else PassBatcher(self.local.recommend_many)
        if not self.tokens.enabled:
            log.warning("auth: none — every route is open to anyone who can reach this port")

    def __serve_build_asgi_app__(self) -> FastAPI:
        self.http_app = create_app(
            self,
            self.store,
            self.tokens,
            self.limits,
            metrics=self.metrics,
            record_impressions=self.record_impressions,
        )
        self.http_app.state.replica = self.replica
        return self.http_app

    def reconfigure(self, config: dict) -> None:
        knobs = IngressKnobs.model_validate(config)
        if self.local is not None:
            self.local.configure(knobs.ranker or ListKnobs())
        elif knobs.ranker is not None:
            raise ValueError(
                "the Ingress's `ranker:` knobs apply only with `ranker_deployment: false`; "
                "set them in the Ranker deployment's user_config"
            )
        self.limits = dataclasses.replace(self.limits, max_k=knobs.max_k)
        if self.http_app is not None:
            self.http_app.state.limits = self.limits
        self._recommend_batch.set_max_batch_size(knobs.recommend_batch_size)
        self._recommend_batch.set_batch_wait_timeout_s(knobs.recommend_batch_wait_s)
        if self.passes is not None:
            self.passes.set_max_size(knobs.recommend_batch_size)
            self.passes.set_linger_s(knobs.recommend_batch_wait_s)

    # ---- the app's Recommender ------------------------------------------------------------------------
    @property
    def version(self) -> str:
        return self._version

    def in_bundle(self, item_ids: Iterable[str]) -> set[str]:
        return {i for i in item_ids if i in self.catalog_ids}

    async def recommend(self, request: dict) -> dict:
        if self.passes is not None:
            return await self.passes.submit(request)
        return await self._recommend_batch(request)

    async def similar(self, item_id: str, k: int) -> dict:
        return await self._read("similar", item_id, k)

    async def embed(self, text: str) -> dict:
        return await self.encoder.embed.remote(text)

    async def search(self, query: str, k: int) -> dict:
        deadline = time.monotonic() + MISMATCH_WAIT_S
        while True:
            embedded = await self.embed(query)
            try:
                return await self._read("search", embedded["vector"], k, embedded["encoder"])
            except (
                EncoderMismatch
            ) as exc:  # mid-rollout: this encoder and that ranker serve different bundles
                if time.monotonic() > deadline:
                    raise HTTPException(
                        503, "a new bundle is rolling out; retry", headers={"Retry-After": RETRY_AFTER_S}
                    ) from exc
                self.metrics.read_retries.inc()
                await asyncio.sleep(0.25)

    async def catalog(self) -> dict:
        return await self._read("catalog")

    # ---- batching and reads -----------------------------------------------------------------------------
    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.01, max_concurrent_batches=RANKER_CALLS)
    async def _recommend_batch(self, requests: list[dict]) -> list[dict]:
        """Concurrent /recommend requests of this replica as one Ranker call: one hop and one pipeline pass
        for the batch instead of one per request (up to ``RANKER_CALLS`` batches in flight, so several Ranker
        replicas work at once and the autoscaler sees the load)."""
        return await self._read("recommend_many", requests)

    async def _read(self, method: str, *args: object) -> dict:
        """A ranker call that changes nothing: in-process, or to the Ranker deployment (resent on another
        replica when its replica dies mid-call)."""
        if self.local is not None:
            return await getattr(self.local, method)(*args)
        assert self.ranker is not None
        return await resend_on_replica_loss(
            getattr(self.ranker, method), self.metrics.read_retries.inc, *args
        )

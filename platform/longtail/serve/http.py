"""HTTP plumbing of the ingress replicas: per-replica state, body limit + metrics middleware, bearer auth.

Kept apart from ``ingress.py`` on purpose: Serve ships the ingress class by value, with a copy of its
module's globals, so state that the middleware (imported by reference) must see lives here and is set
through ``configure_replica``.
"""

from __future__ import annotations

import hmac
import os
import time
from pathlib import Path

from fastapi import HTTPException, Request, status

from longtail.serve.metrics import ServeMetrics


class ReplicaState:
    """This replica's settings, read by the middleware and the auth dependency (one replica per process;
    Serve ships the ingress class by value, so its copy of module globals is not this module's)."""

    metrics: ServeMetrics
    token: bytes | None = None
    max_body_bytes: int = 1_000_000
    replica: str = ""


STATE = ReplicaState()

def configure_replica(metrics_dir: str, token: bytes | None, max_body_bytes: int, replica: str) -> ServeMetrics:
    """Set this replica's state; returns its metrics."""
    STATE.metrics = ServeMetrics.open(metrics_dir)
    STATE.token, STATE.max_body_bytes, STATE.replica = token, max_body_bytes, replica
    return STATE.metrics


class GuardMiddleware:
    """Pure ASGI: refuses bodies over the limit (413), counts and times every request by route and status."""

    def __init__(self, inner) -> None:
        self.inner = inner

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.inner(scope, receive, send)
        state = STATE
        start, limit, seen = time.perf_counter(), state.max_body_bytes, 0
        result = {"status": 500}

        async def send_wrapper(message) -> None:
            if message["type"] == "http.response.start":
                result["status"] = message["status"]
                message.setdefault("headers", []).append((b"x-longtail-replica", state.replica.encode()))
            await send(message)

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _TooLarge
            return message

        declared = dict(scope.get("headers") or ()).get(b"content-length")
        try:
            if declared is not None and declared.isdigit() and int(declared) > limit:
                raise _TooLarge
            await self.inner(scope, limited_receive, send_wrapper)
        except _TooLarge:
            body = f'{{"detail": "request body over {limit} bytes"}}'.encode()
            await send_wrapper({"type": "http.response.start", "status": 413,
                                "headers": [(b"content-type", b"application/json")]})  # fmt: skip
            await send({"type": "http.response.body", "body": body})
        finally:
            route = scope.get("route")
            label = getattr(route, "path", "unmatched")
            code = str(result["status"])
            state.metrics.requests.labels(label, code).inc()
            state.metrics.latency.labels(label, code).observe(time.perf_counter() - start)


class _TooLarge(Exception):
    pass


def require_token(request: Request) -> None:
    """Write routes: a bearer token equal (in constant time) to the configured one, when one is configured."""
    expected = STATE.token
    if expected is None:
        return
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing or wrong bearer token",
                            headers={"WWW-Authenticate": "Bearer"})  # fmt: skip


def read_token(token_env: str | None, token_file: str | None) -> bytes | None:
    """The configured token: the file's content wins over the env var; None when neither is set."""
    if token_file:
        token = Path(token_file).read_text().strip()
        if not token:
            raise ValueError(f"{token_file}: token file is empty")
        return token.encode()
    value = os.environ.get(token_env or "", "").strip()
    return value.encode() if value else None



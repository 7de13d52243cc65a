"""HTTP plumbing of the ingress replicas: per-replica state, body limit + metrics middleware, bearer auth.

Kept apart from ``ingress.py`` on purpose: Serve ships the ingress class by value, with a copy of its
module's globals, so state that the middleware (imported by reference) must see lives here and is set
through ``configure_replica``.

Auth fails closed: with ``auth: token`` (the default) a replica refuses to start without a write token.
Write routes need the write token; reads need nothing unless ``protect_reads`` is set, in which case the
read token or the write token; anything that reveals a user's history (``explain``, ``exclude_seen=false``)
always needs one of the two.
"""

from __future__ import annotations

import hmac
import os
import time
from dataclasses import dataclass
from pathlib import Path

from fastapi import HTTPException, Request, status

from longtail.serve.metrics import ServeMetrics

VERSION_HEADER = b"x-longtail-bundle-version"


@dataclass(frozen=True)
class Tokens:
    """The configured bearer tokens; ``write`` None only with ``auth: none``."""

    write: bytes | None = None
    read: bytes | None = None
    protect_reads: bool = False

    @property
    def enabled(self) -> bool:
        return self.write is not None


class ReplicaState:
    """This replica's settings, read by the middleware and the auth dependencies (one replica per process;
    Serve ships the ingress class by value, so its copy of module globals is not this module's)."""

    metrics: ServeMetrics
    tokens: Tokens = Tokens()
    max_body_bytes: int = 1_000_000
    replica: str = ""
    version: str = ""


STATE = ReplicaState()


def configure_replica(metrics_dir: str, tokens: Tokens, max_body_bytes: int, replica: str, version: str) -> ServeMetrics:
    """Set this replica's state; returns its metrics."""
    STATE.metrics = ServeMetrics.open(metrics_dir)
    STATE.metrics.replicas.labels("Ingress").set(1)
    STATE.tokens, STATE.max_body_bytes, STATE.replica, STATE.version = tokens, max_body_bytes, replica, version
    return STATE.metrics


class GuardMiddleware:
    """Pure ASGI: reads the body up to the limit first (413 over it, declared or chunked), counts and times
    every request by route and status, and stamps every response with the replica and the bundle version
    (a route that answered from a ranker sets the ranker's version itself)."""

    def __init__(self, inner) -> None:
        self.inner = inner

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.inner(scope, receive, send)
        state = STATE
        start, limit = time.perf_counter(), state.max_body_bytes
        result = {"status": 500}

        async def send_wrapper(message) -> None:
            if message["type"] == "http.response.start":
                result["status"] = message["status"]
                headers = message.setdefault("headers", [])
                headers.append((b"x-longtail-replica", state.replica.encode()))
                if not any(name.lower() == VERSION_HEADER for name, _ in headers):
                    headers.append((VERSION_HEADER, state.version.encode()))
            await send(message)

        try:
            declared = dict(scope.get("headers") or ()).get(b"content-length")
            if declared is not None and declared.isdigit() and int(declared) > limit:
                return await _too_large(send_wrapper, limit)
            body, more, messages = b"", True, []
            while more:
                message = await receive()
                if message["type"] != "http.request":
                    messages.append(message)
                    break
                body += message.get("body", b"")
                more = message.get("more_body", False)
                if len(body) > limit:
                    return await _too_large(send_wrapper, limit)
            replay = [{"type": "http.request", "body": body, "more_body": False}, *messages]

            async def buffered():
                return replay.pop(0) if replay else await receive()

            await self.inner(scope, buffered, send_wrapper)
        finally:
            route = scope.get("route")
            label = getattr(route, "path", "unmatched")
            code = str(result["status"])
            state.metrics.requests.labels(label, code).inc()
            state.metrics.latency.labels(label, code).observe(time.perf_counter() - start)


async def _too_large(send, limit: int) -> None:
    body = f'{{"detail": "request body over {limit} bytes"}}'.encode()
    await send({"type": "http.response.start", "status": 413, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


def _bearer(request: Request) -> bytes | None:
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    return given.strip().encode() if scheme.lower() == "bearer" and given.strip() else None


def _matches(given: bytes | None, *expected: bytes | None) -> bool:
    return given is not None and any(e is not None and hmac.compare_digest(given, e) for e in expected)


def _refuse(what: str) -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, f"missing or wrong bearer token ({what})",
                         headers={"WWW-Authenticate": "Bearer"})  # fmt: skip


async def require_token(request: Request) -> None:
    """Write routes: the write token (constant-time compare), unless ``auth: none``. (``async`` so FastAPI
    runs it on the event loop, not through a thread-pool hop per request.)"""
    tokens = STATE.tokens
    if tokens.enabled and not _matches(_bearer(request), tokens.write):
        raise _refuse("this route needs the write token")


async def require_read(request: Request) -> None:
    """Read routes: the read or write token when ``protect_reads`` is on."""
    tokens = STATE.tokens
    if tokens.enabled and tokens.protect_reads and not _matches(_bearer(request), tokens.write, tokens.read):
        raise _refuse("reads are protected: send the read or write token")


def require_history_access(request: Request) -> None:
    """What reveals a user's history (explanations, lists that include seen items): read or write token."""
    tokens = STATE.tokens
    if tokens.enabled and not _matches(_bearer(request), tokens.write, tokens.read):
        raise _refuse("explain and exclude_seen=false reveal a history: send the read or write token")


def read_token(token_env: str | None, token_file: str | None) -> bytes | None:
    """A configured token: the file's content wins over the env var; None when neither is set."""
    if token_file:
        token = Path(token_file).read_text().strip()
        if not token:
            raise ValueError(f"{token_file}: token file is empty")
        return token.encode()
    value = os.environ.get(token_env or "", "").strip()
    return value.encode() if value else None


def load_tokens(auth: str, token_env: str | None, token_file: str | None, read_env: str | None,
                read_file: str | None, protect_reads: bool) -> Tokens:  # fmt: skip
    """The replica's tokens; with ``auth: token`` a missing write token is an error (fail closed)."""
    if auth == "none":
        return Tokens()
    write = read_token(token_env, token_file)
    if write is None:
        raise ValueError(f"auth: token, but no write token is configured (token_file {token_file!r}, env var "
                         f"{token_env!r} unset or empty); set one, or `auth: none` to run without auth")  # fmt: skip
    read = read_token(read_env, read_file)
    if read is not None and hmac.compare_digest(read, write):
        raise ValueError("the read token equals the write token; use distinct tokens")
    return Tokens(write, read, protect_reads)

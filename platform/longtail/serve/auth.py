"""Bearer tokens of the HTTP app and the FastAPI dependencies that check them.

Auth fails closed: with ``auth: token`` (the default) the app refuses to start without a write token. The
rules, with auth on:

- writes (events, items, erasure) need the write token;
- a user's list (``/recommend``) needs the read or the write token: a list is made from the user's history
  (with ``exclude_seen`` its complement *is* the history, and a personal list against the cold-start one
  tells whether an id exists or was erased), so nothing personal is answered to an anonymous caller;
- reads that concern no user (``/recommend/text``, ``/items/{id}/similar``, ``/healthz``) are open unless
  ``protect_reads`` is set, which then asks the read or write token for them too;
- ``/metrics`` and ``/docs`` stay open (aggregate counters and the API's shape only).

Tokens compare in constant time. The dependencies read the tokens from ``request.app.state.auth`` (set by
``longtail.serve.api.create_app``), so one process may hold several apps with different tokens (tests).
"""

from __future__ import annotations

import hmac
import os
from dataclasses import dataclass
from pathlib import Path

from fastapi import HTTPException, Request, status
from fastapi.security import HTTPBearer


@dataclass(frozen=True)
class Tokens:
    """The configured bearer tokens; ``write`` None only with ``auth: none``."""

    write: bytes | None = None
    read: bytes | None = None
    protect_reads: bool = False

    @property
    def enabled(self) -> bool:
        return self.write is not None


# declares the scheme in /openapi.json (so /docs can authorize and generated clients send the token); the
# checks themselves are the dependencies below, which answer 401 with a message
bearer_scheme = HTTPBearer(auto_error=False, description="the write token, or the read token for reads")


def _bearer(request: Request) -> bytes | None:
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    return given.strip().encode() if scheme.lower() == "bearer" and given.strip() else None


def _matches(given: bytes | None, *expected: bytes | None) -> bool:
    return given is not None and any(e is not None and hmac.compare_digest(given, e) for e in expected)


def _refuse(what: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED,
        f"missing or wrong bearer token ({what})",
        headers={"WWW-Authenticate": "Bearer"},
    )


def _tokens(request: Request) -> Tokens:
    return request.app.state.auth


async def require_write(request: Request) -> None:
    """Write routes: the write token, unless ``auth: none``. (``async`` so FastAPI runs it on the event loop,
    not through a thread-pool hop per request.)"""
    tokens = _tokens(request)
    if tokens.enabled and not _matches(_bearer(request), tokens.write):
        raise _refuse("this route needs the write token")


async def require_personal(request: Request) -> None:
    """A user's list: the read or write token whenever auth is on."""
    tokens = _tokens(request)
    if tokens.enabled and not _matches(_bearer(request), tokens.write, tokens.read):
        raise _refuse("a user's list reveals their history: send the read or write token")


async def require_read(request: Request) -> None:
    """Reads that concern no user: the read or write token when ``protect_reads`` is on."""
    tokens = _tokens(request)
    if tokens.enabled and tokens.protect_reads and not _matches(_bearer(request), tokens.write, tokens.read):
        raise _refuse("reads are protected: send the read or write token")


def read_token(token_env: str | None, token_file: str | None) -> bytes | None:
    """A configured token: the file's content wins over the env var; None when neither is set."""
    if token_file:
        token = Path(token_file).read_text().strip()
        if not token:
            raise ValueError(f"{token_file}: token file is empty")
        return token.encode()
    value = os.environ.get(token_env or "", "").strip()
    return value.encode() if value else None


@dataclass(frozen=True)
class AuthSources:
    """Where a replica finds its tokens (the app args, with token files made absolute at deploy)."""

    auth: str = "token"  # "token" or "none"
    token_env: str | None = "LONGTAIL_TOKEN"
    token_file: str | None = None
    read_env: str | None = "LONGTAIL_READ_TOKEN"
    read_file: str | None = None
    protect_reads: bool = False


def load_tokens(sources: AuthSources) -> Tokens:
    """The replica's tokens; with ``auth: token`` a missing write token is an error (fail closed)."""
    if sources.auth == "none":
        return Tokens()
    write = read_token(sources.token_env, sources.token_file)
    if write is None:
        raise ValueError(
            f"auth: token, but no write token is configured (token_file {sources.token_file!r}, env var "
            f"{sources.token_env!r} unset or empty); set one, or `auth: none` to run without auth"
        )
    read = read_token(sources.read_env, sources.read_file)
    if read is not None and hmac.compare_digest(read, write):
        raise ValueError("the read token equals the write token; use distinct tokens")
    return Tokens(write, read, sources.protect_reads)

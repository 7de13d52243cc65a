"""A typed HTTP client of the longtail service, sync and async, over httpx.

    from longtail.client import Client

    with Client("http://127.0.0.1:8000", token=open("state/token").read().strip()) as lt:
        lt.send_event(event_id="e-1", user_id="196", item_id="5", type="view")
        for item in lt.recommend("196", k=10).items:
            print(item.item_id, item.score, item.tail)

Requests and answers are the server's own schemas (``longtail.serve.schemas``), so a field the server does not
know fails here, before the network. A 4xx answer raises a typed error carrying the server's message
(``BadRequest``, ``Unauthorized``, ``NotFound``, ``Conflict``, ``PayloadTooLarge``); a 503 (a busy store, a
new bundle rolling out) is retried after the ``Retry-After`` the server sends, up to ``retries`` times, then
raises ``Unavailable``; any other 5xx raises ``ServerError``. ``AsyncClient`` has the same methods, awaited.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel

from longtail.serve.schemas import (
    EraseResponse,
    EventIn,
    EventsResponse,
    Health,
    ItemIn,
    ItemResponse,
    RecommendRequest,
    RecommendResponse,
    SimilarResponse,
    TextQuery,
)

__all__ = [
    "AsyncClient",
    "BadRequest",
    "Client",
    "Conflict",
    "LongtailError",
    "NotFound",
    "PayloadTooLarge",
    "ServerError",
    "Unauthorized",
    "Unavailable",
]
M = TypeVar("M", bound=BaseModel)
MAX_RETRY_AFTER_S = 30.0  # a Retry-After beyond this is waited for this long at most


class LongtailError(Exception):
    """An answer other than 2xx: ``status`` and the server's ``detail``."""

    def __init__(self, status: int, detail: Any) -> None:
        super().__init__(f"{status}: {detail}")
        self.status, self.detail = status, detail


class BadRequest(LongtailError):
    """400/422: the request does not fit the API (the detail names the field)."""


class Unauthorized(LongtailError):
    """401: a missing or wrong bearer token for this route."""


class NotFound(LongtailError):
    """404: no such item, or no such route."""


class Conflict(LongtailError):
    """409: an event_id reused with another payload, or an item_id already in the catalog."""


class PayloadTooLarge(LongtailError):
    """413: the body is over the server's limits."""


class Unavailable(LongtailError):
    """503 after every retry: the store is busy or unreachable, or a new bundle is rolling out."""

    def __init__(self, status: int, detail: Any, retry_after: float | None) -> None:
        super().__init__(status, detail)
        self.retry_after = retry_after


class ServerError(LongtailError):
    """Another 5xx."""


ERRORS = {
    400: BadRequest,
    401: Unauthorized,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    422: BadRequest,
}


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return min(float(value), MAX_RETRY_AFTER_S) if value is not None else None
    except ValueError:
        return None


def _delay(response: httpx.Response) -> float:
    """Seconds to wait before a retry: the server's Retry-After, else one second."""
    after = _retry_after(response)
    return 1.0 if after is None else after


def _raise_for(response: httpx.Response) -> None:
    if response.is_success:
        return
    try:
        detail = response.json().get("detail", response.text)
    except ValueError:
        detail = response.text
    status = response.status_code
    if status == 503:
        raise Unavailable(status, detail, _retry_after(response))
    if status >= 500:
        raise ServerError(status, detail)
    raise ERRORS.get(status, LongtailError)(status, detail)


def _events(events: Iterable[EventIn | Mapping[str, Any]]) -> dict[str, Any]:
    batch = [e if isinstance(e, EventIn) else EventIn.model_validate(dict(e)) for e in events]
    return {"events": [e.model_dump(exclude_none=True) for e in batch]}


class _Routes:
    """Each route as (method, path, body or params, answer type): shared by both clients."""

    @staticmethod
    def recommend(user_id: str, k: int, exclude_seen: bool, tail_boost: float | None, explain: bool) -> tuple:
        body = RecommendRequest(
            user_id=user_id, k=k, exclude_seen=exclude_seen, tail_boost=tail_boost, explain=explain
        ).model_dump(exclude_none=True)
        return "POST", "/recommend", {"json": body}, RecommendResponse

    @staticmethod
    def recommend_text(query: str, k: int) -> tuple:
        body = TextQuery(query=query, k=k).model_dump()
        return "POST", "/recommend/text", {"json": body}, RecommendResponse

    @staticmethod
    def similar(item_id: str, k: int) -> tuple:
        return "GET", f"/items/{_path(item_id)}/similar", {"params": {"k": k}}, SimilarResponse

    @staticmethod
    def add_item(item_id: str, text: str, fields: Mapping[str, Any] | None) -> tuple:
        body = ItemIn(item_id=item_id, text=text, fields=dict(fields) if fields else None)
        return "POST", "/items", {"json": body.model_dump(exclude_none=True)}, ItemResponse

    @staticmethod
    def erase_user(user_id: str) -> tuple:
        return "POST", "/users/erase", {"json": {"user_id": user_id}}, EraseResponse


def _path(item_id: str) -> str:
    from urllib.parse import quote

    return quote(item_id, safe="")


class Client:
    """The service's routes as methods (sync). ``token``: the write token (every route), or the read token
    (reads only); None with ``auth: none``. A context manager; or call ``close()``."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        *,
        token: str | None = None,
        timeout: float = 30.0,
        retries: int = 3,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.retries = retries
        self._http = httpx.Client(base_url=base_url, headers=headers, timeout=timeout, transport=transport)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, kwargs: dict[str, Any], answer: type[M]) -> M:
        for attempt in range(self.retries + 1):
            response = self._http.request(method, path, **kwargs)
            if response.status_code == 503 and attempt < self.retries:
                time.sleep(_delay(response))
                continue
            _raise_for(response)
            return answer.model_validate(response.json())
        raise AssertionError("unreachable")

    def recommend(
        self,
        user_id: str,
        k: int = 20,
        *,
        exclude_seen: bool = True,
        tail_boost: float | None = None,
        explain: bool = False,
    ) -> RecommendResponse:
        """A user's top-k (read or write token)."""
        return self._call(*_Routes.recommend(user_id, k, exclude_seen, tail_boost, explain))

    def recommend_text(self, query: str, k: int = 20) -> RecommendResponse:
        """Items nearest a free-text query."""
        return self._call(*_Routes.recommend_text(query, k))

    def similar(self, item_id: str, k: int = 20) -> SimilarResponse:
        """Graph neighbours of an item, then its nearest items by text (``NotFound`` for an unknown item)."""
        return self._call(*_Routes.similar(item_id, k))

    def send_events(self, events: Iterable[EventIn | Mapping[str, Any]]) -> EventsResponse:
        """Store events in one transaction (≤ 1000; write token); each one an ``EventIn`` or its fields."""
        return self._call("POST", "/events", {"json": _events(events)}, EventsResponse)

    def send_event(self, **fields: Any) -> EventsResponse:
        """One event: ``event_id``, ``user_id``, ``item_id``, ``type``; maybe ``timestamp``, ``weight``."""
        return self.send_events([fields])

    def add_item(self, item_id: str, text: str, fields: Mapping[str, Any] | None = None) -> ItemResponse:
        """A new item, recommendable at the next request (write token)."""
        return self._call(*_Routes.add_item(item_id, text, fields))

    def erase_user(self, user_id: str) -> EraseResponse:
        """Erase a user's stored events and stop using their history (write token)."""
        return self._call(*_Routes.erase_user(user_id))

    def health(self) -> Health:
        return self._call("GET", "/healthz", {}, Health)

    def metrics(self) -> str:
        """The Prometheus text of every replica on the node."""
        response = self._http.get("/metrics")
        _raise_for(response)
        return response.text


class AsyncClient:
    """``Client``'s methods, awaited (one ``httpx.AsyncClient``; an async context manager)."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        *,
        token: str | None = None,
        timeout: float = 30.0,
        retries: int = 3,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.retries = retries
        self._http = httpx.AsyncClient(
            base_url=base_url, headers=headers, timeout=timeout, transport=transport
        )

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    async def _call(self, method: str, path: str, kwargs: dict[str, Any], answer: type[M]) -> M:
        for attempt in range(self.retries + 1):
            response = await self._http.request(method, path, **kwargs)
            if response.status_code == 503 and attempt < self.retries:
                await asyncio.sleep(_delay(response))
                continue
            _raise_for(response)
            return answer.model_validate(response.json())
        raise AssertionError("unreachable")

    async def recommend(
        self,
        user_id: str,
        k: int = 20,
        *,
        exclude_seen: bool = True,
        tail_boost: float | None = None,
        explain: bool = False,
    ) -> RecommendResponse:
        return await self._call(*_Routes.recommend(user_id, k, exclude_seen, tail_boost, explain))

    async def recommend_text(self, query: str, k: int = 20) -> RecommendResponse:
        return await self._call(*_Routes.recommend_text(query, k))

    async def similar(self, item_id: str, k: int = 20) -> SimilarResponse:
        return await self._call(*_Routes.similar(item_id, k))

    async def send_events(self, events: Iterable[EventIn | Mapping[str, Any]]) -> EventsResponse:
        return await self._call("POST", "/events", {"json": _events(events)}, EventsResponse)

    async def send_event(self, **fields: Any) -> EventsResponse:
        return await self.send_events([fields])

    async def add_item(
        self, item_id: str, text: str, fields: Mapping[str, Any] | None = None
    ) -> ItemResponse:
        return await self._call(*_Routes.add_item(item_id, text, fields))

    async def erase_user(self, user_id: str) -> EraseResponse:
        return await self._call(*_Routes.erase_user(user_id))

    async def health(self) -> Health:
        return await self._call("GET", "/healthz", {}, Health)

    async def metrics(self) -> str:
        response = await self._http.get("/metrics")
        _raise_for(response)
        return response.text

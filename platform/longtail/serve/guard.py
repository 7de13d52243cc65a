"""The app's outermost layer (pure ASGI): body limits, per-route metrics, replica and version headers.

The body is read before anything else runs, in time linear in its size: pieces are kept in a list and
joined once (growing one ``bytes`` by ``+=`` copies it for every piece, which is quadratic in the number of
ASGI messages, and a client controls that number by sending tiny chunks). A body over ``max_body_bytes``,
declared or chunked, or arriving in more than ``max_body_messages`` pieces gets 413 as soon as it crosses
the line; nothing of it reaches a route.
"""

from __future__ import annotations

import time
from typing import Any

VERSION_HEADER = b"x-longtail-bundle-version"
REPLICA_HEADER = b"x-longtail-replica"


class GuardMiddleware:
    """Reads the body within the app's ``limits`` (``app.state.limits``), counts and times every request by
    route and status (``app.state.metrics``), and stamps every response with the replica and the bundle
    version (a route that answered from a ranker of another version sets that version itself)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.inner(scope, receive, send)
        state = scope["app"].state
        start, limits, status = time.perf_counter(), state.limits, [500]

        async def send_wrapper(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                headers = message.setdefault("headers", [])
                headers.append((REPLICA_HEADER, state.replica.encode()))
                if not any(name.lower() == VERSION_HEADER for name, _ in headers):
                    headers.append((VERSION_HEADER, state.version.encode()))
            await send(message)

        try:
            declared = dict(scope.get("headers") or ()).get(b"content-length")
            if declared is not None and declared.isdigit() and int(declared) > limits.max_body_bytes:
                return await _too_large(send_wrapper, f"request body over {limits.max_body_bytes} bytes")
            pieces: list[bytes] = []
            size, more, trailing = 0, True, []
            while more:
                message = await receive()
                if message["type"] != "http.request":  # a disconnect: handed on after the body
                    trailing.append(message)
                    break
                piece = message.get("body", b"")
                size += len(piece)
                pieces.append(piece)
                more = message.get("more_body", False)
                if size > limits.max_body_bytes:
                    return await _too_large(send_wrapper, f"request body over {limits.max_body_bytes} bytes")
                if more and len(pieces) >= limits.max_body_messages:
                    return await _too_large(
                        send_wrapper,
                        f"request body in over {limits.max_body_messages} pieces; send it in fewer",
                    )
            replay = [{"type": "http.request", "body": b"".join(pieces), "more_body": False}, *trailing]

            async def buffered() -> dict:
                return replay.pop(0) if replay else await receive()

            await self.inner(scope, buffered, send_wrapper)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            state.metrics.request(route, str(status[0]), time.perf_counter() - start)


async def _too_large(send: Any, detail: str) -> None:
    body = ('{"detail": "' + detail + '"}').encode()
    await send(
        {"type": "http.response.start", "status": 413, "headers": [(b"content-type", b"application/json")]}
    )
    await send({"type": "http.response.body", "body": body})

"""Batching without a fixed wait: the requests that arrive while a pass runs form the next pass.

A request that finds the batcher idle starts a pass at once (an idle service adds no batching delay); under
load the passes fill by themselves, as the ranking of one pass takes as long as the next batch needs to
gather. One pass runs at a time (the pipeline is single-threaded anyway), at most ``max_size`` requests each.

Closed-loop clients (each sends its next request when its answer comes) would otherwise split into two
alternating half-full passes: when fewer requests wait than the previous pass held, the next pass waits up
to ``linger_s`` for the others to come back — so a lone request never waits, and a steady crowd ranks in
full passes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class PassBatcher(Generic[T, R]):
    """``await batcher.submit(item)`` → ``run``'s answer for that item, ``run`` called on lists of items."""

    def __init__(
        self, run: Callable[[list[T]], Awaitable[list[R]]], max_size: int = 16, linger_s: float = 0.025
    ) -> None:
        self.run = run
        self.max_size, self.linger_s = max_size, linger_s
        self._queue: list[tuple[T, asyncio.Future[R]]] = []
        self._running = False
        self._last = 1  # the size of the previous pass
        self._arrived: asyncio.Event | None = None
        self.sizes: list[int] = []  # the size of each pass so far (the last 1,000), for tests and benchmarks

    def set_max_size(self, max_size: int) -> None:
        if max_size < 1:
            raise ValueError(f"max_size must be ≥ 1, got {max_size}")
        self.max_size = max_size

    def set_linger_s(self, linger_s: float) -> None:
        if linger_s < 0:
            raise ValueError(f"linger_s must be ≥ 0, got {linger_s}")
        self.linger_s = linger_s

    async def submit(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        if self._arrived is not None:
            self._arrived.set()
        if not self._running:
            self._running = True
            asyncio.get_running_loop().create_task(self._drain())
        return await future

    async def _gather(self) -> None:
        """Wait up to ``linger_s`` while fewer requests wait than the previous pass held."""
        target = min(self.max_size, self._last)
        deadline = asyncio.get_running_loop().time() + self.linger_s
        while len(self._queue) < target:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                return
            self._arrived = asyncio.Event()
            try:
                await asyncio.wait_for(self._arrived.wait(), left)
            except TimeoutError:
                return
            finally:
                self._arrived = None

    async def _drain(self) -> None:
        try:
            while self._queue:
                await self._gather()
                batch, self._queue = self._queue[: self.max_size], self._queue[self.max_size :]
                self._last = len(batch)
                self.sizes = [*self.sizes[-999:], len(batch)]
                try:
                    answers = await self.run([item for item, _ in batch])
                except Exception as exc:  # every request of the pass gets the error (a 503, a store error…)
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, future), answer in zip(batch, answers, strict=True):
                    if not future.done():
                        future.set_result(answer)
        finally:
            self._running = False

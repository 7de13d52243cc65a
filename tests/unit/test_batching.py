"""``PassBatcher``: an idle request goes at once; requests that arrive during a pass form the next one."""

from __future__ import annotations

import asyncio
import time

import pytest

from longtail.serve.batching import PassBatcher


async def slow_double(items: list[int]) -> list[int]:
    await asyncio.sleep(0.05)
    return [2 * i for i in items]


def test_an_idle_request_is_not_held_and_a_crowd_shares_the_next_pass():
    async def scenario() -> tuple[float, list[int], list[int]]:
        batcher = PassBatcher(slow_double, max_size=16)
        began = time.perf_counter()
        assert await batcher.submit(1) == 2
        alone = time.perf_counter() - began
        first = asyncio.create_task(batcher.submit(0))
        await asyncio.sleep(0.01)  # the first pass is running
        answers = await asyncio.gather(first, *(batcher.submit(i) for i in range(1, 21)))
        return alone, answers, batcher.sizes

    alone, answers, sizes = asyncio.run(scenario())
    assert alone < 0.05 + 0.03  # one pass, no wait for others to join
    assert answers == [2 * i for i in range(21)]
    assert sizes == [1, 1, 16, 4]  # alone; the first of the crowd; then the rest, max_size at a time


def test_closed_loop_clients_rank_in_full_passes_and_a_lone_one_never_waits():
    async def scenario() -> list[int]:
        batcher = PassBatcher(slow_double, max_size=16, linger_s=0.02)

        async def client(n: int) -> None:
            for _ in range(n):
                await batcher.submit(1)
                await asyncio.sleep(0.002)  # the next request comes a moment after the answer

        await asyncio.gather(*(client(6) for _ in range(8)))
        return batcher.sizes

    sizes = asyncio.run(scenario())
    assert sizes[0] == 8 and sum(sizes) == 48 and max(sizes[1:]) == 8 and sizes.count(8) >= 5, sizes


def test_an_error_reaches_every_request_of_its_pass_and_the_next_pass_runs():
    calls = []

    async def flaky(items: list[int]) -> list[int]:
        calls.append(list(items))
        await asyncio.sleep(0.01)
        if len(calls) == 1:
            raise RuntimeError("store busy")
        return items

    async def scenario():
        batcher = PassBatcher(flaky)
        first = asyncio.gather(batcher.submit(1), return_exceptions=True)
        await asyncio.sleep(0.005)  # the first pass is running: the second request waits for the next one
        second = await batcher.submit(2)
        return await first, second

    (failed,), second = asyncio.run(scenario())
    assert isinstance(failed, RuntimeError) and second == 2
    with pytest.raises(ValueError, match="max_size"):
        PassBatcher(flaky).set_max_size(0)

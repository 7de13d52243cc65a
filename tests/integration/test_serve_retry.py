"""A ranker read whose replica dies is sent again (Ray's own exception types; no cluster needed)."""

from __future__ import annotations

import asyncio

import pytest
from fastapi import HTTPException
from ray.exceptions import ActorDiedError

from longtail.serve.ingress import READ_RETRIES, resend_on_replica_loss

pytestmark = pytest.mark.integration


class Dying:
    """A handle method whose first ``deaths`` calls land on a replica that dies (what Ray raises then)."""

    def __init__(self, deaths: int) -> None:
        self.deaths, self.calls = deaths, 0

    def remote(self, *args):
        self.calls += 1

        async def answer():
            if self.calls <= self.deaths:
                raise ActorDiedError()
            return {"args": list(args)}

        return answer()


def test_a_read_is_resent_when_its_replica_dies_and_503_when_all_tries_fail():
    retried = []
    flaky = Dying(deaths=READ_RETRIES)
    assert asyncio.run(resend_on_replica_loss(flaky, lambda: retried.append(1), {"user_id": "u"})) == {
        "args": [{"user_id": "u"}]
    }
    assert flaky.calls == READ_RETRIES + 1 and len(retried) == READ_RETRIES
    dead = Dying(deaths=10)
    with pytest.raises(HTTPException) as err:
        asyncio.run(resend_on_replica_loss(dead, lambda: None))
    assert err.value.status_code == 503 and dead.calls == READ_RETRIES + 1

"""The app builder and HTTP helpers without a cluster: bundle resolution, token sources, layering."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from types import SimpleNamespace

import pytest
from fastapi import HTTPException
from ray.exceptions import ActorDiedError

from longtail.bundle import BundleError
from longtail.serve.app import BUNDLE_ENV, resolve_bundle
from longtail.serve.http import read_token
from longtail.serve.ingress import READ_RETRIES, Ingress
from longtail.serve.knobs import AppArgs


def test_bundle_from_env_wins_and_is_verified(tiny_bundle, tmp_path, monkeypatch):
    monkeypatch.delenv(BUNDLE_ENV, raising=False)
    with pytest.raises(BundleError, match="no bundle"):
        resolve_bundle(AppArgs())
    assert resolve_bundle(AppArgs(bundle=str(tiny_bundle))) == tiny_bundle.resolve()
    monkeypatch.setenv(BUNDLE_ENV, str(tmp_path))
    with pytest.raises(BundleError, match="not a bundle"):
        resolve_bundle(AppArgs(bundle=str(tiny_bundle)))


def test_token_file_wins_over_env_and_empty_file_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("LT_TOKEN", " from-env ")
    assert read_token("LT_TOKEN", None) == b"from-env"
    assert read_token("LT_UNSET_TOKEN", None) is None
    file = tmp_path / "token"
    file.write_text("from-file\n")
    assert read_token("LT_TOKEN", str(file)) == b"from-file"
    file.write_text("\n")
    with pytest.raises(ValueError, match="empty"):
        read_token("LT_TOKEN", str(file))


def test_serve_never_imports_training_code():
    code = ("import sys\nimport longtail.serve.app\n"
            "print(','.join(sorted(m for m in sys.modules if m.startswith('longtail.train') or m == 'deepspeed')))")  # fmt: skip
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""


class _Dying:
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


def _read(method: _Dying, *args):
    """Ingress._read as Serve's class defines it, on a stand-in replica holding only what it reads."""
    metrics = SimpleNamespace(read_retries=SimpleNamespace(inc=lambda: None))
    replica = SimpleNamespace(ranker=SimpleNamespace(recommend=method), metrics=metrics)
    return asyncio.run(Ingress.func_or_class._read(replica, "recommend", *args))


def test_ranker_read_is_resent_when_its_replica_dies_and_503_when_all_tries_fail():
    flaky = _Dying(deaths=READ_RETRIES)
    assert _read(flaky, {"user_id": "u"}) == {"args": [{"user_id": "u"}]}
    assert flaky.calls == READ_RETRIES + 1
    dead = _Dying(deaths=10)
    with pytest.raises(HTTPException) as err:
        _read(dead, {})
    assert err.value.status_code == 503 and dead.calls == READ_RETRIES + 1

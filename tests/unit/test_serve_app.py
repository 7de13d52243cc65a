"""The app builder and HTTP helpers without a cluster: bundle and store resolution, auth that fails closed,
body limits (declared or chunked), version headers, dead replicas' gauges, layering."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from types import SimpleNamespace

import pytest
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.testclient import TestClient
from ray.exceptions import ActorDiedError

from longtail.bundle import BundleError
from longtail.serve.app import BUNDLE_ENV, resolve_bundle, resolve_store
from longtail.serve.http import (
    STATE,
    GuardMiddleware,
    Tokens,
    configure_replica,
    load_tokens,
    read_token,
    require_history_access,
    require_read,
    require_token,
)
from longtail.serve.ingress import READ_RETRIES, Ingress
from longtail.serve.knobs import AppArgs
from longtail.serve.metrics import ServeMetrics, drop_dead_gauges
from longtail.serve.store import StoreError


def test_bundle_from_env_wins_and_is_verified(tiny_bundle, tmp_path, monkeypatch):
    monkeypatch.delenv(BUNDLE_ENV, raising=False)
    with pytest.raises(BundleError, match="no bundle"):
        resolve_bundle(AppArgs())
    assert resolve_bundle(AppArgs(bundle=str(tiny_bundle))) == tiny_bundle.resolve()
    monkeypatch.setenv(BUNDLE_ENV, str(tmp_path))
    with pytest.raises(BundleError, match="not a bundle"):
        resolve_bundle(AppArgs(bundle=str(tiny_bundle)))


def test_bundle_version_picks_a_version_beside_the_symlink(tmp_path, tiny_bundle, tiny_encoder, monkeypatch):
    from tests.conftest import write_tiny_bundle

    monkeypatch.delenv(BUNDLE_ENV, raising=False)
    live = tmp_path / "live"
    write_tiny_bundle(live, tiny_encoder, epochs=1)
    first = resolve_bundle(AppArgs(bundle=str(live)))
    write_tiny_bundle(live, tiny_encoder, epochs=2)  # retrained into the same path
    second = resolve_bundle(AppArgs(bundle=str(live)))
    assert first != second and second == live.resolve()
    old_version = first.name.split("@")[1]
    assert resolve_bundle(AppArgs(bundle=str(live), bundle_version=old_version)) == first  # pin / roll back
    with pytest.raises(BundleError, match="no version 'nope'"):
        resolve_bundle(AppArgs(bundle=str(live), bundle_version="nope"))


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
    replica = SimpleNamespace(ranker=SimpleNamespace(recommend=method), local=None, metrics=metrics)  # split layout
    return asyncio.run(Ingress.func_or_class._read(replica, "recommend", *args))


def test_ranker_read_is_resent_when_its_replica_dies_and_503_when_all_tries_fail():
    flaky = _Dying(deaths=READ_RETRIES)
    assert _read(flaky, {"user_id": "u"}) == {"args": [{"user_id": "u"}]}
    assert flaky.calls == READ_RETRIES + 1
    dead = _Dying(deaths=10)
    with pytest.raises(HTTPException) as err:
        _read(dead, {})
    assert err.value.status_code == 503 and dead.calls == READ_RETRIES + 1


def test_a_missing_store_fails_the_deploy_unless_creation_is_asked_for(tmp_path):
    with pytest.raises(StoreError, match="longtail store init"):
        resolve_store(AppArgs(store=str(tmp_path / "typo" / "state.sqlite")))
    with pytest.raises(StoreError, match="longtail store init"):
        resolve_store(AppArgs(store=str(tmp_path / "state.sqlite")))
    created = resolve_store(AppArgs(store=str(tmp_path / "state.sqlite"), create_store=True))
    assert created == str((tmp_path / "state.sqlite").resolve())
    assert resolve_store(AppArgs(store=created)) == created  # exists now: opened, not created


def test_auth_fails_closed_without_a_token(tmp_path, monkeypatch):
    monkeypatch.delenv("LT_W", raising=False)
    with pytest.raises(ValueError, match="auth: none"):
        load_tokens("token", "LT_W", None, None, None, False)
    assert not load_tokens("none", "LT_W", None, None, None, False).enabled
    monkeypatch.setenv("LT_W", "w-token")
    monkeypatch.setenv("LT_R", "w-token")
    with pytest.raises(ValueError, match="distinct"):
        load_tokens("token", "LT_W", None, "LT_R", None, False)
    monkeypatch.setenv("LT_R", "r-token")
    assert load_tokens("token", "LT_W", None, "LT_R", None, True) == Tokens(b"w-token", b"r-token", True)


def test_the_deploy_fails_at_build_when_auth_names_no_token_source(tmp_path):
    from longtail.serve.app import check_auth_config

    with pytest.raises(ValueError, match="neither token_env nor token_file"):
        check_auth_config(AppArgs(token_env=None), {})
    empty = tmp_path / "token"
    empty.write_text("\n")
    auth = {"auth": "token", "token_env": None, "token_file": str(empty), "read_env": None, "read_file": None,
            "protect_reads": False}  # fmt: skip
    with pytest.raises(ValueError, match="empty"):
        check_auth_config(AppArgs(token_file=str(empty)), auth)
    check_auth_config(AppArgs(auth="none", token_env=None), {})  # explicit: no auth


def _client(tokens: Tokens, tmp_path, limit: int = 2048):
    """A FastAPI app with the ingress's middleware and auth dependencies, served in-process."""
    configure_replica(str(tmp_path / "metrics"), tokens, limit, "replica-1", "v-ingress")
    app = FastAPI()
    app.add_middleware(GuardMiddleware)

    @app.post("/write", dependencies=[Depends(require_token)])
    async def write(request: Request) -> dict:
        return {"bytes": len(await request.body())}

    @app.get("/read", dependencies=[Depends(require_read)])
    async def read() -> dict:
        return {}

    @app.get("/history", dependencies=[Depends(require_history_access)])
    async def history() -> dict:
        return {}

    return TestClient(app)


def test_tokens_guard_writes_reads_and_history(tmp_path):
    def bearer(token):
        return {"Authorization": f"Bearer {token}"}

    client = _client(Tokens(b"w", b"r", protect_reads=False), tmp_path)
    assert client.post("/write", content=b"x").status_code == 401
    assert client.post("/write", content=b"x", headers=bearer("r")).status_code == 401  # read token can't write
    assert client.post("/write", content=b"x", headers=bearer("w")).status_code == 200
    assert client.get("/read").status_code == 200  # reads open unless protected
    assert client.get("/history").status_code == 401  # history-revealing reads never are
    assert client.get("/history", headers=bearer("r")).status_code == 200
    protected = _client(Tokens(b"w", b"r", protect_reads=True), tmp_path)
    assert protected.get("/read").status_code == 401
    assert protected.get("/read", headers=bearer("r")).status_code == 200
    assert protected.get("/read", headers=bearer("w")).status_code == 200
    open_app = _client(Tokens(), tmp_path)  # auth: none
    assert open_app.post("/write", content=b"x").status_code == 200 and open_app.get("/history").status_code == 200


def test_bodies_over_the_limit_get_413_declared_or_chunked_and_responses_carry_the_version(tmp_path):
    client = _client(Tokens(), tmp_path, limit=2048)
    small = client.post("/write", content=b"x" * 2000)
    assert small.status_code == 200 and small.json() == {"bytes": 2000}
    assert small.headers["x-longtail-bundle-version"] == "v-ingress" and small.headers["x-longtail-replica"]
    assert client.post("/write", content=b"x" * 5000).status_code == 413

    def chunks():  # no content-length: Transfer-Encoding chunked
        for _ in range(10):
            yield b"x" * 500

    chunked = client.post("/write", content=chunks())
    assert chunked.status_code == 413 and "bytes" in chunked.json()["detail"]
    ok = client.post("/write", content=(b"y" * 500 for _ in range(3)))
    assert ok.status_code == 200 and ok.json() == {"bytes": 1500}


def test_gauges_of_dead_replicas_are_dropped_at_scrape(tmp_path):
    directory = tmp_path / "metrics"
    directory.mkdir()
    code = ("import sys\nfrom pathlib import Path\nfrom longtail.serve.metrics import ServeMetrics\n"
            "ServeMetrics(Path(sys.argv[1])).bundle.labels('old-version').set(1)\n")  # fmt: skip
    subprocess.run([sys.executable, "-c", code, str(directory)], check=True)  # a replica that is gone now
    assert any(f.name.startswith("gauge_livemax_") for f in directory.iterdir())
    metrics = ServeMetrics.open(directory)
    metrics.bundle.labels("new-version").set(1)
    text = metrics.scrape().decode()
    assert 'version="new-version"' in text and "old-version" not in text
    assert drop_dead_gauges(directory) == []  # the live one stays
    assert STATE is not None

"""What the Serve builder resolves before replicas start, without Ray: bundle and store resolution, auth
that fails closed, the replica spec; dead replicas' gauges; the serve app's imports."""

from __future__ import annotations

import subprocess
import sys

import pytest

from longtail.bundle import BundleError
from longtail.serve.auth import AuthSources, Tokens, load_tokens, read_token
from longtail.serve.knobs import AppArgs
from longtail.serve.metrics import ServeMetrics, drop_dead_gauges
from longtail.serve.spec import (
    BUNDLE_ENV,
    auth_sources,
    check_auth_config,
    replica_spec,
    resolve_bundle,
    resolve_store,
)
from longtail.store import Retention, StoreError


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
    code = (
        "import sys\nimport longtail.serve.app\n"
        "print(','.join(sorted(m for m in sys.modules if m.startswith('longtail.train') or m == "
        "'deepspeed')))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""


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
        load_tokens(AuthSources("token", "LT_W", None, None, None))
    assert not load_tokens(AuthSources("none", "LT_W")).enabled
    monkeypatch.setenv("LT_W", "w-token")
    monkeypatch.setenv("LT_R", "w-token")
    with pytest.raises(ValueError, match="distinct"):
        load_tokens(AuthSources("token", "LT_W", None, "LT_R", None))
    monkeypatch.setenv("LT_R", "r-token")
    assert load_tokens(AuthSources("token", "LT_W", None, "LT_R", None, True)) == Tokens(
        b"w-token", b"r-token", True
    )


def test_the_deploy_fails_at_build_when_auth_names_no_token_source(tmp_path):
    args = AppArgs(token_env=None)
    with pytest.raises(ValueError, match="neither token_env nor token_file"):
        check_auth_config(args, auth_sources(args))
    empty = tmp_path / "token"
    empty.write_text("\n")
    args = AppArgs(token_file=str(empty))
    with pytest.raises(ValueError, match="empty"):
        check_auth_config(args, auth_sources(args))
    args = AppArgs(auth="none", token_env=None)
    check_auth_config(args, auth_sources(args))  # explicit: no auth


def test_the_replica_spec_resolves_paths_and_carries_the_limits(tiny_bundle, tmp_path, monkeypatch):
    monkeypatch.delenv(BUNDLE_ENV, raising=False)
    token = tmp_path / "token"
    token.write_text("t0k3n\n")
    args = AppArgs(
        bundle=str(tiny_bundle),
        store=str(tmp_path / "s.sqlite"),
        create_store=True,
        token_file=str(token),
        max_body_bytes=4096,
        max_clock_skew_s=10,
        events_per_user=50,
        max_stored_items=None,
    )
    spec = replica_spec(args)
    assert spec.bundle == str(tiny_bundle.resolve()) and spec.store == str((tmp_path / "s.sqlite").resolve())
    assert spec.auth.token_file == str(token.resolve()) and spec.metrics_dir.endswith("s.metrics")
    assert spec.limits.max_body_bytes == 4096 and spec.limits.max_clock_skew_s == 10
    assert spec.open_store().retention == Retention(events_per_user=50, items=None)  # what replicas open
    assert AppArgs().events_per_user == 1000 and AppArgs().max_stored_items == 100_000  # bounded by default


def test_gauges_of_dead_replicas_are_dropped_at_scrape(tmp_path):
    directory = tmp_path / "metrics"
    directory.mkdir()
    code = (
        "import sys\nfrom pathlib import Path\nfrom longtail.serve.metrics import ServeMetrics\n"
        "ServeMetrics(Path(sys.argv[1])).bundle.labels('old-version').set(1)\n"
    )
    subprocess.run([sys.executable, "-c", code, str(directory)], check=True)  # a replica that is gone now
    assert any(f.name.startswith("gauge_livemax_") for f in directory.iterdir())
    metrics = ServeMetrics.open(directory)
    metrics.bundle.labels("new-version").set(1)
    text = metrics.scrape().decode()
    assert 'version="new-version"' in text and "old-version" not in text
    assert drop_dead_gauges(directory) == []  # the live one stays

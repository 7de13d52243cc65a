"""The app builder and HTTP helpers without a cluster: bundle resolution, token sources, layering."""

from __future__ import annotations

import subprocess
import sys

import pytest

from longtail.bundle import BundleError
from longtail.serve.app import BUNDLE_ENV, resolve_bundle
from longtail.serve.http import read_token
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

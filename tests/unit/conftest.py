"""Unit tests run without Ray: importing it fails, and so does ``ray.init`` when an earlier test module of the
same session (an integration test) imported it already."""

from __future__ import annotations

import importlib.abc
import sys
from collections.abc import Iterator

import pytest


class _NoRay(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "ray" or name.startswith("ray."):
            raise ImportError(f"unit tests do not import Ray ({name}); move the test to tests/integration")
        return None


def _refuse_init(*args, **kwargs):
    raise RuntimeError("unit tests do not start Ray; move the test to tests/integration")


@pytest.fixture(autouse=True)
def no_ray(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    ray = sys.modules.get("ray")
    if ray is not None:
        monkeypatch.setattr(ray, "init", _refuse_init)
        yield
        return
    finder = _NoRay()
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)

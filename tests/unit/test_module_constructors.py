"""Every ``nn.Module`` of the package takes at most five constructor arguments (torchrec's rule): a module
is built from a frozen spec and the few tensors it scores over, never from a long positional list."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

from torch import nn

import longtail

MAX_ARGS = 5
# modules that import Ray, DeepSpeed or FastAPI are not model code; the unit tests do not import them
FRAMEWORK = ("longtail.serve", "longtail.train", "longtail.tune", "longtail.recommend.batch", "longtail.cli")


def package_modules() -> list[type[nn.Module]]:
    found = []
    for info in pkgutil.walk_packages(longtail.__path__, "longtail."):
        if info.name.startswith(FRAMEWORK):
            continue
        module = importlib.import_module(info.name)
        found += [
            c
            for _, c in inspect.getmembers(module, inspect.isclass)
            if issubclass(c, nn.Module) and c.__module__ == module.__name__
        ]
    return found


def test_every_module_takes_at_most_five_arguments_and_the_models_take_a_spec():
    modules = package_modules()
    names = {c.__name__ for c in modules}
    assert {
        "HybridRanker",
        "FactorizedRetriever",
        "TargetAttention",
        "NextItemObjective",
        "TextEncoder",
    } <= names
    for cls in modules:
        params = [p for p in inspect.signature(cls.__init__).parameters.values() if p.name != "self"]
        assert len(params) <= MAX_ARGS, (
            f"{cls.__module__}.{cls.__name__}({', '.join(p.name for p in params)})"
        )
        assert not any(p.kind is p.VAR_POSITIONAL for p in params), cls
    from longtail.model.hybrid import HybridRanker
    from longtail.model.retriever import FactorizedRetriever

    for model in (HybridRanker, FactorizedRetriever):
        assert list(inspect.signature(model.__init__).parameters)[1] == "spec"

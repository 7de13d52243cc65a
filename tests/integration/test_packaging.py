"""Packaging by role: each role's modules import only what the core and that role's extra install.

A fresh interpreter imports a role's entry modules; every third-party module it then holds must come from a
distribution in the closure of the role's requirements (pyproject's core plus the extra, followed through
each installed distribution's own requirements), or be one that a dependency tries and can do without: the
role imports again with every such module made unimportable (Ray tries uvloop and colorful, Starlette
python-multipart, Serve pandas, numpy charset-normalizer). The serve app never reaches DeepSpeed, Optuna or
MLflow; the client imports neither torch nor Ray nor FastAPI. Marked integration: each role's fresh
interpreter imports Ray (a minute in all), though none starts it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(requirements: list[str]) -> set[str]:
    """Every distribution the requirements install (their extras followed), by canonical name."""
    seen: set[tuple[str, str]] = set()
    todo = [Requirement(r) for r in requirements]
    names: set[str] = set()
    while todo:
        req = todo.pop()
        extras = sorted(req.extras) or [""]
        for extra in extras:
            key = (canonical(req.name), extra)
            if key in seen:
                continue
            seen.add(key)
            names.add(key[0])
            try:
                requires = metadata.requires(req.name) or []
            except metadata.PackageNotFoundError:
                continue
            for line in requires:
                sub = Requirement(line)
                if sub.marker is None or sub.marker.evaluate({"extra": extra}):
                    todo.append(sub)
    return names


def imported_distributions(
    modules: list[str], blocked: tuple[str, ...] = ()
) -> tuple[dict[str, list[str]], list[str]]:
    """{top-level module: its distributions} of what a fresh interpreter holds after importing ``modules``
    (with the top-level modules ``blocked`` unimportable), and the longtail modules it loaded."""
    code = (
        "import importlib.abc, json, sys\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name.split('.')[0] in {blocked!r}: raise ModuleNotFoundError(name)\n"
        "sys.meta_path.insert(0, Block())\n"
        f"for m in {modules!r}: __import__(m)\n"
        "print(json.dumps({m: getattr(v, '__file__', None) or '' for m, v in sorted(sys.modules.items())}))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    loaded = json.loads(result.stdout.splitlines()[-1])
    owners = metadata.packages_distributions()
    tops = {m.split(".")[0] for m in loaded} - set(sys.stdlib_module_names) - {"longtail", "__main__"}
    # Ray puts its own copies of psutil and colorama on the path; modules no distribution owns (interpreter
    # and compiled-extension internals) are left out
    vendored = {t for t in tops if "/ray/thirdparty_files/" in loaded.get(t, "")}
    found = {
        t: ["ray"] if t in vendored else [canonical(d) for d in owners[t]]
        for t in sorted(tops)
        if t in owners or t in vendored
    }
    return found, [m for m in loaded if m.startswith("longtail.")]


ROLES = {
    "core": ([], ["longtail.api", "longtail.cli", "longtail.recommend.build", "longtail.eval.report"]),
    "serve": (["serve"], ["longtail.serve.app", "longtail.serve.deployments", "longtail.serve.ingress"]),
    "client": (["client"], ["longtail.client"]),
    "train": (["train"], ["longtail.train.chain", "longtail.train.finetune_worker"]),
    "tune": (["tune"], ["longtail.tune.sweep"]),
    "track": (["track"], ["longtail.tracking"]),
}


def allowed_for(role: str) -> set[str]:
    extras = PROJECT["optional-dependencies"]
    return closure(PROJECT["dependencies"] + [r for e in ROLES[role][0] for r in extras[e]])


@pytest.fixture(scope="module")
def imports() -> dict[str, tuple[dict[str, list[str]], list[str]]]:
    """Each role's imports, the interpreters run two at a time (each imports torch, most import Ray)."""
    with ThreadPoolExecutor(2) as pool:
        found = pool.map(lambda role: imported_distributions(ROLES[role][1]), ROLES)
        return dict(zip(ROLES, found, strict=True))


def test_every_role_imports_only_what_its_extras_install(imports):
    outside = {
        role: tuple(top for top, dists in imports[role][0].items() if not set(dists) & allowed_for(role))
        for role in ROLES
    }
    assert all(len(names) <= 4 for names in outside.values()), outside  # optional imports, not an extra
    # the role imports again with those modules unimportable: it fails if any of them is needed
    with ThreadPoolExecutor(2) as pool:
        again = pool.map(lambda role: imported_distributions(ROLES[role][1], outside[role]), ROLES)
        for role, (found, _) in zip(ROLES, again, strict=True):
            assert not set(outside[role]) & set(found), role


def test_the_serve_app_and_the_client_stay_off_the_heavy_roles(imports):
    found, loaded = imports["serve"]
    assert not {"deepspeed", "optuna", "mlflow"} & set(found)
    assert not [m for m in loaded if m.startswith(("longtail.train", "longtail.tune", "longtail.tracking"))]
    assert not {"torch", "ray", "fastapi", "numpy"} & set(imports["client"][0])


def test_the_closure_check_can_fail():
    core = closure(PROJECT["dependencies"])
    assert "torch" in core and "deepspeed" not in core and "ray" not in core
    assert "deepspeed" in closure(PROJECT["optional-dependencies"]["train"])
    assert "mlflow-skinny" not in closure(PROJECT["optional-dependencies"]["serve"])


def test_every_extra_pins_ray_to_the_same_release():
    pins = {
        str(Requirement(r).specifier)
        for reqs in PROJECT["optional-dependencies"].values()
        for r in reqs
        if Requirement(r).name == "ray"
    }
    assert len(pins) == 1

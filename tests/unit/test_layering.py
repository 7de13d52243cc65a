"""The rooms follow the data flow (docs/design.md, "Layout"): data → model → recommend → eval; bundle
and store beside them; the frameworks (Ray, DeepSpeed, FastAPI, Prometheus) only in train/, tune/, serve/
and the batch job; no room imports a later one; benchmarks never import tests."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "platform" / "longtail"
# what each room may import of the package (besides itself); the frameworks are checked in a subprocess
MAY_IMPORT = {
    "errors": set(),
    "config": {"errors"},
    "files": set(),
    "topk": set(),
    "data": {"errors", "config", "files"},
    "model": {"errors", "config", "data", "topk"},
    "eval": {"errors", "config", "data", "model", "topk"},
    "recommend": {"errors", "config", "data", "model", "eval", "topk", "bundle"},
    "bundle": {"errors", "config", "data", "files", "model"},
    "store": {"errors"},
}


def package_imports(path: Path) -> set[str]:
    """The ``longtail.X`` rooms a module imports (top level and inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
        names += [a.name for a in node.names] if isinstance(node, ast.Import) else []
        found |= {n.split(".")[1] for n in names if n.startswith("longtail.") and n.count(".") >= 1}
    return found


def room_of(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0].removesuffix(".py")


def test_no_room_imports_a_later_one():
    bad = []
    for path in PACKAGE.rglob("*.py"):
        room = room_of(path)
        if room not in MAY_IMPORT or path.name == "batch.py":  # the Ray Data job reads eval's history parts
            continue
        extra = package_imports(path) - MAY_IMPORT[room] - {room}
        if extra:
            bad.append(f"{path.relative_to(ROOT)} imports longtail.{sorted(extra)}")
    assert bad == []


def test_core_imports_no_framework():
    code = (
        "import sys\n"
        "import longtail.data, longtail.eval.evaluate, longtail.eval.report, longtail.model.factory, "
        "longtail.config\n"
        "import longtail.recommend.pipeline, longtail.recommend.build, longtail.recommend.recommender\n"
        "import longtail.recommend.batch, longtail.store, longtail.store.migrate, longtail.bundle\n"
        "bad = sorted(m for m in ('ray', 'deepspeed', 'fastapi', 'prometheus_client') if m in sys.modules)\n"
        "print(','.join(bad))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "", f"core imported {result.stdout.strip()}"


def test_benchmarks_never_import_tests():
    offenders = [
        str(p.relative_to(ROOT))
        for p in (ROOT / "benchmarks").rglob("*.py")
        if "tests" in _top_level_imports(p)
    ]
    assert offenders == []


def _top_level_imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
    return names


def test_platform_is_a_source_root_not_a_package():
    import longtail

    assert longtail.__file__.endswith("platform/longtail/__init__.py")
    import platform

    assert hasattr(platform, "python_version")  # the standard module is not shadowed

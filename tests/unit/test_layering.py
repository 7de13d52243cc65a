"""The pure core imports no framework (DESIGN.md, layout rules)."""

from __future__ import annotations

import subprocess
import sys


def test_core_imports_no_framework():
    code = (
        "import sys\n"
        "import longtail.data, longtail.eval.evaluate, longtail.eval.report, longtail.model.factory, longtail.config\n"
        "import longtail.recommend.pipeline, longtail.recommend.build, longtail.recommend.recommender\n"
        "bad = sorted(m for m in ('ray', 'deepspeed', 'fastapi', 'prometheus_client') if m in sys.modules)\n"
        "print(','.join(bad))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "", f"core imported {result.stdout.strip()}"


def test_platform_is_a_source_root_not_a_package():
    import longtail

    assert longtail.__file__.endswith("platform/longtail/__init__.py")
    import platform

    assert hasattr(platform, "python_version")  # the standard module is not shadowed

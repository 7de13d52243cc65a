"""The dependency lock: every package `make install` installs is pinned with its hashes, every direct
dependency of pyproject.toml is in it, and no pin falls in a range with a known advisory (an offline check:
pip-audit needs PyPI's JSON API or api.osv.dev, which this project's machines do not reach)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+) \\$")

# fixed-in versions of advisories that touch what longtail runs (name: [(first fixed version, advisory)])
ADVISORIES = {
    "torch": [
        ("2.6.0", "CVE-2025-32434: torch.load(weights_only=True) runs code"),
        ("2.10.0", "torch.load advisory fixed in 2.10"),
    ],
    "starlette": [
        ("0.40.0", "CVE-2024-47874: multipart DoS"),
        ("0.47.2", "CVE-2025-54121: multipart blocks the event loop"),
    ],
    "h11": [("0.16.0", "CVE-2025-43859: request smuggling")],
    "jinja2": [("3.1.6", "CVE-2025-27516: sandbox escape")],
    "urllib3": [("2.5.0", "CVE-2025-50181: redirects")],
    "requests": [("2.32.4", "CVE-2024-47081: .netrc credential leak")],
    "setuptools": [("78.1.1", "CVE-2025-47273: path traversal")],
    "python-multipart": [("0.0.18", "CVE-2024-53981: DoS")],
    "fastapi": [("0.109.1", "CVE-2024-24762: ReDoS in form parsing")],
    "aiohttp": [("3.12.14", "CVE-2025-53643: request smuggling")],
    "cryptography": [("44.0.1", "CVE-2024-12797")],
    "idna": [("3.7", "CVE-2024-3651: DoS")],
    "zipp": [("3.19.1", "CVE-2024-5569: DoS")],
    "werkzeug": [("3.0.6", "CVE-2024-49767: multipart DoS")],
    "gitpython": [("3.1.41", "CVE-2024-22190")],
    "pillow": [("10.3.0", "CVE-2024-28219")],
    "sqlparse": [("0.5.0", "CVE-2024-4340")],
}


def pins(path: Path) -> dict[str, tuple[Version, list[str]]]:
    """name → (version, hashes) of a pip-compile requirements file."""
    out: dict[str, tuple[Version, list[str]]] = {}
    name = None
    for line in path.read_text().splitlines():
        match = PIN.match(line)
        if match:
            name = canonicalize_name(match.group(1))
            out[name] = (Version(match.group(2)), [])
        elif line.strip().startswith("--hash=sha256:") and name:
            out[name][1].append(line.strip().removeprefix("--hash=sha256:").rstrip(" \\"))
    return out


LOCK = pins(ROOT / "requirements" / "lock.txt")
SERVE_LOCK = pins(ROOT / "requirements" / "lock-serve.txt")
TORCH = pins(ROOT / "requirements" / "torch-cpu.txt")
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_every_pin_carries_its_hashes_and_torch_is_apart():
    assert len(LOCK) > 100 and "torch" not in LOCK and set(TORCH) == {"torch"}
    assert all(
        hashes and all(len(h) == 64 for h in hashes) for _, hashes in [*LOCK.values(), *TORCH.values()]
    )
    makefile = (ROOT / "Makefile").read_text()
    assert "--require-hashes -r requirements/lock.txt" in makefile
    assert "--require-hashes -r requirements/torch-cpu.txt" in makefile


def test_every_direct_dependency_is_locked_within_its_declared_range():
    extras = PROJECT["optional-dependencies"]
    declared = [Requirement(r) for r in [*PROJECT["dependencies"], *extras["all"], *extras["dev"]]]
    for req in declared:
        name = canonicalize_name(req.name)
        version = (TORCH if name == "torch" else LOCK)[name][0]
        assert req.specifier.contains(version, prereleases=True), (req, version)


@pytest.mark.parametrize("name", sorted(ADVISORIES))
def test_no_locked_version_has_a_known_advisory(name):
    version = (TORCH if name == "torch" else LOCK).get(name, (None, []))[0]
    if version is None:
        pytest.skip(f"{name} is not in the lock")
    for fixed, advisory in ADVISORIES[name]:
        assert Version(version.base_version) >= Version(fixed), (
            f"{name} {version}: {advisory} (fixed in {fixed})"
        )


def test_the_serving_lock_is_the_lock_cut_to_core_serve_and_client():
    """requirements/lock-serve.txt (the serving image) pins what the core, `serve` and `client` need, at the
    main lock's versions and hashes, and nothing of the train, tune, track or dev roles."""
    assert SERVE_LOCK and "torch" not in SERVE_LOCK
    assert {n: SERVE_LOCK[n] for n in SERVE_LOCK} == {n: LOCK[n] for n in SERVE_LOCK}
    extras = PROJECT["optional-dependencies"]
    for line in [*PROJECT["dependencies"], *extras["serve"], *extras["client"]]:
        req = Requirement(line)
        if canonicalize_name(req.name) != "torch":
            assert canonicalize_name(req.name) in SERVE_LOCK, req.name
    assert not {"deepspeed", "optuna", "mlflow-skinny", "pytest", "mkdocs"} & set(SERVE_LOCK)

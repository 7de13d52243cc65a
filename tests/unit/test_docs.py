"""The front door and the docs hold: the README stays within 150 lines; every repository path, benchmark
script, relative link, override and serve arg that the README or a docs page names exists; the generated
pages (results, configuration reference, the README's headline) equal what their sources give; the README's
Python uses only the API's real names and keywords (the quick start itself runs in
tests/integration/test_quickstart.py)."""

from __future__ import annotations

import ast
import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import longtail
from longtail.config import BaselinesConfig, ConfigError, TrainConfig, load_config
from longtail.serve.knobs import AppArgs

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
# the pages a user reads today; docs/history keeps what 0.1.0 said, as it said it
PAGES = [
    README,
    ROOT / "CHANGELOG.md",
    *sorted((ROOT / "docs").glob("*.md")),
    *(ROOT / "docs/guide").glob("*.md"),
]
PATH = re.compile(
    r"(?<![\w/.])((?:train_configs|serve_configs|tune_spaces|benchmarks|platform|docs|tests|deploy|harness"
    r"|monitoring|requirements)/[A-Za-z0-9_./-]*[A-Za-z0-9_/])"
)
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
OVERRIDE = re.compile(
    r"(?<![\w.])((?:baselines|ranker|retriever|finetune|encoder|graph|rerank|select|retrieval|embed|resources)"
    r"\.[a-z_.]+)=([^\s`'\"\]]+)"
)


def text_of(page: Path) -> str:
    return page.read_text()


def test_the_readme_is_a_front_door_of_at_most_150_lines():
    lines = README.read_text().splitlines()
    assert len(lines) <= 150
    for heading in ("## Set up", "## Quick start", "## Python", "## Documentation"):
        assert any(line.startswith(heading) for line in lines), heading


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_path_and_link_a_page_names_exists(page):
    text = text_of(page)
    paths = {m.rstrip(".,:;)") for m in PATH.findall(text)}
    missing = [p for p in sorted(paths) if not (ROOT / p).exists() and not user_made(p)]
    links = [link for link in LINK.findall(text) if "://" not in link and not link.startswith("mailto:")]
    broken = [link for link in links if not (page.parent / link).exists()]
    assert (missing, broken) == ([], [])


def user_made(path: str) -> bool:
    """A file the user creates (a password file, a token), ignored by git."""
    return subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT).returncode == 0


def test_the_path_check_can_fail(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("see benchmarks/no_such.py and [x](nowhere.md)")
    assert PATH.findall(page.read_text()) == ["benchmarks/no_such.py"]
    assert LINK.findall(page.read_text()) == ["nowhere.md"]


def test_every_benchmark_script_is_listed_in_development():
    text = (ROOT / "docs/development.md").read_text()
    scripts = {p.name for p in (ROOT / "benchmarks").glob("*.py")} - {"__init__.py"}
    helpers = {"serve_harness.py", "empty_app.py", "synthetic_pipeline.py", "plain_finetune.py"}
    assert [s for s in sorted(scripts - helpers) if f"benchmarks/{s}" not in text] == []


OVERRIDES = sorted({m for page in PAGES for m in OVERRIDE.findall(text_of(page))})


@pytest.mark.parametrize(("key", "value"), OVERRIDES)
def test_every_override_a_page_shows_is_a_config_key(key, value):
    if key.startswith("baselines."):
        load_config(BaselinesConfig, None, [f"{key.removeprefix('baselines.')}={value}"])
    else:
        load_config(TrainConfig, None, [f"{key}={value}"])


def test_the_override_check_can_fail():
    assert len(OVERRIDES) >= 5
    with pytest.raises(ConfigError):
        load_config(TrainConfig, None, ["ranker.no_such_knob=1"])


@pytest.mark.parametrize("config", sorted((ROOT / "serve_configs").glob("*.yaml")), ids=lambda p: p.name)
def test_serve_args_the_serving_guide_names_exist(config):
    args = yaml.safe_load(config.read_text())["applications"][0]["args"]
    AppArgs.model_validate(args)  # unknown keys fail
    guide = (ROOT / "docs/guide/serving.md").read_text()
    for name in ("store", "create_store", "store_timeout_s", "auth", "protect_reads", "read_token_file"):
        assert name in AppArgs.model_fields and f"`{name}" in guide, name


def test_generated_pages_are_up_to_date():
    result = subprocess.run(
        [sys.executable, "-m", "harness.docs", "--check"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_the_readme_python_uses_only_real_api_names_and_keywords():
    (code,) = python_blocks(README.read_text())
    from longtail import api

    methods = {**vars(api.Recommender), **{n: getattr(api, n) for n in longtail.__all__}}
    checked = 0
    for node in ast.walk(ast.parse(code)):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "longtail"
        ):
            assert node.attr in longtail.__all__, node.attr
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in methods:
            params = inspect.signature(methods[node.func.attr]).parameters
            assert {k.arg for k in node.keywords} <= set(params), node.func.attr
            checked += 1
    assert checked >= 5

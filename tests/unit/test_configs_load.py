"""Every shipped config loads through the typed config, says what it sets, and sets what it says."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from longtail.config import TrainConfig, load_config

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTED = re.compile(r"^\s*[\w.]+:\s*\S.*#\s*\((?:[\w\[\]|, ]+)\)\s+\S")  # name: value  # (type) meaning


def leaves(tree: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(leaves(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


@pytest.mark.parametrize("path", sorted((ROOT / "train_configs").glob("*.yaml")), ids=lambda p: p.name)
def test_train_configs_load_with_every_value_documented_and_taken(path):
    text = path.read_text()
    cfg = load_config(TrainConfig, path)
    written = leaves(yaml.safe_load(text))
    loaded = leaves(cfg.model_dump())
    assert {k: loaded[k] for k in written} == written  # each value in the file is the value the config holds
    values = [line for line in text.splitlines() if re.match(r"^\s*[\w.]+:\s*[^\s#]", line)]
    undocumented = [line for line in values if not DOCUMENTED.match(line)]
    assert undocumented == [], undocumented  # RecBole's style: `name: value  # (type) meaning`


@pytest.mark.parametrize("path", sorted((ROOT / "serve_configs").glob("*.yaml")), ids=lambda p: p.name)
def test_serve_configs_pass_our_typed_args_and_knobs(path):
    from longtail.serve.knobs import AppArgs, EncoderKnobs, IngressKnobs, ListKnobs

    raw = yaml.safe_load(path.read_text())
    [app] = raw["applications"]
    assert app["import_path"] == "longtail.serve.app:build_app"
    args = AppArgs.model_validate(app["args"])
    knobs = {"Ingress": IngressKnobs, "Ranker": ListKnobs, "Encoder": EncoderKnobs}
    # a Ranker deployment exactly when the app binds one; in-process ranking reads the Ingress's `ranker:`
    assert {d["name"] for d in app["deployments"]} == set(knobs) - (
        set() if args.ranker_deployment else {"Ranker"}
    )
    ingress = next(d for d in app["deployments"] if d["name"] == "Ingress")
    assert ("ranker" in ingress.get("user_config", {})) == (not args.ranker_deployment)
    for deployment in app["deployments"]:
        knobs[deployment["name"]].model_validate(deployment.get("user_config", {}))
    # a public listener is bounded: requests time out and queues are capped (the README's reverse-proxy notes)
    assert raw["http_options"]["request_timeout_s"] > 0 and ingress["max_queued_requests"] > 0
    assert (
        "password" not in app["args"]["store"]
        and ":" not in app["args"]["store"].split("@")[0][len("postgresql://") :]
    )


def test_serve_knobs_reject_unknown_keys_and_bad_ranges():
    from pydantic import ValidationError

    from longtail.serve.knobs import AppArgs, ListKnobs

    with pytest.raises(ValidationError, match="alpah"):
        ListKnobs.model_validate({"alpah": 0.5})
    with pytest.raises(ValidationError, match="tail_boost"):
        ListKnobs.model_validate({"tail_boost": 1.5})
    with pytest.raises(ValidationError, match="max_body_bytes"):
        AppArgs.model_validate({"max_body_bytes": 10})

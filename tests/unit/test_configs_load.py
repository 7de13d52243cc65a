"""Every shipped config loads through the typed config."""

from __future__ import annotations

from pathlib import Path

import pytest

from longtail.config import TrainConfig, load_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("path", sorted((ROOT / "train_configs").glob("*.yaml")), ids=lambda p: p.name)
def test_train_configs_load(path):
    cfg = load_config(TrainConfig, path)
    assert cfg.finetune.micro_batch_size >= 2


@pytest.mark.parametrize("path", sorted((ROOT / "serve_configs").glob("*.yaml")), ids=lambda p: p.name)
def test_serve_configs_pass_serve_schema_and_our_typed_args(path):
    import yaml
    from ray.serve.schema import ServeDeploySchema

    from longtail.serve.knobs import AppArgs, EncoderKnobs, IngressKnobs, RankerKnobs

    raw = yaml.safe_load(path.read_text())
    ServeDeploySchema.model_validate(raw)  # Ray's own validation, as `serve deploy` does
    [app] = raw["applications"]
    assert app["import_path"] == "longtail.serve.app:build_app"
    args = AppArgs.model_validate(app["args"])
    knobs = {"Ingress": IngressKnobs, "Ranker": RankerKnobs, "Encoder": EncoderKnobs}
    # a Ranker deployment exactly when the app binds one; in-process ranking reads the Ingress's `ranker:`
    assert {d["name"] for d in app["deployments"]} == set(knobs) - (set() if args.ranker_deployment else {"Ranker"})
    ingress = next(d for d in app["deployments"] if d["name"] == "Ingress")
    assert ("ranker" in ingress.get("user_config", {})) == (not args.ranker_deployment)
    for deployment in app["deployments"]:
        knobs[deployment["name"]].model_validate(deployment.get("user_config", {}))


def test_serve_knobs_reject_unknown_keys_and_bad_ranges():
    from pydantic import ValidationError

    from longtail.serve.knobs import AppArgs, RankerKnobs

    with pytest.raises(ValidationError, match="alpah"):
        RankerKnobs.model_validate({"alpah": 0.5})
    with pytest.raises(ValidationError, match="tail_boost"):
        RankerKnobs.model_validate({"tail_boost": 1.5})
    with pytest.raises(ValidationError, match="max_body_bytes"):
        AppArgs.model_validate({"max_body_bytes": 10})


def test_cluster_yaml_passes_ray_cluster_validation():
    import yaml
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    validate_config(prepare_config(config))  # what `ray up` does: fill defaults, then check the schema
    head = config["available_node_types"][config["head_node_type"]]
    assert head["resources"] == {"head": 1}  # the serve config pins ingress and ranker replicas here
    assert any("ray[default,train,serve,tune]==2.60.0" in c for c in config["setup_commands"])

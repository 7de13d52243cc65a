"""The shipped configs pass Ray's own validation (what `serve deploy` and `ray up` check), and search spaces
map onto Ray Tune's domains. No cluster is started."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from longtail.tune.space import Param, parse_space, touches_upstream

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("path", sorted((ROOT / "serve_configs").glob("*.yaml")), ids=lambda p: p.name)
def test_serve_configs_pass_serve_schema(path):
    from ray.serve.schema import ServeDeploySchema

    ServeDeploySchema.model_validate(yaml.safe_load(path.read_text()))


def test_cluster_yaml_passes_ray_cluster_validation():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    validate_config(prepare_config(config))  # what `ray up` does: fill defaults, then check the schema
    head = config["available_node_types"][config["head_node_type"]]
    assert head["resources"] == {"head": 1}  # the serve config pins ingress and ranker replicas here
    assert any("ray[default,train,serve,tune]==2.60.0" in c for c in config["setup_commands"])


def test_every_distribution_parses_and_maps_to_tune():
    from ray.tune.search.sample import Categorical, Float, Integer

    space = parse_space(
        {
            "ranker.alpha": {"uniform": [0.0, 1.0]},
            "ranker.lr": {"loguniform": [1e-4, 1e-2]},
            "ranker.beta": {"quniform": [0, 1, 0.25]},
            "finetune.lr": {"qloguniform": [1e-5, 1e-3, 1e-5]},
            "ranker.epochs": {"randint": [2, 10]},
            "ranker.dim": {"qrandint": [16, 128, 16]},
            "ranker.heads": {"choice": [1, 2]},
            "graph.kg_k": {"choice": [0, 20]},
        }
    )
    kinds = {p.key: p.kind for p in space}
    assert kinds["ranker.beta"] == "quniform" and kinds["ranker.heads"] == "choice"
    domains = {p.key: p.to_tune() for p in space}
    assert isinstance(domains["ranker.alpha"], Float) and isinstance(domains["ranker.epochs"], Integer)
    assert isinstance(domains["ranker.heads"], Categorical)
    assert domains["ranker.dim"].sample() % 16 == 0
    assert 2 <= domains["ranker.epochs"].sample() < 10
    assert touches_upstream(space)
    assert Param("ranker.dim", "choice", (32,)).to_tune().sample() == 32


def test_the_rayservices_serve_config_passes_serve_schema():
    from ray.serve.schema import ServeDeploySchema

    service = yaml.safe_load((ROOT / "deploy" / "kuberay" / "rayservice.yaml").read_text())
    ServeDeploySchema.model_validate(yaml.safe_load(service["spec"]["serveConfigV2"]))
    ServeDeploySchema.model_validate(yaml.safe_load((ROOT / "deploy" / "serve-compose.yaml").read_text()))

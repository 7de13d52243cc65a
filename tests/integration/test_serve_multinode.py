"""Two Ray nodes on this machine, a Ranker and an Ingress replica on each (serve_configs/ranker-gpu.yaml: a
separate Ranker deployment), one real PostgreSQL store: an event or an erasure posted through the HTTP
front door is seen by the rankers on both nodes."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
import yaml
from harness.postgres_server import fresh_database
from harness.ray_head import cli, free_port, ray_head

from tests.integration.test_serve import wait_healthy

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
TOKEN = "multi-node-token"


def multinode_config(path: Path, port: int, args: dict) -> Path:
    """serve_configs/ranker-gpu.yaml without GPUs or a `head` resource, with one proxy (two nodes share this
    machine's ports), and Ranker and Ingress spread one replica per node."""
    config = yaml.safe_load((ROOT / "serve_configs" / "ranker-gpu.yaml").read_text())
    config["proxy_location"] = "HeadOnly"
    config["http_options"]["port"] = port
    app = config["applications"][0]
    app["args"].update(args)
    assert app["args"]["ranker_deployment"] is True
    for deployment in app["deployments"]:
        deployment["ray_actor_options"] = {"num_cpus": 0.1}
        if deployment["name"] in ("Ingress", "Ranker"):
            deployment.pop("autoscaling_config", None)
            deployment.update(num_replicas=2, max_replicas_per_node=1)
        if deployment["name"] == "Encoder":
            deployment["autoscaling_config"] = {"min_replicas": 1, "max_replicas": 1}
    path.write_text(yaml.safe_dump(config))
    return path


def rankers_answering(url: str, user: str, want: int = 2, tries: int = 80) -> dict[str, dict]:
    """Node id → a /recommend answer for ``user``, until ``want`` distinct ranker nodes answered."""
    seen: dict[str, dict] = {}
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(timeout=30) as client:
        for _ in range(tries):
            r = client.post(url + "/recommend", json={"user_id": user, "k": 5}, headers=headers)
            assert r.status_code == 200, r.text
            seen.setdefault(r.headers["x-longtail-ranker"].split("/")[0], r.json())
            if len(seen) >= want:
                break
    return seen


def test_rankers_on_two_nodes_share_one_postgresql_store(tmp_path, tiny_bundle, postgres_url):
    store = fresh_database(postgres_url, "multinode")
    cli("longtail", "store", "init", store)
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    port = free_port()
    args = {
        "bundle": str(tiny_bundle),
        "store": store,
        "token_file": str(token_file),
        "read_token_file": None,
        "metrics_dir": str(tmp_path / "metrics"),
        "torch_threads": 1,
    }
    with ray_head(tmp_path, num_cpus=2, workers=(1,)) as head:
        config = multinode_config(tmp_path / "ranker.yaml", port, args)
        cli("serve", "deploy", str(config), "--address", head["dashboard"], timeout=300, env=head["env"])
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, head)
        before = rankers_answering(url, "u2")
        assert len(before) == 2, f"rankers answered from {list(before)} only"  # one per node
        top = next(iter(before.values()))["items"][0]["item_id"]
        event = {"event_id": "mn-1", "user_id": "u2", "item_id": top, "type": "purchase"}
        r = httpx.post(url + "/events", json=event, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
        assert r.status_code == 200 and r.json()["stored"] == 1
        after = rankers_answering(url, "u2")
        assert len(after) == 2
        for node, answer in after.items():  # both nodes' rankers read the event from the shared store
            assert top not in [i["item_id"] for i in answer["items"]], (node, answer)
        r = httpx.delete(url + "/users/u2", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
        assert r.status_code == 200 and r.json()["events_deleted"] == 1
        time.sleep(0.5)
        erased = rankers_answering(url, "u2")
        assert len(erased) == 2 and all(a["strategy"] == "cold_start" for a in erased.values()), erased
        replay = httpx.post(
            url + "/events", json=event, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
        )
        assert replay.json() == {"stored": 0, "duplicates": 0, "erased": 1, "attributed": 0}

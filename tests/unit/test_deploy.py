"""The deployment artifacts agree with the repository: no container runtime runs here, so they are validated
(parsed, compared, their commands parsed as longtail command lines); Ray's own schema check of the
RayService's Serve config is in tests/integration/test_configs_ray.py."""

from __future__ import annotations

import shlex
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def test_the_rayservice_serves_the_shipped_gpu_config_verbatim():
    service = load(DEPLOY / "kuberay" / "rayservice.yaml")
    assert service["kind"] == "RayService" and service["apiVersion"] == "ray.io/v1"
    embedded = yaml.safe_load(service["spec"]["serveConfigV2"])
    assert embedded == load(ROOT / "serve_configs" / "ranker-gpu.yaml")
    head = service["spec"]["rayClusterConfig"]["headGroupSpec"]
    assert head["rayStartParams"]["resources"] == '"{\\"head\\": 1}"'  # the Ingress is pinned to `head`
    mounts = {m["mountPath"] for m in head["template"]["spec"]["containers"][0]["volumeMounts"]}
    args = embedded["applications"][0]["args"]
    for path in (args["bundle"], args["token_file"], args["read_token_file"], args["metrics_dir"]):
        assert any(path.startswith(m + "/") for m in mounts), path  # every path the app reads is mounted


def test_the_rayjob_entrypoint_is_a_longtail_train_command_line():
    import typer

    from longtail.cli import app

    job = load(DEPLOY / "kuberay" / "rayjob.yaml")
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[:2] == ["longtail", "train"]
    command = typer.main.get_command(app)
    train = command.get_command(command.make_context("longtail", argv[1:]), "train")
    context = train.make_context("train", argv[2:])  # raises on an unknown option or a missing one
    assert context.params["config"] == Path("train_configs/gpu-cluster.yaml")
    assert (ROOT / context.params["config"]).is_file() and context.params["overrides"]


def test_compose_serves_the_shipped_config_with_its_stores_and_scrapes_the_same_metrics():
    compose = load(DEPLOY / "compose.yaml")
    services = compose["services"]
    assert {"postgres", "train", "app", "prometheus", "grafana"} <= set(services)
    serve = load(DEPLOY / "serve-compose.yaml")
    shipped = load(ROOT / "serve_configs" / "ranker.yaml")
    args, shipped_args = serve["applications"][0]["args"], shipped["applications"][0]["args"]
    changed = {k for k in {*args, *shipped_args} if args.get(k) != shipped_args.get(k)}
    assert changed == {"bundle", "store", "token_file", "metrics_dir"}  # nothing else drifts
    assert serve["applications"][0]["deployments"] == shipped["applications"][0]["deployments"]
    port = serve["http_options"]["port"]
    assert f"{port}:{port}" in services["app"]["ports"]
    app_command = " ".join(services["app"]["command"])
    assert "serve run deploy/serve-compose.yaml" in app_command and args["store"].split("?")[0] in app_command
    assert args["token_file"].startswith("/state/") and "state:/state" in services["app"]["volumes"]
    assert "bundles:/bundles" in services["app"]["volumes"] and args["bundle"].startswith("/bundles/")
    # Prometheus in the app's network with the repository's scrape config: its target is the app's port
    prometheus = services["prometheus"]
    assert prometheus["network_mode"] == "service:app"
    assert "../monitoring/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in prometheus["volumes"]
    scrape = load(ROOT / "monitoring" / "prometheus.yml")
    job = next(j for j in scrape["scrape_configs"] if j["job_name"] == "longtail")
    assert job["static_configs"][0]["targets"] == [f"127.0.0.1:{port}"] and job["metrics_path"] == "/metrics"
    assert "9090:9090" in services["app"]["ports"]
    grafana = services["grafana"]["volumes"]
    assert "../monitoring/grafana-dashboard.json:/var/lib/grafana/dashboards/longtail.json:ro" in grafana
    provider = load(DEPLOY / "grafana" / "provisioning" / "dashboards" / "longtail.yaml")
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"


def test_the_image_installs_from_the_lock_with_hashes():
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert "ARG LOCK=requirements/lock.txt" in dockerfile and "--require-hashes -r ${LOCK}" in dockerfile
    assert (
        "LOCK=requirements/lock-serve.txt" in dockerfile and (ROOT / "requirements/lock-serve.txt").is_file()
    )
    assert "--require-hashes -r requirements/torch-cpu.txt" in dockerfile
    assert "ARG TORCH_SPEC" in dockerfile and "USER ray" in dockerfile
    copied = [line.split()[1] for line in dockerfile.splitlines() if line.startswith("COPY ")]
    assert all((ROOT / c.rstrip("/")).exists() for c in copied), copied

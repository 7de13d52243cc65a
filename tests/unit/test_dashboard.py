"""The Grafana dashboard: a well-formed dashboard whose every query names metrics the app exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import yaml

from longtail.serve.metrics import ServeMetrics

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "monitoring" / "grafana-dashboard.json"
METRIC = re.compile(r"\blongtail_[a-z_]+\b")


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every target of every panel."""
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [(p["title"], t["expr"]) for p in panels if p["type"] != "row" for t in p["targets"]]


def exported_names(tmp_path: Path) -> set[str]:
    """Sample names in a real scrape of the app's metrics, every metric (and label) touched once."""
    metrics = ServeMetrics(tmp_path / "prom")
    metrics.requests.labels("/recommend", "200").inc()
    metrics.latency.labels("/recommend", "200").observe(0.01)
    metrics.lists.labels("hybrid").inc()
    metrics.bundle.labels("v1").set(1)
    metrics.replicas.labels("Ranker").set(1)
    metrics.impressions.labels("default", "hybrid").inc()
    metrics.impression_slots.labels("default", "tail", "tail").inc()
    metrics.attributed.labels("default", "tail", "tail").inc()
    for gauge in (metrics.coverage, metrics.catalog_size):
        gauge.set(1)
    for counter in (
        metrics.events,
        metrics.duplicate_events,
        metrics.erased_events,
        metrics.items_added,
        metrics.users_erased,
        metrics.read_retries,
        metrics.served_items,
        metrics.served_tail,
        metrics.impressions_dropped,
    ):
        counter.inc()
    text = metrics.scrape().decode()
    return {
        re.split(r"[{ ]", line, maxsplit=1)[0]
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


def test_every_query_names_an_exported_metric(tmp_path):
    exported = exported_names(tmp_path)
    queries = dashboard_queries()
    assert queries
    for title, expr in queries:
        names = METRIC.findall(expr)
        assert names, f"panel {title!r}: no longtail metric in {expr!r}"
        missing = [n for n in names if n not in exported]
        assert not missing, (
            f"panel {title!r} queries {missing}, not among the exported samples {sorted(exported)}"
        )


def test_the_panels_users_expect_are_there():
    used = {n for _, expr in dashboard_queries() for n in METRIC.findall(expr)}
    expected = {
        "longtail_requests_total",
        "longtail_request_seconds_bucket",
        "longtail_events_ingested_total",
        "longtail_items_added_total",
        "longtail_served_tail_items_total",
        "longtail_served_items_total",
        "longtail_catalog_coverage",
        "longtail_replicas",
        "longtail_bundle_info",
        "longtail_impressions_total",
        "longtail_impression_slots_total",
        "longtail_attributed_events_total",
    }
    assert expected <= used
    exprs = " ".join(expr for _, expr in dashboard_queries())
    assert "histogram_quantile(0.5," in exprs and "histogram_quantile(0.99," in exprs
    assert 'status=~"4..|5.."' in exprs  # errors by status


def test_dashboard_is_well_formed():
    board = json.loads(DASHBOARD.read_text())
    assert board["uid"] and board["title"] and board["schemaVersion"] >= 36
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert (
        variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    )
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for p in board["panels"]:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24 and g["h"] >= 1, p["title"]
        area = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not area & cells, f"panel {p['title']!r} overlaps another"
        cells |= area
        if p["type"] == "row":
            continue
        assert p["type"] in {"timeseries", "stat", "table"} and p["targets"], p["title"]
        for target in p["targets"]:
            assert target["datasource"]["uid"] == "${datasource}" and target["refId"]
            assert target["expr"].count("(") == target["expr"].count(")"), target["expr"]


def promtool() -> str:
    found = shutil.which("promtool")
    assert found, "promtool missing: `make prometheus` installs Debian's prometheus package"
    return found


def test_scrape_config_and_every_query_pass_promtool(tmp_path):
    checked = subprocess.run(
        [promtool(), "check", "config", str(ROOT / "monitoring" / "prometheus.yml")],
        capture_output=True,
        text=True,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    rules = [
        {
            "record": f"longtail:panel_{i}",
            "expr": expr.replace("$__rate_interval", "1m").replace("$__range", "1h"),
        }
        for i, (_, expr) in enumerate(dashboard_queries())
    ]
    (tmp_path / "rules.yml").write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    checked = subprocess.run(
        [promtool(), "check", "rules", str(tmp_path / "rules.yml")], capture_output=True, text=True
    )
    assert checked.returncode == 0 and f"{len(rules)} rules found" in checked.stdout, (
        checked.stdout + checked.stderr
    )

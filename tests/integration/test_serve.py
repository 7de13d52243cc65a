"""The Serve app as users run it: `ray start --head`, `longtail store init`, `serve deploy
serve_configs/ranker.yaml`, real HTTP. Only what needs Serve is here (batching across requests, two
replicas sharing one store, live knobs, hot swaps, restarts, Prometheus over the live app, a fuzz over real
HTTP); the routes' validation, auth, limits and status codes are unit-tested against the same app in-process
(tests/unit/test_http_app.py).

One module-scoped deployment (tiny bundle, 2 ingress replicas, auth on) serves most tests; the last ones
redeploy it (live knob change, a hot swap to a new bundle version under load, a refused start without a
token, then a whole-app restart with `auth: none`) and check nothing was lost.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from unittest.mock import ANY  # a matcher for values that vary (not a mock)

import httpx
import pytest
import schemathesis
import yaml
from harness.ray_head import cli, free_port, ray_head
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from tests.conftest import write_tiny_bundle, write_tiny_encoder

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
TOKEN = "s3cret-token"


def write_config(path: Path, port: int, args: dict, ranker_knobs: dict | None = None) -> Path:
    """serve_configs/ranker.yaml with this test's bundle, store, port and two ingress replicas (each ranks
    in-process: the shipped ``ranker_deployment: false``)."""
    config = yaml.safe_load((ROOT / "serve_configs" / "ranker.yaml").read_text())
    config["http_options"]["port"] = port
    app = config["applications"][0]
    app["args"].update(args)
    for deployment in app["deployments"]:
        if deployment["name"] == "Ingress":
            deployment.pop("autoscaling_config", None)
            deployment["num_replicas"] = 2
            deployment["ray_actor_options"]["num_cpus"] = 0.1
            deployment["user_config"]["ranker"].update(ranker_knobs or {})
    path.write_text(yaml.safe_dump(config))
    return path


def wait_status(head: dict, word: str, timeout: float = 240) -> str:
    """Poll `serve status` until it shows ``word`` (e.g. DEPLOY_FAILED); returns the status text."""
    deadline, status = time.time() + timeout, ""
    while time.time() < deadline:
        status = cli("serve", "status", "--address", head["dashboard"], env=head["env"], check=False).stdout
        if word in status:
            return status
        time.sleep(2)
    raise AssertionError(f"serve status never showed {word}:\n{status[-4000:]}")


def wait_healthy(url: str, head: dict, timeout: float = 240) -> None:
    """Poll /healthz; fail early with `serve status` when the deploy failed."""
    deadline, status = time.time() + timeout, ""
    while time.time() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        status = cli("serve", "status", "--address", head["dashboard"], env=head["env"], check=False).stdout
        if "DEPLOY_FAILED" in status:
            break
        time.sleep(2)
    raise AssertionError(f"{url} did not become healthy:\n{status[-4000:]}")


@pytest.fixture(scope="module")
def service(tmp_path_factory, tiny_bundle) -> Iterator[dict]:
    work = tmp_path_factory.mktemp("serve")
    token_file = work / "token"
    token_file.write_text(TOKEN + "\n")
    port = free_port()
    store = work / "state.sqlite"
    args = {
        "bundle": str(tiny_bundle),
        "store": str(store),
        "token_file": str(token_file),
        "store_timeout_s": 1.0,
    }
    cli("longtail", "store", "init", str(store))  # the app never creates a store it was not told to
    with ray_head(work) as head:
        config = write_config(work / "ranker.yaml", port, args)
        cli("serve", "deploy", str(config), "--address", head["dashboard"], timeout=300, env=head["env"])
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, head)
        yield {"url": url, "head": head, "work": work, "port": port, "args": args}


def auth() -> dict:
    return {"Authorization": f"Bearer {TOKEN}"}


def post(service, path: str, body, headers=None, **kw) -> httpx.Response:
    return httpx.post(service["url"] + path, json=body, headers=headers, timeout=30, **kw)


def test_recommend_known_unknown_and_explained(service):
    r = post(service, "/recommend", {"user_id": "u0", "k": 5, "explain": True}, headers=auth())
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["strategy"] == "hybrid" and len(body["items"]) == 5 and body["bundle_version"]
    assert r.headers["x-longtail-bundle-version"] == body["bundle_version"] and r.headers["x-longtail-ranker"]
    assert all("contributions" in item["explanation"] for item in body["items"])
    cold = post(service, "/recommend", {"user_id": "never-seen", "k": 10}, headers=auth()).json()
    assert cold["strategy"] == "cold_start" and len(cold["items"]) == 10
    assert {i["reason"] for i in cold["items"]} == {"popular", "explore"}


def test_concurrent_requests_batched_by_the_ingress_each_get_their_own_list(service):
    """Concurrent /recommend calls are ranked as one batch; each answer is its own user's list, the
    same as when asked alone (k and exclude_seen differ per request too)."""
    bodies = [{"user_id": f"u{i}", "k": 3 + i % 4, "exclude_seen": i % 2 == 0} for i in range(12)]
    alone = [post(service, "/recommend", b, headers=auth()).json()["items"] for b in bodies]

    async def together() -> list[list[dict]]:
        async with httpx.AsyncClient(base_url=service["url"], timeout=60, headers=auth()) as client:
            answers = await asyncio.gather(*(client.post("/recommend", json=b) for b in bodies))
        return [a.json()["items"] for a in answers]

    def lists(answers):
        return [[(i["item_id"], round(i["score"], 4), i["tail"]) for i in items] for items in answers]

    for _ in range(3):
        got = lists(asyncio.run(together()))
        for body, want, have in zip(bodies, lists(alone), got, strict=True):
            assert have == want, (body, want, have)


def test_text_query_similar_health_and_openapi(service):
    r = post(service, "/recommend/text", {"query": "A story of space", "k": 3})
    assert r.status_code == 200 and r.json()["strategy"] == "text" and len(r.json()["items"]) == 3
    assert r.headers["x-longtail-bundle-version"] == r.json()["bundle_version"]
    similar = httpx.get(service["url"] + "/items/3/similar", params={"k": 4}, timeout=30)
    assert similar.status_code == 200 and len(similar.json()["items"]) == 4
    assert similar.headers["x-longtail-bundle-version"] == similar.json()["bundle_version"]
    assert "3" not in [i["item_id"] for i in similar.json()["items"]]
    assert httpx.get(service["url"] + "/items/nope/similar", timeout=30).status_code == 404
    health = httpx.get(service["url"] + "/healthz", timeout=30).json()
    assert health["status"] == "ok" and health["catalog_items"] >= 20
    spec = httpx.get(service["url"] + "/openapi.json", timeout=30).json()
    assert {
        "/recommend",
        "/recommend/text",
        "/events",
        "/items",
        "/users/{user_id}",
        "/users/erase",
        "/items/{item_id}/similar",
        "/healthz",
        "/metrics",
    } <= set(spec["paths"])


def test_event_changes_the_next_recommendation_and_is_idempotent(service):
    before = post(
        service, "/recommend", {"user_id": "u2", "k": 5, "exclude_seen": True}, headers=auth()
    ).json()["items"]
    top = before[0]["item_id"]
    event = {"event_id": "ev-u2-1", "user_id": "u2", "item_id": top, "type": "purchase"}
    first = post(service, "/events", event, headers=auth())
    assert first.status_code == 200 and first.json() == {
        "stored": 1,
        "duplicates": 0,
        "erased": 0,
        "attributed": ANY,
    }
    again = post(service, "/events", {"events": [event]}, headers=auth())
    assert again.json() == {"stored": 0, "duplicates": 1, "erased": 0, "attributed": 0}
    reused = post(service, "/events", {**event, "item_id": before[1]["item_id"]}, headers=auth())
    assert reused.status_code == 409 and "ev-u2-1" in reused.json()["detail"]  # an id names one event
    after = post(
        service, "/recommend", {"user_id": "u2", "k": 5, "exclude_seen": True}, headers=auth()
    ).json()["items"]
    assert top not in [i["item_id"] for i in after]  # now seen, so excluded on the very next request
    # a brand-new user with events gets a personal (hybrid) list
    batch = {
        "events": [
            {"event_id": f"new-{i}", "user_id": "fresh", "item_id": str(i), "type": "view"} for i in (11, 12)
        ]
    }
    assert post(service, "/events", batch, headers=auth()).json()["stored"] == 2
    assert (
        post(service, "/recommend", {"user_id": "fresh", "k": 3}, headers=auth()).json()["strategy"]
        == "hybrid"
    )


def test_a_purchase_event_moves_the_next_list_more_than_a_view(service):
    """Three users with the same viewed items; then one buys item 15, one views it: the buyer's list moves
    more."""

    def events(user: str, last: str | None) -> dict:
        items = [("0", "view"), ("1", "view"), ("2", "view")] + ([("15", last)] if last else [])
        return {
            "events": [
                {
                    "event_id": f"{user}-{j}",
                    "user_id": user,
                    "item_id": item,
                    "type": kind,
                    "timestamp": 1000.0 + j,
                }
                for j, (item, kind) in enumerate(items)
            ]
        }

    scores = {}
    for user, last in (("same-base", None), ("viewer", "view"), ("buyer", "purchase")):
        assert post(service, "/events", events(user, last), headers=auth()).status_code == 200
        got = post(
            service, "/recommend", {"user_id": user, "k": 20, "exclude_seen": False}, headers=auth()
        ).json()
        assert got.get("strategy") == "hybrid", got
        scores[user] = {i["item_id"]: i["score"] for i in got["items"]}
    base = scores["same-base"]
    moved = {u: sum(abs(scores[u][i] - base[i]) for i in base if i in scores[u]) for u in ("viewer", "buyer")}
    assert moved["buyer"] > 1.5 * moved["viewer"] > 0, moved


def test_new_item_is_recommendable_within_five_seconds(service):
    started = time.time()
    r = post(
        service,
        "/items",
        {"item_id": "new-space", "text": "B story of space number 15", "fields": {"year": 2026}},
        headers=auth(),
    )
    assert r.status_code == 200, r.text
    assert r.json()["added"] and r.json()["catalog_items"] == 21
    similar = httpx.get(service["url"] + "/items/new-space/similar", params={"k": 3}, timeout=30)
    assert similar.status_code == 200 and len(similar.json()["items"]) == 3
    ranked = post(
        service, "/recommend", {"user_id": "u1", "k": 21, "exclude_seen": False}, headers=auth()
    ).json()["items"]
    assert "new-space" in [i["item_id"] for i in ranked]
    assert time.time() - started < 5
    ev = {"event_id": "ev-new", "user_id": "u1", "item_id": "new-space", "type": "view"}
    assert post(service, "/events", ev, headers=auth()).status_code == 200


def test_erasure_sticks_and_any_accepted_id_can_be_erased(service):
    event = {"event_id": "ev-u4", "user_id": "u4", "item_id": "2", "type": "view", "timestamp": 1000.0}
    post(service, "/events", event, headers=auth())
    r = httpx.delete(service["url"] + "/users/u4", headers=auth(), timeout=30)
    assert r.status_code == 200 and r.json() == {"user_id": "u4", "events_deleted": 1}
    assert (
        post(service, "/recommend", {"user_id": "u4", "k": 5}, headers=auth()).json()["strategy"]
        == "cold_start"
    )
    replay = post(
        service,
        "/events",
        {"events": [event, {**event, "event_id": "late", "timestamp": 1001.0}]},
        headers=auth(),
    )
    assert replay.json() == {
        "stored": 0,
        "duplicates": 0,
        "erased": 2,
        "attributed": 0,
    }  # replay, late: refused
    assert (
        post(service, "/recommend", {"user_id": "u4", "k": 5}, headers=auth()).json()["strategy"]
        == "cold_start"
    )
    for user in ("team/a b", "../x?y#z"):  # ids /events accepts, with reserved characters
        odd = {"event_id": f"odd-{user}", "user_id": user, "item_id": "2", "type": "view"}
        assert post(service, "/events", odd, headers=auth()).json()["stored"] == 1
    quoted = urllib.parse.quote("team/a b", safe="")
    r = httpx.delete(service["url"] + "/users/" + quoted, headers=auth(), timeout=30)
    assert r.status_code == 200 and r.json() == {"user_id": "team/a b", "events_deleted": 1}
    r = post(service, "/users/erase", {"user_id": "../x?y#z"}, headers=auth())
    assert r.status_code == 200 and r.json()["events_deleted"] == 1


def test_metrics_add_up_across_ingress_replicas(service):
    def scrape() -> dict[str, float]:
        text = httpx.get(service["url"] + "/metrics", timeout=30).text
        out: dict[str, float] = {}
        for line in text.splitlines():
            if (
                line.startswith("longtail_requests_total{")
                and 'route="/healthz"' in line
                and 'status="200"' in line
            ):
                out["healthz"] = out.get("healthz", 0) + float(line.rsplit(" ", 1)[1])
            if line.startswith("longtail_bundle_info{"):
                out["bundle"] = float(line.rsplit(" ", 1)[1])
        return out

    before = scrape().get("healthz", 0)
    replicas: set[str] = set()
    lock = threading.Lock()

    def hit(n: int) -> None:
        with httpx.Client(timeout=30) as client:
            for _ in range(n):
                r = client.get(service["url"] + "/healthz")
                with lock:
                    replicas.add(r.headers["x-longtail-replica"])

    threads = [threading.Thread(target=hit, args=(15,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(replicas) >= 2, replicas
    after = scrape()
    assert after["healthz"] - before == 60
    assert after["bundle"] == 1


def dashboard_queries() -> list[tuple[str, str]]:
    board = json.loads((ROOT / "monitoring" / "grafana-dashboard.json").read_text())
    return [(p["title"], t["expr"]) for p in board["panels"] if p["type"] != "row" for t in p["targets"]]


def test_prometheus_scrapes_the_app_and_every_dashboard_query_returns_data(service, tmp_path):
    """A real Prometheus (Debian's) with monitoring/prometheus.yml pointed at the live app: the target is up
    and every Grafana panel's query evaluates to at least one series."""
    scrape = yaml.safe_load((ROOT / "monitoring" / "prometheus.yml").read_text())
    scrape["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    scrape["scrape_configs"] = [job for job in scrape["scrape_configs"] if job["job_name"] == "longtail"]
    scrape["scrape_configs"][0]["static_configs"] = [{"targets": [f"127.0.0.1:{service['port']}"]}]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(scrape))
    port = free_port()
    with open(tmp_path / "prometheus.log", "w") as log:
        server = subprocess.Popen(
            [
                "prometheus",
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    api = f"http://127.0.0.1:{port}/api/v1"
    try:
        shown = post(service, "/recommend", {"user_id": "u1", "k": 5}, headers=auth()).json()
        time.sleep(1.5)  # the list is written within its replica's flush interval (0.5 s)
        click = {
            "event_id": "prom-click",
            "user_id": "u1",
            "item_id": shown["items"][0]["item_id"],
            "type": "click",
        }
        click |= {"recommendation_id": shown["recommendation_id"], "position": 0}
        assert (
            post(service, "/events", click, headers=auth()).json()["attributed"] == 1
        )  # the KPI panels' data
        assert post(service, "/recommend", {"user_id": "u1", "k": 0}, headers=auth()).status_code == 422
        deadline, up = time.time() + 60, []
        while time.time() < deadline and len(up) < 5:  # five good scrapes: rates have points to work with
            try:
                targets = httpx.get(f"{api}/targets", timeout=5).json()["data"]["activeTargets"]
                if targets and targets[0]["health"] == "up":
                    up.append(targets[0]["lastScrape"])
                    up = sorted(set(up))
            except (
                httpx.HTTPError,
                ValueError,
            ):  # not listening yet, or "Service Unavailable" while starting
                pass
            time.sleep(1)
        assert len(up) >= 5, (tmp_path / "prometheus.log").read_text()[-3000:]
        for title, expr in dashboard_queries():
            query = expr.replace("$__rate_interval", "30s").replace("$__range", "5m")
            answer = httpx.get(f"{api}/query", params={"query": query}, timeout=10).json()
            assert answer["status"] == "success", (title, query, answer)
            assert answer["data"]["result"], f"panel {title!r}: no series for {query}"
        replicas = httpx.get(
            f"{api}/query", params={"query": "sum by (deployment) (longtail_replicas)"}
        ).json()
        live = {r["metric"]["deployment"]: float(r["value"][1]) for r in replicas["data"]["result"]}
        assert live["Ingress"] == 2 and live["Encoder"] >= 1 and "Ranker" not in live, live  # Ingress ranks
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_user_config_change_applies_live_without_failed_requests(service):
    url, head, work = service["url"], service["head"], service["work"]
    base = post(
        service, "/recommend", {"user_id": "u3", "k": 5, "exclude_seen": False}, headers=auth()
    ).json()["items"]
    failures: list[int] = []
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(timeout=30) as client:
            while not stop.is_set():
                code = client.post(
                    url + "/recommend", json={"user_id": "u3", "k": 5}, headers=auth()
                ).status_code
                if code != 200:
                    failures.append(code)

    worker = threading.Thread(target=load)
    worker.start()
    try:
        config = write_config(
            work / "ranker-boost.yaml", service["port"], service["args"], {"tail_boost": 1.0}
        )
        cli("serve", "deploy", str(config), "--address", head["dashboard"], timeout=300, env=head["env"])
        deadline, boosted = time.time() + 60, base
        while time.time() < deadline and boosted == base:
            boosted = post(
                service, "/recommend", {"user_id": "u3", "k": 5, "exclude_seen": False}, headers=auth()
            ).json()["items"]
            time.sleep(0.5)
    finally:
        stop.set()
        worker.join()
    assert boosted != base
    assert failures == []


def test_the_shipped_ab_arms_apply_live_record_attribute_and_report(service):
    """serve_configs/ranker-ab.yaml's arms deployed as a user_config change: every answer names a sticky arm,
    clicks sent back with the recommendation_id are attributed, and `longtail report online` reads both arms
    from the store."""
    shipped = yaml.safe_load((ROOT / "serve_configs" / "ranker-ab.yaml").read_text())
    ingress = next(d for d in shipped["applications"][0]["deployments"] if d["name"] == "Ingress")
    ab = {k: ingress["user_config"]["ranker"][k] for k in ("experiment", "arms")}
    names = {a["name"] for a in ab["arms"]}
    head, work = service["head"], service["work"]
    config = write_config(work / "ranker-ab.yaml", service["port"], service["args"], ab)
    cli("serve", "deploy", str(config), "--address", head["dashboard"], timeout=300, env=head["env"])
    deadline, in_a_row = time.time() + 90, 0
    while time.time() < deadline and in_a_row < 8:  # both replicas reconfigured (requests spread over them)
        answer = post(service, "/recommend", {"user_id": "u1", "k": 5}, headers=auth()).json()
        in_a_row = in_a_row + 1 if answer.get("arm") in names else 0
        time.sleep(0.25)
    assert in_a_row >= 8, answer
    arms, clicks = {}, []
    for user in [f"u{i}" for i in range(10)] * 2:
        got = post(service, "/recommend", {"user_id": user, "k": 5}, headers=auth()).json()
        assert arms.setdefault(user, got["arm"]) == got["arm"]  # sticky
        item = got["items"][0]["item_id"]
        clicks.append(
            {"event_id": f"ab-{user}-{len(clicks)}", "user_id": user, "item_id": item, "type": "click"}
        )
        clicks[-1] |= {"recommendation_id": got["recommendation_id"], "position": 0}
    assert set(arms.values()) == names  # ten users fall in both halves (hash of the experiment and id)
    time.sleep(1.5)  # every replica has written its lists (0.5 s flush)
    sent = post(service, "/events", {"events": clicks}, headers=auth()).json()
    assert sent["stored"] == len(clicks) and sent["attributed"] == len(clicks)
    report = cli("longtail", "report", "online", "--store", service["args"]["store"], "--since", "1h")
    assert all(name in report.stdout for name in names) and "vs" in report.stdout, report.stdout


def test_openapi_fuzz_never_gets_a_5xx(service):
    """schemathesis: valid and invalid requests for every operation of /openapi.json, token sent."""
    schema = schemathesis.openapi.from_url(service["url"] + "/openapi.json")
    answered, errors = Counter(), []
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @settings(
                max_examples=12,
                deadline=None,
                database=None,
                derandomize=True,
                suppress_health_check=list(HealthCheck),
            )
            @given(case=operation.as_strategy(generation_mode=mode))
            def probe(case):
                response = case.call(base_url=service["url"], headers=auth(), timeout=30)
                answered[response.status_code // 100] += 1
                if response.status_code >= 500:
                    errors.append(
                        f"{case.operation.label}: {response.status_code} {response.text[:200]} "
                        f"for {case.body!r:.200}"
                    )

            try:
                probe()
            except Unsatisfiable:  # no invalid input exists (e.g. GET /healthz has no parameters)
                assert mode is GenerationMode.NEGATIVE, operation.label
    print(f"schemathesis: {sum(answered.values())} requests, by status class {dict(answered)}")
    assert sum(answered.values()) >= 100 and answered[4] > 0 and answered[2] > 0, answered
    assert errors == []


def _load(url: str, stop: threading.Event, log: list, client_no: int) -> None:
    """One load client: /recommend (and, for client 0, /recommend/text), logging (end time, status,
    versions)."""
    with httpx.Client(timeout=60) as client:
        n = 0
        while not stop.is_set():
            n += 1
            if client_no == 0 and n % 2:
                r = client.post(url + "/recommend/text", json={"query": "A story of space", "k": 3})
            else:
                r = client.post(
                    url + "/recommend", json={"user_id": f"u{(client_no + n) % 8}", "k": 5}, headers=auth()
                )
            body_version = r.json().get("bundle_version") if r.status_code == 200 else r.text[:300]
            log.append((time.time(), r.status_code, r.headers.get("x-longtail-bundle-version"), body_version))


def test_hot_swap_to_new_bundle_versions_under_load(service):
    """Retrain into the served path (a new version behind its symlink, with another encoder of another
    dimension) and `serve deploy`: every replica switches, no request fails, no response mixes versions,
    none is stale once the switch completed, and the item added at run time is re-encoded, not lost."""
    url, head, work = service["url"], service["head"], service["work"]
    live = work / "live-bundle"
    log: list = []
    stop = threading.Event()
    clients = [threading.Thread(target=_load, args=(url, stop, log, i)) for i in range(4)]
    for t in clients:
        t.start()
    switches = []
    try:
        for epochs in (2,):  # benchmarks/serve_state.py measures two switches in 60 s
            encoder = write_tiny_encoder(work / f"encoder-{epochs}", hidden=16)  # 16-dim text vectors, was 32
            write_tiny_bundle(live, encoder, epochs=epochs)  # the same path each time: a new version
            version = json.loads((live / "manifest.json").read_text())["version"]
            config = write_config(
                work / "ranker-live.yaml", service["port"], {**service["args"], "bundle": str(live)}
            )
            started = time.time()
            cli("serve", "deploy", str(config), "--address", head["dashboard"], timeout=300, env=head["env"])
            deadline = time.time() + 240
            while time.time() < deadline:
                status = cli(
                    "serve", "status", "--address", head["dashboard"], env=head["env"], check=False
                ).stdout
                health = httpx.get(url + "/healthz", timeout=30).json()
                if "RUNNING" in status and "UPDATING" not in status and health["bundle_version"] == version:
                    break
                time.sleep(1)
            switches.append((started, time.time(), version))
            time.sleep(4)
    finally:
        stop.set()
        for t in clients:
            t.join()
    failed = [row for row in log if row[1] != 200]
    mixed = [row for row in log if row[1] == 200 and row[2] != row[3]]
    assert len(log) > 100 and failed == [] and mixed == [], (len(log), failed[:5], mixed[:5])
    for (_, done, version), (until, _, _) in zip(
        switches, [*switches[1:], (float("inf"), 0, None)], strict=True
    ):
        after = [
            row for row in log if done < row[0] < until
        ]  # answered after the switch, before the next one
        stale = [row for row in after if row[2] != version]
        assert stale == [], (version, stale[:5])
    assert len({row[2] for row in log}) == 2  # the first bundle, then the new version
    for _ in range(30):  # the new encoder re-encodes the item added while the old bundle served
        similar = httpx.get(url + "/items/new-space/similar", params={"k": 3}, timeout=30)
        if similar.status_code == 200:
            break
        time.sleep(1)
    assert similar.status_code == 200 and similar.json()["bundle_version"] == switches[-1][2], similar.text


def test_the_client_drives_the_live_app(service):
    """``longtail.client`` against the Serve app: every route, typed errors, and the async client."""
    import asyncio

    from longtail.client import AsyncClient, Client, Conflict, NotFound, Unauthorized

    with Client(service["url"], token=TOKEN) as lt:
        health = lt.health()
        listed = lt.recommend("u1", k=5)
        assert listed.strategy == "hybrid" and listed.bundle_version == health.bundle_version
        top = listed.items[0].item_id
        assert lt.send_event(event_id="client-1", user_id="u1", item_id=top, type="click").stored == 1
        with pytest.raises(Conflict):
            lt.send_event(event_id="client-1", user_id="u1", item_id="2", type="click")
        assert top not in {i.item_id for i in lt.recommend("u1", k=5).items}
        assert lt.add_item("client-item", "A story of robots number 7").added
        assert lt.similar("client-item", k=3).items and lt.recommend_text("robots", k=3).items
        with pytest.raises(NotFound):
            lt.similar("no-such-item")
        assert lt.erase_user("u1").events_deleted >= 1
        assert "longtail_request_seconds" in lt.metrics()
    with Client(service["url"], token="wrong") as stranger, pytest.raises(Unauthorized):
        stranger.recommend("u2")

    async def together() -> list:
        async with AsyncClient(service["url"], token=TOKEN) as lt:
            return await asyncio.gather(*(lt.recommend(u, k=4) for u in ("u2", "u3", "u5")))

    # the lists themselves may differ from one request to the next (exploration, new-item shelf draws)
    answers = asyncio.run(together())
    assert [(a.user_id, a.strategy, len(a.items)) for a in answers] == [
        (u, "hybrid", 4) for u in ("u2", "u3", "u5")
    ]


def test_whole_app_restart_loses_no_acknowledged_event_and_runs_without_auth(service):
    url, head, work = service["url"], service["head"], service["work"]
    acked = [f"restart-{i}" for i in range(20)]
    for event_id in acked:
        body = {"event_id": event_id, "user_id": "restart-user", "item_id": "5", "type": "view"}
        assert post(service, "/events", body, headers=auth()).status_code == 200
    cli("serve", "shutdown", "-y", "--address", head["dashboard"], timeout=300, env=head["env"])
    args = {**service["args"], "token_file": None, "token_env": "LONGTAIL_TEST_UNSET_TOKEN"}
    refused = write_config(work / "ranker-no-token.yaml", service["port"], {**args, "token_env": None})
    cli("serve", "deploy", str(refused), "--address", head["dashboard"], timeout=300, env=head["env"])
    status = wait_status(head, "DEPLOY_FAILED")  # auth fails closed: no token, no `auth: none`, no service
    assert "neither token_env nor token_file" in status, status[-2000:]
    config = write_config(work / "ranker-open.yaml", service["port"], {**args, "auth": "none"})
    cli("serve", "deploy", str(config), "--address", head["dashboard"], timeout=300, env=head["env"])
    wait_healthy(url, head)
    again = {
        "events": [{"event_id": e, "user_id": "restart-user", "item_id": "5", "type": "view"} for e in acked]
    }
    r = post(service, "/events", again)  # no token needed now
    assert r.status_code == 200 and r.json() == {"stored": 0, "duplicates": 20, "erased": 0, "attributed": 0}
    ranked = post(service, "/recommend", {"user_id": "restart-user", "k": 3}).json()
    assert ranked["strategy"] == "hybrid"
    assert post(service, "/recommend", {"user_id": "new-space-fan", "k": 21}).status_code == 200


def guide_curls() -> list[str]:
    """The `curl` commands of the serving guide, continuation lines joined."""
    section = (ROOT / "docs" / "guide" / "serving.md").read_text()
    commands, current = [], ""
    for line in section.splitlines():
        if line.startswith("curl ") or current:
            current += line.rstrip("\\").strip() + " " if line.endswith("\\") else line.strip()
            if not line.endswith("\\"):
                commands.append(current)
                current = ""
    return commands


def test_the_serving_guides_curl_examples_work_as_written(service):
    """Run the serving guide's curl lines verbatim (only the port differs) against the live app."""
    import os
    import subprocess

    commands = guide_curls()
    assert len(commands) >= 4 and all("content-type: application/json" in c for c in commands)
    answers = []
    for command in commands:
        line = command.replace("localhost:8000", f"localhost:{service['port']}")
        done = subprocess.run(
            ["bash", "-c", line],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "LONGTAIL_TOKEN": TOKEN},
        )
        assert done.returncode == 0, done.stderr
        answers.append(json.loads(done.stdout))
    by_route = {c.split()[2].split("/", 1)[1]: a for c, a in zip(commands, answers, strict=True)}
    assert answers[1]["strategy"] == "hybrid" and answers[1]["items"]  # the event made 196 a known user
    assert all("contributions" in item["explanation"] for item in answers[2]["items"])
    assert by_route["events"] == {"stored": 1, "duplicates": 0, "erased": 0, "attributed": ANY}
    assert by_route["items"]["added"] is True

"""Prometheus metrics that add up across replicas.

Why prometheus-client in multiprocess mode rather than Ray's metrics: every replica (ingress, ranker,
encoder) writes its samples to memory-mapped files in one directory, and ``GET /metrics`` on any ingress
replica merges all of them, so one scrape shows the sum over replicas at once (counters of replicas that
died keep counting, as Prometheus counters should). Ray's metrics go through each node's agent with a
10-second export period and per-replica series, so a scrape of one endpoint right after traffic shows
neither the total nor the latest numbers. The directory is per node; on a multi-node cluster run the
ingress on the head node (``serve_configs/ranker-gpu.yaml`` does) or scrape each node.

Gauges are "live": each scrape first drops the gauge files of processes that are gone (a replica that was
replaced, killed or scaled down), so ``longtail_bundle_info`` shows only the versions being served now.
Counters of dead processes are kept (they must never go down).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import ClassVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, values
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class ServeMetrics:
    """The service's metrics, written to ``directory`` (shared by all replicas on a node)."""

    _by_dir: ClassVar[dict[str, ServeMetrics]] = {}

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
        values.ValueClass = values.MultiProcessValue()  # every metric below writes to the shared files

        def counter(name, doc, labels=()):
            return Counter(name, doc, labels, registry=None)

        self.requests = counter(
            "longtail_requests_total", "HTTP requests by route and status", ("route", "status")
        )
        self.latency = Histogram(
            "longtail_request_seconds",
            "HTTP request latency by route and status",
            ("route", "status"),
            buckets=LATENCY_BUCKETS,
            registry=None,
        )
        self.events = counter("longtail_events_ingested_total", "events stored (duplicates excluded)")
        self.duplicate_events = counter(
            "longtail_events_duplicate_total", "events ignored as repeated event_id"
        )
        self.erased_events = counter("longtail_events_erased_total", "events refused: their user was erased")
        self.items_added = counter("longtail_items_added_total", "items added at run time")
        self.users_erased = counter("longtail_users_erased_total", "users erased on request")
        self.read_retries = counter(
            "longtail_ranker_read_retries_total", "ranker reads retried after a replica died"
        )
        self.lists = counter("longtail_recommendations_total", "recommendation lists served", ("strategy",))
        self.served_items = counter("longtail_served_items_total", "items in served lists")
        self.served_tail = counter("longtail_served_tail_items_total", "tail items in served lists")
        self.impressions = counter(
            "longtail_impressions_total", "served lists recorded as impressions", ("arm", "strategy")
        )
        self.impression_slots = counter(
            "longtail_impression_slots_total",
            "slots of recorded lists by arm, the shelf that filled them and the item's bucket",
            ("arm", "shelf", "bucket"),
        )
        self.attributed = counter(
            "longtail_attributed_events_total",
            "events attributed to a recorded list, by the slot's arm, shelf and bucket",
            ("arm", "shelf", "bucket"),
        )
        self.impressions_dropped = counter(
            "longtail_impressions_dropped_total", "impressions dropped: the store stayed busy too long"
        )
        self.coverage = Gauge(
            "longtail_catalog_coverage",
            "share of the catalog in the lists of a sliding window (latest replica)",
            registry=None,
            multiprocess_mode="livemostrecent",
        )
        self.catalog_size = Gauge(
            "longtail_catalog_items",
            "items a ranker can recommend",
            registry=None,
            multiprocess_mode="livemax",
        )
        self.replicas = Gauge(
            "longtail_replicas",
            "live replicas by deployment",
            ("deployment",),
            registry=None,
            multiprocess_mode="livesum",
        )
        self.bundle = Gauge(
            "longtail_bundle_info",
            "the bundle being served",
            ("version",),
            registry=None,
            multiprocess_mode="livemax",
        )

    def request(self, route: str, status: str, seconds: float) -> None:
        """Count and time one HTTP request."""
        self.requests.labels(route, status).inc()
        self.latency.labels(route, status).observe(seconds)

    @classmethod
    def open(cls, directory: str | Path) -> ServeMetrics:
        """The metrics of this process for ``directory`` (created once per process)."""
        key = str(Path(directory).resolve())
        if key not in cls._by_dir:
            cls._by_dir[key] = cls(Path(key))
        return cls._by_dir[key]

    def scrape(self) -> bytes:
        """All replicas' samples merged, in the Prometheus text format (gauges of live processes only)."""
        drop_dead_gauges(self.directory)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(self.directory))
        return generate_latest(registry)


LIVE_GAUGE = re.compile(r"^gauge_live\w+_(\d+)\.db$")


def drop_dead_gauges(directory: Path) -> list[int]:
    """Remove the live-gauge files of processes on this node that no longer run; returns their pids."""
    dead = set()
    for file in directory.iterdir():
        match = LIVE_GAUGE.match(file.name)
        if match and not _alive(int(match.group(1))):
            dead.add(int(match.group(1)))
    for pid in sorted(dead):
        mark_process_dead(pid, str(directory))
    return sorted(dead)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

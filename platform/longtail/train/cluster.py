"""Connect to Ray: the cluster in ``RAY_ADDRESS`` (a job on a cluster), else a local one."""

from __future__ import annotations

import os

import ray


def connect() -> None:
    """``ray.init`` once: joins ``RAY_ADDRESS`` when set (as inside ``ray job submit``), else starts
    locally."""
    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address)
    else:
        # With the dashboard: Ray Train's placement-group cleaner needs the state API. Without it, trials
        # that Tune's ASHA stops keep their workers' placement groups and later trials wait forever.
        ray.init(include_dashboard=True)

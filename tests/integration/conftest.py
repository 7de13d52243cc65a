"""A real local Ray cluster per test module, shut down when the module ends; ``ray_env``: the environment
of a console-script subprocess that joins it (``RAY_ADDRESS``, as inside ``ray job submit``) rather than
start a cluster of its own."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture
def ray_env(ray_cluster) -> dict[str, str]:
    return {**os.environ, "RAY_ADDRESS": ray_cluster.get_runtime_context().gcs_address}

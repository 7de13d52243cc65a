"""A real Ray head started with `ray start --head` (as a user would), stopped with `ray stop`."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(
    *args: str, timeout: float = 300, env: dict | None = None, check: bool = True
) -> subprocess.CompletedProcess:
    """Run a console script of this environment (ray, serve, longtail)."""
    done = subprocess.run(
        [str(BIN / args[0]), *args[1:]],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
    if check and done.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )
    return done


@contextlib.contextmanager
def ray_head(
    work: Path, num_cpus: float = 2, extra_env: dict | None = None, workers: tuple = ()
) -> Iterator[dict]:
    """Start a head node on free ports with Ray's token auth on (its own token file), plus one more node per
    entry of ``workers`` (its CPU count) on this machine; yields the addresses and the environment every
    client command needs; always `ray stop`s them all."""
    token = work / "ray_auth_token"
    token.write_text(uuid.uuid4().hex + uuid.uuid4().hex)
    env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token), **(extra_env or {})}
    ports = {"gcs": free_port(), "dashboard": free_port()}
    cli(
        "ray",
        "start",
        "--head",
        f"--num-cpus={num_cpus}",
        f"--port={ports['gcs']}",
        "--include-dashboard=true",
        f"--dashboard-port={ports['dashboard']}",
        "--dashboard-host=127.0.0.1",
        "--disable-usage-stats",
        timeout=180,
        env=env,
    )
    try:
        for i, cpus in enumerate(workers):
            cli(
                "ray",
                "start",
                f"--address=127.0.0.1:{ports['gcs']}",
                f"--num-cpus={cpus}",
                f'--resources={{"node{i + 2}": 1}}',
                "--disable-usage-stats",
                timeout=180,
                env=env,
            )
        yield {
            "address": f"127.0.0.1:{ports['gcs']}",
            "dashboard": f"http://127.0.0.1:{ports['dashboard']}",
            "env": env,
        }
    finally:
        cli("ray", "stop", "--force", timeout=120, check=False, env=env)

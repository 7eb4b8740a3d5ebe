"""A real Ray head started with `ray start --head` on loopback (infra/dev scripts), stopped by its own temp dir."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import S3_ENV
from tests.support.fixtures import free_ports

REPO = Path(__file__).resolve().parents[2]
# The repo's own .venv, or the one running the tests (a git worktree shares its main checkout's).
VENV = REPO / ".venv" if (REPO / ".venv").exists() else Path(sys.prefix)


@pytest.fixture(scope="session")
def ray_head(moto_server):
    """Yields (dashboard URL, env) of a Ray head whose processes see the moto credentials and the repo's venv.

    One head for every e2e module: starting and stopping a head costs about 25 s on a 2-core machine, and the
    tests submit jobs with their own run ids and store roots, so they share nothing else."""
    tmp = f"/tmp/bre-{secrets.token_hex(3)}"  # short: Ray's socket paths must stay under 107 bytes
    env = dict(os.environ)
    env.update(S3_ENV)
    # The agent's port too: Ray's default (52365) is taken by any other Ray on the machine, and then no job can be
    # submitted ("No available agent to submit job").
    gcs_port, dashboard_port, client_port, agent_port = free_ports(4)
    env.update({
        "BATON_RAY_TMPDIR": tmp, "BATON_RAY_PORT": str(gcs_port), "BATON_RAY_DASHBOARD_PORT": str(dashboard_port),
        "BATON_RAY_CLIENT_PORT": str(client_port), "BATON_RAY_AGENT_PORT": str(agent_port),
        "BATON_RAY_NUM_CPUS": "2", "VENV": str(VENV),
        "PATH": f"{VENV / 'bin'}:{env.get('PATH', '')}",
        # The job's driver reads its config from S3 before it knows the store's endpoint.
        "AWS_ENDPOINT_URL_S3": moto_server,
        "HF_HUB_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0", "TOKENIZERS_PARALLELISM": "false",
    })
    env.pop("RAY_ADDRESS", None)
    started = subprocess.run(["bash", str(REPO / "infra/dev/start_ray_head.sh")], env=env, capture_output=True,
                             text=True, timeout=180)
    assert started.returncode == 0, started.stderr + started.stdout
    values = dict(line.split("=", 1) for line in started.stdout.splitlines() if "=" in line)
    try:
        yield values["RAY_DASHBOARD"], env
    finally:
        subprocess.run(["bash", str(REPO / "infra/dev/stop_ray_head.sh")], env=env, capture_output=True, timeout=120)

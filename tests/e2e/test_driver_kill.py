"""A `baton run` driver that starts its own local Ray and is killed (SIGKILL or SIGTERM) leaves no Ray process
behind: the GCS, raylet, dashboard, agents and workers it started all end within seconds.

Each case starts one real driver (and so one local Ray): the driver starting its own Ray is what is tested.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest
import yaml

from tests.e2e.conftest import REPO
from tests.support.fixtures import traffic_frame
from tests.support.openai_server import OpenAIServer

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def slow_api():
    # Slow answers keep the driver in its replay stage (Ray up) until the test kills it.
    with OpenAIServer(latency_s=2.0) as srv:
        yield srv


def _config(tmp_path, srv) -> str:
    traffic = tmp_path / "traffic.jsonl"
    frame = traffic_frame(40)
    frame["region"] = "eu"
    frame.to_json(traffic, orient="records", lines=True)
    raw = {"run_id": "killed", "store": {"root": str(tmp_path / "store")},
           "traffic": {"path": str(traffic), "segments": ["region"]}, "incumbent": {"name": "incumbent"},
           "candidates": [{"kind": "openai", "name": "cand-api", "model": "test-model", "base_url": srv.base_url,
                           "max_concurrency": 1, "timeout_s": 30.0}],
           "decision": {"dimensions": [{"name": "quality", "kind": "pairwise"}]},
           "labels": {"mode": "none"},  # no labels: the driver replays and scores (and is killed before)
           "execution": {"shard_rows": 40, "num_cpus": 1}}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def _ray_started(driver: psutil.Process) -> list[psutil.Process]:
    kids = driver.children(recursive=True)
    names = " ".join(" ".join(p.cmdline()) for p in kids if p.is_running())
    return kids if "raylet" in names and "ray::RuntimeEnvAgent" in names and "ray::DashboardAgent" in names else []


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_killed_driver_leaves_no_ray_process(tmp_path, slow_api, sig):
    slow_api.reset()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.Popen([sys.executable, "-m", "jobs.migrate", "--config", _config(tmp_path, slow_api),
                             "--no-progress"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    driver = psutil.Process(proc.pid)
    ours: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None and not slow_api.log:
            time.sleep(0.5)  # the first request reaches the server once the replay stage runs on Ray
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        assert slow_api.log, "the replay never started"
        ours = _ray_started(driver)
        assert ours, "the driver's Ray processes were not found"
        os.kill(proc.pid, sig)
        proc.communicate(timeout=60)
        gone, alive = psutil.wait_procs(ours, timeout=20)
        left = [f"{p.pid} {' '.join(p.cmdline())[:80]}" for p in alive if p.is_running()]
        assert not left, f"Ray processes outlived the driver killed with {sig.name}: {left}"
    finally:
        for p in [driver, *ours]:  # only what this test started
            try:
                p.kill()
            except psutil.Error:
                pass
        if proc.stdout and not proc.stdout.closed:
            proc.stdout.close()

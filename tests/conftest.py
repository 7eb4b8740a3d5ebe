"""Shared test set-up: offline model loading, no Ray usage stats, and a real S3 API (moto server on loopback)."""

from __future__ import annotations

import os

# Set before any test module imports transformers, Ray or vLLM.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MPLBACKEND", "Agg")
# Ray binds and advertises 127.0.0.1 only (otherwise it picks the machine's outward address).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
# Test clusters listen on loopback only. Ray 2.60 turns token auth on by default once ~/.ray/auth_token exists
# (the first local ray.init() writes it), which made later `ray start`/`ray job submit` pairs order-dependent.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import pytest  # noqa: E402

# Dummy credentials for the moto server: the edge of the world we cannot reach is AWS itself.
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing-key-id",
    "AWS_SECRET_ACCESS_KEY": "testing-secret-key",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture(scope="session")
def moto_server():
    """A moto S3 server on 127.0.0.1 for the whole session; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    for key, value in S3_ENV.items():
        os.environ.setdefault(key, value)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_bucket(moto_server):
    """A fresh, empty bucket on the moto server (state reset before each test); yields (endpoint, bucket)."""
    import boto3
    import requests

    requests.post(f"{moto_server}/moto-api/reset", timeout=10)
    client = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    client.create_bucket(Bucket="baton-test")
    return moto_server, "baton-test"


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray for one test module, on loopback; yields its GCS address. Stopped with ray.shutdown() after the
    module, never `ray stop` (which would end every Ray on the machine)."""
    import ray

    from tests.support.fixtures import start_local_ray

    start_local_ray(2)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


# Under xdist (`make test`) a module runs whole on one worker, so its module- and session-scoped Ray clusters and
# servers start once, as in a serial run. Modules that count processes machine-wide (the code sandbox's) share a
# unit so they never run at the same time, and the e2e modules share their one `ray start --head`.
_E2E = "tests/e2e/"
_SHARED_UNITS = {
    "tests/inference/scorers/test_code_exec.py": "sandbox-processes",
    "tests/jobs/test_score_code.py": "sandbox-processes",
}
# The longest modules (over a minute each in a serial run), dealt out first so both workers finish near together.
_LONG_FIRST = [_E2E, "tests/calibration/test_coverage.py", "tests/jobs/test_s3_faults.py",
               "tests/inference/engines/test_vllm_engine.py", "tests/jobs/test_corruption.py",
               "tests/jobs/test_nightly.py", "tests/calibration/test_decide_cli.py", "tests/jobs/test_demo.py"]


def _unit(nodeid: str) -> str:
    path = nodeid.split("::", 1)[0]
    return "e2e" if path.startswith(_E2E) else _SHARED_UNITS.get(path, path)


def _rank(nodeid: str) -> int:
    return next((i for i, prefix in enumerate(_LONG_FIRST) if nodeid.startswith(prefix)), len(_LONG_FIRST))


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: _rank(item.nodeid))  # stable: the order within a module is kept


@pytest.hookimpl(optionalhook=True)  # without xdist (`-p no:xdist`) the hook is not known, and that is fine
def pytest_xdist_make_scheduler(config, log):
    # xdist's own loadgroup reads a node id suffix that pytest 9.2 no longer lets a plugin set, so the units are
    # made here, from the node ids, in collection order.
    from xdist.scheduler import LoadScopeScheduling

    class ModuleUnits(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _unit(nodeid)

    config.option.loadscopereorder = False
    return ModuleUnits(config, log)


def _orphaned_ray_workers() -> list:
    """This user's Ray worker processes (``ray::...``) whose raylet is gone: a cluster a test started and stopped
    can leave an actor's process behind when its raylet died first. Other users' and live clusters' are left alone."""
    import psutil

    me, out = os.getuid(), []
    for proc in psutil.process_iter(["pid", "uids", "cmdline"]):
        try:
            cmd = proc.info["cmdline"] or []
            if proc.info["uids"] is None or proc.info["uids"].real != me or not cmd or not cmd[0].startswith("ray::"):
                continue
            raylet = proc.environ().get("RAY_RAYLET_PID")
            if raylet and not psutil.pid_exists(int(raylet)):
                out.append(proc)
        except (psutil.Error, ValueError):
            continue
    return out


def pytest_sessionfinish(session, exitstatus):
    # CI runs on a fresh machine, but a developer's machine keeps what a session leaves: reap workers whose raylet
    # died (seen after the clean-clone runs: MapWorker processes with parent 1).
    import psutil

    procs = _orphaned_ray_workers()
    for proc in procs:
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(procs, timeout=5)

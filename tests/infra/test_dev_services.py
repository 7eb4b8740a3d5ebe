"""infra/dev scripts: the moto S3 server starts on 127.0.0.1 only, answers the S3 API, and the
stop script ends it by its pid file."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest

from tests.support.fixtures import free_port

ROOT = Path(__file__).resolve().parents[2]
DEV = ROOT / "infra" / "dev"


def _outward_ip() -> str | None:
    # The address other machines would reach; no packet is sent by a UDP connect.
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("10.255.255.255", 1))
            ip = s.getsockname()[0]
    except OSError:
        return None
    return None if ip.startswith("127.") else ip


@pytest.fixture
def s3_server(tmp_path):
    port = free_port()
    env = {
        **os.environ,
        "BATON_S3_PORT": str(port),
        "BATON_S3_PIDFILE": str(tmp_path / "s3.pid"),
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    r = subprocess.run(["bash", str(DEV / "start_s3.sh")], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    try:
        yield port, env, r.stdout
    finally:
        subprocess.run(["bash", str(DEV / "stop_s3.sh")], env=env, capture_output=True, text=True, timeout=30)


def test_moto_server_on_loopback_only(s3_server, tmp_path):
    import boto3

    port, env, out = s3_server
    assert f"AWS_ENDPOINT_URL=http://127.0.0.1:{port}" in out
    pid = int((tmp_path / "s3.pid").read_text())
    os.kill(pid, 0)

    s3 = boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{port}",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    s3.create_bucket(Bucket="baton-dev")
    s3.put_object(Bucket="baton-dev", Key="runs/r1/decision.json", Body=b"{}")
    assert s3.get_object(Bucket="baton-dev", Key="runs/r1/decision.json")["Body"].read() == b"{}"

    ip = _outward_ip()
    if ip is not None:
        with pytest.raises(OSError):
            socket.create_connection((ip, port), timeout=2).close()

    r = subprocess.run(["bash", str(DEV / "stop_s3.sh")], env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and f"pid {pid}" in r.stdout
    assert not (tmp_path / "s3.pid").exists()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_start_refuses_second_server_on_same_pidfile(s3_server):
    _, env, _ = s3_server
    r = subprocess.run(["bash", str(DEV / "start_s3.sh")], env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "already running" in r.stderr


def test_dev_scripts_never_use_ray_stop():
    for script in DEV.glob("*.sh"):
        code = "\n".join(l for l in script.read_text().splitlines() if not l.lstrip().startswith("#"))
        assert "ray stop" not in code and "pkill" not in code and "killall" not in code, script.name
    head = (DEV / "start_ray_head.sh").read_text()
    for flag in ("--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1", "--temp-dir=", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0"):
        assert flag in head, flag

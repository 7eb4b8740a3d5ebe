"""End to end: under a real `ray job submit --working-dir`, the entrypoint runs in Ray's temporary copy of the code,
so a relative store root would put the run there (and start over whenever a file changes): `baton validate` (the
same checks open `baton run`) refuses it with exit 2 before any compute, and accepts the same config with an
absolute root."""

from __future__ import annotations

import json
import subprocess
import time

import pandas as pd
import pytest
import requests
import yaml

from tests.e2e.conftest import REPO

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _submit_and_wait(dashboard: str, env: dict, config: str, submission_id: str) -> tuple[str, str]:
    runtime_env = {"excludes": [".venv", ".git", "baton-store", "**/__pycache__", "*.egg-info", ".pytest_cache"]}
    cmd = [str(REPO / ".venv/bin/ray"), "job", "submit", "--address", dashboard, "--working-dir", str(REPO),
           "--runtime-env-json", json.dumps(runtime_env), "--submission-id", submission_id, "--no-wait",
           "--", "python", "-m", "jobs.validate", "--config", config]
    deadline = time.monotonic() + 600
    while True:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
        # A head under load can answer before its job agent is up: that refusal is worth a retry.
        if proc.returncode == 0 or "No available agent to submit job" not in proc.stderr or time.monotonic() > deadline:
            break
        time.sleep(3)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        info = requests.get(f"{dashboard}/api/jobs/{submission_id}", timeout=10).json()
        if info["status"] in ("SUCCEEDED", "FAILED", "STOPPED"):
            break
        time.sleep(1)
    logs = requests.get(f"{dashboard}/api/jobs/{submission_id}/logs", timeout=10).json().get("logs", "")
    return info["status"] + " " + str(info.get("message")), logs


def test_relative_store_root_is_refused_inside_a_ray_job(ray_head, tmp_path):
    dashboard, env = ray_head
    traffic, rec, labels = tmp_path / "traffic.jsonl", tmp_path / "rec.jsonl", tmp_path / "labels.csv"
    pd.DataFrame({"request_id": ["a", "b"], "prompt": ["x", "y"]}).to_json(traffic, orient="records", lines=True)
    pd.DataFrame({"request_id": ["a", "b"], "response": ["p", "q"]}).to_json(rec, orient="records", lines=True)
    pd.DataFrame({"request_id": ["a"], "model": ["c"], "dimension": ["quality"], "value": [1.0]}).to_csv(labels, index=False)
    raw = {"run_id": "paths", "store": {"root": "./baton-store-relative"}, "traffic": {"path": str(traffic)},
           "incumbent": {"name": "inc"}, "candidates": [{"name": "c", "kind": "recorded", "path": str(rec)}],
           "labels": {"path": str(labels)}, "decision": {"dimensions": [{"name": "quality", "kind": "pairwise"}]}}
    relative = tmp_path / "relative.yaml"
    relative.write_text(yaml.safe_dump(raw))
    raw["store"]["root"] = str(tmp_path / "store")
    absolute = tmp_path / "absolute.yaml"
    absolute.write_text(yaml.safe_dump(raw))

    status, logs = _submit_and_wait(dashboard, env, str(relative), "paths-relative")
    assert status.startswith("FAILED") and "exit code 2" in status, (status, logs[-3000:])
    assert "store.root: relative path './baton-store-relative' under `ray job submit`" in logs
    assert "runtime_resources" in logs and "use an absolute path or s3://" in logs
    status, logs = _submit_and_wait(dashboard, env, str(absolute), "paths-absolute")
    assert status.startswith("SUCCEEDED"), (status, logs[-3000:])

"""End to end: `ray job submit` of jobs.migrate to a `ray start --head` cluster, with the run store on a moto S3
server, a recorded candidate and a tiny local transformers candidate, and a scripted LLM judge on loopback.

The first submission is stopped mid-replay (its driver killed); the resubmission with the same run id resumes
and every request id appears exactly once in the responses and scores tables.
"""

from __future__ import annotations

import json
import subprocess
import time

import boto3
import pandas as pd
import pytest
import requests
import yaml

from jobs.config import StoreConfig
from jobs.store import RunStore, shard_id
from tests.e2e.conftest import REPO, VENV
from tests.support.judge_script import scripted_judge
from tests.support.openai_server import OpenAIServer
from tests.support.tiny_model import tiny_model_path

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
N = 40
BUCKET = "baton-e2e"


def _put(client, key: str, body: bytes) -> str:
    client.put_object(Bucket=BUCKET, Key=key, Body=body)
    return f"s3://{BUCKET}/{key}"


@pytest.fixture(scope="module")
def judge():
    with OpenAIServer(responder=scripted_judge) as srv:
        yield srv


@pytest.fixture(scope="module")
def run_config(moto_server, judge):
    requests.post(f"{moto_server}/moto-api/reset", timeout=10)
    s3 = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    s3.create_bucket(Bucket=BUCKET)
    ids = [f"q{i:03d}" for i in range(N)]
    traffic = pd.DataFrame({
        "request_id": ids,
        "prompt": [f"What is the code word number {i}?" for i in range(N)],
        "response": [f"The code word is w{i}." for i in range(N)],
        "reference": [f"w{i}" for i in range(N)],
        "region": ["eu" if i % 2 else "us" for i in range(N)],
    })
    traffic_uri = _put(s3, "traffic/traffic.jsonl", traffic.to_json(orient="records", lines=True).encode())
    # The recorded candidate knows the reference on two thirds of the requests.
    recorded = pd.DataFrame({"request_id": ids, "response": [f"w{i}" if i % 3 else "no idea" for i in range(N)]})
    recorded_uri = _put(s3, "shadow/cand-rec.jsonl", recorded.to_json(orient="records", lines=True).encode())
    labels = pd.DataFrame([
        {"request_id": rid, "model": m, "dimension": "correctness", "annotator": "ann1",
         "value": (0.5 if i % 3 else 0.0) if m == "cand-rec" else 0.0}
        for i, rid in enumerate(ids[:20]) for m in ("cand-rec", "cand-tiny")])
    labels_uri = _put(s3, "labels/labels.csv", labels.to_csv(index=False).encode())
    raw = {
        "run_id": "e2e-1",
        "store": {"root": f"s3://{BUCKET}/baton", "endpoint_url": moto_server,
                  "access_key_id_env": "AWS_ACCESS_KEY_ID", "secret_access_key_env": "AWS_SECRET_ACCESS_KEY"},
        "traffic": {"path": traffic_uri, "segments": ["region"]},
        "incumbent": {"name": "incumbent"},
        "candidates": [
            {"name": "cand-rec", "kind": "recorded", "path": recorded_uri},
            {"name": "cand-tiny", "kind": "transformers", "model": tiny_model_path(),
             "sampling": {"max_tokens": 48, "temperature": 0.0}, "batch_size": 4},
        ],
        "scoring": {
            "embeddings": {"enabled": False},
            "judge": {"enabled": True, "dimensions": [{"name": "correctness", "absolute": True, "pairwise": True}],
                      "engine": {"name": "judge", "kind": "openai", "model": "scripted-judge",
                                 "base_url": judge.base_url, "rpm": 6000, "tpm": 6_000_000}},
        },
        "labels": {"path": labels_uri},
        "decision": {"dimensions": [{"name": "correctness", "kind": "pairwise"}], "draws": 300, "tune": 300},
        "execution": {"shard_rows": 4},
    }
    config_uri = _put(s3, "configs/e2e.yaml", yaml.safe_dump(raw).encode())
    store = RunStore(StoreConfig(**raw["store"]), raw["run_id"])
    return config_uri, store


def _submit(dashboard: str, env: dict, config_uri: str, submission_id: str) -> None:
    runtime_env = {"excludes": [".venv", ".git", "baton-store", "**/__pycache__", "*.egg-info", ".pytest_cache"]}
    cmd = [str(VENV / "bin/ray"), "job", "submit", "--address", dashboard, "--working-dir", str(REPO),
           "--runtime-env-json", json.dumps(runtime_env), "--submission-id", submission_id, "--no-wait",
           "--", "python", "-m", "jobs.migrate", "--config", config_uri, "--no-progress"]
    for _ in range(30):
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
        # A head under load can answer before its job agent is up: that refusal is worth a retry.
        if proc.returncode == 0 or "No available agent to submit job" not in proc.stderr:
            break
        time.sleep(2)
    assert proc.returncode == 0, proc.stderr + proc.stdout


def _status(dashboard: str, submission_id: str) -> dict:
    return requests.get(f"{dashboard}/api/jobs/{submission_id}", timeout=10).json()


def _logs(dashboard: str, submission_id: str) -> str:
    return requests.get(f"{dashboard}/api/jobs/{submission_id}/logs", timeout=10).json().get("logs", "")


def test_submit_kill_midway_resubmit_resumes_exactly_once(ray_head, run_config):
    dashboard, env = ray_head
    config_uri, store = run_config
    _submit(dashboard, env, config_uri, "e2e-first")
    # Stop the first job once the tiny candidate has committed some, but not all, of its shards.
    deadline = time.monotonic() + 300
    done_tiny = 0
    while time.monotonic() < deadline:
        done_tiny = sum(1 for s in store.commits("responses") if s.startswith("cand-tiny-"))
        state = _status(dashboard, "e2e-first").get("status")
        if done_tiny >= 1 or state in ("FAILED", "SUCCEEDED"):
            break
        time.sleep(0.3)
    assert _status(dashboard, "e2e-first")["status"] == "RUNNING", _logs(dashboard, "e2e-first")[-3000:]
    assert 1 <= done_tiny < N // 4, f"could not stop mid-replay ({done_tiny} tiny shards)"
    requests.post(f"{dashboard}/api/jobs/e2e-first/stop", timeout=10)
    for _ in range(120):
        if _status(dashboard, "e2e-first")["status"] in ("STOPPED", "FAILED"):
            break
        time.sleep(0.5)
    assert _status(dashboard, "e2e-first")["status"] == "STOPPED"
    before = set(store.commits("responses"))
    assert not store.has_document("decision", "decision.json")

    _submit(dashboard, env, config_uri, "e2e-second")
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        state = _status(dashboard, "e2e-second")["status"]
        if state in ("SUCCEEDED", "FAILED", "STOPPED"):
            break
        time.sleep(1)
    logs = _logs(dashboard, "e2e-second")
    assert state == "SUCCEEDED", logs[-4000:]

    responses = store.read_table("responses")
    for model in ("cand-rec", "cand-tiny"):
        ids = responses.loc[responses["model"] == model, "request_id"]
        assert len(ids) == N and ids.is_unique, model
    assert before <= set(store.commits("responses"))  # committed shards were kept, not redone
    replay = store.manifest()["stages"]["replay"]["cand-tiny"]
    assert replay["shards_skipped"] >= 1  # the resubmission resumed
    scores = store.read_table("scores")
    assert not scores.duplicated(["request_id", "model", "metric"]).any()
    pair = scores[scores["metric"] == "judge.pairwise.correctness.ab"]
    assert set(pair["model"]) == {"cand-rec", "cand-tiny"}
    assert pair.groupby("model")["request_id"].nunique().to_dict() == {"cand-rec": N, "cand-tiny": N}
    decision = json.loads(store.read_document("decision", "decision.json"))
    assert set(decision["verdicts"]) == {"cand-rec", "cand-tiny"}
    # The tiny model never says the code word: the judge and the labels agree that it is worse.
    assert decision["verdicts"]["cand-tiny"] in ("reject", "more_labels")
    assert decision["candidates"]["cand-tiny"]["dimensions"]["correctness"]["estimate"] < 0.3
    assert store.has_document("decision", "report.html")
    assert "AWS_SECRET_ACCESS_KEY" not in logs or "testing-secret-key" not in logs
    assert "testing-secret-key" not in logs
    assert shard_id("cand-tiny", "traffic-000000") in store.commits("responses")

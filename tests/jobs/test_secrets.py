"""Secrets are passed by reference: no API key or S3 secret appears in any stored object, table or log line."""

from __future__ import annotations

import logging

import boto3
import pytest

from jobs.config import parse_config
from jobs.replay import replay
from jobs.store import RunStore
from tests.support.fixtures import start_local_ray, traffic_frame, write_traffic
from tests.support.openai_server import OpenAIServer

API_SECRET = "sk-test-secret-api-key-0f9e8d7c6b5a"
S3_SECRET = "testing-secret-key"  # the moto server's secret key (tests/conftest.py S3_ENV)


@pytest.fixture(scope="module")
def ray_local():
    """Ray workers inherit the environment of the process that starts Ray: the key must be set first, as on a
    cluster whose nodes get it from a Kubernetes Secret."""
    import os

    import ray

    os.environ["BATON_API_KEY_UNDER_TEST"] = API_SECRET
    start_local_ray(2)
    yield
    ray.shutdown()
    del os.environ["BATON_API_KEY_UNDER_TEST"]


def test_no_secret_in_store_tables_or_logs(ray_local, s3_bucket, caplog, capfd):
    endpoint, bucket = s3_bucket
    caplog.set_level(logging.DEBUG)
    with OpenAIServer(api_key=API_SECRET) as good, OpenAIServer(api_key="a-different-key") as bad:
        cfg = parse_config({
            "run_id": "secrets",
            "store": {"root": f"s3://{bucket}/b", "endpoint_url": endpoint,
                      "access_key_id_env": "AWS_ACCESS_KEY_ID", "secret_access_key_env": "AWS_SECRET_ACCESS_KEY"},
            "traffic": {"path": "unused.jsonl"},
            "incumbent": {"name": "inc"},
            "candidates": [
                {"name": "accepted", "kind": "openai", "model": "m", "base_url": good.base_url,
                 "api_key_env": "BATON_API_KEY_UNDER_TEST", "max_attempts": 2, "backoff_base_s": 0.01},
                # The provider rejects the key: the error rows and logs must still not contain it.
                {"name": "rejected", "kind": "openai", "model": "m", "base_url": bad.base_url,
                 "api_key_env": "BATON_API_KEY_UNDER_TEST", "max_attempts": 2, "backoff_base_s": 0.01},
            ],
            "decision": {"dimensions": [{"name": "quality", "kind": "pairwise"}]},
        })
        store = RunStore(cfg.store, cfg.run_id)
        store.check_access()
        write_traffic(store, traffic_frame(6), shard_rows=3)
        store.update_manifest(config=cfg.model_dump(mode="json"))
        replay(cfg, store, progress=False)
    responses = store.read_table("responses")
    assert responses.loc[responses["model"] == "accepted", "error"].isna().all()
    rejected = responses[responses["model"] == "rejected"]
    assert rejected["error"].notna().all() and len(rejected) == 6
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert any(k.endswith("manifest.json") for k in keys) and any("/responses/" in k for k in keys)
    for key in keys:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        assert API_SECRET.encode() not in body, key
        assert S3_SECRET.encode() not in body, key
    manifest = store.manifest()
    assert manifest["config"]["candidates"][0]["api_key_env"] == "BATON_API_KEY_UNDER_TEST"
    out, err = capfd.readouterr()
    for text in (caplog.text, out, err):
        assert API_SECRET not in text
        assert S3_SECRET not in text

"""Secrets are passed by reference: no API key or S3 secret appears in any stored object, table or log line."""

from __future__ import annotations

import logging

import boto3
import pytest

from jobs.config import parse_config
from jobs.replay import ReplayFailed, replay
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
        # every answer of the rejected candidate failed: the run stops after replay, naming the kind, never the key
        with pytest.raises(ReplayFailed, match="'auth'") as info:
            replay(cfg, store, progress=False)
        assert API_SECRET not in str(info.value)
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


# -- config errors never show a pasted key; env-var names must look like names --------------------------------------
PASTED = "sk-proj-Zq4xW9vB2nT7kL1mP8rS3dF6"
HF_KEY = "hf_AbCdEfGhIjKlMnOpQrStUvWxYz0123"


def _raw(candidate: dict, **over) -> dict:
    raw = {"run_id": "secrets", "traffic": {"path": "t.jsonl"}, "incumbent": {"name": "inc"},
           "candidates": [candidate], "decision": {"dimensions": [{"name": "quality", "kind": "pairwise"}]}}
    raw.update(over)
    return raw


@pytest.mark.parametrize("raw", [
    # the reported case: the key pasted as api_key_env, and `kind` mistyped (a union/discriminator error)
    _raw({"api_key_env": PASTED, "name": "c", "kind": "opnai", "model": "m", "base_url": "http://127.0.0.1:9/v1"}),
    _raw({"name": "c", "kind": PASTED, "model": "m", "base_url": "http://127.0.0.1:9/v1"}),
    _raw({"name": "c", "kind": "openai", "model": "m", "base_url": "http://127.0.0.1:9/v1", "api_key": PASTED}),
    _raw({"name": "c", "kind": "openai", "model": "m", "base_url": "http://127.0.0.1:9/v1", "api_key_env": PASTED,
          "rpm": "fast"}),
    _raw({"name": "c", "kind": "recorded", "path": "r.jsonl"}, store={"secret_access_key_env": PASTED}),
    _raw({"name": "c", "kind": "recorded", "path": "r.jsonl"},
         scoring={"judge": {"enabled": True, "engine": {"api_key_env": PASTED, "name": "j", "kind": "openia",
                                                        "model": "m", "base_url": "http://127.0.0.1:9/v1"}}}),
], ids=["typo-kind", "key-as-kind", "unknown-key", "other-error", "store", "judge-typo-kind"])
def test_config_errors_never_contain_a_pasted_key(tmp_path, capsys, raw):
    import yaml

    from jobs.cli import main

    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    assert main(["validate", "--config", str(path), "--no-store"]) == 2
    out, err = capsys.readouterr()
    assert "invalid run config" in err
    for part in (PASTED, PASTED[:12], PASTED[-12:]):
        assert part not in err and part not in out


@pytest.mark.parametrize("name", [HF_KEY, HF_KEY.upper(), "AKIAIOSFODNN7EXAMPLE", "ghp_" + "a1B2" * 9,
                                  "SK_LIVE_4EC39HQLYJWDARJTT1TZTR", "openai_api_key"])
def test_secret_shaped_env_names_are_refused(name):
    from jobs.errors import ConfigError

    for raw in (_raw({"name": "c", "kind": "openai", "model": "m", "base_url": "http://x", "api_key_env": name}),
                _raw({"name": "c", "kind": "recorded", "path": "r.jsonl"}, store={"access_key_id_env": name})):
        with pytest.raises(ConfigError, match="must be the NAME of an environment variable") as info:
            parse_config(raw)
        assert name not in str(info.value)


@pytest.mark.parametrize("name", ["OPENAI_API_KEY", "HF_TOKEN", "AWS_SECRET_ACCESS_KEY", "GITHUB_TOKEN", "SK_API_KEY"])
def test_ordinary_env_names_are_accepted(name):
    cfg = parse_config(_raw({"name": "c", "kind": "openai", "model": "m", "base_url": "http://x", "api_key_env": name}))
    assert cfg.candidates[0].api_key_env == name

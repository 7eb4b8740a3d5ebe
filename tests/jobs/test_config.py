"""Run config: unknown keys and typos are errors naming the key path; secrets only by env-var name."""

from __future__ import annotations

import pytest
import yaml

from jobs.config import load_config, parse_config
from jobs.errors import ConfigError

BASE = {
    "run_id": "r1",
    "traffic": {"path": "traffic.jsonl", "segments": ["app"]},
    "incumbent": {"name": "old"},
    "candidates": [
        {"name": "new-api", "kind": "openai", "model": "gpt-x", "base_url": "http://127.0.0.1:9/v1", "api_key_env": "NEW_API_KEY"},
        {"name": "new-rec", "kind": "recorded", "path": "rec.jsonl"},
    ],
    "decision": {"dimensions": [{"name": "quality", "kind": "pairwise"}]},
}


def _with(path: str, value):
    import copy

    raw = copy.deepcopy(BASE)
    node = raw
    keys = path.split(".")
    for k in keys[:-1]:
        node = node[int(k)] if k.isdigit() else node[k]
    node[keys[-1]] = value
    return raw


def test_valid_config_defaults():
    cfg = parse_config(BASE)
    assert cfg.store.root == "./baton-store"
    assert cfg.candidates[0].kind == "openai" and cfg.candidates[0].api_key_env == "NEW_API_KEY"
    assert cfg.decision.margin == 0.05 and cfg.decision.confidence == 0.9


def test_typo_names_key_path_and_suggests():
    with pytest.raises(ConfigError) as info:
        parse_config(_with("decision.margn", 0.1))
    msg = str(info.value)
    assert "decision.margn: unknown key (did you mean 'margin'?)" in msg


def test_typo_inside_candidate_union_member():
    with pytest.raises(ConfigError) as info:
        parse_config(_with("candidates.0.rpmm", 10))
    assert "candidates.0.openai.rpmm: unknown key (did you mean 'rpm'?)" in str(info.value)


def test_wrong_type_and_missing_key():
    raw = _with("decision.confidence", "high")
    del raw["incumbent"]
    with pytest.raises(ConfigError) as info:
        parse_config(raw, "run.yaml")
    msg = str(info.value)
    assert msg.startswith("run.yaml: invalid run config (2 error(s))")
    assert "incumbent: required key is missing" in msg
    assert "decision.confidence:" in msg and "'high'" in msg


def test_secret_values_are_refused_and_not_echoed():
    secret = "sk-live-0123456789abcdef0123456789abcdef"
    with pytest.raises(ConfigError) as info:
        parse_config(_with("candidates.0.api_key_env", secret))
    assert "candidates.0.openai.api_key_env" in str(info.value)
    assert "must be the NAME of an environment variable" in str(info.value)
    assert "0123456789abcdef0123456789abcdef" not in str(info.value)


def test_duplicate_candidate_names_and_bad_run_id():
    raw = _with("candidates.1.name", "new-api")
    with pytest.raises(ConfigError, match="candidate names must be unique"):
        parse_config(raw)
    with pytest.raises(ConfigError, match="run_id"):
        parse_config(_with("run_id", "../escape"))


def test_unknown_candidate_kind():
    with pytest.raises(ConfigError, match="candidates.0"):
        parse_config(_with("candidates.0.kind", "magic"))


def test_load_from_file_and_s3(tmp_path, s3_bucket, monkeypatch):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(BASE))
    assert load_config(str(path)).run_id == "r1"
    bad = tmp_path / "bad.yaml"
    bad.write_text("run_id: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml: line"):
        load_config(str(bad))

    endpoint, bucket = s3_bucket
    import boto3

    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").put_object(
        Bucket=bucket, Key="configs/run.yaml", Body=yaml.safe_dump(BASE).encode())
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", endpoint)
    assert load_config(f"s3://{bucket}/configs/run.yaml").run_id == "r1"
    from jobs.errors import StoreNotFound

    with pytest.raises(StoreNotFound, match="s3://baton-test/configs/absent.yaml"):
        load_config(f"s3://{bucket}/configs/absent.yaml")


def test_shipped_example_config_is_valid():
    from pathlib import Path

    cfg = load_config(str(Path(__file__).resolve().parents[2] / "examples" / "run.yaml"))
    assert [c.kind for c in cfg.candidates] == ["openai", "vllm"]
    assert cfg.scoring.judge.enabled and any(d.name == "style" for d in cfg.scoring.judge.dimensions)


def test_margin_bound_depends_on_the_dimension_kind():
    """One validator for every entry point: 0 <= M < 0.5 pairwise, < 1 binary; an ordinal scale without declared
    levels is checked against the labels before the run (tests/jobs/test_cli.py)."""
    with pytest.raises(ConfigError, match=r"decision.margin: .*5.0 must be below 0.5 for pairwise dimension 'quality'"):
        parse_config(_with("decision.margin", 5.0))
    for bad in (-0.1, float("inf"), float("nan")):
        with pytest.raises(ConfigError, match="decision.margin"):
            parse_config(_with("decision.margin", bad))
    binary = _with("decision.dimensions", [{"name": "ok", "kind": "binary"}])
    binary["decision"]["margin"] = 0.7
    assert parse_config(binary).decision.margin == 0.7
    binary["decision"]["margin"] = 1.0
    with pytest.raises(ConfigError, match="below 1 for binary dimension 'ok'"):
        parse_config(binary)
    mixed = _with("decision.dimensions", [{"name": "ok", "kind": "binary"}, {"name": "quality", "kind": "pairwise"}])
    mixed["decision"]["margin"] = 0.7
    with pytest.raises(ConfigError, match="pairwise dimension 'quality'"):
        parse_config(mixed)
    ordinal = _with("decision.dimensions", [{"name": "stars", "kind": "ordinal"}])
    ordinal["decision"]["margin"] = 2.0
    assert parse_config(ordinal).decision.margin == 2.0


def test_one_decision_config_for_the_run_and_baton_decide():
    import argparse

    from calibration.config import DecisionConfig
    from jobs import config, decide

    assert config.DecisionConfig is DecisionConfig
    assert not hasattr(decide, "DecideSpec") and not hasattr(decide, "DimensionSpec")
    parser = argparse.ArgumentParser()
    decide.add_arguments(parser)
    args = parser.parse_args(["--scores", "s", "--labels", "l", "--incumbent", "a", "--dimension", "quality",
                              "--kind", "binary", "--margin", "0.3", "--confidence", "0.8", "--out", "o",
                              "--metric", "judge.abs.quality", "--fail-unless-migrate"])
    built = decide.decision_from_args(args)
    assert isinstance(built, DecisionConfig) and built.margin == 0.3 and built.fail_unless_migrate
    assert built.dimensions[0].metrics == ["judge.abs.quality"]


def test_labels_mode():
    assert parse_config(BASE).labels.mode == "required"
    assert parse_config(_with("labels", {"mode": "none"})).labels.mode == "none"
    with pytest.raises(ConfigError, match="labels.mode"):
        parse_config(_with("labels", {"mode": "later"}))


def test_worker_resources_are_custom_resources_above_zero():
    assert parse_config(BASE).execution.worker_resources == {}
    cfg = parse_config(_with("execution", {"worker_resources": {"baton_worker": 1}}))
    assert cfg.execution.worker_resources == {"baton_worker": 1.0}
    with pytest.raises(ConfigError, match=r"execution.worker_resources: .*'CPU' is not a custom resource"):
        parse_config(_with("execution", {"worker_resources": {"CPU": 1}}))
    with pytest.raises(ConfigError, match=r"execution.worker_resources: .*'baton_worker': amount must be above 0"):
        parse_config(_with("execution", {"worker_resources": {"baton_worker": 0}}))

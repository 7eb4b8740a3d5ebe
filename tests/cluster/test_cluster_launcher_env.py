"""The AWS cluster launcher YAML and the Ray runtime env file: required keys, GPU worker types,
no secrets; each check shown to fail on a broken copy."""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "cluster"
_spec = importlib.util.spec_from_file_location("baton_cluster_validate_l", CLUSTER / "validate.py")
validate = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(validate)

LAUNCHER = yaml.safe_load((CLUSTER / "aws" / "baton-cluster.yaml").read_text())
RUNTIME_ENV = yaml.safe_load((CLUSTER / "runtime_env.yaml").read_text())


def test_launcher_required_keys_and_gpu_types():
    assert validate.validate_launcher(LAUNCHER) == []
    assert LAUNCHER["provider"]["type"] == "aws" and LAUNCHER["provider"]["region"]
    types = LAUNCHER["available_node_types"]
    assert LAUNCHER["head_node_type"] in types
    assert not types[LAUNCHER["head_node_type"]]["resources"].get("GPU")
    gpu = {n: t["node_config"]["InstanceType"] for n, t in types.items() if t["resources"].get("GPU")}
    assert any(i.startswith("g5.") for i in gpu.values()) and any(i.startswith(("p4d.", "p5.")) for i in gpu.values())
    assert all("IamInstanceProfile" in t["node_config"] for t in types.values())


def test_launcher_validator_fails_on_broken_copies():
    bad = copy.deepcopy(LAUNCHER)
    bad["provider"]["type"] = "gcp"
    assert any("$.provider.type" in e for e in validate.validate_launcher(bad))

    bad = copy.deepcopy(LAUNCHER)
    bad["head_node_type"] = "nope"
    assert any("'nope' is not one of available_node_types" in e for e in validate.validate_launcher(bad))

    bad = copy.deepcopy(LAUNCHER)
    bad["available_node_types"] = {k: v for k, v in bad["available_node_types"].items() if not k.startswith("gpu")}
    assert any("no GPU worker type" in e for e in validate.validate_launcher(bad))

    bad = copy.deepcopy(LAUNCHER)
    del bad["available_node_types"]["gpu_a10g"]["node_config"]["IamInstanceProfile"]
    assert any("'IamInstanceProfile' is a required property" in e for e in validate.validate_launcher(bad))

    bad = copy.deepcopy(LAUNCHER)
    bad["available_node_types"]["head"]["node_config"]["SecretAccessKey"] = "x"
    assert any("$.available_node_types.head.node_config" in e for e in validate.validate_launcher(bad))


def test_runtime_env_required_keys_and_no_secrets():
    assert validate.validate_runtime_env(RUNTIME_ENV) == []
    assert RUNTIME_ENV["working_dir"]
    assert RUNTIME_ENV["env_vars"]["HF_HUB_OFFLINE"] == "1"
    assert any(p.startswith("vllm==") for p in RUNTIME_ENV["pip"]["packages"])


def test_runtime_env_validator_fails_on_broken_copies():
    bad = copy.deepcopy(RUNTIME_ENV)
    del bad["working_dir"]
    assert "runtime_env: $: 'working_dir' is a required property" in validate.validate_runtime_env(bad)

    bad = copy.deepcopy(RUNTIME_ENV)
    bad["env_vars"]["OPENAI_API_KEY"] = "sk-should-never-be-here"
    errors = "\n".join(validate.validate_runtime_env(bad))
    assert "must not carry secrets" in errors and "(name: OPENAI_API_KEY)" in errors
    assert "sk-should-never-be-here" not in errors

    bad = copy.deepcopy(RUNTIME_ENV)
    bad["uv"] = ["pandas"]
    assert any("pip or uv, not both" in e for e in validate.validate_runtime_env(bad))

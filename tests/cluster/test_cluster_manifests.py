"""Cluster manifests: every YAML parses, validates against cluster/schemas, and the validator
really rejects what it must (each negative test breaks one valid manifest and expects the
named error)."""

from __future__ import annotations

import copy
import importlib.util
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "cluster"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"baton_cluster_{name}", CLUSTER / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


validate = _load("validate")
render_jobs = _load("render_jobs")

YAML_FILES = sorted(CLUSTER.rglob("*.yaml"))
K8S_FILES = [p for p in YAML_FILES if p.parent == CLUSTER and not p.name.startswith("runtime_env")]


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _by_kind(path: Path, kind: str) -> dict:
    return copy.deepcopy(next(d for d in _docs(path) if d["kind"] == kind))


def test_expected_files_exist():
    names = {p.relative_to(CLUSTER).as_posix() for p in YAML_FILES}
    assert {
        "raycluster.yaml",
        "rayjob-migrate.yaml",
        "raycronjob-nightly.yaml",
        "cronjob-nightly.yaml",
        "serviceaccount.yaml",
        "runtime_env.yaml",
        "aws/baton-cluster.yaml",
    } <= names


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: p.relative_to(CLUSTER).as_posix())
def test_every_yaml_parses_and_validates(path):
    assert _docs(path), f"{path} holds no document"
    assert validate.validate_file(path) == []


def test_every_kind_has_its_schema_exercised():
    kinds = {d["kind"] for p in K8S_FILES for d in _docs(p)}
    assert {"RayCluster", "RayJob", "RayCronJob", "CronJob", "ServiceAccount", "Role", "RoleBinding"} <= kinds


def test_generated_manifests_are_up_to_date():
    rendered = render_jobs.render()
    for name, text in rendered.items():
        assert (CLUSTER / name).read_text() == text, f"{name} is stale: run python cluster/render_jobs.py"


def test_jobs_embed_the_one_cluster_spec_and_runtime_env():
    cluster = _docs(CLUSTER / "raycluster.yaml")[0]["spec"]
    runtime_env = _docs(CLUSTER / "runtime_env.yaml")[0]
    migrate = _by_kind(CLUSTER / "rayjob-migrate.yaml", "RayJob")["spec"]
    cron = _by_kind(CLUSTER / "raycronjob-nightly.yaml", "RayCronJob")["spec"]["jobTemplate"]
    cm = _by_kind(CLUSTER / "cronjob-nightly.yaml", "ConfigMap")
    fallback = yaml.safe_load(cm["data"]["rayjob-nightly.yaml"])["spec"]
    for job in (migrate, cron, fallback):
        assert job["rayClusterSpec"] == cluster
        env = yaml.safe_load(job["runtimeEnvYAML"])
        assert env["working_dir"].startswith("s3://")
        assert env["env_vars"] == runtime_env["env_vars"]
        assert env["pip"] == runtime_env["pip"]


def test_entrypoints():
    migrate = _by_kind(CLUSTER / "rayjob-migrate.yaml", "RayJob")["spec"]["entrypoint"]
    assert re.fullmatch(r"python -m jobs\.migrate --config s3://\$\{BATON_BUCKET\}/configs/\$\{BATON_RUN\}\.yaml", migrate)
    nightly = _by_kind(CLUSTER / "raycronjob-nightly.yaml", "RayCronJob")["spec"]["jobTemplate"]["entrypoint"]
    assert nightly.startswith("python -m jobs.nightly --config s3://")
    assert nightly.endswith("--date $(date -u -d yesterday +%F)")


def test_gpu_groups_and_autoscaling():
    spec = _docs(CLUSTER / "raycluster.yaml")[0]["spec"]
    assert spec["enableInTreeAutoscaling"] is True
    gpu = [g for g in spec["workerGroupSpecs"] if g["groupName"].startswith("gpu")]
    assert gpu, "no GPU worker group"
    for g in gpu:
        pod = g["template"]["spec"]
        assert int(pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]) >= 1
        assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
        assert pod["nodeSelector"]
        assert g["minReplicas"] <= g["replicas"] <= g["maxReplicas"]


def test_pods_use_the_irsa_service_account():
    sa = _docs(CLUSTER / "serviceaccount.yaml")[0]
    assert sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].startswith("arn:aws:iam::")
    spec = _docs(CLUSTER / "raycluster.yaml")[0]["spec"]
    pods = [spec["headGroupSpec"]["template"]["spec"]] + [g["template"]["spec"] for g in spec["workerGroupSpecs"]]
    assert {p["serviceAccountName"] for p in pods} == {sa["metadata"]["name"]}


def test_scheduler_role_is_bound_to_the_cronjob_account():
    path = CLUSTER / "cronjob-nightly.yaml"
    role, binding, cron = (_by_kind(path, k) for k in ("Role", "RoleBinding", "CronJob"))
    assert role["rules"] == [{"apiGroups": ["ray.io"], "resources": ["rayjobs"], "verbs": ["create"]}]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    account = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["serviceAccountName"]
    assert {"kind": "ServiceAccount", "name": account, "namespace": "baton"} in binding["subjects"]


ALLOWED_PLACEHOLDERS = {"AWS_ACCOUNT_ID", "AWS_REGION", "BATON_BUCKET", "BATON_VERSION", "BATON_RUN"}


@pytest.mark.parametrize("path", K8S_FILES, ids=lambda p: p.name)
def test_only_documented_placeholders(path):
    found = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", path.read_text()))
    assert found <= ALLOWED_PLACEHOLDERS, found - ALLOWED_PLACEHOLDERS


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: p.relative_to(CLUSTER).as_posix())
def test_no_credentials_in_files(path):
    text = path.read_text()
    assert not re.search(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b", text), "AWS access key id in file"
    assert not re.search(r"(?i)aws_secret_access_key\s*[:=]", text)
    assert not re.search(r"\bsk-[A-Za-z0-9]{20,}", text), "API key-like literal in file"


# --- the validator must be able to fail -------------------------------------------------------


def _errors(doc) -> str:
    return "\n".join(validate.validate_manifest(doc))


def test_rejects_literal_secret_env_value_without_echoing_it():
    doc = _by_kind(CLUSTER / "rayjob-migrate.yaml", "RayJob")
    containers = doc["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"]
    containers[0]["env"].append({"name": "HF_TOKEN", "value": "hf_not_a_real_token_123"})
    errors = _errors(doc)
    assert "$.spec.rayClusterSpec.headGroupSpec.template.spec.containers[0].env[4]" in errors
    assert "use valueFrom.secretKeyRef (name: HF_TOKEN)" in errors
    assert "hf_not_a_real_token_123" not in errors


def test_rejects_secret_env_anywhere_in_a_cronjob():
    doc = _by_kind(CLUSTER / "cronjob-nightly.yaml", "CronJob")
    pod = doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    pod["containers"][0]["env"] = [{"name": "db_password", "value": "x"}]
    assert "(name: db_password)" in _errors(doc)


def test_secret_key_ref_and_harmless_names_pass():
    doc = _by_kind(CLUSTER / "rayjob-migrate.yaml", "RayJob")
    containers = doc["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"]
    containers[0]["env"] += [
        {"name": "TOKENIZERS_PARALLELISM", "value": "false"},
        {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "baton-api-keys", "key": "HF_TOKEN"}}},
    ]
    assert _errors(doc) == ""


def test_rejects_gpu_group_without_gpu_limit():
    doc = _docs(CLUSTER / "raycluster.yaml")[0]
    group = next(g for g in doc["spec"]["workerGroupSpecs"] if g["groupName"] == "gpu-a10g")
    del group["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]
    assert "$.spec.workerGroupSpecs[1].template.spec.containers: GPU pod needs nvidia.com/gpu (>= 1)" in _errors(doc)


def test_rejects_cluster_without_any_gpu_group():
    doc = _docs(CLUSTER / "raycluster.yaml")[0]
    doc["spec"]["workerGroupSpecs"] = [g for g in doc["spec"]["workerGroupSpecs"] if g["groupName"] == "cpu"]
    assert "$.spec.workerGroupSpecs: no worker group requests nvidia.com/gpu" in _errors(doc)


def test_rejects_gpu_group_without_toleration():
    doc = _docs(CLUSTER / "raycluster.yaml")[0]
    group = next(g for g in doc["spec"]["workerGroupSpecs"] if g["groupName"] == "gpu-h100")
    del group["template"]["spec"]["tolerations"]
    assert "$.spec.workerGroupSpecs[2].template.spec: GPU pod needs" in _errors(doc)


def test_rejects_missing_replica_bounds_and_inverted_bounds():
    doc = _docs(CLUSTER / "raycluster.yaml")[0]
    del doc["spec"]["workerGroupSpecs"][0]["maxReplicas"]
    assert "$.spec.workerGroupSpecs[0]: 'maxReplicas' is a required property" in _errors(doc)
    doc = _docs(CLUSTER / "raycluster.yaml")[0]
    doc["spec"]["workerGroupSpecs"][0]["replicas"] = 20
    assert "needs minReplicas <= replicas <= maxReplicas, got 1 <= 20 <= 8" in _errors(doc)


def test_rejects_gpu_head():
    doc = _docs(CLUSTER / "raycluster.yaml")[0]
    head = doc["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    head["resources"]["limits"]["nvidia.com/gpu"] = "1"
    assert "the head must be CPU-only" in _errors(doc)


def test_rejects_rayjob_without_entrypoint():
    doc = _by_kind(CLUSTER / "rayjob-migrate.yaml", "RayJob")
    del doc["spec"]["entrypoint"]
    assert "RayJob/baton-migrate-${BATON_RUN}: $.spec: 'entrypoint' is a required property" in _errors(doc)


def test_rejects_wrong_api_version_and_unknown_kind():
    doc = _docs(CLUSTER / "raycluster.yaml")[0]
    doc["apiVersion"] = "ray.io/v1alpha1"
    assert "no schema for apiVersion='ray.io/v1alpha1' kind='RayCluster'" in _errors(doc)


def test_rejects_wildcard_role_and_bad_binding():
    role = _by_kind(CLUSTER / "cronjob-nightly.yaml", "Role")
    role["rules"][0]["verbs"] = ["*"]
    assert "Role/baton-rayjob-creator: $.rules[0].verbs[0]" in _errors(role)
    binding = _by_kind(CLUSTER / "cronjob-nightly.yaml", "RoleBinding")
    del binding["roleRef"]
    assert "'roleRef' is a required property" in _errors(binding)


def test_rejects_broken_template_inside_configmap():
    cm = _by_kind(CLUSTER / "cronjob-nightly.yaml", "ConfigMap")
    inner = yaml.safe_load(cm["data"]["rayjob-nightly.yaml"])
    del inner["spec"]["rayClusterSpec"]["headGroupSpec"]
    cm["data"]["rayjob-nightly.yaml"] = yaml.safe_dump(inner)
    assert "$.data['rayjob-nightly.yaml'] -> RayJob/baton-nightly-: $.spec.rayClusterSpec: 'headGroupSpec'" in _errors(cm)


def test_rejects_secret_with_values_and_serviceaccount_with_bad_role_arn():
    secret = _docs(CLUSTER / "secret.example.yaml")[0]
    secret["stringData"] = {"OPENAI_API_KEY": "x"}
    assert "must not carry data or stringData values" in _errors(secret)
    sa = _docs(CLUSTER / "serviceaccount.yaml")[0]
    sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"] = "baton-ray"
    assert "$.metadata.annotations['eks.amazonaws.com/role-arn']" in _errors(sa)


def test_cli_exit_code(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    doc = _docs(CLUSTER / "raycluster.yaml")[0]
    doc["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["env"].append({"name": "API_KEY", "value": "v"})
    bad.write_text(yaml.safe_dump(doc))
    assert validate.main([str(bad)]) == 1
    assert "(name: API_KEY)" in capsys.readouterr().err
    assert validate.main([str(CLUSTER / "raycluster.yaml")]) == 0

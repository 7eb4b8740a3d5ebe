"""Validate Baton's cluster manifests against the JSON Schemas in cluster/schemas/.

The schemas cover the fields Baton relies on (not the full Kubernetes or KubeRay API): kinds and
API versions, names, the head group and the worker groups with their replica bounds, GPU limits,
tolerations and node selectors on GPU groups, a job entrypoint, and no literal value on any env
var whose name looks like a secret. What JSON Schema cannot express (cross-field bounds, the
launcher's head type being one of its node types) is checked here in Python.

    python cluster/validate.py            # every manifest under cluster/, exit 1 on any error
    python cluster/validate.py FILE...    # just these
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any, Iterable

import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

HERE = Path(__file__).resolve().parent
SCHEMA_DIR = HERE / "schemas"

KIND_SCHEMAS = {
    ("ray.io/v1", "RayCluster"): "raycluster.schema.json",
    ("ray.io/v1", "RayJob"): "rayjob.schema.json",
    ("ray.io/v1", "RayCronJob"): "raycronjob.schema.json",
    ("batch/v1", "CronJob"): "cronjob.schema.json",
    ("v1", "ServiceAccount"): "serviceaccount.schema.json",
    ("rbac.authorization.k8s.io/v1", "Role"): "role.schema.json",
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): "rolebinding.schema.json",
    ("v1", "ConfigMap"): "configmap.schema.json",
    ("v1", "Secret"): "secret.schema.json",
}
RUNTIME_ENV_SCHEMA = "runtime_env.schema.json"
LAUNCHER_SCHEMA = "aws-launcher.schema.json"
# EC2 families with NVIDIA GPUs that suit vLLM (A10G, L4, L40S, A100, H100, H200).
GPU_INSTANCE = re.compile(r"^(g5|g6|g6e|p4d|p4de|p5|p5e|p5en)\.")
_BASE_ID = "https://baton.invalid/schemas/"


def _load_schemas() -> tuple[Registry, dict[str, dict]]:
    schemas = {p.name: json.loads(p.read_text()) for p in sorted(SCHEMA_DIR.glob("*.schema.json"))}
    registry = Registry().with_resources(
        (_BASE_ID + name, Resource.from_contents(schema)) for name, schema in schemas.items()
    )
    return registry, schemas


_REGISTRY, _SCHEMAS = _load_schemas()


def _validator(schema_name: str) -> Draft202012Validator:
    return Draft202012Validator(_SCHEMAS[schema_name], registry=_REGISTRY)


def _format(error: Any, label: str) -> str:
    # A schema's own errorMessage replaces jsonschema's text, which would echo the offending
    # instance: for an env var that is the literal secret.
    custom = error.schema.get("errorMessage") if isinstance(error.schema, dict) else None
    message = custom or error.message
    if custom and isinstance(error.instance, dict) and isinstance(error.instance.get("name"), str):
        message += f" (name: {error.instance['name']})"
    elif custom and "propertyNames" in error.schema_path and isinstance(error.instance, str):
        message += f" (name: {error.instance})"  # a key, never a value
    return f"{label}: {error.json_path}: {message}"


def _schema_errors(doc: Any, schema_name: str, label: str) -> list[str]:
    errors = sorted(_validator(schema_name).iter_errors(doc), key=lambda e: list(e.absolute_path))
    return [_format(e, label) for e in errors]


def _label(doc: dict) -> str:
    meta = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}
    name = meta.get("name") or meta.get("generateName") or "?"
    return f"{doc.get('kind', '?')}/{name}"


def _cluster_specs(doc: dict) -> Iterable[tuple[str, dict]]:
    spec = doc.get("spec") or {}
    kind = doc.get("kind")
    if kind == "RayCluster":
        yield "$.spec", spec
    elif kind == "RayJob":
        yield "$.spec.rayClusterSpec", spec.get("rayClusterSpec") or {}
    elif kind == "RayCronJob":
        yield "$.spec.jobTemplate.rayClusterSpec", (spec.get("jobTemplate") or {}).get("rayClusterSpec") or {}


def _gpu_limit(pod_spec: dict) -> bool:
    return any(
        "nvidia.com/gpu" in ((c.get("resources") or {}).get("limits") or {})
        for c in pod_spec.get("containers") or []
        if isinstance(c, dict)
    )


def _ray_semantics(doc: dict, label: str) -> list[str]:
    errors = []
    for where, cluster in _cluster_specs(doc):
        head = ((cluster.get("headGroupSpec") or {}).get("template") or {}).get("spec") or {}
        if _gpu_limit(head):
            errors.append(f"{label}: {where}.headGroupSpec: the head must be CPU-only (it requests nvidia.com/gpu)")
        for i, group in enumerate(cluster.get("workerGroupSpecs") or []):
            lo, n, hi = (group.get(k) for k in ("minReplicas", "replicas", "maxReplicas"))
            if all(isinstance(v, int) for v in (lo, n, hi)) and not lo <= n <= hi:
                errors.append(
                    f"{label}: {where}.workerGroupSpecs[{i}]: group {group.get('groupName')!r} needs "
                    f"minReplicas <= replicas <= maxReplicas, got {lo} <= {n} <= {hi}"
                )
    return errors


def validate_manifest(doc: Any) -> list[str]:
    """Errors of one Kubernetes object (empty when valid). ConfigMaps holding manifests are
    validated recursively."""
    if not isinstance(doc, dict):
        return [f"?: $: a manifest must be a mapping, got {type(doc).__name__}"]
    label = _label(doc)
    schema = KIND_SCHEMAS.get((doc.get("apiVersion"), doc.get("kind")))
    if schema is None:
        return [f"{label}: $: no schema for apiVersion={doc.get('apiVersion')!r} kind={doc.get('kind')!r}"]
    errors = _schema_errors(doc, schema, label) + _ray_semantics(doc, label)
    if doc.get("kind") == "ConfigMap":
        for key, text in (doc.get("data") or {}).items():
            if isinstance(text, str) and key.endswith((".yaml", ".yml")):
                for inner in yaml.safe_load_all(text):
                    errors += [f"{label}: $.data[{key!r}] -> {e}" for e in validate_manifest(inner)]
    return errors


def validate_runtime_env(doc: Any, label: str = "runtime_env") -> list[str]:
    """Errors of a Ray runtime_env mapping."""
    return _schema_errors(doc, RUNTIME_ENV_SCHEMA, label)


def validate_launcher(doc: Any, label: str = "launcher") -> list[str]:
    """Errors of a Ray cluster launcher config for AWS."""
    errors = _schema_errors(doc, LAUNCHER_SCHEMA, label)
    if errors or not isinstance(doc, dict):
        return errors
    types = doc["available_node_types"]
    head = doc["head_node_type"]
    if head not in types:
        errors.append(f"{label}: $.head_node_type: {head!r} is not one of available_node_types {sorted(types)}")
    elif (types[head].get("resources") or {}).get("GPU"):
        errors.append(f"{label}: $.available_node_types.{head}: the head must be CPU-only")
    gpu_types = [
        name
        for name, t in types.items()
        if (t.get("resources") or {}).get("GPU", 0) >= 1 and GPU_INSTANCE.match(t["node_config"]["InstanceType"])
    ]
    if not gpu_types:
        errors.append(
            f"{label}: $.available_node_types: no GPU worker type (resources.GPU >= 1 on a "
            f"{GPU_INSTANCE.pattern} instance)"
        )
    for name, t in types.items():
        if t["min_workers"] > t["max_workers"]:
            errors.append(f"{label}: $.available_node_types.{name}: min_workers > max_workers")
    return errors


def validate_file(path: Path) -> list[str]:
    """Errors of every document in a YAML file under cluster/, dispatched by its role."""
    path = Path(path)
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    except yaml.YAMLError as exc:
        return [f"{path.name}: does not parse as YAML: {exc}"]
    if not docs:
        return [f"{path.name}: holds no YAML document"]
    if path.name.startswith("runtime_env"):
        return [e for d in docs for e in validate_runtime_env(d, path.name)]
    if path.parent.name == "aws":
        return [e for d in docs for e in validate_launcher(d, path.name)]
    return [f"{path.name}: {e}" for d in docs for e in validate_manifest(d)]


def manifest_files() -> list[Path]:
    return sorted(p for p in HERE.rglob("*.y*ml") if p.suffix in {".yaml", ".yml"})


def main(argv: list[str] | None = None) -> int:
    paths = [Path(a) for a in (argv if argv is not None else sys.argv[1:])] or manifest_files()
    errors = [e for p in paths for e in validate_file(p)]
    for e in errors:
        print(e, file=sys.stderr)
    print(f"{len(paths)} files, {len(errors)} errors")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())

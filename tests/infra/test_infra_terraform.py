"""Terraform for the artifacts bucket and the Ray pods' IAM role.

Always: a static check of the HCL (python-hcl2) for the bucket's safety settings and the IAM
policy's prefixes. When a terraform binary is on PATH: `terraform fmt -check`, and when the AWS
provider is in a local filesystem mirror (no registry is reachable here), `init -backend=false`
and `validate`; otherwise those tests skip and say why."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

hcl2 = pytest.importorskip("hcl2", reason="python-hcl2 not installed")

ROOT = Path(__file__).resolve().parents[2]
TF = ROOT / "infra" / "terraform"
MIRROR = Path(os.environ.get("BATON_TF_PLUGIN_MIRROR", "/opt/tf-plugins"))
TERRAFORM = shutil.which("terraform")


def _unq(v):
    return v.strip('"') if isinstance(v, str) else v


def _blocks(kind: str) -> dict[tuple[str, str], dict]:
    out = {}
    for f in sorted(TF.glob("*.tf")):
        for entry in hcl2.loads(f.read_text()).get(kind, []):
            for rtype, named in entry.items():
                for name, body in named.items():
                    out[(_unq(rtype), _unq(name))] = body
    return out


RES = _blocks("resource")
DATA = _blocks("data")


def _one(kind: str) -> dict:
    found = [b for (t, _), b in RES.items() if t == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def test_bucket_safety_settings():
    assert _unq(_one("aws_s3_bucket_versioning")["versioning_configuration"][0]["status"]) == "Enabled"
    sse = _one("aws_s3_bucket_server_side_encryption_configuration")["rule"][0]
    algo = sse["apply_server_side_encryption_by_default"][0]["sse_algorithm"]
    assert "AES256" in algo and "aws:kms" in algo
    pab = _one("aws_s3_bucket_public_access_block")
    for k in ("block_public_acls", "block_public_policy", "ignore_public_acls", "restrict_public_buckets"):
        assert pab[k] is True, k
    assert _unq(_one("aws_s3_bucket_ownership_controls")["rule"][0]["object_ownership"]) == "BucketOwnerEnforced"


def test_lifecycle_expires_runs_and_aborts_multipart():
    rules = _one("aws_s3_bucket_lifecycle_configuration")["rule"]
    runs = [r for r in rules if any(_unq(f.get("prefix")) == "runs/" for f in r.get("filter", []))]
    assert runs and runs[0]["expiration"][0]["days"] == "${var.runs_expiration_days}"
    aborts = [r for r in rules if "abort_incomplete_multipart_upload" in r]
    assert aborts and aborts[0]["abort_incomplete_multipart_upload"][0]["days_after_initiation"] == 7
    variables = {k: v for f in TF.glob("variables.tf") for e in hcl2.loads(f.read_text())["variable"] for k, v in e.items()}
    assert "runs_expiration_days" in {_unq(k) for k in variables}


def _statements() -> dict[str, dict]:
    doc = DATA[("aws_iam_policy_document", "ray_s3")]
    return {_unq(s["sid"]): s for s in doc["statement"]}


def test_iam_writes_only_under_runs_and_history():
    st = _statements()
    writes = [s for s in st.values() if any(_unq(a).startswith(("s3:Put", "s3:Delete")) for a in s["actions"])]
    assert writes
    for s in writes:
        for r in s["resources"]:
            assert re.fullmatch(r'"\$\{local\.bucket\}/(runs|history)/\*"', r), r
    for s in st.values():
        assert all(_unq(a) != "s3:*" and _unq(a) != "*" for a in s["actions"])
        assert all(_unq(r) != "*" for r in s.get("resources", []))


def test_iam_reads_inputs_and_lists_only_named_prefixes():
    st = _statements()
    reads = {re.sub(r'^"\$\{local\.bucket\}/|\*"$', "", r) for r in st["ReadInputsAndResults"]["resources"]}
    assert {"traffic/", "labels/"} <= reads
    lst = st["ListOwnPrefixes"]
    assert [_unq(a) for a in lst["actions"]] == ["s3:ListBucket"]
    cond = lst["condition"][0]
    assert _unq(cond["variable"]) == "s3:prefix"
    assert all(re.fullmatch(r"(traffic|labels|configs|code|runs|history)/\*?", _unq(v)) for v in cond["values"])


def test_irsa_trust_is_limited_to_one_service_account():
    assume = DATA[("aws_iam_policy_document", "assume")]
    irsa = next(s for s in assume["statement"] if _unq(s["sid"]) == "IRSA")
    assert irsa["principals"][0]["identifiers"] == ["${var.oidc_provider_arn}"]
    subs = [c for c in irsa["condition"] if _unq(c["variable"]).endswith(":sub")]
    assert subs and _unq(subs[0]["test"]) == "StringEquals"


def test_versions_pin_aws_provider():
    tf = hcl2.loads((TF / "versions.tf").read_text())["terraform"][0]
    aws = tf["required_providers"][0]["aws"]
    assert _unq(aws["source"]) == "hashicorp/aws"
    assert re.search(r">= 5\.0, < 7\.0|~> [56]", _unq(aws["version"]))


def _run(args, cwd, env=None):
    return subprocess.run(["terraform", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(TERRAFORM is None, reason="terraform CLI not on PATH (not installable from PyPI/Debian/npm here)")
def test_terraform_fmt():
    r = _run(["fmt", "-check", "-recursive", "-no-color"], TF)
    assert r.returncode == 0, f"terraform fmt would change: {r.stdout}{r.stderr}"


@pytest.fixture(scope="module")
def initialized(tmp_path_factory):
    if TERRAFORM is None:
        pytest.skip("terraform CLI not on PATH")
    if not (MIRROR / "registry.terraform.io" / "hashicorp" / "aws").is_dir():
        pytest.skip(f"no local provider mirror at {MIRROR}; the registry is unreachable, so validate cannot run")
    work = tmp_path_factory.mktemp("tf")
    for f in TF.glob("*.tf"):
        shutil.copy(f, work / f.name)
    rc = work / "terraform.rc"
    rc.write_text(
        'provider_installation {\n  filesystem_mirror {\n    path = "%s"\n  }\n}\n' % MIRROR
    )
    env = {**os.environ, "TF_CLI_CONFIG_FILE": str(rc), "TF_IN_AUTOMATION": "1", "CHECKPOINT_DISABLE": "1"}
    r = _run(["init", "-backend=false", "-input=false", "-no-color"], work, env)
    assert r.returncode == 0, r.stdout + r.stderr
    return work, env


def test_terraform_validate(initialized):
    work, env = initialized
    r = _run(["validate", "-no-color"], work, env)
    assert r.returncode == 0, r.stdout + r.stderr


def test_terraform_validate_can_fail(initialized):
    work, env = initialized
    broken = work / "zz_broken.tf"
    broken.write_text('resource "aws_s3_bucket_versioning" "broken" {\n  bucket = aws_s3_bucket.nope.id\n}\n')
    try:
        r = _run(["validate", "-no-color"], work, env)
    finally:
        broken.unlink()
    assert r.returncode != 0
    assert "aws_s3_bucket.nope" in r.stdout + r.stderr

# Least-privilege role for the Ray pods (IRSA) and for launcher EC2 nodes (instance profile):
# read traffic/, labels/, configs/ and code/; write only under runs/ and history/.

locals {
  oidc_host = replace(var.oidc_provider_url, "https://", "")
  bucket    = aws_s3_bucket.artifacts.arn
}

data "aws_iam_policy_document" "assume" {
  # Pods: only the named service account in the named namespace of this cluster.
  statement {
    sid     = "IRSA"
    effect  = "Allow"
    actions = ["sts:AssumeRoleWithWebIdentity"]

    principals {
      type        = "Federated"
      identifiers = [var.oidc_provider_arn]
    }

    condition {
      test     = "StringEquals"
      variable = "${local.oidc_host}:sub"
      values   = ["system:serviceaccount:${var.k8s_namespace}:${var.k8s_service_account}"]
    }

    condition {
      test     = "StringEquals"
      variable = "${local.oidc_host}:aud"
      values   = ["sts.amazonaws.com"]
    }
  }

  # EC2 nodes of the Ray cluster launcher (cluster/aws/baton-cluster.yaml).
  statement {
    sid     = "EC2"
    effect  = "Allow"
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "ray" {
  name               = var.role_name
  assume_role_policy = data.aws_iam_policy_document.assume.json
}

# Prefixes are spelled out (no for-expressions) so a reviewer, and tests/infra, can read them.
data "aws_iam_policy_document" "ray_s3" {
  statement {
    sid       = "ListOwnPrefixes"
    effect    = "Allow"
    actions   = ["s3:ListBucket"]
    resources = [local.bucket]

    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values = [
        "traffic/", "traffic/*",
        "labels/", "labels/*",
        "configs/", "configs/*",
        "code/", "code/*",
        "runs/", "runs/*",
        "history/", "history/*",
      ]
    }
  }

  statement {
    sid     = "ReadInputsAndResults"
    effect  = "Allow"
    actions = ["s3:GetObject"]
    resources = [
      "${local.bucket}/traffic/*",
      "${local.bucket}/labels/*",
      "${local.bucket}/configs/*",
      "${local.bucket}/code/*",
      "${local.bucket}/runs/*",
      "${local.bucket}/history/*",
    ]
  }

  statement {
    sid    = "WriteResults"
    effect = "Allow"
    actions = [
      "s3:PutObject",
      "s3:DeleteObject",
      "s3:AbortMultipartUpload",
      "s3:ListMultipartUploadParts",
    ]
    resources = [
      "${local.bucket}/runs/*",
      "${local.bucket}/history/*",
    ]
  }

  dynamic "statement" {
    for_each = var.kms_key_arn == null ? [] : [var.kms_key_arn]
    content {
      sid       = "UseBucketKey"
      effect    = "Allow"
      actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
      resources = [statement.value]
    }
  }
}

resource "aws_iam_role_policy" "ray_s3" {
  name   = "baton-artifacts"
  role   = aws_iam_role.ray.id
  policy = data.aws_iam_policy_document.ray_s3.json
}

resource "aws_iam_instance_profile" "ray" {
  name = "baton-ray-node"
  role = aws_iam_role.ray.name
}

variable "region" {
  description = "AWS region of the bucket and the role."
  type        = string
  default     = "us-east-1"
}

variable "bucket_name" {
  description = "Name of the Baton artifacts bucket (globally unique)."
  type        = string
}

variable "kms_key_arn" {
  description = "KMS key for default SSE-KMS encryption; null uses SSE-S3 (AES256)."
  type        = string
  default     = null
}

variable "runs_expiration_days" {
  description = "Objects under runs/ (responses, scores, intermediate tables) expire after this many days. history/ and decisions are kept."
  type        = number
  default     = 90

  validation {
    condition     = var.runs_expiration_days >= 1
    error_message = "runs_expiration_days must be at least 1."
  }
}

variable "noncurrent_version_expiration_days" {
  description = "Old (noncurrent) object versions are removed after this many days."
  type        = number
  default     = 30
}

variable "oidc_provider_arn" {
  description = "ARN of the EKS cluster's IAM OIDC provider, e.g. arn:aws:iam::111122223333:oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/EXAMPLE."
  type        = string
}

variable "oidc_provider_url" {
  description = "Issuer URL of the EKS cluster's OIDC provider, with or without https://."
  type        = string
}

variable "k8s_namespace" {
  description = "Kubernetes namespace of the Ray pods."
  type        = string
  default     = "baton"
}

variable "k8s_service_account" {
  description = "Kubernetes service account of the Ray pods (cluster/serviceaccount.yaml)."
  type        = string
  default     = "baton-ray"
}

variable "role_name" {
  description = "Name of the IAM role assumed by the Ray pods (IRSA) and by launcher EC2 nodes."
  type        = string
  default     = "baton-ray"
}

variable "tags" {
  description = "Tags applied to every resource."
  type        = map(string)
  default     = { project = "baton" }
}

output "bucket_name" {
  description = "Artifacts bucket (BATON_BUCKET in cluster/ manifests)."
  value       = aws_s3_bucket.artifacts.bucket
}

output "bucket_arn" {
  description = "ARN of the artifacts bucket."
  value       = aws_s3_bucket.artifacts.arn
}

output "ray_role_arn" {
  description = "IAM role for the eks.amazonaws.com/role-arn annotation of the baton-ray service account."
  value       = aws_iam_role.ray.arn
}

output "instance_profile_name" {
  description = "Instance profile for Ray cluster launcher nodes (cluster/aws/baton-cluster.yaml)."
  value       = aws_iam_instance_profile.ray.name
}

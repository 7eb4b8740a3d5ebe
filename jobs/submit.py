"""`baton submit`: submit a Baton job to a Ray cluster through Ray's JobSubmissionClient and follow its logs.

The same as `ray job submit --working-dir . -- python -m jobs.<job> --config URI`, plus waiting for the end and
an exit code: 0 when the job succeeded, 1 when it failed or was stopped.
"""

from __future__ import annotations

import argparse
import sys
import time

from jobs.errors import EXIT_BAD_INPUT, EXIT_FAILURE, EXIT_OK, BatonError

JOBS = ("migrate", "replay", "score", "nightly")
# Never ship local environments, stores or caches to the cluster.
EXCLUDES = [".venv", "baton-store", ".git", "**/__pycache__", ".pytest_cache", "*.egg-info"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--address", required=True, help="Ray dashboard address, e.g. http://127.0.0.1:8265")
    parser.add_argument("--config", required=True, help="run config URI as the cluster sees it (s3://... in production)")
    parser.add_argument("--job", choices=JOBS, default="migrate", help="entrypoint module jobs.<job>")
    parser.add_argument("--working-dir", default=".", help="code shipped with the job (default: this folder)")
    parser.add_argument("--submission-id", default=None, help="job id (default: chosen by Ray)")
    parser.add_argument("--extra-args", default="", help="more arguments for the entrypoint, e.g. '--date 2026-11-24'")
    parser.add_argument("--no-follow", action="store_true", help="return after submitting; print the job id")
    parser.add_argument("--timeout", type=float, default=None, help="stop following after this many seconds")


def entrypoint(job: str, config: str, extra: str = "") -> str:
    return f"python -m jobs.{job} --config {config} {extra}".strip()


def main(args: argparse.Namespace) -> int:
    from ray.job_submission import JobStatus, JobSubmissionClient

    try:
        client = JobSubmissionClient(args.address)
    except Exception as exc:  # noqa: BLE001 - connection problems become one clear line
        raise BatonError(f"cannot reach the Ray cluster at {args.address}: {type(exc).__name__}: {exc}") from None
    job_id = client.submit_job(
        entrypoint=entrypoint(args.job, args.config, args.extra_args),
        submission_id=args.submission_id,
        runtime_env={"working_dir": args.working_dir, "excludes": EXCLUDES},
    )
    print(f"submitted {job_id}", flush=True)
    if args.no_follow:
        return EXIT_OK
    status = follow(client, job_id, args.timeout)
    print(f"job {job_id}: {status}", flush=True)
    if status == JobStatus.SUCCEEDED:
        return EXIT_OK
    return EXIT_FAILURE if status in (JobStatus.FAILED, JobStatus.STOPPED) else EXIT_BAD_INPUT


def follow(client, job_id: str, timeout: float | None = None, poll_s: float = 1.0):
    """Print new log lines until the job ends (or the timeout passes); returns the last status."""
    from ray.job_submission import JobStatus

    printed = 0
    started = time.monotonic()
    while True:
        status = client.get_job_status(job_id)
        logs = client.get_job_logs(job_id)
        if len(logs) > printed:
            sys.stdout.write(logs[printed:])
            sys.stdout.flush()
            printed = len(logs)
        if status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
            return status
        if timeout is not None and time.monotonic() - started > timeout:
            return status
        time.sleep(poll_s)


if __name__ == "__main__":
    from jobs.cli import module_entry

    sys.exit(module_entry("jobs.submit"))

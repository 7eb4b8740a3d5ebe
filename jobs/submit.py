"""`baton submit`: submit a Baton job to a Ray cluster through Ray's JobSubmissionClient and follow its logs.

The same as `ray job submit --working-dir . -- python -m jobs.<job> --config URI`, plus waiting for the end and
an exit code a CI script can act on: the job driver's own exit code (0 ok, 1 unexpected failure, 2 bad input,
3 decision gate, 4 storage; Ray's ``JobDetails.driver_exit_code``), 1 when the job was stopped or could not
start, and 5 (``EXIT_STILL_RUNNING``) when ``--timeout`` ended the wait while the job still runs.

The job's runtime environment (Ray ``runtime_env``) comes from ``--working-dir``, ``--pip``, ``--py-executable``
and ``--env-var NAME``; the last forwards this machine's value of NAME without ever printing it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from jobs.errors import EXIT_BAD_INPUT, EXIT_FAILURE, EXIT_GATE, EXIT_OK, EXIT_STILL_RUNNING, EXIT_STORAGE, BatonError

JOBS = ("migrate", "replay", "score", "nightly")
# Never ship local environments, stores or caches to the cluster.
EXCLUDES = [".venv", "baton-store", ".git", "**/__pycache__", ".pytest_cache", "*.egg-info"]
# Driver exit codes that are Baton's contract (jobs.errors): passed through as they are.
DRIVER_CODES = {EXIT_FAILURE: "unexpected failure", EXIT_BAD_INPUT: "bad input", EXIT_GATE: "decision gate failed",
                EXIT_STORAGE: "storage unreachable or denied"}

EPILOG = """exit codes: the job driver's own (0 success; 1 unexpected failure; 2 bad input; 3 decision gate
failed; 4 storage unreachable or denied); 1 also when the job was stopped, could not start, or its driver died
with another code; 5 when --timeout ended the wait while the job still runs (follow it with `ray job logs
--follow ID`, stop it with `ray job stop ID`)."""


class ArgumentError(BatonError):
    """A submit argument cannot be honoured (e.g. --env-var names a variable that is not set)."""

    exit_code = EXIT_BAD_INPUT


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EPILOG
    parser.add_argument("--address", required=True, help="Ray dashboard address, e.g. http://127.0.0.1:8265")
    parser.add_argument("--config", required=True, help="run config URI as the cluster sees it (s3://... in production)")
    parser.add_argument("--job", choices=JOBS, default="migrate", help="entrypoint module jobs.<job>")
    parser.add_argument("--working-dir", default=".", help="code shipped with the job (default: this folder)")
    parser.add_argument("--pip", action="append", default=[], metavar="REQUIREMENT",
                        help="a pip requirement installed for the job (repeatable); a path to a requirements file "
                             "(ending in .txt) adds its lines")
    parser.add_argument("--py-executable", default=None, metavar="PATH",
                        help="Python interpreter (path or command) that runs the job's driver and Ray workers")
    parser.add_argument("--env-var", action="append", default=[], metavar="NAME",
                        help="forward this machine's value of environment variable NAME to the job (repeatable); "
                             "the value is never printed, but Ray keeps it in the job's runtime_env, which anyone "
                             "with access to the cluster's job API can read")
    parser.add_argument("--submission-id", default=None, help="job id (default: chosen by Ray)")
    parser.add_argument("--extra-args", default="", help="more arguments for the entrypoint, e.g. '--date 2026-11-24'")
    parser.add_argument("--no-follow", action="store_true", help="return after submitting; print the job id")
    parser.add_argument("--timeout", type=float, default=None,
                        help=f"stop waiting after this many seconds (exit {EXIT_STILL_RUNNING}; the job goes on)")


def entrypoint(job: str, config: str, extra: str = "", python: str | None = None) -> str:
    return f"{python or 'python'} -m jobs.{job} --config {config} {extra}".strip()


def runtime_env(args: argparse.Namespace, environ: dict[str, str] | None = None) -> dict:
    """Ray runtime_env of the job from the arguments; --env-var values are read from ``environ`` (os.environ)."""
    environ = os.environ if environ is None else environ
    env: dict = {"working_dir": args.working_dir, "excludes": EXCLUDES}
    pip: list[str] = []
    for item in args.pip:
        if item.endswith(".txt") and os.path.isfile(item):
            with open(item, encoding="utf-8") as fh:
                pip.extend(line.strip() for line in fh if line.strip() and not line.lstrip().startswith("#"))
        else:
            pip.append(item)
    if pip:
        env["pip"] = pip
    if args.py_executable:
        env["py_executable"] = args.py_executable
    missing = [name for name in args.env_var if name not in environ]
    if missing:
        raise ArgumentError(f"--env-var {missing[0]}: no such environment variable on this machine "
                         f"(set it here; its value is forwarded to the job)")
    if args.env_var:
        env["env_vars"] = {name: environ[name] for name in args.env_var}
    return env


def _mask(text: str, env: dict) -> str:
    for value in (env.get("env_vars") or {}).values():
        if value:
            text = text.replace(value, "***")
    return text


def main(args: argparse.Namespace) -> int:
    from ray.job_submission import JobStatus, JobSubmissionClient

    renv = runtime_env(args)
    try:
        client = JobSubmissionClient(args.address)
    except Exception as exc:  # noqa: BLE001 - connection problems become one clear line
        raise BatonError(f"cannot reach the Ray cluster at {args.address}: {type(exc).__name__}: {_mask(str(exc), renv)}") from None
    job_id = submit(client, args, renv)
    print(f"submitted {job_id}", flush=True)
    if args.no_follow:
        return EXIT_OK
    status = follow(client, job_id, args.timeout)
    if status not in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
        print(f"baton: stopped waiting after {args.timeout:g} s; job {job_id} is still {status} on the cluster.\n"
              f"  follow it: ray job logs --address {args.address} --follow {job_id}\n"
              f"  stop it:   ray job stop --address {args.address} {job_id}", file=sys.stderr, flush=True)
        return EXIT_STILL_RUNNING
    return outcome(job_id, client.get_job_info(job_id))


def submit(client, args: argparse.Namespace, renv: dict, agent_wait_s: float = 60.0) -> str:
    """Submit the job; a head that answers before its job agent is up ("No available agent") is asked again."""
    deadline = time.monotonic() + agent_wait_s
    while True:
        try:
            return client.submit_job(entrypoint=entrypoint(args.job, args.config, args.extra_args, args.py_executable),
                                     submission_id=args.submission_id, runtime_env=renv)
        except Exception as exc:  # noqa: BLE001 - Ray's message, without forwarded values
            if "No available agent" in str(exc) and time.monotonic() < deadline:
                time.sleep(2)
                continue
            raise BatonError(f"{args.address}: the job was not submitted: {type(exc).__name__}: "
                             f"{_mask(str(exc), renv)[:500]}") from None


def outcome(job_id: str, info) -> int:
    """Print the job's end and return its exit code (see the module docstring)."""
    from ray.job_submission import JobStatus

    code = info.driver_exit_code
    if info.status == JobStatus.SUCCEEDED:
        print(f"job {job_id}: SUCCEEDED", flush=True)
        return EXIT_OK
    if info.status == JobStatus.STOPPED:
        print(f"job {job_id}: STOPPED (exit {EXIT_FAILURE})", flush=True)
        return EXIT_FAILURE
    if code in DRIVER_CODES:
        print(f"job {job_id}: FAILED, driver exit code {code}: {DRIVER_CODES[code]}", flush=True)
        return code
    # The driver died another way (a signal, an OOM kill) or never started (runtime_env setup, entrypoint).
    why = f"driver exit code {code}" if code is not None else (info.error_type or "the driver did not start")
    last = (info.message or "").strip().splitlines()
    print(f"job {job_id}: FAILED ({why}){': ' + last[0][:300] if last else ''}", flush=True)
    return EXIT_FAILURE


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
    from jobs.entry import module_entry

    sys.exit(module_entry("jobs.submit"))

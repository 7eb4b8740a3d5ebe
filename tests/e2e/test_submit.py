"""`baton submit` against a real `ray start --head` on loopback (one head for the e2e session): the job driver's own
exit code comes back, a --timeout says the job still runs (exit 5), and the runtime_env options reach the job.

The gate case uses a stand-in interpreter (--py-executable): a shell script that runs the real Python for Ray's
own workers and the job supervisor, and ends a `jobs.migrate` driver the way a failed decision gate does (exit 3)
once it has checked the forwarded variable. A real gate needs a whole calibrated run (minutes of PyMC).
"""

from __future__ import annotations

import stat
import subprocess
import sys

import pytest

from jobs.errors import EXIT_BAD_INPUT, EXIT_GATE, EXIT_STILL_RUNNING
from tests.e2e.conftest import REPO, VENV

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
SECRET = "forwarded-value-7f3a"


def _baton_submit(dashboard: str, env: dict, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "jobs.cli", "submit", "--address", dashboard, "--working-dir", str(REPO), *args]
    return subprocess.run(cmd, env={**env, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def stand_in_python(tmp_path_factory):
    path = tmp_path_factory.mktemp("py") / "python-gate"
    path.write_text(f"""#!/bin/sh
case "$*" in
  *"-m jobs.migrate"*)
    [ "$BATON_SUBMIT_TOKEN" = "{SECRET}" ] || {{ echo "token not forwarded"; exit 9; }}
    echo "stand-in driver: verdict reject"; exit {EXIT_GATE};;
  *"-m jobs.replay"*)
    echo "stand-in driver: still working"; exec sleep 120;;
esac
exec {VENV / 'bin' / 'python'} "$@"
""")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def test_driver_exit_code_bad_input_comes_back(ray_head, tmp_path):
    dashboard, env = ray_head
    absent = tmp_path / "absent.yaml"  # the real jobs.migrate driver: a missing local config is bad input
    proc = _baton_submit(dashboard, env, "--config", str(absent))
    assert proc.returncode == EXIT_BAD_INPUT, proc.stdout[-3000:] + proc.stderr
    assert "driver exit code 2: bad input" in proc.stdout
    assert f"{absent}: does not exist" in proc.stdout  # the driver's own message, from the job's logs


def test_gate_exit_code_env_var_and_interpreter_reach_the_job(ray_head, stand_in_python):
    dashboard, env = ray_head
    env = {**env, "BATON_SUBMIT_TOKEN": SECRET}
    proc = _baton_submit(dashboard, env, "--config", "s3://unused/run.yaml", "--py-executable", stand_in_python,
                         "--env-var", "BATON_SUBMIT_TOKEN")
    assert proc.returncode == EXIT_GATE, proc.stdout[-3000:] + proc.stderr
    assert "stand-in driver: verdict reject" in proc.stdout and "driver exit code 3: decision gate failed" in proc.stdout
    assert SECRET not in proc.stdout + proc.stderr


def test_timeout_says_the_job_still_runs_and_how_to_stop_it(ray_head, stand_in_python):
    from ray.job_submission import JobStatus, JobSubmissionClient

    dashboard, env = ray_head
    proc = _baton_submit(dashboard, env, "--job", "replay", "--config", "s3://unused/run.yaml", "--py-executable",
                         stand_in_python, "--submission-id", "baton-slow-1", "--timeout", "3")
    client = JobSubmissionClient(dashboard)
    try:
        assert proc.returncode == EXIT_STILL_RUNNING, proc.stdout[-3000:] + proc.stderr
        assert client.get_job_status("baton-slow-1") == JobStatus.RUNNING
        assert "job baton-slow-1 is still RUNNING" in proc.stderr
        assert f"ray job stop --address {dashboard} baton-slow-1" in proc.stderr
    finally:
        client.stop_job("baton-slow-1")


def test_missing_env_var_is_bad_input_before_submitting(ray_head):
    dashboard, env = ray_head
    env = {k: v for k, v in env.items() if k != "BATON_SUBMIT_ABSENT"}
    proc = _baton_submit(dashboard, env, "--config", "s3://unused/run.yaml", "--env-var", "BATON_SUBMIT_ABSENT",
                         timeout=120)
    assert proc.returncode == EXIT_BAD_INPUT
    assert "--env-var BATON_SUBMIT_ABSENT: no such environment variable" in proc.stderr
    assert "submitted" not in proc.stdout

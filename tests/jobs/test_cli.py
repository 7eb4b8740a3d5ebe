"""The `baton` CLI: --help everywhere, and exit codes scripts can rely on."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest
import yaml

from jobs.cli import COMMANDS, build_parser, main


def test_every_command_has_help(capsys):
    parser = build_parser()
    offered = set(parser._subparsers._group_actions[0].choices)
    assert {"validate", "run", "submit", "demo", "nightly"} <= offered
    for name in offered:
        with pytest.raises(SystemExit) as info:
            main([name, "--help"])
        assert info.value.code == 0
        assert "usage: baton " + name in capsys.readouterr().out
    assert offered <= set(COMMANDS)


def test_no_command_prints_help_and_exits_2(capsys):
    assert main([]) == 2
    assert "exit codes" in capsys.readouterr().out


def _config(tmp_path, **over):
    """A valid run config over small real files: traffic (one duplicate id), a recorded candidate, labels."""
    traffic = tmp_path / "traffic.jsonl"
    pd.DataFrame({"request_id": ["a", "b", "b"], "prompt": ["x", "y", "z"]}).to_json(traffic, orient="records", lines=True)
    recorded = tmp_path / "r.jsonl"
    pd.DataFrame({"request_id": ["a", "b"], "response": ["p", "q"]}).to_json(recorded, orient="records", lines=True)
    labels = tmp_path / "labels.csv"
    pd.DataFrame({"request_id": ["a", "b"], "model": ["c", "c"], "dimension": ["quality", "quality"],
                  "value": [1.0, 0.5]}).to_csv(labels, index=False)
    raw = {"run_id": "cli", "store": {"root": str(tmp_path / "store")}, "traffic": {"path": str(traffic)},
           "incumbent": {"name": "inc"}, "candidates": [{"name": "c", "kind": "recorded", "path": str(recorded)}],
           "labels": {"path": str(labels)},
           "decision": {"dimensions": [{"name": "quality", "kind": "pairwise"}]}}
    raw.update(over)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_validate_reports_quarantine_and_exit_codes(tmp_path, capsys):
    assert main(["validate", "--config", str(_config(tmp_path))]) == 0
    out = capsys.readouterr()
    assert '"traffic_rows_valid": 2' in out.out and '"traffic_rows_quarantined": 1' in out.out
    assert main(["validate", "--config", str(_config(tmp_path, decison={}))]) == 2
    assert "decison: unknown key (did you mean 'decision'?)" in capsys.readouterr().err


def test_missing_bucket_exits_4(tmp_path, s3_bucket, capsys):
    endpoint, _ = s3_bucket
    path = _config(tmp_path, store={"root": "s3://absent-bucket/x", "endpoint_url": endpoint})
    assert main(["validate", "--config", str(path)]) == 4
    assert "s3://absent-bucket: bucket does not exist" in capsys.readouterr().err


def test_console_script_and_module_entry(tmp_path):
    exe = [sys.executable, "-m", "jobs.validate", "--config", str(tmp_path / "absent.yaml")]
    proc = subprocess.run(exe, capture_output=True, text=True, timeout=120)
    # A local file that is not there is bad input (2), not an unreachable store (4).
    assert proc.returncode == 2, proc.stderr
    assert "absent.yaml: does not exist" in proc.stderr


def test_missing_local_input_files_exit_2_naming_the_file(tmp_path, capsys):
    absent = tmp_path / "nowhere" / "traffic.jsonl"
    assert main(["validate", "--config", str(_config(tmp_path, traffic={"path": str(absent)}))]) == 2
    assert f"{absent}: does not exist" in capsys.readouterr().err
    # The labels of a run: read by the pipeline's labels stage, before the calibration spends compute.
    from jobs.config import load_config
    from jobs.errors import EXIT_BAD_INPUT, BatonError
    from jobs.labels import run as import_labels
    from jobs.store import RunStore

    cfg = load_config(str(_config(tmp_path, labels={"path": str(tmp_path / "absent-labels.csv")})))
    with pytest.raises(BatonError, match="absent-labels.csv: does not exist") as info:
        import_labels(cfg, RunStore(cfg.store, cfg.run_id))
    assert info.value.exit_code == EXIT_BAD_INPUT


def test_submit_runtime_env_options(tmp_path):
    from jobs.errors import EXIT_BAD_INPUT, BatonError
    from jobs.submit import entrypoint, runtime_env

    reqs = tmp_path / "requirements.txt"
    reqs.write_text("# pinned for the cluster\nvllm==0.32.0\n\nhttpx>=0.28\n")
    parser = build_parser()
    args = parser.parse_args(["submit", "--address", "http://127.0.0.1:1", "--config", "s3://b/run.yaml",
                              "--pip", "ppi-python==0.2.3", "--pip", str(reqs), "--py-executable", "/opt/py/bin/python",
                              "--env-var", "OPENAI_API_KEY", "--env-var", "HF_TOKEN", "--working-dir", "/src/baton"])
    env = runtime_env(args, {"OPENAI_API_KEY": "sk-1", "HF_TOKEN": "hf-2", "OTHER": "x"})
    assert env["working_dir"] == "/src/baton" and ".venv" in env["excludes"]
    assert env["pip"] == ["ppi-python==0.2.3", "vllm==0.32.0", "httpx>=0.28"]
    assert env["py_executable"] == "/opt/py/bin/python"
    assert env["env_vars"] == {"OPENAI_API_KEY": "sk-1", "HF_TOKEN": "hf-2"}  # only the names asked for
    assert entrypoint("migrate", "s3://b/run.yaml", "", "/opt/py/bin/python").startswith("/opt/py/bin/python -m jobs.migrate")
    with pytest.raises(BatonError, match="--env-var HF_TOKEN: no such environment variable") as info:
        runtime_env(args, {"OPENAI_API_KEY": "sk-1"})
    assert info.value.exit_code == EXIT_BAD_INPUT and "sk-1" not in str(info.value)


# -- fail before compute: each check refuses with exit 2 in `baton validate` and at the start of `baton run` --------
def _refused(tmp_path, capsys, path, *needles, extra=()):
    """`baton validate` and `baton run` both exit 2 naming the problem; the run computed nothing."""
    for command in ("validate", "run"):
        assert main([command, "--config", str(path), *extra]) == 2, command
        err = capsys.readouterr().err
        for needle in needles:
            assert needle in err, (command, err)
        assert "Traceback" not in err
    store = tmp_path / "store" / "runs" / "cli"
    assert not (store / "manifest.json").exists() and not (store / "traffic").exists()


def test_margin_outside_the_scale_is_refused_before_compute(tmp_path, capsys):
    path = _config(tmp_path, decision={"dimensions": [{"name": "quality", "kind": "pairwise"}], "margin": 5.0})
    _refused(tmp_path, capsys, path, "decision.margin", "below 0.5 for pairwise dimension 'quality'")


def test_missing_input_files_are_refused_naming_the_key(tmp_path, capsys):
    path = _config(tmp_path)
    raw = yaml.safe_load(path.read_text())
    raw["labels"]["path"] = str(tmp_path / "absent-labels.csv")
    raw["recorded_scores"] = [str(tmp_path / "absent-scores.csv")]
    raw["candidates"][0]["path"] = str(tmp_path / "absent-rec.jsonl")
    path.write_text(yaml.safe_dump(raw))
    _refused(tmp_path, capsys, path, "not ready to run (3 problem(s)", "labels.path: ", "absent-labels.csv: does not exist",
             "recorded_scores.0: ", "absent-scores.csv", "candidates.0.path: ", "absent-rec.jsonl")
    raw["traffic"]["path"] = str(tmp_path / "absent-traffic")
    path.write_text(yaml.safe_dump(raw))
    _refused(tmp_path, capsys, path, "traffic.path: ", "absent-traffic: does not exist")


def test_no_labels_is_refused_unless_asked_for(tmp_path, capsys):
    path = _config(tmp_path, labels={})
    _refused(tmp_path, capsys, path, "labels: no human labels", "labels.mode: none", "--no-labels")
    assert main(["validate", "--config", str(path), "--no-labels"]) == 0
    assert main(["validate", "--config", str(_config(tmp_path, labels={"mode": "none"}))]) == 0


def test_labels_for_another_dimension_are_refused(tmp_path, capsys):
    path = _config(tmp_path, decision={"dimensions": [{"name": "correctness", "kind": "binary"}]})
    _refused(tmp_path, capsys, path, "decision.dimensions.0.name: no label rows with dimension 'correctness'")


def test_ordinal_margin_is_checked_against_the_labels_scale(tmp_path, capsys):
    path = _config(tmp_path, decision={"dimensions": [{"name": "quality", "kind": "ordinal"}], "margin": 0.5})
    _refused(tmp_path, capsys, path, "decision.margin: 0.5 must be below the range of ordinal dimension 'quality'")


def test_unset_api_key_env_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("BATON_UNSET_KEY_FOR_TEST", raising=False)
    path = _config(tmp_path)
    raw = yaml.safe_load(path.read_text())
    raw["candidates"].append({"name": "api", "kind": "openai", "model": "m", "base_url": "http://127.0.0.1:9/v1",
                              "api_key_env": "BATON_UNSET_KEY_FOR_TEST"})
    path.write_text(yaml.safe_dump(raw))
    _refused(tmp_path, capsys, path, "candidates.1.api_key_env: environment variable BATON_UNSET_KEY_FOR_TEST is not set")
    monkeypatch.setenv("BATON_UNSET_KEY_FOR_TEST", "x")
    assert main(["validate", "--config", str(path)]) == 0


def test_relative_paths_are_refused_under_ray_job_submit(tmp_path, capsys, monkeypatch):
    """A `ray job submit` entrypoint runs in Ray's unpacked copy of the code
    (/tmp/ray/session_*/runtime_resources/working_dir_files/_ray_pkg_*) with the job config in
    RAY_JOB_CONFIG_JSON_ENV_VAR (ray/dashboard/modules/job/job_supervisor.py): both are set up here as Ray does,
    the real submission is in tests/e2e."""
    work = tmp_path / "runtime_resources" / "working_dir_files" / "_ray_pkg_0123abcd"
    work.mkdir(parents=True)
    path = _config(tmp_path, store={"root": "./baton-store"})
    monkeypatch.chdir(work)
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", '{"runtime_env": {"working_dir": "gcs://_ray_pkg_0123abcd.zip"}}')
    for command in ("validate", "run"):
        assert main([command, "--config", str(path)]) == 2
        err = capsys.readouterr().err
        assert "store.root: relative path './baton-store' under `ray job submit`" in err
        assert "use an absolute path or s3://" in err
    assert not (work / "baton-store").exists()
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR")
    monkeypatch.chdir(tmp_path)
    assert main(["validate", "--config", str(path)]) == 0  # outside a Ray job a relative root is fine


@pytest.mark.slow
def test_no_labels_run_stops_after_scoring_and_says_what_next(tmp_path, capsys):
    """`baton run --no-labels` replays and scores, then stops before the decision with the next steps (exit 0);
    with the gate asked for, no decision passes it (exit 3)."""
    import ray

    from jobs.store import RunStore

    path = _config(tmp_path, labels={}, scoring={"embeddings": {"enabled": False}},
                   execution={"num_cpus": 2, "shard_rows": 50})
    try:
        assert main(["run", "--config", str(path), "--no-labels", "--no-progress"]) == 0
        out = capsys.readouterr().out
        assert main(["run", "--config", str(path), "--no-labels", "--no-progress", "--fail-unless-migrate"]) == 3
    finally:
        ray.shutdown()
    assert "stopped before the decision because it has no human labels" in out
    assert f"baton labels export --config {path} --out LABEL_DIR" in out and f"baton run --config {path}" in out
    from jobs.config import load_config

    store = RunStore(load_config(str(path)).store, "cli")
    assert store.count_rows("scores") > 0 and store.count_rows("labels") == 0
    assert not store.has_document("decision", "decision.json")
    assert store.manifest()["stages"]["labels"] == {"mode": "none"}


def test_labels_without_their_columns_are_refused(tmp_path, capsys):
    path = _config(tmp_path)
    pd.DataFrame({"request_id": ["a"], "model": ["c"], "value": [1.0]}).to_csv(tmp_path / "labels.csv", index=False)
    _refused(tmp_path, capsys, path, "labels.path: ", "labels.csv", "dimension")

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
    traffic = tmp_path / "traffic.jsonl"
    pd.DataFrame({"request_id": ["a", "b", "b"], "prompt": ["x", "y", "z"]}).to_json(traffic, orient="records", lines=True)
    raw = {"run_id": "cli", "store": {"root": str(tmp_path / "store")}, "traffic": {"path": str(traffic)},
           "incumbent": {"name": "inc"}, "candidates": [{"name": "c", "kind": "recorded", "path": "r.jsonl"}],
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
    from jobs.migrate import import_labels
    from jobs.store import RunStore

    cfg = load_config(str(_config(tmp_path, labels={"path": str(tmp_path / "labels.csv")})))
    with pytest.raises(BatonError, match="labels.csv: does not exist") as info:
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

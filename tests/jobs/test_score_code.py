"""Code tasks through `jobs.score` on the local Ray cluster: the traffic's `tests` survive the traffic contract,
the exec.* scorer runs in the scoring actors' sandboxes (hostile answers contained there too), and the scores
table holds its metrics."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pandas as pd

from jobs.config import parse_config
from calibration.report import render_report
from jobs.contracts import validate_traffic
from jobs.report import code_rates
from jobs.score import score
from jobs.store import RunStore, shard_id
from tests.support.sandbox import sandbox_pids

TASKS = Path(__file__).resolve().parents[2] / "demo" / "code_tasks" / "tasks.jsonl"


def test_traffic_contract_keeps_tests_and_quarantines_bad_ones():
    df = pd.DataFrame({"request_id": ["a", "b", "c"], "prompt": ["p", "p", "p"],
                       "tests": [["assert 1"], "def test_x():\n    pass\n", 42]})
    checked = validate_traffic(df, "traffic.jsonl")
    assert list(checked.valid["tests"]) == ['["assert 1"]', "def test_x():\n    pass\n"]
    q = checked.quarantine
    assert list(q["row"]) == [2] and list(q["field"]) == ["tests"] and "list of strings" in q["reason"].iat[0]


def _hostile(port: int) -> pd.DataFrame:
    """Rows whose candidate answer attacks the worker; the incumbent's answer to each is harmless."""
    answers = {
        "hostile-fork": "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass",
        "hostile-socket": f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2).sendall(b'x')",
        "hostile-loop": "while True:\n    pass",
        "hostile-memory": "x = []\nwhile True:\n    x.append(bytearray(10 ** 7))",
    }
    return pd.DataFrame({"request_id": list(answers), "prompt": "attack", "tests": [["pass"]] * len(answers),
                         "correct": "```python\nx = 1\n```",
                         "wrong": [f"```python\n{a}\n```" for a in answers.values()]})


def test_score_runs_code_tasks_on_ray(tmp_path, ray_cluster):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    listener.settimeout(0.5)
    before = sandbox_pids()
    tasks = pd.concat([pd.read_json(TASKS, lines=True), _hostile(listener.getsockname()[1])], ignore_index=True)
    traffic = validate_traffic(tasks[["request_id", "prompt", "tests"]].assign(response=tasks["correct"]),
                               str(TASKS)).valid
    # memory_mb 192, not the default 512: here, after a large benchmark, the VM's page faults grew slow and the
    # memory hog spent its 2 CPU-seconds (page zeroing counts) before reaching 512 MiB, so it ended as a timeout on
    # Ray (3 runs in a row, on this stop's code and on 93d8298's); at 192 MiB it meets the limit first (2 of 2).
    cfg = parse_config({
        "run_id": "code-test", "store": {"root": str(tmp_path / "store")},
        "traffic": {"path": "unused.parquet"}, "incumbent": {"name": "inc"},
        "candidates": [{"kind": "recorded", "name": "cand", "path": "unused.csv"}],
        "decision": {"dimensions": [{"name": "correctness", "kind": "binary"}]},
        "scoring": {"embeddings": {"enabled": False},
                    "code": {"enabled": True, "cpu_s": 2, "wall_s": 6, "parallel": 2, "memory_mb": 192}},
    })
    store = RunStore(cfg.store, cfg.run_id)
    store.write_shard("traffic", "traffic-000000", traffic)
    store.write_shard("responses", shard_id("cand", "traffic-000000"), pd.DataFrame({
        "request_id": tasks["request_id"], "model": "cand", "response": tasks["wrong"], "prompt_tokens": 5,
        "completion_tokens": 5, "latency_s": 0.1, "finish_reason": "stop", "attempts": 1, "error": None}))
    stats = score(cfg, store, progress=False)
    assert stats["shards_done"] == 2 and stats["exec_isolation"]
    time.sleep(0.5)
    try:
        conn, _ = listener.accept()
        arrived = True
        conn.close()
    except OSError:
        arrived = False
    listener.close()
    assert not arrived, "a sandboxed answer reached the worker's loopback"
    assert not sandbox_pids() - before, "processes of a hostile answer outlived its sandbox"
    scores = store.read_table("scores")
    wide = scores[scores["model"] == "cand"].pivot(index="request_id", columns="metric", values="value")
    passed = scores[scores["metric"] == "exec.pass"].pivot(index="request_id", columns="model", values="value")
    assert len(passed) == len(tasks)
    assert (passed["inc"] == 1).all() and (passed["cand"] == 0).all()
    assert wide.loc["hostile-fork", "exec.timeout"] == 1 and wide.loc["hostile-loop", "exec.timeout"] == 1
    memory_row = {k: v for k, v in wide.loc["hostile-memory"].to_dict().items() if k.startswith("exec") and v}
    assert wide.loc["hostile-memory", "exec.error_kind.resource"] == 1, memory_row
    assert wide.loc["hostile-socket", "exec.error_kind.error"] == 1
    rates = code_rates(store)  # the report's code section: raw pass rates per model
    assert rates["inc"]["pass"] == 1 and rates["inc"]["n"] == len(tasks) and rates["cand"]["pass"] == 0
    assert rates["cand"]["error_kinds"]["timeout"] > 0
    from tests.calibration.test_decision_schema import _example

    decision = _example()  # the documented decision.json, made this run's: one binary dimension of cand
    dim = decision["candidates"].pop("cand-a")["dimensions"]["quality"]
    dim.update(kind="binary", estimate=-0.4, interval=[-0.5, -0.3], verdict="reject")
    decision.update(incumbent="inc", verdicts={"cand": "more_labels"}, results=[], candidates={"cand": {
        "verdict": "more_labels", "reasons": [], "dimensions": {"correctness": dim}}})
    md, html = render_report(decision, {"code": rates})
    assert "## Code tasks" in md and "| cand | correctness | -0.400 | [-0.500, -0.300] | 0% | -1.000 |" in md and 'id="code-table"' in html


def test_preflight_names_a_bad_interpreter_before_compute(tmp_path):
    import pytest

    from jobs.errors import ConfigError
    from jobs.preflight import preflight

    cfg = parse_config({
        "run_id": "code-bad", "store": {"root": str(tmp_path / "store")}, "traffic": {"path": str(TASKS)},
        "incumbent": {"name": "inc"}, "candidates": [{"kind": "recorded", "name": "cand", "path": str(TASKS)}],
        "decision": {"dimensions": [{"name": "correctness", "kind": "binary"}]}, "labels": {"mode": "none"},
        "scoring": {"code": {"enabled": True, "interpreter": str(tmp_path / "no-python")}},
    })
    with pytest.raises(ConfigError, match=r"scoring.code.interpreter: '.*no-python' is not an executable file"):
        preflight(cfg, None)


def test_preflight_refuses_conversation_labels_without_conversations(tmp_path):
    """label_unit: conversation on traffic without conversation_id: exit 2 before any replay (docs/conversations.md)."""
    import pytest

    from jobs.errors import ConfigError
    from jobs.preflight import preflight

    cfg = parse_config({
        "run_id": "conv-bad", "store": {"root": str(tmp_path / "store")}, "traffic": {"path": str(TASKS)},
        "incumbent": {"name": "inc"}, "candidates": [{"kind": "recorded", "name": "cand", "path": str(TASKS)}],
        "decision": {"dimensions": [{"name": "goal", "kind": "binary", "label_unit": "conversation"}]},
        "labels": {"mode": "none"},
    })
    with pytest.raises(ConfigError, match=r"decision.dimensions.0.label_unit: 'conversation' needs a conversation_id "
                                          r"column in the traffic"):
        preflight(cfg, None)

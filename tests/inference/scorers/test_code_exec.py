"""Code tasks: the shipped tasks score as they should, and hostile answers stay inside the sandbox.

No mocks: every answer runs in the real sandbox (kernel namespaces where this machine allows them, else the
rlimits mode, which the hostile tests then cover only in part, as docs/code-tasks.md says)."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path

import pandas as pd
import pytest

from inference.scorers import MissingColumn
from inference.scorers.code_exec import EXEC_METRICS, CodeExec, extract_code, parse_tests
from inference.scorers.config import CodeExecConfig
from inference.scorers.sandbox import Limits, namespaces_available, resolve_interpreter, run_answer
from tests.support.sandbox import sandbox_pids

TASKS = Path(__file__).resolve().parents[3] / "demo" / "code_tasks" / "tasks.jsonl"
HOSTILE = Limits(cpu_s=1, memory_mb=256, file_mb=2, max_procs=8, wall_s=4)
NAMESPACES = namespaces_available(resolve_interpreter())
ISOLATIONS = ["namespace", "rlimits"] if NAMESPACES else ["rlimits"]


def _tasks() -> pd.DataFrame:
    return pd.read_json(TASKS, lines=True)


def _batch(tasks: pd.DataFrame, answer: str) -> pd.DataFrame:
    return pd.DataFrame({"request_id": tasks["request_id"], "model": answer, "response": tasks[answer],
                         "tests": tasks["tests"]})


def _wide(scores: pd.DataFrame) -> pd.DataFrame:
    return scores.pivot(index="request_id", columns="metric", values="value")


def test_shipped_tasks_correct_answers_pass_and_wrong_ones_fail():
    tasks = _tasks()
    assert len(tasks) >= 10
    scorer = CodeExec(CodeExecConfig(enabled=True, cpu_s=2, wall_s=6, parallel=2))
    right = _wide(scorer(_batch(tasks, "correct")))
    assert set(right.columns) == set(EXEC_METRICS)
    assert (right["exec.pass"] == 1).all(), right[right["exec.pass"] != 1]
    assert (right["exec.pass_fraction"] == 1).all() and (right["exec.timeout"] == 0).all()
    assert (right[[m for m in EXEC_METRICS if m.startswith("exec.error_kind.")]] == 0).all().all()
    wrong = _wide(scorer(_batch(tasks, "wrong")))
    assert (wrong["exec.pass"] == 0).all(), wrong[wrong["exec.pass"] != 0]
    assert (wrong["exec.pass_fraction"] < 1).all()
    kinds = wrong[[m for m in EXEC_METRICS if m.startswith("exec.error_kind.")]]
    assert (kinds.sum(axis=1) == 1).all()  # exactly one kind says why
    assert wrong.loc["code-004", "exec.timeout"] == 1  # the exponential fib runs out of time
    assert wrong.loc["code-001", "exec.error_kind.wrong"] == 1


def test_rows_without_tests_or_response_get_no_rows_and_bad_input_is_named():
    tasks = _tasks().head(3)
    batch = _batch(tasks, "correct")
    batch.loc[0, "response"] = None
    batch["tests"] = batch["tests"].astype(object)
    batch.at[1, "tests"] = None
    scorer = CodeExec(CodeExecConfig(enabled=True))
    out = scorer(batch)
    assert set(out["request_id"]) == {"code-003"}
    with pytest.raises(MissingColumn, match="tests"):
        scorer(batch.drop(columns=["tests"]))
    batch.at[2, "tests"] = 42
    with pytest.raises(ValueError, match=r"row 2 \(request_id 'code-003'\), field tests"):
        scorer(batch)


def test_extract_code_and_parse_tests():
    assert extract_code("Sure:\n```python\nx = 1\n```\nand\n```\ny = 2\n```") == "x = 1\n\n\ny = 2\n"
    assert extract_code("```bash\nls\n```\nx = 1") == "```bash\nls\n```\nx = 1"
    assert parse_tests('["assert 1", "assert 2"]') == ["assert 1", "assert 2"]
    assert parse_tests("def test_a():\n    assert 1\n") == ["def test_a():\n    assert 1\n"]
    assert parse_tests("") is None and parse_tests(None) is None


def test_syntax_error_and_no_code_are_their_own_kinds():
    batch = pd.DataFrame({"request_id": ["a", "b"], "model": "m", "response": ["```python\ndef f(:\n```", "```python\n```"],
                          "tests": [["assert f() == 1"], ["assert f() == 1"]]})
    wide = _wide(CodeExec(CodeExecConfig(enabled=True))(batch))
    assert wide.loc["a", "exec.error_kind.syntax"] == 1 and wide.loc["b", "exec.error_kind.no_code"] == 1


# --- hostile answers --------------------------------------------------------------------------------------------
def _run(answer: str, isolation: str, tests=("pass",), audit_hook: bool = True):
    before = sandbox_pids()
    started = time.monotonic()
    res = run_answer(answer, list(tests), HOSTILE, isolation, audit_hook=audit_hook)
    elapsed = time.monotonic() - started
    assert elapsed < HOSTILE.wall_s + 5, f"the wall timeout did not hold: {elapsed:.1f} s"
    time.sleep(0.2)
    assert not sandbox_pids() - before, "processes of the answer outlived its sandbox"
    return res


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_fork_bomb_is_contained(isolation):
    res = _run("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n", isolation)
    assert res.passed == 0 and res.timed_out


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_children_left_behind_die_with_the_harness(isolation):
    """The harness ends on its own (here at once, in CI once by its CPU limit in a fork bomb) while a child it forked
    sleeps on: the child is killed at once, not left holding the result pipe (and the worker waiting on it)."""
    res = _run("import os, time\nif os.fork() == 0:\n    time.sleep(60)\n    os._exit(0)\n", isolation)
    assert res.passed == 1 and not res.timed_out and res.wall_s < 3, res


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_unbounded_allocation_hits_the_memory_limit(isolation):
    res = _run("x = []\nwhile True:\n    x.append(bytearray(10 ** 7))\n", isolation)
    assert res.load_error == "resource", res


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_huge_file_write_hits_the_file_size_limit(isolation):
    res = _run("with open('big.bin', 'wb') as f:\n    while True:\n        f.write(b'x' * (1 << 20))\n", isolation)
    assert res.load_error == "resource", res


@pytest.mark.parametrize("isolation", ISOLATIONS)
@pytest.mark.parametrize("answer", ["while True:\n    pass\n", "import time\ntime.sleep(10 ** 6)\n"])
def test_never_returning_answers_time_out(isolation, answer):
    res = _run(answer, isolation)
    assert res.timed_out and res.passed == 0


@pytest.fixture
def listener():
    """A TCP listener on the worker's loopback: a connection from the sandbox must never arrive."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    srv.settimeout(0.2)
    arrived = []
    stop = threading.Event()

    def accept():
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            arrived.append(conn.recv(100))
            conn.close()

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield srv.getsockname()[1], arrived
    stop.set()
    t.join(timeout=2)
    srv.close()


_CONNECT = ("import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=2)\ns.sendall(b'escaped')\n")


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_socket_to_the_workers_loopback_never_arrives(isolation, listener):
    port, arrived = listener
    # control: the listener does take connections from outside the sandbox
    with socket.create_connection(("127.0.0.1", port), timeout=2) as c:
        c.sendall(b"control")
    time.sleep(0.5)
    assert arrived == [b"control"]
    res = _run(_CONNECT.format(port=port), isolation)
    time.sleep(0.5)
    assert res.load_error == "error" and arrived == [b"control"], (res, arrived)


@pytest.mark.skipif(not NAMESPACES, reason="no unprivileged namespaces on this machine")
def test_the_network_namespace_alone_blocks_the_socket(listener):
    """Without the audit hook (e.g. an answer that reached a raw syscall), the kernel still has no route out."""
    port, arrived = listener
    res = _run(_CONNECT.format(port=port), "namespace", audit_hook=False)
    time.sleep(0.5)
    assert res.load_error == "error" and arrived == [], (res, arrived)
    assert "Errno" in res.detail  # refused by the kernel, not by the hook


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_writes_outside_the_scratch_folder_do_not_land(isolation, tmp_path):
    target = tmp_path / "escaped.txt"
    answer = (f"import os\nfor p in [{str(target)!r}, {str(Path(__file__).parent / 'escaped.txt')!r}]:\n"
              "    try:\n        open(p, 'w').write('x')\n    except OSError:\n        pass\n")
    _run(answer, isolation)
    assert not target.exists() and not (Path(__file__).parent / "escaped.txt").exists()


@pytest.mark.skipif(not NAMESPACES, reason="no unprivileged namespaces on this machine")
def test_namespace_mode_keeps_tmp_private_and_kills_escaped_children(tmp_path):
    shared = f"/tmp/baton-escape-{uuid.uuid4().hex}"
    answer = ("import os, time\n"
              f"open({shared!r}, 'w').write('x')\n"
              "if os.fork() == 0:\n    os.setsid()\n    time.sleep(30)\n    os._exit(0)\n")
    res = _run(answer, "namespace", audit_hook=False)  # _run checks that the setsid child is gone
    assert res.loaded and not os.path.exists(shared)


def test_scratch_folders_are_removed(tmp_path):
    root = tmp_path / "scratch"
    root.mkdir()
    run_answer("open('left.txt', 'w').write('x')", ["pass"], HOSTILE, scratch_root=str(root))
    assert list(root.iterdir()) == []


def test_a_hostile_row_does_not_spoil_its_neighbours():
    tasks = _tasks().head(2)
    batch = _batch(tasks, "correct")
    hostile = pd.DataFrame({"request_id": ["bomb"], "model": "correct", "response": ["```python\nimport os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n```"],
                            "tests": [["pass"]]})
    cfg = CodeExecConfig(enabled=True, cpu_s=1, wall_s=3, max_procs=8)
    wide = _wide(CodeExec(cfg)(pd.concat([batch, hostile], ignore_index=True)))
    assert wide.loc["bomb", "exec.pass"] == 0 and wide.loc["bomb", "exec.timeout"] == 1
    assert (wide.loc[list(tasks["request_id"]), "exec.pass"] == 1).all()
    assert json.dumps(wide.to_dict())  # plain floats only


def test_isolation_namespace_refuses_to_fall_back():
    """A worker where the namespace probe fails (here: an interpreter that cannot run it) stops before any answer."""
    with pytest.raises(RuntimeError, match="isolation is 'namespace'"):
        CodeExec(CodeExecConfig(enabled=True, isolation="namespace", interpreter="/bin/false"))


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_a_long_answer_runs(isolation):
    """An answer longer than one command-line argument may be (128 KiB) still reaches the sandbox."""
    answer = "def f():\n    return 1\n" + "# padding\n" * 30000
    res = run_answer(answer, ["assert f() == 1"], HOSTILE, isolation)
    assert res.passed == 1, res

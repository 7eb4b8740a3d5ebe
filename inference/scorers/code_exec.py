"""Code tasks: a candidate's Python answer run against the tests its request carries, in a sandbox.

Metrics (docs/metrics.md, docs/code-tasks.md), absolute, for every row with a response and tests:
``exec.pass`` (1 when every test passed), ``exec.pass_fraction``, ``exec.timeout`` (1 when the wall clock or the
CPU limit ended it), and ``exec.error_kind.<kind>`` for each kind of ERROR_KINDS: 1 for the one kind that says why
the answer did not pass, 0 for the others (all 0 when it passed). The scores table's `value` is a float, so the
kind is one-hot rather than a string: each indicator is a metric the calibration can use like any other.
"""

from __future__ import annotations

import json
import os
import re
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd

from inference.scorers.base import long_form, require, text_series
from inference.scorers.config import CodeExecConfig
from inference.scorers.sandbox import ExecResult, Limits, namespaces_available, resolve_interpreter, run_answer

# Why an answer did not pass, most basic first: the first that applies is the row's kind.
ERROR_KINDS = ("no_code", "syntax", "error", "timeout", "resource", "wrong")
EXEC_METRICS = ["exec.pass", "exec.pass_fraction", "exec.timeout", *[f"exec.error_kind.{k}" for k in ERROR_KINDS]]
_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)```", re.DOTALL)


def extract_code(response: str) -> str:
    """The code of an answer: its fenced python (or unlabelled) blocks joined, else the whole text."""
    blocks = [body for lang, body in _FENCE.findall(response) if lang.lower() in ("", "python", "py", "python3")]
    return "\n\n".join(blocks) if blocks else response


def parse_tests(value: object) -> list[str] | None:
    """The tests of a row: a list of Python snippets, or one source string (a JSON list of strings counts as a list).

    A snippet is one test: it passes when it runs without raising; its ``test*`` functions, if it defines any, are
    called. None when the row carries no tests."""
    if value is None or isinstance(value, float) and np.isnan(value):
        return None
    if isinstance(value, (list, tuple, np.ndarray)):
        items = [str(v) for v in value]
        return items or None
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        if text.startswith("["):
            try:
                parsed = json.loads(text)
            except ValueError:
                parsed = None
            if isinstance(parsed, list) and all(isinstance(v, str) for v in parsed):
                return parsed or None
        return [value]
    raise ValueError(f"tests must be a string or a list of strings, got {type(value).__name__}")


def outcome(res: ExecResult) -> dict[str, float]:
    """One row's metrics from its sandbox result."""
    total = max(res.total, 1)
    passed = res.passed if res.loaded else 0
    all_pass = res.loaded and not res.timed_out and res.passed == res.total and res.total > 0
    kind = "" if all_pass else error_kind(res)
    out = {"exec.pass": float(all_pass), "exec.pass_fraction": passed / total, "exec.timeout": float(res.timed_out)}
    out.update({f"exec.error_kind.{k}": float(k == kind) for k in ERROR_KINDS})
    return out


def error_kind(res: ExecResult) -> str:
    if res.load_error is not None:
        return res.load_error if res.load_error in ERROR_KINDS else "error"
    if res.timed_out:
        return "timeout"
    failed = [k for k in res.test_kinds if k]
    if failed:
        return failed[0] if failed[0] in ERROR_KINDS else "error"
    if res.signal == 9:  # killed by the kernel at a hard limit
        return "resource"
    return "error"  # it died before reporting every test (a crash, an exit() in the answer)


def config_problems(config: CodeExecConfig) -> list[str]:
    """What would stop the sandbox on a machine like this one, as `key: problem` lines (for the driver's preflight)."""
    if not config.enabled:
        return []
    if config.interpreter and not (os.path.isfile(config.interpreter) and os.access(config.interpreter, os.X_OK)):
        return [f"scoring.code.interpreter: {config.interpreter!r} is not an executable file"]
    try:
        interp = resolve_interpreter(config.interpreter)
    except RuntimeError as exc:
        return [f"scoring.code.interpreter: {exc}"]
    if config.isolation == "namespace" and not namespaces_available(interp):
        return ["scoring.code.isolation: 'namespace' but unprivileged user namespaces do not work where the driver "
                "runs (docs/code-tasks.md); use 'auto' to fall back to 'rlimits'"]
    return []


class CodeExec:
    """Ray Data stage: the joined batch (with the traffic's `tests`) in, long-form exec.* score rows out."""

    required = ["request_id", "model", "response", "tests"]

    def __init__(self, config: CodeExecConfig | None = None):
        self.config = config or CodeExecConfig()
        c = self.config
        self.limits = Limits(cpu_s=c.cpu_s, memory_mb=c.memory_mb, file_mb=c.file_mb, max_procs=c.max_procs,
                             wall_s=c.wall_s)
        self.interpreter = resolve_interpreter(c.interpreter) if c.enabled else None
        if c.enabled and c.isolation == "namespace" and not namespaces_available(self.interpreter):
            raise RuntimeError("scoring.code.isolation is 'namespace' but unprivileged user namespaces do not work on "
                               "this worker (util-linux unshare, user.max_user_namespaces, a seccomp profile that "
                               "allows unshare); use 'auto' to fall back to 'rlimits' (docs/code-tasks.md)")
        self.last_results: list[ExecResult | None] = []
        self.isolations: set[str] = set()  # the sandbox modes that ran (namespace, rlimits), for the stage stats

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        require(batch, self.required, "code")
        if not self.config.enabled:
            return long_form(batch, {})
        # Every row's tests parse before any answer runs.
        tests = []
        for pos, value in enumerate(batch["tests"].tolist()):
            try:
                tests.append(parse_tests(value))
            except ValueError as exc:
                raise ValueError(f"code: row {pos} (request_id {batch['request_id'].iat[pos]!r}), field tests: {exc}") from None
        responses = text_series(batch, "response").tolist()
        jobs = [(pos, r, t) for pos, (r, t) in enumerate(zip(responses, tests)) if r is not None and t]
        results: list[ExecResult | None] = [None] * len(batch)
        with ThreadPoolExecutor(max_workers=self.config.parallel) as pool:
            for pos, res in zip([j[0] for j in jobs], pool.map(lambda j: self._run(j[1], j[2]), jobs)):
                results[pos] = res
        self.last_results = results
        self.isolations |= {r.isolation for r in results if r is not None and r.isolation}
        metrics = {m: np.full(len(batch), np.nan) for m in EXEC_METRICS}
        for pos, res in enumerate(results):
            if res is None:
                continue
            for m, v in outcome(res).items():
                metrics[m][pos] = v
        return long_form(batch, metrics)

    def _run(self, response: str, tests: list[str]) -> ExecResult:
        code = extract_code(response)
        if not code.strip():
            return ExecResult(total=len(tests), load_error="no_code", detail="the answer holds no code")
        return run_answer(code, tests, self.limits, self.config.isolation, self.interpreter,
                          scratch_root=self.config.scratch_root)

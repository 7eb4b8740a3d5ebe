"""The report's code-task section: raw pass rates per model beside each candidate's calibrated estimates.

``extras["code"]`` (from jobs/report.py): ``{model: {"n", "pass", "pass_fraction", "timeout", "error_kinds":
{kind: rate}}}``, the plain means of the exec.* metrics (docs/code-tasks.md). The pass rates are uncalibrated:
the decision's estimates are the calibrated figures; the table puts them side by side.
"""

from __future__ import annotations

from collections.abc import Mapping

from .render import Section, fiv, fnum, fpct
from .view import Candidate


def code_section(cands: list[Candidate], extras: Mapping, incumbent: str | None = None) -> Section | None:
    """None when the run scored no code tasks (the report then has no such section)."""
    code = extras.get("code") if isinstance(extras, Mapping) else None
    if not isinstance(code, Mapping) or not code:
        return None
    s = Section("code", "Code tasks")
    rows = []
    for model, r in code.items():
        kinds = r.get("error_kinds") or {}
        worst = max(kinds, key=kinds.get) if kinds and max(kinds.values()) > 0 else None
        rows.append([model, fnum(r.get("n"), 0), fpct(r.get("pass")), fpct(r.get("pass_fraction")),
                     fpct(r.get("timeout")), f"{worst} ({fpct(kinds[worst])})" if worst else "—"])
    s.table("code-table", ["model", "answers run", "pass", "tests passed", "timeout", "most common failure"], rows)
    inc = (code.get(incumbent) or {}).get("pass") if incumbent else None

    def diff(name):
        p = (code.get(name) or {}).get("pass")
        return fnum(p - inc) if p is not None and inc is not None else "—"

    calibrated = [[c.name, d.name, fnum(d.bayes.estimate if d.bayes else None), fiv(d.bayes.interval if d.bayes else None),
                   fpct((code.get(c.name) or {}).get("pass")), diff(c.name)] for c in cands for d in c.dims]
    if calibrated:
        s.table("code-vs-calibrated", ["candidate", "dimension", "calibrated estimate", "interval", "raw pass rate",
                                       "raw pass rate minus incumbent's"], calibrated)
    s.para("Pass rates are the plain means of exec.pass, exec.pass_fraction and exec.timeout over the answers "
           "that ran (docs/code-tasks.md); the calibrated estimates map them, with the other metrics, onto the human "
           "labels. A pass rate is not a verdict: the sandbox protects the workers, not the metric's honesty.")
    return s

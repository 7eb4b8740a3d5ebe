"""Turn a typed decision (calibration.schema.Decision, docs/decision-schema.md) and optional extras into plain rows.

Both the Markdown and the HTML renderer read these rows, so the two reports always carry the same
figures. The decision is validated before it gets here, so its fields are read as they are typed; a figure
that is empty (no draws, no segments, a baseline that could not be computed) becomes ``None`` and the renderers
print "not measured in this run" instead of failing. The extras are the run's other figures (jobs.report):

Shapes accepted for ``extras`` (all optional):

- ``run_id``: str.
- ``config_summary``: flat mapping ``{key: value}``.
- ``label_budget``: ``{candidate: {dimension: points}}`` where ``points`` is a list of
  ``{"n_labels": int, "interval_width": float, "source": "measured" | "projected"}`` (``source``
  defaults to measured), or ``{"points": [...], "source": ...}``.
- ``cost``: ``{stage: metrics}`` or ``{stage: {model: metrics}}`` or a list of rows
  ``{"stage", "model", **metrics}``; metrics are ``tokens_in``, ``tokens_out``, ``requests``,
  ``errors`` (``{kind: count}`` or an int), ``wall_s`` (the summed work time the figures were measured over),
  ``est_cost_usd``.
- ``calibration_table``: ``{metric: {statistic: value}}`` where a value is a number or
  ``{"mean" | "estimate": x, "interval": [lo, hi]}``; or a list of rows ``{"metric", ...}``.
- ``judge_bias``: ``{"position": {...}, "length": {...}}`` or ``{metric: {"position": ..., "length": ...}}``.
  position: ``p_a_wins_ab``, ``p_a_wins_ba`` (probability that response A wins when shown first /
  second), optional ``n``, ``interval_ab``, ``interval_ba``; length: ``correlation``, optional
  ``interval``, ``n``. Unknown keys are shown as they are.
- ``truth``: ``{candidate: {dimension: value | {"estimate": x, "interval": [lo, hi]}}}``.
- ``code``: per model pass rates (calibration.report.code).
- ``drift`` (nightly runs): ``{"day": "YYYY-MM-DD", "section": <decision.json's drift>, "view": [rows of
  calibration.drift.drift_view: date, series, candidate, name, value, ewma, center, lower, upper, alert]}``
  (calibration.report.drift.history_section).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from calibration.schema import Decision, DimensionResult, Verdict

VERDICTS = tuple(v.value for v in Verdict)
COST_KEYS = ("tokens_in", "tokens_out", "requests", "errors", "wall_s", "est_cost_usd")


def num(x: Any) -> float | None:
    """A finite float or None (bools, strings, NaN and inf are not figures)."""
    if isinstance(x, bool) or x is None:
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def interval(x: Any) -> tuple[float, float] | None:
    if not isinstance(x, (list, tuple)) or len(x) != 2:
        return None
    lo, hi = num(x[0]), num(x[1])
    if lo is None or hi is None:
        return None
    return (min(lo, hi), max(lo, hi))


def _mapping(x: Any) -> Mapping:
    return x if isinstance(x, Mapping) else {}


@dataclass
class Estimate:
    """One point estimate with an optional interval (a baseline, a segment, the truth)."""

    estimate: float | None
    interval: tuple[float, float] | None = None
    n: float | None = None
    method: str | None = None  # a baseline's estimator when it is not the default (e.g. "hajek")
    interval_population: tuple[float, float] | None = None  # for the traffic; ``interval`` is the scored requests'

    @classmethod
    def from_any(cls, x: Any) -> Estimate | None:
        if isinstance(x, Mapping):
            est = num(x.get("estimate", x.get("mean", x.get("value"))))
            iv = interval(x.get("interval"))
            if est is None and iv is None:
                return None
            method = x.get("method")
            return cls(est, iv, num(x.get("n")), method if isinstance(method, str) else None,
                       interval(x.get("interval_population")))
        v = num(x)
        return None if v is None else cls(v)


@dataclass
class Segment:
    name: str
    estimate: Estimate | None
    p_noninferior: float | None
    p_superior: float | None
    labels_used: float | None
    n_scored: float | None
    interval_population: tuple[float, float] | None = None
    gating: bool | None = None  # whether it may block migrate (segments.gate_segments)
    p_noninferior_joint: float | None = None  # the joint rule's adjusted probability (gating groups only)


@dataclass
class Dim:
    """One candidate x dimension of the decision, with its baselines and segments."""

    candidate: str
    name: str
    kind: str
    gating: bool
    verdict: str
    n_scored: float | None
    bayes: Estimate | None
    interval_population: tuple[float, float] | None
    threshold_noninferior: float | None
    threshold_superior: float | None
    p_noninferior: float | None
    p_superior: float | None
    labels_used: float | None
    labels_needed: float | None
    labels_needed_segment: str | None
    human_only: Estimate | None
    judge_only: Estimate | None
    ppi: Estimate | None
    truth: Estimate | None
    disagreement: str | None
    segments: list[Segment]
    diagnostics: dict
    calibration: dict
    draws: list[float]
    basis: str | None = None  # which draws the verdict used: "population" or "scored"
    guards: list[dict] = field(default_factory=list)  # calibration.guards: name, fired, value, threshold, detail
    verdict_unguarded: str | None = None
    estimand: str = "turn"  # "turn" (mean over turns, i.e. requests) or "conversation"
    turn_positions: list[Segment] = field(default_factory=list)  # conversations: per turn-position group

    def width_ratio(self, baseline: Estimate | None, population: bool) -> float | None:
        """Bayesian interval width over a baseline's on the same estimand (scored requests or population)."""
        if baseline is None or self.bayes is None:
            return None
        b = self.interval_population if population else self.bayes.interval
        h = baseline.interval_population if population else baseline.interval
        if b is None or h is None or h[1] - h[0] <= 0:
            return None
        return (b[1] - b[0]) / (h[1] - h[0])

    @property
    def converged(self) -> bool | None:
        c = self.diagnostics.get("converged")
        return c if isinstance(c, bool) else None


@dataclass
class Candidate:
    name: str
    verdict: str
    reasons: list[str]
    dims: list[Dim] = field(default_factory=list)


def _verdict(v: Verdict | None) -> str:
    return "unknown" if v is None else v.value


def _text(x: str | None) -> str | None:
    return None if x in (None, "") else str(x)


def _segment(name: str, s: Mapping) -> Segment:
    gating = s.get("gating")
    return Segment(name, Estimate.from_any(s), num(s.get("p_noninferior")), num(s.get("p_superior")),
                   num(s.get("labels_used")), num(s.get("n_scored")), interval(s.get("interval_population")),
                   gating if isinstance(gating, bool) else None, num(s.get("p_noninferior_joint")))


def _dim(cname: str, dname: str, d: DimensionResult, truth: Mapping) -> Dim:
    return Dim(
        candidate=cname, name=dname, kind=d.kind, gating=d.gating, verdict=_verdict(d.verdict),
        n_scored=num(d.n_scored), bayes=Estimate.from_any({"estimate": d.estimate, "interval": d.interval}),
        interval_population=interval(d.interval_population),
        threshold_noninferior=num(d.threshold_noninferior), threshold_superior=num(d.threshold_superior),
        p_noninferior=num(d.p_noninferior), p_superior=num(d.p_superior), labels_used=num(d.labels_used),
        labels_needed=num(d.labels_needed), labels_needed_segment=_text(d.labels_needed_segment),
        human_only=Estimate.from_any(d.human_only), judge_only=Estimate.from_any(d.judge_only),
        ppi=Estimate.from_any(d.ppi), truth=Estimate.from_any(_mapping(truth.get(cname)).get(dname)),
        disagreement=_text(d.disagreement), segments=[_segment(n, s) for n, s in d.segments.items()],
        diagnostics=dict(d.diagnostics), calibration=dict(d.calibration),
        draws=[v for v in (num(x) for x in d.posterior_draws) if v is not None], basis=d.basis,
        guards=[dict(g) for g in d.guards], verdict_unguarded=_verdict(d.verdict_unguarded), estimand=d.estimand,
        turn_positions=[_segment(n, s) for n, s in (d.turn_positions or {}).items()])


def candidates(decision: Decision, extras: Mapping) -> list[Candidate]:
    """The report's rows of a typed decision (calibration.schema); ``extras.truth`` joins by name."""
    truth = _mapping(extras.get("truth"))
    return [Candidate(cname, _verdict(c.verdict), list(c.reasons),
                      [_dim(cname, dname, d, truth) for dname, d in c.dimensions.items()])
            for cname, c in decision.candidates.items()]


def all_dims(cands: list[Candidate]) -> list[Dim]:
    return [d for c in cands for d in c.dims]


# ---------------------------------------------------------------- label budget


@dataclass
class BudgetCurve:
    candidate: str
    dimension: str
    points: list[tuple[float, float]]  # (n_labels, interval_width), sorted by n
    source: str  # "measured", "projected" or "projected (width ∝ 1/√n)"


def project_width(width: float, n0: float, n: float) -> float:
    """Width at n labels from width at n0, assuming width ∝ 1/sqrt(n) (the CLT rate of a mean)."""
    return width * math.sqrt(n0 / n)


def budget_curves(cands: list[Candidate], extras: Mapping) -> list[BudgetCurve]:
    """Measured or supplied curves from extras.label_budget; else a 1/sqrt(n) projection per dimension."""
    given = _mapping(extras.get("label_budget"))
    out = []
    for d in all_dims(cands):
        raw = _mapping(given.get(d.candidate)).get(d.name)
        source = "measured"
        if isinstance(raw, Mapping):
            source = str(raw.get("source", source))
            raw = raw.get("points")
        pts = []
        if isinstance(raw, list):
            for p in raw:
                p = _mapping(p)
                n, w = num(p.get("n_labels")), num(p.get("interval_width"))
                if n is not None and w is not None and n > 0:
                    pts.append((n, w))
                    source = str(p.get("source", source))
        if pts:
            out.append(BudgetCurve(d.candidate, d.name, sorted(pts), source))
            continue
        n0 = d.labels_used
        if d.bayes is None or d.bayes.interval is None or not n0 or n0 <= 0:
            continue
        w0 = d.bayes.interval[1] - d.bayes.interval[0]
        n_max = max(4 * n0, n0 + (d.labels_needed or 0) * 1.25)
        grid = sorted({max(1.0, round(n0 / 4)), round(n0 / 2), n0, *(n0 * k for k in (1.5, 2, 3, 4)), n_max})
        pts = [(n, project_width(w0, n0, n)) for n in grid if n > 0]
        out.append(BudgetCurve(d.candidate, d.name, pts, "projected (width ∝ 1/√n)"))
    return out


# ---------------------------------------------------------------- cost


@dataclass
class CostRow:
    stage: str
    model: str
    tokens_in: float | None
    tokens_out: float | None
    requests: float | None
    errors: dict[str, float]
    wall_s: float | None
    est_cost_usd: float | None

    @property
    def error_total(self) -> float | None:
        return sum(self.errors.values()) if self.errors else None

    @property
    def requests_per_s(self) -> float | None:
        if self.requests is None or not self.wall_s:
            return None
        return self.requests / self.wall_s

    @property
    def tokens_out_per_s(self) -> float | None:
        if self.tokens_out is None or not self.wall_s:
            return None
        return self.tokens_out / self.wall_s


def _cost_row(stage: str, model: str, m: Mapping) -> CostRow:
    errs = m.get("errors")
    if isinstance(errs, Mapping):
        errors = {str(k): v for k, v in ((k, num(v)) for k, v in errs.items()) if v is not None}
    else:
        errors = {} if num(errs) is None else {"all": num(errs)}
    return CostRow(
        stage, model, num(m.get("tokens_in")), num(m.get("tokens_out")), num(m.get("requests")),
        errors, num(m.get("wall_s")), num(m.get("est_cost_usd")),
    )


def cost_table_rows(extras: Mapping) -> list[CostRow]:
    cost = extras.get("cost")
    rows = []
    if isinstance(cost, list):
        for r in cost:
            r = _mapping(r)
            rows.append(_cost_row(str(r.get("stage", "")), str(r.get("model", r.get("candidate", "all"))), r))
        return rows
    for stage, v in _mapping(cost).items():
        v = _mapping(v)
        if any(k in v for k in COST_KEYS):
            rows.append(_cost_row(str(stage), "all", v))
        else:
            rows.extend(_cost_row(str(stage), str(model), _mapping(m)) for model, m in v.items())
    return rows


def cost_total(rows: list[CostRow]) -> CostRow:
    """Tokens, errors and cost summed over the rows. No requests, work time or rates: stages count different
    things (a request replayed, a request scored), so a sum of requests across stages means nothing."""

    def tot(attr):
        vals = [getattr(r, attr) for r in rows if getattr(r, attr) is not None]
        return sum(vals) if vals else None

    errors: dict[str, float] = {}
    for r in rows:
        for k, v in r.errors.items():
            errors[k] = errors.get(k, 0) + v
    return CostRow("total", "", tot("tokens_in"), tot("tokens_out"), None, errors, None, tot("est_cost_usd"))


# ---------------------------------------------------------------- calibration and judge bias


def calibration_rows(cands: list[Candidate]) -> list[tuple[str, str, str, Estimate | None]]:
    """(candidate, dimension, metric, coefficient) from each dimension's ``calibration`` block."""
    return [
        (d.candidate, d.name, str(metric), Estimate.from_any(v))
        for d in all_dims(cands)
        for metric, v in d.calibration.items()
    ]


def calibration_table(extras: Mapping) -> tuple[list[str], list[tuple[str, dict[str, Any]]]]:
    """(statistic columns, [(metric, {statistic: value})]) from extras.calibration_table."""
    raw = extras.get("calibration_table")
    items: list[tuple[str, Mapping]] = []
    if isinstance(raw, list):
        items = [(str(_mapping(r).get("metric", "")), {k: v for k, v in _mapping(r).items() if k != "metric"})
                 for r in raw]
    else:
        items = [(str(k), _mapping(v)) for k, v in _mapping(raw).items()]
    cols: list[str] = []
    for _, stats in items:
        cols.extend(str(k) for k in stats if str(k) not in cols)
    return cols, [(m, {str(k): v for k, v in s.items()}) for m, s in items]


def judge_bias_rows(extras: Mapping) -> list[tuple[str, str, dict[str, Any]]]:
    """[(metric or "", "position" | "length" | other, {figure: value})]."""
    raw = _mapping(extras.get("judge_bias"))
    groups = {"": raw} if ("position" in raw or "length" in raw) else raw
    out = []
    for metric, g in groups.items():
        for kind, figs in _mapping(g).items():
            out.append((str(metric), str(kind), dict(figs) if isinstance(figs, Mapping) else {"value": figs}))
    return out

"""Render a decision as a Markdown and a self-contained HTML report (pure: a typed Decision in, strings out).

Every text taken from the decision or the extras is escaped (model, dimension and segment names are
user input): ``html.escape`` in the HTML, and the same plus ``|`` in Markdown, whose renderers pass raw
HTML through. The HTML has no script, no external link, font or image: plots are inline SVG.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

from calibration.schema import Decision, Verdict

from . import plots
from .templates import CSS
from .view import (
    Candidate,
    Estimate,
    all_dims,
    budget_curves,
    calibration_rows,
    calibration_table,
    candidates,
    cost_table_rows,
    cost_total,
    interval,
    judge_bias_rows,
    num,
)

NOT_MEASURED = "Not measured in this run"
SEE_HTML = "(plot: see report.html)"

# ---------------------------------------------------------------- formatting


def fnum(x: Any, digits: int = 3) -> str:
    v = num(x)
    if v is None:
        return "—"
    if isinstance(x, int):
        return f"{x:,}"
    return f"{v:,.{digits}f}"


def fshort(x: Any) -> str:
    """Shortest form, for settings such as the margin (0.05, not 0.050)."""
    v = num(x)
    return "—" if v is None else f"{v:g}"


def fint(x: Any) -> str:
    v = num(x)
    return "—" if v is None else f"{int(round(v)):,}"


def fiv(iv: tuple[float, float] | None, digits: int = 3) -> str:
    return "—" if iv is None else f"[{iv[0]:.{digits}f}, {iv[1]:.{digits}f}]"


def fest(e: Estimate | None) -> str:
    if e is None:
        return "—"
    s = "—" if e.estimate is None else f"{e.estimate:.3f}"
    if e.interval is not None:
        s += f" {fiv(e.interval)}"
    if e.method:
        s += f" ({e.method})"
    return s


def fpct(x: float | None) -> str:
    if x is None:
        return "unknown"
    return f"{x * 100:.3g}%"


def fval(v: Any) -> str:
    """Any figure from the extras: a number, an {estimate|mean, interval} block, a mapping or text."""
    if isinstance(v, Mapping):
        e = Estimate.from_any(v)
        if e is not None and set(v) <= {"estimate", "mean", "value", "interval", "n"}:
            return fest(e) + (f" (n={fint(e.n)})" if e.n is not None else "")
        return ", ".join(f"{k}: {fval(x)}" for k, x in v.items())
    if isinstance(v, (list, tuple)):
        iv = interval(v)
        return fiv(iv) if iv is not None else ", ".join(fval(x) for x in v)
    if num(v) is not None:
        return fnum(v)
    return "—" if v is None else str(v)


def md_text(s: str) -> str:
    """Markdown-safe text: HTML special characters escaped, table pipes escaped, no line breaks."""
    return html.escape(str(s), quote=False).replace("|", "\\|").replace("\n", " ").replace("\r", " ")


def esc(s: Any) -> str:
    return html.escape(str(s), quote=True)


VERDICT_WORD = {**{v.value: v.value.replace("_", " ").upper() for v in Verdict}, "unknown": "NO VERDICT"}


class Section:
    """One report section, built in Markdown and HTML side by side."""

    def __init__(self, sid: str, title: str):
        self.sid, self.title = sid, title
        self.md: list[str] = [f"## {md_text(title)}", ""]
        self.html: list[str] = [f'<section id="sec-{sid}" class="report-section">', f"<h2>{esc(title)}</h2>"]

    def para(self, text: str, cls: str = "") -> None:
        self.md += [md_text(text), ""]
        c = f' class="{cls}"' if cls else ""
        self.html.append(f"<p{c}>{esc(text)}</p>")

    def missing(self, what: str) -> None:
        self.para(f"{NOT_MEASURED}: {what}.", "not-measured")

    def sub(self, title: str) -> None:
        self.md += [f"### {md_text(title)}", ""]
        self.html.append(f"<h3>{esc(title)}</h3>")

    def table(self, tid: str, headers: list[str], rows: list[list[Any]], row_cls: list[str] | None = None) -> None:
        """Cells are plain text, or (text, css class) for the HTML."""
        self.md.append("| " + " | ".join(md_text(h) for h in headers) + " |")
        self.md.append("|" + "---|" * len(headers))
        for r in rows:
            self.md.append("| " + " | ".join(md_text(c[0] if isinstance(c, tuple) else c) for c in r) + " |")
        self.md.append("")
        h = [f'<table id="{tid}" class="data">', "<thead><tr>"]
        h += [f"<th>{esc(x)}</th>" for x in headers]
        h.append("</tr></thead><tbody>")
        for i, r in enumerate(rows):
            rc = f' class="{row_cls[i]}"' if row_cls and row_cls[i] else ""
            h.append(f"<tr{rc}>")
            for c in r:
                text, cls = c if isinstance(c, tuple) else (c, "")
                h.append(f'<td class="{cls}">{esc(text)}</td>' if cls else f"<td>{esc(text)}</td>")
            h.append("</tr>")
        h.append("</tbody></table>")
        self.html.append("".join(h))

    def figure(self, fid: str, svgs: list[tuple[str, str]], caption: str) -> None:
        """svgs: [(title, trusted svg markup from plots.py)]; the titles are escaped."""
        self.md += [f"{md_text(caption)} {SEE_HTML}", ""]
        parts = [f'<figure id="{fid}" class="plot">']
        for title, svg in svgs:
            parts.append(f'<div class="svg-wrap" title="{esc(title)}">{svg}</div>')
        parts.append(f"<figcaption>{esc(caption)}</figcaption></figure>")
        self.html.append("".join(parts))

    def render(self) -> tuple[str, str]:
        return "\n".join(self.md), "\n".join(self.html + ["</section>"])


# ---------------------------------------------------------------- verdicts


def verdict_line(c: Candidate, margin: float | None, confidence: float | None) -> str:
    """One sentence: verdict, the dimensions that drove it, margin and confidence."""
    at = f"at margin {fshort(margin)}, {fpct(confidence)} confidence" if margin is not None else \
        f"margin unknown, {fpct(confidence)} confidence"
    gating = [d for d in c.dims if d.gating] or c.dims
    unconv = [d.name for d in c.dims if d.converged is False]
    tail = f"; sampler did not converge on {', '.join(unconv)}" if unconv else ""
    word = VERDICT_WORD[c.verdict]
    if c.verdict == Verdict.MIGRATE:
        names = ", ".join(d.name for d in gating)
        return f"{c.name}: {word} — non-inferior on every gating dimension ({names}) {at}{tail}"
    if c.verdict == Verdict.REJECT:
        bad = [d for d in gating if d.verdict == Verdict.REJECT]
        if bad:
            what = ", ".join(f"{d.name} (P(non-inferior) {fnum(d.p_noninferior)})" for d in bad)
            return f"{c.name}: {word} — inferior on {what} {at}{tail}"
    if c.verdict == Verdict.MORE_LABELS:
        open_ = [d for d in gating if d.verdict == Verdict.MORE_LABELS] or [d for d in gating if d.verdict != Verdict.MIGRATE]
        if open_:
            what = ", ".join(f"{d.name} (P(non-inferior) {fnum(d.p_noninferior)})" for d in open_)
            asks = [
                f"{fint(d.labels_needed)} more labels on {d.name}"
                + (f" in segment {d.labels_needed_segment}" if d.labels_needed_segment else "")
                for d in open_ if d.labels_needed
            ]
            ask = f"; needs about {'; '.join(asks)}" if asks else ""
            return f"{c.name}: {word} — not yet decided on {what} {at}{ask}{tail}"
    reason = f" — {c.reasons[0]}" if c.reasons else ""
    return f"{c.name}: {word}{reason} ({at}){tail}"


def _verdicts(cands: list[Candidate], margin, confidence) -> Section:
    s = Section("verdicts", "Verdicts")
    if not cands:
        s.missing("no candidate in the decision")
        return s
    md, items = [], []
    for c in cands:
        line = verdict_line(c, margin, confidence)
        md.append(f"- **{md_text(line)}**")
        for r in c.reasons:
            md.append(f"    - {md_text(r)}")
        reasons = "".join(f"<li>{esc(r)}</li>" for r in c.reasons)
        items.append(
            f'<li class="verdict verdict-{c.verdict.replace("_", "-")}" data-candidate="{esc(c.name)}">'
            f'<span class="line">{esc(line)}</span>'
            + (f'<ul class="reasons">{reasons}</ul>' if reasons else "") + "</li>"
        )
    s.md += md + [""]
    s.html.append('<ul id="verdicts">' + "".join(items) + "</ul>")
    return s


# ---------------------------------------------------------------- sections


def _header(decision: Decision, extras: Mapping) -> tuple[str, str, str]:
    run_id = extras.get("run_id") or decision.run_id
    title = "Baton migration report" + (f": {run_id}" if run_id else "")
    facts = [
        ("incumbent", decision.incumbent),
        ("margin", fshort(decision.margin)),
        ("confidence", fpct(decision.confidence)),
        ("created", decision.created_at),
        ("seed", decision.seed),
        ("schema version", decision.schema_version),
    ]
    facts = [(k, v) for k, v in facts if v not in (None, "")]
    md = [f"# {md_text(title)}", ""] + [f"- {md_text(k)}: {md_text(v)}" for k, v in facts] + [""]
    h = [f"<header><h1>{esc(title)}</h1><dl id=\"run-facts\">"]
    h += [f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in facts]
    h.append("</dl></header>")
    return title, "\n".join(md), "".join(h)


def _config(extras: Mapping) -> Section:
    s = Section("config", "Configuration")
    cfg = extras.get("config_summary")
    if not isinstance(cfg, Mapping) or not cfg:
        s.missing("no configuration summary was given")
        return s
    s.table("config-table", ["setting", "value"],
            [[str(k), fshort(v) if isinstance(v, float) else fval(v)] for k, v in cfg.items()])
    return s


def _vcell(v: str) -> tuple[str, str]:
    return (VERDICT_WORD.get(v, v), f"v-{v.replace('_', '-')}")


def _results(cands: list[Candidate]) -> Section:
    s = Section("results", "Results per dimension")
    dims = all_dims(cands)
    if not dims:
        s.missing("no dimension in the decision")
        return s
    s.para("Pairwise: win rate of the candidate over the incumbent (non-inferior above 0.5 − margin). "
           "Binary and ordinal: candidate mean − incumbent mean on the same requests (non-inferior above −margin). "
           "Interval: for the scored requests; population interval: also for sampling them from traffic. "
           "Basis: which of the two the verdict and the probabilities use (population: the future traffic).")
    rows = [
        [d.candidate, d.name, d.kind, "yes" if d.gating else "no", fest(d.bayes), fiv(d.interval_population),
         d.basis or "—", fnum(d.threshold_noninferior), fnum(d.p_noninferior), fnum(d.p_superior),
         _vcell(d.verdict), fint(d.n_scored), fint(d.labels_used)]
        for d in dims
    ]
    s.table("results-table", ["candidate", "dimension", "kind", "gating", "estimate [interval]",
                              "population interval", "basis", "non-inferior above", "P(non-inferior)",
                              "P(superior)", "verdict", "scored", "labels"], rows)
    per_conv = list(dict.fromkeys(d.name for d in dims if d.estimand == "conversation"))
    if per_conv:
        s.para(f"Labelled per conversation: {', '.join(per_conv)}. Their estimand is the mean over conversations "
               "(each weighs the same, whatever its length), and scored and labels count conversations; the other "
               "dimensions average over turns.", "estimand-note")
    return s


def _turn_positions(cands: list[Candidate]) -> Section | None:
    """Per turn position (conversations; None when no dimension has them)."""
    dims = [d for d in all_dims(cands) if d.turn_positions]
    if not dims:
        return None
    s = Section("turn-positions", "Results per turn position")
    s.para("Conversations: the same posterior summed over the turns at each position of their conversation. "
           "Joint P(non-inferior): the multiplicity-adjusted probability of the joint rule over the segments and "
           "turn positions that gate (calibration.segments); a gating position whose joint probability is at or "
           "below 1 − C blocks migrate, and the verdict's reasons name it.")
    rows = [[d.candidate, d.name, p.name.split("=", 1)[-1], fest(p.estimate), fiv(p.interval_population),
             fnum(p.p_noninferior), fnum(p.p_noninferior_joint),
             {True: "yes", False: "no", None: "—"}[p.gating], fint(p.labels_used), fint(p.n_scored)]
            for d in dims for p in d.turn_positions]
    s.table("turn-positions-table", ["candidate", "dimension", "turn", "estimate [interval]", "population interval",
                                     "P(non-inferior)", "joint P(non-inferior)", "gates", "labels", "scored"], rows)
    return s


def _forest(cands: list[Candidate]) -> Section:
    s = Section("forest", "Estimates, baselines and segments (forest plot)")
    dims = all_dims(cands)
    if not any(d.bayes for d in dims):
        s.missing("no estimate in the decision")
        return s
    s.figure("forest-plot", plots.forest_plot(cands),
             "Per dimension: Bayesian estimate with interval (coloured by verdict; star: full-human truth "
             "where known), the human-only, judge-only and PPI++ baselines, then each segment. Red dashed "
             "line: non-inferiority margin; black line: no difference.")
    seg_rows = [
        [d.candidate, d.name, sg.name, fest(sg.estimate), fnum(sg.p_noninferior), fnum(sg.p_superior),
         fint(sg.labels_used), fint(sg.n_scored)]
        for d in dims for sg in d.segments
    ]
    s.sub("Segments")
    if seg_rows:
        s.table("segments-table", ["candidate", "dimension", "segment", "estimate [interval]", "P(non-inferior)",
                                   "P(superior)", "labels", "scored"], seg_rows)
    else:
        s.missing("no per-segment estimate")
    return s


def _covers(t: Estimate | None, e: Estimate | None) -> str:
    if t is None or t.estimate is None or e is None or e.interval is None:
        return "—"
    return "yes" if e.interval[0] <= t.estimate <= e.interval[1] else "no"


def _baselines(cands: list[Candidate]) -> Section:
    s = Section("baselines", "Baselines beside the Bayesian result")
    dims = all_dims(cands)
    if not dims:
        s.missing("no dimension in the decision")
        return s
    have_truth = any(d.truth for d in dims)
    s.para("Human-only: the labelled items alone. Judge-only: the automated judge on all scored items, "
           "uncorrected. PPI++: prediction-powered inference (Angelopoulos et al. 2023) combining both. When the "
           "labels came from a design with unequal inclusion probabilities (active, or stratified with Neyman "
           "allocation), human-only is the Hajek-weighted mean and the PPI++ column the design-weighted difference "
           "estimator, marked with their method. Intervals are compared like with like: the first table is for the "
           "scored requests (baselines with the finite-population correction), the second for the traffic.")
    headers = ["candidate", "dimension", "Bayesian", "human-only", "labels (human-only)", "judge-only", "PPI++"]
    if have_truth:
        headers += ["truth (full human)", "Bayesian covers truth", "PPI++ covers truth"]
    headers += ["width / human-only", "width / PPI++"]
    rows = []
    for d in dims:
        r = [d.candidate, d.name, fest(d.bayes), fest(d.human_only),
             fint(d.human_only.n if d.human_only else None), fest(d.judge_only), fest(d.ppi)]
        if have_truth:
            r += [fest(d.truth), _covers(d.truth, d.bayes), _covers(d.truth, d.ppi)]
        rows.append(r + [fnum(d.width_ratio(d.human_only, False)), fnum(d.width_ratio(d.ppi, False))])
    s.table("baselines-table", headers, rows)
    s.sub("For the traffic (population intervals)")
    s.table("baselines-population-table",
            ["candidate", "dimension", "Bayesian", "human-only", "PPI++", "width / human-only", "width / PPI++"],
            [[d.candidate, d.name, fiv(d.interval_population),
              fiv(d.human_only.interval_population if d.human_only else None),
              fiv(d.ppi.interval_population if d.ppi else None),
              fnum(d.width_ratio(d.human_only, True)), fnum(d.width_ratio(d.ppi, True))] for d in dims])
    if not any(d.human_only or d.judge_only or d.ppi for d in dims):
        s.missing("no baseline estimate in the decision")
    return s


def _posteriors(cands: list[Candidate]) -> Section:
    s = Section("posteriors", "Posterior of the difference")
    svg = plots.posterior_densities(cands)
    if svg is None:
        s.missing("no posterior draws in the decision")
        return s
    s.figure("posterior-densities", [("posterior densities", svg)],
             "Density of the posterior draws per candidate and dimension, with P(non-inferior) and P(superior).")
    rows = [[d.candidate, d.name, fint(len(d.draws)), fnum(d.p_noninferior), fnum(d.p_superior)]
            for d in all_dims(cands)]
    s.table("posterior-table", ["candidate", "dimension", "draws", "P(non-inferior)", "P(superior)"], rows)
    return s


def _calibration(cands: list[Candidate], extras: Mapping) -> Section:
    s = Section("calibration", "Calibration of the automated metrics against human judgment")
    s.sub("Calibration coefficients in the model")
    rows = calibration_rows(cands)
    if rows:
        s.table("calibration-model-table", ["candidate", "dimension", "metric", "coefficient [interval]"],
                [[c, d, m, fest(e)] for c, d, m, e in rows])
    else:
        s.missing("no calibration coefficients in the decision")
    s.sub("Metric against human labels")
    cols, items = calibration_table(extras)
    if items:
        s.table("calibration-table", ["metric", *cols], [[m, *(fval(st.get(c)) for c in cols)] for m, st in items])
    else:
        s.missing("no calibration table was given")
    s.sub("Judge bias")
    bias = judge_bias_rows(extras)
    if not bias:
        s.missing("position and length bias of the judge")
    else:
        rows = []
        for metric, kind, figs in bias:
            note = ""
            if kind == "position":
                ab, ba = num(figs.get("p_a_wins_ab")), num(figs.get("p_a_wins_ba"))
                if ab is not None and ba is not None:
                    note = (f"P(A wins | A first) − P(A wins | A second) = {ab - ba:+.3f} "
                            "(0 for a judge that ignores the order)")
            for k, v in figs.items():
                rows.append([metric or "judge", kind, str(k), fval(v)])
            if note:
                rows.append([metric or "judge", kind, "summary", note])
        s.table("judge-bias-table", ["metric", "bias", "figure", "value"], rows)
    return s


def _budget(cands: list[Candidate], extras: Mapping) -> Section:
    s = Section("label-budget", "Label budget")
    curves = budget_curves(cands, extras)
    if not curves:
        s.missing("label budget (no labels_used with an interval, and no extras.label_budget)")
    else:
        if any(c.source.startswith("projected (width") for c in curves):
            s.para("Curves marked 'projected (width ∝ 1/√n)' are not measured: they scale this run's interval "
                   "width by √(labels used / n), the rate of a mean, which ignores what the judge contributes.",
                   "projection-note")
        s.figure("label-budget-plot", [("label budget", plots.label_budget_plot(curves, cands))],
                 "Interval width against the number of human labels.")
        s.table("label-budget-curves", ["candidate", "dimension", "source", "labels → interval width"],
                [[c.candidate, c.dimension, c.source, ", ".join(f"{fint(n)}: {w:.3f}" for n, w in c.points)]
                 for c in curves])
    s.sub("More labels asked for")
    asks = [d for d in all_dims(cands) if d.verdict == Verdict.MORE_LABELS or (d.labels_needed or 0) > 0]
    if asks:
        s.table("labels-needed-table", ["candidate", "dimension", "labels used", "more labels needed", "on segment"],
                [[d.candidate, d.name, fint(d.labels_used), fint(d.labels_needed),
                  d.labels_needed_segment or ("all traffic" if d.labels_needed else "—")] for d in asks])
    else:
        s.para("No dimension asks for more labels.")
    return s


def _cost(extras: Mapping) -> Section:
    s = Section("cost", "Cost and throughput")
    rows = cost_table_rows(extras)
    if not rows:
        s.missing("tokens, requests, errors and wall time")
        return s

    def errs(r):
        return ", ".join(f"{k}: {fint(v)}" for k, v in r.errors.items()) if r.errors else "0" \
            if r.requests is not None else "—"

    def fmt(r):
        return [r.stage, r.model, fint(r.requests), fint(r.tokens_in), fint(r.tokens_out), errs(r),
                fnum(r.wall_s, 1), fnum(r.requests_per_s, 2), fnum(r.tokens_out_per_s, 1), fcost(r.est_cost_usd)]

    total = cost_total(rows)
    s.table("cost-table", ["stage", "model", "requests", "tokens in", "tokens out", "errors", "work s",
                           "requests/s", "tokens out/s", "est. cost"],
            [fmt(r) for r in rows] + [fmt(total)], row_cls=[""] * len(rows) + ["total"])
    s.para("Summed over every invocation of the run, from its shards' records. Work s is the summed time of the "
           "shards (per worker), so rates are per worker; the total adds tokens and cost, not requests, which "
           "count different things per stage.")
    return s


def fcost(v: float | None) -> str:
    """Dollars: cents for a dollar and up, three significant digits below a cent (a small run is not $0.00)."""
    if v is None:
        return "—"
    if v == 0 or abs(v) >= 0.01:
        return f"${v:,.2f}"
    return f"${v:.3g}"


def _diagnostics(cands: list[Candidate]) -> Section:
    s = Section("diagnostics", "Sampler diagnostics")
    dims = all_dims(cands)
    if not any(d.diagnostics for d in dims):
        s.missing("no sampler diagnostics in the decision")
    else:
        rows, cls, widened = [], [], False
        for d in dims:
            g = d.diagnostics
            ppc = g.get("ppc") if isinstance(g.get("ppc"), Mapping) else {}
            conv = {True: ("yes", "ok"), False: ("NO", "bad")}.get(d.converged, ("—", ""))
            disp = g.get("dispersion") if isinstance(g.get("dispersion"), Mapping) else {}
            widened = widened or bool(disp.get("applied"))
            applied = disp.get("applied_mean") if isinstance(disp.get("applied_mean"), Mapping) else {}
            rows.append([d.candidate, d.name, fnum(g.get("r_hat_max")), fnum(g.get("ess_bulk_min"), 1),
                         fint(g.get("divergences")), conv, fnum(ppc.get("heldout_log_score")),
                         fnum(ppc.get("heldout_accuracy")), fnum(applied.get(d.candidate))])
            cls.append("unconverged" if d.converged is False else "")
        s.table("diagnostics-table", ["candidate", "dimension", "R-hat max", "ESS bulk min", "divergences",
                                      "converged", "held-out log score", "held-out accuracy",
                                      "annotator noise factor"], rows, row_cls=cls)
        if widened:
            s.para("Annotator noise factor: how much wider than the model said the labelled cells' annotator means "
                   "strayed, held out; the unlabelled cells' noise is widened by it (never narrowed).")
        if any(d.converged is False for d in dims):
            s.para("A dimension whose sampler did not converge never supports a migrate verdict.", "warning")
    s.sub("Guards (checks that do not trust the model; a fired guard blocks migrate)")
    grows = [[d.candidate, d.name, str(g.get("name", "")), "FIRED" if g.get("fired") else "no",
              fnum(g.get("value")), fnum(g.get("threshold")), str(g.get("detail", ""))]
             for d in dims for g in d.guards]
    if grows:
        s.table("guards-table", ["candidate", "dimension", "guard", "fired", "value", "threshold", "detail"], grows,
                row_cls=["unconverged" if r[3] == "FIRED" else "" for r in grows])
    else:
        s.para("No guard in the decision.")
    s.sub("Disagreements between methods")
    dis = [d for d in dims if d.disagreement]
    if dis:
        s.md += [f"- {md_text(d.candidate)} · {md_text(d.name)}: {md_text(d.disagreement)}" for d in dis] + [""]
        s.html.append('<ul id="disagreements">' + "".join(
            f'<li class="disagreement">{esc(d.candidate)} · {esc(d.name)}: {esc(d.disagreement)}</li>'
            for d in dis) + "</ul>")
    else:
        s.para("None reported.")
    return s


# ---------------------------------------------------------------- entry point


def render_report(decision: Decision | Mapping, extras: dict | None = None) -> tuple[str, str]:
    """Return (report_md, report_html) for a decision (calibration.schema.Decision, docs/decision-schema.md).

    A mapping (a decision.json read back) is validated into the model first: a document that does not follow the
    schema raises pydantic's ValidationError naming the field. ``extras`` (optional) carries figures the decision
    does not hold; see ``calibration.report.view`` for the accepted shapes. Sections whose data is empty say so.
    """
    if not isinstance(decision, Decision):
        if not isinstance(decision, Mapping):
            raise TypeError(f"decision must be a Decision or a mapping, got {type(decision).__name__}")
        decision = Decision.model_validate(decision)
    extras = extras if isinstance(extras, Mapping) else {}
    cands = candidates(decision, extras)
    margin, confidence = decision.margin, decision.confidence
    title, head_md, head_html = _header(decision, extras)
    sections = [
        _verdicts(cands, margin, confidence),
        _config(extras),
        _results(cands),
        _forest(cands),
        _baselines(cands),
        _posteriors(cands),
        _calibration(cands, extras),
        _budget(cands, extras),
        _cost(extras),
        _diagnostics(cands),
    ]
    from .code import code_section  # imports this module: loaded late
    from .drift import history_section

    extra_sections = (_turn_positions(cands), code_section(cands, extras, decision.incumbent),
                      history_section(extras))
    sections[3:3] = [s for s in extra_sections[:1] if s is not None]  # beside the per-dimension results
    sections += [s for s in extra_sections[1:] if s is not None]
    rendered = [s.render() for s in sections]
    md = "\n".join([head_md, *(m for m, _ in rendered)]).rstrip() + "\n"
    nav = "".join(f'<a href="#sec-{s.sid}">{esc(s.title)}</a>' for s in sections)
    page = (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
        f"{head_html}<nav id=\"toc\">{nav}</nav><main>"
        + "\n".join(h for _, h in rendered)
        + "</main></body></html>\n"
    )
    return md, page

"""calibration.report: the rendered Markdown and HTML carry the decision's figures, safely and offline."""

from __future__ import annotations

import copy
import re

import pytest

from calibration.report import render_report
from calibration.report.view import budget_curves, candidates, cost_table_rows, cost_total
from calibration.schema import Decision
from pydantic import ValidationError

EVIL = "<script>alert(1)</script>"
SECTIONS = ["verdicts", "config", "results", "forest", "baselines", "posteriors", "calibration", "label-budget",
            "cost", "diagnostics"]


def _iv(iv):
    return f"[{iv[0]:.3f}, {iv[1]:.3f}]"


def _verdict_items(dom):
    return dom.by_id("verdicts").find_all("li", class_="verdict")


def test_one_verdict_line_per_candidate_with_margin_and_confidence(rendered, parse_html):
    md, page = rendered
    items = _verdict_items(parse_html(page))
    assert [i.attrs["data-candidate"] for i in items] == ["cand-a", EVIL, "cand-c|pipe"]
    assert [i.attrs["class"] for i in items] == [
        "verdict verdict-migrate", "verdict verdict-reject", "verdict verdict-more-labels"]
    lines = [i.find_all("span", class_="line")[0].all_text() for i in items]
    assert lines[0] == ("cand-a: MIGRATE — non-inferior on every gating dimension (quality, correctness) "
                        "at margin 0.05, 90% confidence")
    assert lines[1].startswith(f"{EVIL}: REJECT — inferior on quality (P(non-inferior) 0.000)")
    # The more_labels line says how many labels, on which dimension and segment, and names the unconverged one.
    assert "MORE LABELS" in lines[2] and "140 more labels on quality in segment app=Grammarly" in lines[2]
    assert "sampler did not converge on style" in lines[2]
    assert all("at margin 0.05, 90% confidence" in line for line in lines)
    assert "- **cand-a: MIGRATE — non-inferior on every gating dimension" in md


def test_every_section_present_in_both_formats(rendered, parse_html):
    md, page = rendered
    dom = parse_html(page)
    for sid in SECTIONS:
        dom.by_id(f"sec-{sid}")
    for fid in ("forest-plot", "posterior-densities", "label-budget-plot"):
        assert dom.by_id(fid).tag == "figure"
    for heading in ["## Verdicts", "## Estimates, baselines and segments (forest plot)", "## Baselines",
                    "## Posterior of the difference", "## Calibration", "### Judge bias", "## Label budget",
                    "## Cost and throughput", "## Sampler diagnostics", "### Disagreements"]:
        assert heading in md, heading
    assert md.count("see report.html") == 3
    # Everything given was measured: no section says otherwise.
    assert "Not measured in this run" not in md and 'class="not-measured"' not in page


def test_user_text_is_escaped_everywhere(rendered):
    md, page = rendered
    assert EVIL not in page and EVIL not in md
    assert not re.search(r"<\s*script", page, re.I) and not re.search(r"<\s*script", md, re.I)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in md
    # Inside the SVG plots too (candidate names label the forest plot's rows).
    svgs = re.findall(r"<svg.*?</svg>", page, re.S)
    assert any("&lt;script&gt;alert(1)&lt;/script&gt;" in s for s in svgs)
    # A pipe in a name must not split a Markdown table cell: every table row has its header's cell count.
    for block in re.findall(r"(?:^\|.*\|$\n?)+", md, re.M):
        rows = [r for r in block.strip().split("\n")]
        counts = {len(re.split(r"(?<!\\)\|", r)) for r in rows}
        assert len(counts) == 1, block


def test_html_is_self_contained(rendered):
    _, page = rendered
    for bad in ("http://", "https://", 'src="//', "src='//", "<link", "<script", "@import", "url(http"):
        assert bad not in page.lower(), bad
    assert page.count("<svg") == 5  # forest: 3 dimensions; posterior densities; label budget
    assert "<style>" in page
    ids = re.findall(r'\bid="([^"]*)"', page)
    assert len(ids) == len(set(ids)), "element ids must be unique across the inline SVGs"
    refs = set(re.findall(r'(?:href="#|url\(#)([^")]+)', page))
    assert refs <= set(ids), refs - set(ids)


def test_tables_carry_the_decisions_figures(rendered, decision, parse_html):
    md, page = rendered
    dom = parse_html(page)
    results = dom.by_id("results-table").all_text()
    baselines = dom.by_id("baselines-table").all_text()
    for cname, c in decision["candidates"].items():
        for dname, d in c["dimensions"].items():
            est = f"{d['estimate']:.3f} {_iv(d['interval'])}"
            assert est in results and est in md, (cname, dname)
            for b in ("human_only", "judge_only", "ppi"):
                cell = f"{d[b]['estimate']:.3f} {_iv(d[b]['interval'])}"
                assert cell in baselines, (cname, dname, b)
    diag_rows = dom.by_id("diagnostics-table").find_all("tr", class_="unconverged")
    assert len(diag_rows) == 1 and "1.310" in diag_rows[0].all_text() and "NO" in diag_rows[0].all_text()
    # Truth printed beside the estimate, with whether each interval covers it.
    truth_row = [r for r in dom.by_id("baselines-table").find_all("tr") if "quality" in r.all_text()][0]
    cells = [td.all_text() for td in truth_row.find_all("td")]
    assert cells[0] == "cand-a" and cells[7] == "0.565" and cells[8:10] == ["yes", "yes"]
    dis = dom.by_id("disagreements").all_text()
    assert "PPI++ interval excludes the Bayesian estimate" in dis and "judge says <script>" in dis


def test_plots_draw_rows_lines_and_annotations(rendered, decision, parse_html):
    _, page = rendered
    dom = parse_html(page)
    forest = dom.by_id("forest-plot")
    svgs = forest.find_all("svg")
    assert len(svgs) == 3
    text = [s.all_text() for s in svgs]
    assert "quality (pairwise)" in text[0] and "non-inferiority margin (0.45)" in text[0]
    assert "no difference (0.5)" in text[0] and "non-inferiority margin (-0.05)" in text[1]
    for t in text[:2]:
        for row in ("cand-a · Bayesian", "human-only", "judge-only", "PPI++", "app=Grammarly", "region=$EU"):
            assert row in t, row
    assert "full-human truth" in text[0]
    post = dom.by_id("posterior-densities").all_text()
    q = decision["candidates"]["cand-c|pipe"]["dimensions"]["quality"]
    assert f"P(non-inferior) = {q['p_noninferior']:.3f}" in post
    assert f"P(superior) = {q['p_superior']:.3f}" in post
    assert "dimension not evaluated" in post  # the rejected candidate has no style dimension


def test_label_budget_measured_and_projected(decision, extras, rendered, parse_html):
    cands = candidates(Decision.model_validate(decision), extras)
    curves = {(c.candidate, c.dimension): c for c in budget_curves(cands, extras)}
    assert curves[("cand-a", "quality")].source == "measured"
    assert curves[("cand-a", "quality")].points == [(25, 0.16), (50, 0.11), (100, 0.075)]
    proj = curves[("cand-c|pipe", "quality")]
    assert proj.source.startswith("projected")
    d = decision["candidates"]["cand-c|pipe"]["dimensions"]["quality"]
    w0 = d["interval"][1] - d["interval"][0]
    pts = dict(proj.points)
    assert pts[60] == pytest.approx(w0) and pts[240] == pytest.approx(w0 / 2)  # 4x labels, half the width
    assert max(pts) >= 60 + 140  # reaches the labels the verdict asks for
    _, page = rendered
    needed = parse_html(page).by_id("labels-needed-table").all_text()
    assert "cand-c|pipe" in needed and "140" in needed and "app=Grammarly" in needed
    assert "width ∝ 1/√n" in parse_html(page).by_id("sec-label-budget").all_text()


def test_cost_rows_and_totals(extras, rendered, parse_html):
    rows = cost_table_rows(extras)
    assert [(r.stage, r.model) for r in rows] == [("generate", "cand-a"), ("generate", EVIL), ("judge", "all")]
    total = cost_total(rows)
    # Requests count different things per stage: the total adds tokens, errors and cost, never requests.
    assert total.tokens_in == 1_140_000 and total.requests is None and total.wall_s is None
    assert total.errors == {"timeout": 3, "http_5xx": 1, "parse": 12}
    assert total.est_cost_usd == pytest.approx(2.32)
    _, page = rendered
    table = parse_html(page).by_id("cost-table")
    last = [td.all_text() for td in table.find_all("tr", class_="total")[0].find_all("td")]
    assert last[:5] == ["total", "", "—", "1,140,000", "191,000"] and last[-1] == "$2.32"
    judge = [tr for tr in table.find_all("tr") if tr.find_all("td") and tr.find_all("td")[0].all_text() == "judge"]
    assert judge[0].find_all("td")[7].all_text() == "20.00"  # 6000 requests in 300 s


def test_absent_data_degrades_to_not_measured(decision, parse_html):
    bare = copy.deepcopy(decision)
    for c in bare["candidates"].values():
        for d in c["dimensions"].values():
            for k in ("posterior_draws", "diagnostics", "calibration", "segments", "human_only", "judge_only", "ppi"):
                d[k] = type(d[k])()  # the typed decision always has the field; empty means not measured
    md, page = render_report(bare)  # no extras at all
    dom = parse_html(page)
    for sid in SECTIONS:
        dom.by_id(f"sec-{sid}")
    missing = {n.parent.attrs.get("id") for n in dom.find_all("p", class_="not-measured")}
    assert {"sec-config", "sec-posteriors", "sec-calibration", "sec-cost", "sec-diagnostics",
            "sec-baselines"} <= missing
    assert md.count("Not measured in this run") >= 8
    # The label budget falls back to the 1/sqrt(n) projection, and says so.
    assert dom.find_all("figure", id="label-budget-plot") and "projected (width ∝ 1/√n)" in md
    assert page.count("<svg") == 4  # forest per dimension + label budget; no posterior figure
    assert len(_verdict_items(dom)) == 3


def test_empty_and_malformed_documents(decision, parse_html):
    """The report reads the typed decision (calibration.schema): no candidate renders, a document that breaks the
    schema is refused naming the field, before anything is rendered."""
    empty = {**decision, "verdicts": {}, "candidates": {}, "results": []}
    md, page = render_report(empty)
    dom = parse_html(page)
    assert "no candidate in the decision" in dom.by_id("sec-verdicts").all_text()
    assert "Not measured in this run" in md
    odd = copy.deepcopy(decision)
    odd["candidates"]["cand-a"]["verdict"] = "maybe"
    with pytest.raises(ValidationError, match=r"candidates\.cand-a\.verdict"):
        render_report(odd)
    with pytest.raises(ValidationError, match="candidates"):
        render_report({k: v for k, v in decision.items() if k != "candidates"})  # flat results alone
    md, page = render_report(decision, {"cost": "n/a", "judge_bias": 3, "label_budget": []})  # odd extras
    assert "sec-cost" in page
    with pytest.raises(TypeError, match="decision must be a Decision or a mapping"):
        render_report([])


def test_rendering_is_pure_and_deterministic(decision, extras, rendered):
    d0, e0 = copy.deepcopy(decision), copy.deepcopy(extras)
    again = render_report(decision, extras)
    assert again == rendered
    assert decision == d0 and extras == e0


def test_guards_basis_and_like_with_like_widths(decision, parse_html):
    doc = copy.deepcopy(decision)
    d = doc["candidates"]["cand-a"]["dimensions"]["quality"]
    d["basis"] = "population"
    d["interval"], d["interval_population"] = [0.50, 0.60], [0.48, 0.62]
    d["human_only"].update({"interval": [0.45, 0.65], "interval_population": [0.40, 0.68]})
    d["guards"] = [{"name": "design_valid", "fired": True, "value": 0.62, "threshold": 0.9, "detail": "too wide"},
                   {"name": "predictive_check", "fired": False, "value": 0.05, "threshold": -0.02, "detail": "ok"}]
    md, page = render_report(doc)
    dom = parse_html(page)
    row = [r for r in dom.by_id("results-table").find_all("tr") if "0.500, 0.600" in r.all_text()][0]
    assert "population" in row.all_text()
    # width ratio against human-only on the same estimand: scored 0.10/0.20, population 0.14/0.28
    base_row = [r for r in dom.by_id("baselines-table").find_all("tr") if "0.500, 0.600" in r.all_text()][0]
    assert "0.500" in [td.all_text() for td in base_row.find_all("td")][-2:]
    pop_row = [r for r in dom.by_id("baselines-population-table").find_all("tr")
               if "0.480, 0.620" in r.all_text()][0]
    assert [td.all_text() for td in pop_row.find_all("td")][-2] == "0.500"
    guards = dom.by_id("guards-table").all_text()
    assert "design_valid" in guards and "FIRED" in guards and "too wide" in guards
    assert "| cand-a | quality | design_valid | FIRED |" in md


def test_annotator_noise_factor_shown_where_applied(decision, parse_html):
    doc = copy.deepcopy(decision)
    d = doc["candidates"]["cand-a"]["dimensions"]["quality"]
    d["diagnostics"] = {**d["diagnostics"], "dispersion": {"applied": True, "pooled": 1.2, "between_sd": 0.0,
                                                           "per_model": {"cand-a": 1.2},
                                                           "applied_mean": {"cand-a": 1.237}}}
    md, page = render_report(doc)
    dom = parse_html(page)
    row = [r for r in dom.by_id("diagnostics-table").find_all("tr") if "quality" in r.all_text()
           and "cand-a" in r.all_text()][0]
    assert [td.all_text() for td in row.find_all("td")][-1] == "1.237"
    assert "never narrowed" in page and "| 1.237 |" in md
    # a decision without it (one annotator per cell, or an older document) shows a dash and no note
    md0, page0 = render_report(decision)
    assert "never narrowed" not in page0

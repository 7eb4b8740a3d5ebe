"""Guards, decision basis and like-with-like baselines, without NUTS (fast).

The calibration model's posterior is stood in for by a point posterior (a fractional logistic fit of the label on
the metrics, calibration.design.fit_logistic, with a small spread across draws): in the misspecified world it is
fitted where the judge works (two of three segments) and applied everywhere, which is what a linear model with
pooled segment offsets does when the judge is blind in one segment. That is the "wrong model"; the guards must not
trust it. The NUTS version of the same comparison is benchmarks/calibration_misspec.py.
"""
import numpy as np
import pytest

from calibration import baselines, decision, design, guards
from calibration.data import prepare
from calibration.pipeline import SamplerSettings, summarise_dimension
from tests.support.simulate import simulate_misspec

CONV = {"converged": True, "r_hat_max": 1.0, "ess_bulk_min": 500.0, "divergences": 0}


def _data(world, seed=3, segments=("region",), **kw):
    t = simulate_misspec(seed, world, **kw)
    return t, prepare(t.scores, t.labels, "incumbent", None, "quality", "pairwise", t.traffic,
                      list(segments) or None)


def point_posterior(d, fit_requests=None, draws=200, spread=0.02, seed=0):
    """Posterior draws of the model's parameters concentrated at a fractional logistic fit per candidate on the
    labelled cells of the requests ``fit_requests`` (a boolean mask; all by default; segment offsets zero),
    cut-points +-0.3 around its intercept."""
    rng = np.random.default_rng(seed)
    M, F, S = d.n_models, d.X.shape[2], len(d.segment_names)
    req, mod, ybar, _ = d.labelled_cells()
    keep = np.ones(len(req), bool) if fit_requests is None else fit_requests[req]
    beta = np.zeros((M, F))
    alpha = np.zeros(M)
    for m in range(M):
        sel = keep & (mod == m)
        w = design.fit_logistic(d.X[req[sel], m, :], ybar[sel])
        alpha[m], beta[m] = w[0], w[1:]
    cut = np.array([-0.3, 0.3])
    return {"cut": np.tile(cut, (draws, 1)),
            "alpha": alpha[None, :] + rng.normal(0, spread, (draws, M)),
            "beta": np.tile(beta, (draws, 1, 1)),
            "seg_effect": np.zeros((draws, M, S))}


def _decide(d, p, basis="population"):
    return summarise_dimension(d, p, CONV, 0.05, 0.9, 0, SamplerSettings(), basis=basis)


def test_guard_flips_a_wrong_migrate_in_a_misspecified_world():
    # the segment is not configured (no segment rule to catch it): the judge is blind in a third of the traffic
    t, d = _data("segment_judge", seed=1, segments=(), n_labels=120, n_annot=1, cand_effect=(-0.6, 0.2))
    region = t.traffic.set_index("request_id").loc[d.request_ids, "region"].to_numpy()
    out = _decide(d, point_posterior(d, region != "apac"))
    e = out["cand-inferior"]
    assert t.truth["cand-inferior"] < 0.45  # inferior beyond the margin
    assert e["verdict_unguarded"] == decision.MIGRATE, e["p_noninferior"]  # the wrong model would migrate it
    assert e["verdict"] == decision.MORE
    fired = {g["name"] for g in e["guards"] if g["fired"]}
    assert "design_valid" in fired, e["guards"]
    assert any("guard blocks migrate" in r for r in e["reasons"])
    dv = e["design_valid"]
    assert dv["interval"][0] <= t.truth["cand-inferior"] <= dv["interval"][1]
    # the model alone would need no more labels; the guard's labels_needed is the design-valid interval's
    assert e["labels_needed"] > 0


def test_guards_do_not_fire_in_a_well_specified_world():
    t, d = _data("well_specified", n_labels=120, n_annot=1, cand_effect=(0.5, 0.6))
    out = _decide(d, point_posterior(d))
    for cand, e in out.items():
        assert t.truth[cand] > 0.55
        assert [g for g in e["guards"] if g["fired"]] == [], (cand, e["guards"])
        assert e["verdict"] == e["verdict_unguarded"] == decision.MIGRATE


def test_basis_population_by_default_and_scored_on_request():
    _, d = _data("well_specified", n_labels=60, n_annot=1)
    p = point_posterior(d)
    pop, sc = _decide(d, p)["cand-ok"], _decide(d, p, basis="scored")["cand-ok"]
    assert pop["basis"] == "population" and sc["basis"] == "scored"
    # both intervals kept whatever the basis; the population one is wider (it adds the sampling of the requests)
    for e in (pop, sc):
        w, wp = e["interval"][1] - e["interval"][0], e["interval_population"][1] - e["interval_population"][0]
        assert wp > w
    # the verdict's probability comes from the basis' draws (posterior_draws are those draws)
    for e in (pop, sc):
        assert e["p_noninferior"] == pytest.approx(decision.prob_above(e["posterior_draws"], 0.45), abs=1e-3)
    assert np.std(pop["posterior_draws"]) > np.std(sc["posterior_draws"])
    with pytest.raises(ValueError, match="basis"):
        _decide(d, p, basis="tonight")


def test_baselines_report_both_estimands_with_the_finite_population_correction():
    _, d = _data("well_specified", n_labels=100, n_annot=1)
    ho = baselines.human_only(d, 0, 0.1)
    n, N = ho["n"], ho["N"]
    assert (n, N) == (100, 400)
    w = ho["interval"][1] - ho["interval"][0]
    wp = ho["interval_population"][1] - ho["interval_population"][0]
    assert w / wp == pytest.approx(np.sqrt(1 - n / N), rel=1e-6)
    pred = baselines.crossfit_predictions(d, baselines.cell_matrix(d), 0)
    pp = baselines.ppi(d, 0, 0.1, pred)
    assert pp["interval"][1] - pp["interval"][0] < pp["interval_population"][1] - pp["interval_population"][0]
    assert pp["interval"][0] < pp["estimate"] < pp["interval"][1]


def test_predictive_check_guard_fires_only_beyond_noise():
    dv = {"estimate": 0.6, "se": 0.01, "se_population": 0.01, "interval": [0.58, 0.62],
          "interval_population": [0.58, 0.62], "n": 100}
    ok = {"heldout_log_score": -0.95, "baseline_log_score": -0.94, "log_score_diff_se": 0.02}
    bad = {"heldout_log_score": -1.10, "baseline_log_score": -0.94, "log_score_diff_se": 0.02}
    pp = {"interval": [0.5, 0.7], "interval_population": [0.5, 0.7]}
    g_ok = {g["name"]: g for g in guards.evaluate(dv, ok, [0.55, 0.65], pp, 0.45, 0.9, "population")}
    g_bad = {g["name"]: g for g in guards.evaluate(dv, bad, [0.55, 0.65], pp, 0.45, 0.9, "population")}
    assert not g_ok["predictive_check"]["fired"] and g_bad["predictive_check"]["fired"]
    assert not g_ok["design_valid"]["fired"] and not g_ok["interval_agreement"]["fired"]
    far = {"interval": [0.3, 0.4], "interval_population": [0.3, 0.4]}
    assert {g["name"]: g for g in guards.evaluate(dv, ok, [0.55, 0.65], far, 0.45, 0.9, "population")}[
        "interval_agreement"]["fired"]


def test_design_valid_labels_needed():
    dv = {"estimate": 0.5, "se": 0.04, "se_population": 0.05, "n": 50}
    # gap 0.05 on the population basis: the first m with t_{0.9, m-1} 0.05 sqrt(50 / m) <= 0.05 is 84 (the normal
    # quantile's 50 (1.2816)^2 = 82.1 would say 33 more, which the guard's t rule does not yet pass at 83)
    assert guards.labels_needed(dv, 0.45, 0.9, 300, "population") == 34
    # the guard's own rule decides: at n = 10 a gap of 1.33 se passes the normal (1.2816) but not t with 9 df
    # (1.383); one more label settles it (t_10 1.372 * sqrt(10 / 11) = 1.308 se)
    edge = {"estimate": 0.55, "se": 0.075, "se_population": 0.075, "n": 10}
    assert guards.labels_needed(edge, 0.45, 0.9, 300, "population") == 1
    assert guards.evaluate({**edge, "interval": [0, 1], "interval_population": [0, 1]}, {}, [0, 1], {}, 0.45, 0.9,
                           "population")[0]["fired"]
    assert guards.labels_needed(dv, 0.45, 0.9, 10, "population") == 10
    assert guards.labels_needed({**dv, "estimate": 0.44}, 0.45, 0.9, 300, "scored") == 300
    assert guards.labels_needed({**dv, "estimate": 0.6}, 0.45, 0.9, 300, "scored") == 0


def test_design_valid_needs_enough_labels_and_a_t_quantile():
    # Two or three labels that happen to agree give a near-zero standard error: on PandaLM (n = 25 over ten pairs)
    # that let a pair with full-human win rate 0.348 migrate. Below MIN_DESIGN_LABELS the guard always fires.
    few = {"estimate": 0.9, "se": 0.01, "se_population": 0.02, "n": 3, "interval": [0.88, 0.92],
           "interval_population": [0.86, 0.94]}
    g = guards.evaluate(few, {}, [0.8, 0.9], {}, 0.45, 0.9, "population")[0]
    assert g["name"] == "design_valid" and g["fired"], g
    assert "fewer than 10" in g["detail"]
    assert guards.labels_needed(few, 0.45, 0.9, 300, "population") == 7  # up to the minimum
    assert guards.labels_needed(few, 0.45, 0.9, 4, "population") == 4
    # no standard error (every scored request labelled) above the threshold: nothing more is needed, never < 0
    assert guards.labels_needed({**few, "se": 0.0, "n": 40}, 0.45, 0.9, 300, "scored") == 0
    enough = {**few, "n": guards.MIN_DESIGN_LABELS}
    assert not guards.evaluate(enough, {}, [0.8, 0.9], {}, 0.45, 0.9, "population")[0]["fired"]
    # t with n - 1 degrees of freedom, not the normal: 1.5 se above the threshold passes at n = 200 (P 0.932) but
    # not at n = 4 (t with 3 df: P 0.885)
    edge = {"estimate": 0.45 + 1.5 * 0.02, "se": 0.02, "se_population": 0.02, "interval": [0, 1],
            "interval_population": [0, 1]}
    p = {n: guards.evaluate({**edge, "n": n}, {}, [0, 1], {}, 0.45, 0.9, "population")[0]["value"] for n in (4, 200)}
    assert p[4] < 0.9 < p[200], p


def test_verdict_function_guards_only_block_migrate():
    fired = [{"name": "design_valid", "fired": True, "value": 0.5, "detail": "x"}]
    assert decision.dimension_verdict(0.99, 0.9, True, [], fired)[0] == decision.MORE
    assert decision.dimension_verdict(0.01, 0.9, True, [], fired)[0] == decision.REJECT
    assert decision.dimension_verdict(0.99, 0.9, True, [], [{"name": "g", "fired": False}])[0] == decision.MIGRATE


def test_basis_is_a_config_field_and_a_cli_flag():
    import argparse

    from pydantic import ValidationError

    from jobs.config import DecisionConfig
    from jobs.decide import add_arguments, decision_from_args

    dims = [{"name": "quality", "kind": "pairwise"}]
    assert DecisionConfig(dimensions=dims).basis == "population"
    assert DecisionConfig(dimensions=dims, basis="scored").basis == "scored"
    with pytest.raises(ValidationError):
        DecisionConfig(dimensions=dims, basis="tonight")
    ap = argparse.ArgumentParser()
    add_arguments(ap)
    req = ["--scores", "s", "--labels", "l", "--incumbent", "i", "--dimension", "q", "--kind", "pairwise",
           "--margin", "0.05", "--confidence", "0.9", "--out", "o"]
    assert ap.parse_args(req).basis == "population"
    assert ap.parse_args(req + ["--basis", "scored"]).basis == "scored"
    # the flags build the run config's own DecisionConfig
    assert decision_from_args(ap.parse_args(req + ["--basis", "scored"])).basis == "scored"
    assert decision_from_args(ap.parse_args(req)).basis == "population"


def test_design_valid_interval_when_every_scored_request_is_labelled():
    _, d = _data("well_specified", n_requests=60, n_labels=60, n_annot=1)
    pred = np.full((d.n_req, d.n_models), 0.5)
    dv = guards.design_valid(d, 0, 0.1, pred)
    y, ok = baselines.target_values(d, baselines.cell_matrix(d), 0)
    assert dv["estimate"] == pytest.approx(y[ok].mean()) and dv["interval"][0] == pytest.approx(dv["interval"][1])
    assert dv["interval_population"][1] > dv["interval_population"][0]

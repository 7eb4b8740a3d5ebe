"""Paired absolute dimensions: a request effect shared by the incumbent's and the candidate's answers.

The predictive variance of a request's candidate-minus-incumbent difference is checked against Monte Carlo
draws of the model itself (no sampler); the model's structure (which terms exist) with PyMC's graph; how a
request labelled for one model informs the other's prediction through the drawn effect, with the real aggregate.
"""
import numpy as np
import pytest

from calibration.data import prepare
from calibration.estimands import _model_moments, aggregate
from calibration.models import build_model, paired_requests
from tests.support.simulate import coverage_study, simulate_binary, simulate_pairwise


def _params(K, sv, icc, alphas=(0.0, 0.4)):
    return {"cut": np.linspace(-1.5, 1.5, K - 1)[None], "alpha": np.array([alphas]), "beta": np.ones((1, 2, 1)),
            "seg_effect": np.zeros((1, 2, 1)), "item_icc": np.array([icc]), "req_sigma": np.array([sv])}


@pytest.mark.parametrize("cat", [np.array([0.0, 1.0]), np.arange(1.0, 6.0)], ids=["binary", "ordinal"])
@pytest.mark.parametrize("sv,icc", [(1.0, 0.0), (1.0, 0.5), (0.5, 0.5)])
def test_difference_variance_uses_the_shared_effect(cat, sv, icc):
    X = np.linspace(-2, 2, 6)[:, None].astype(np.float32)
    seg = np.zeros(6, int)
    p = _params(len(cat), sv, icc)  # one annotator per cell: the annotators' correlation plays no part
    (e0, v0, g0), (e1, v1, g1) = (_model_moments(X, seg, p, m, cat, 1.0) for m in (0, 1))
    approx = (v1 + v0 - 2 * g1 * g0)[0]
    # Monte Carlo of the model: one draw of the shared v per request, then each cell's label
    rng = np.random.default_rng(0)
    n = 200_000
    v = rng.normal(0, sv, (n, 1))
    ys = []
    for a in (0.0, 0.4):
        lat = X[:, 0][None] + a + v + rng.logistic(size=(n, 6))
        ys.append(cat[(lat[:, :, None] > p["cut"][0]).sum(axis=2)])
    mc = (ys[1] - ys[0]).var(axis=0)
    # logistic-normal + delta method: within a few percent of the spread (a little more in the far tails)
    assert approx == pytest.approx(mc, rel=0.07, abs=0.03 * mc.max())
    assert e1[0] == pytest.approx(ys[1].mean(axis=0), abs=0.01)
    indep = (v1 + v0)[0]  # the cells taken as independent (before): too wide where the effect matters
    if sv >= 1.0:
        assert (indep[1:5] > 1.1 * mc[1:5]).all()


@pytest.mark.parametrize("icc", [0.0, 0.3, 0.8])
def test_mean_of_k_annotators_carries_their_correlation(icc):
    # A cell's k annotators draw from category probabilities Dirichlet(kappa p) around the model's p (models.
    # rising_log_factorial): the variance of their mean is var1 (icc + (1 - icc) / k), checked by Monte Carlo
    cat = np.arange(1.0, 6.0)
    X = np.linspace(-2, 2, 5)[:, None].astype(np.float32)
    p = _params(len(cat), 0.0, icc)
    mean, var, _ = _model_moments(X, np.zeros(5, int), p, 0, cat, 3.0)
    rng = np.random.default_rng(1)
    n = 100_000
    for r in range(5):
        pr = np.diff(np.r_[0.0, 1 / (1 + np.exp(-(p["cut"][0] - X[r, 0]))), 1.0])
        cell = rng.dirichlet((1 / icc - 1) * pr, n) if icc > 0 else np.tile(pr, (n, 1))
        u = rng.random((n, 3, 1))
        labels = cat[(u > np.cumsum(cell, axis=1)[:, None, :]).sum(axis=2).clip(0, 4)]
        y = labels.mean(axis=1)
        assert mean[0, r] == pytest.approx(y.mean(), abs=0.01)
        assert var[0, r] == pytest.approx(y.var(), rel=0.03)


def _paired_data(n_requests=40, n_labels=10, drop_candidate=()):
    t = simulate_binary(3, n_requests=n_requests, n_labels=n_labels)
    lab = t.labels
    lab = lab[~((lab.model == "cand-a") & lab.request_id.isin(drop_candidate))]
    return t, prepare(t.scores, lab, "incumbent", None, "correctness", "binary")


def test_the_judge_can_miss_the_shared_difficulty():
    # the simulator's knob for the world where pairing has most to give: the same labels and truth, but the judge's
    # scores of a request's two answers no longer share its difficulty
    seen, missed = simulate_binary(1), simulate_binary(1, judge_sees_difficulty=0.0)
    assert seen.labels.equals(missed.labels) and seen.truth == missed.truth

    def judge_corr(t):
        j = t.scores[t.scores.metric == "judge.abs.correctness"].pivot(index="request_id", columns="model",
                                                                          values="value")
        return np.corrcoef(j["incumbent"], j["cand-a"])[0, 1]

    # shared sd 1 against 1.22 of each answer's own variance: about 0.45 when seen, about 0 when missed
    assert judge_corr(seen) > 0.35 and abs(judge_corr(missed)) < 0.1


def test_shared_effect_only_where_identified():
    _, d = _paired_data()
    assert paired_requests([d])
    names = {v.name for v in build_model([d]).free_RVs}
    assert {"req_sigma", "req_z"} <= names
    assert "req_sigma" not in {v.name for v in build_model([d], paired=False).free_RVs}
    t = simulate_pairwise(0, n_requests=40, n_labels=10)  # pairwise rows are already differences
    dp = prepare(t.scores, t.labels, "incumbent", None, "quality", "pairwise")
    assert not paired_requests([dp]) and "req_sigma" not in {v.name for v in build_model([dp]).free_RVs}
    t, d1 = _paired_data()
    only_inc = prepare(t.scores, t.labels[t.labels.model == "incumbent"], "incumbent", None, "correctness", "binary")
    assert not paired_requests([only_inc])  # no request labelled for both: sigma_req not identified


def test_one_labelled_model_informs_the_other_through_the_drawn_effect():
    t, d = _paired_data()
    labelled = sorted(set(d.request_ids[d.lab_req]))
    _, d = _paired_data(drop_candidate=labelled[:4])  # four requests labelled for the incumbent only
    n_lab = len(np.unique(d.lab_req))
    D, F, S = 200, d.X.shape[2], len(d.segment_names)
    base = {"cut": np.zeros((D, 1)), "alpha": np.zeros((D, 2)), "beta": np.zeros((D, 2, F)),
            "seg_effect": np.zeros((D, 2, S)), "req_sigma": np.ones(D)}
    est = {}
    for shift in (-2.0, 2.0):
        p = {**base, "req_effect": np.full((D, n_lab), shift, dtype=np.float32)}
        est[shift] = aggregate(d, p, np.random.default_rng(0)).fp[:, 0].mean()
    # a hard request (v = -2) for the incumbent is hard for the candidate too: the candidate's predicted label on
    # the four requests follows v, so the difference moves by about 4 * (expit(2) - expit(-2)) / 40
    assert est[2.0] - est[-2.0] == pytest.approx(4 * (0.8808 - 0.1192) / 40, rel=0.05)


@pytest.mark.slow
def test_sharing_the_labels_cannot_show_is_not_claimed():
    # One binary label per cell says little about sigma_req (only how often a request's two labels agree beyond the
    # judges), and the difference's interval narrows as sigma_req grows: its prior must not supply the sharing. In a
    # world with no shared difficulty at all, the paired interval is about as wide as the unpaired one.
    kw = dict(seed0=500, kind="binary", blocks_per_fit=8, draws=300, tune=300, shared_sd=0.0)
    paired = coverage_study(8, paired=True, **kw)
    unpaired = coverage_study(8, paired=False, **kw)
    ratio = paired["width"].mean() / unpaired["width"].mean()
    assert ratio > 0.98, f"paired interval {ratio:.3f} of the unpaired with nothing shared"

"""Pairwise cells as a Dirichlet-tree (calibration.models.tie_tree_loglik): the annotators of one request agree on
its direction more than on whether it is a tie, and the estimand's scale (0, 0.5, 1) depends on the first.

The likelihood is checked against scipy's beta-binomial, the predictive variance of the mean of k annotators
against Monte Carlo draws of the tree itself, and a fit on simulated annotations against the agreement they have.
"""
import numpy as np
import pytest
from scipy.special import comb, logit
from scipy.stats import betabinom

from calibration import diagnostics
from calibration.data import prepare
from calibration.estimands import _model_moments
from calibration.models import build_model, fit
from tests.calibration.test_diagnostics import _data
from tests.support.simulate import simulate_pairwise

CAT = np.array([0.0, 0.5, 1.0])


def _betabinoms(counts, pr, icc_tie, icc_dir):
    """The tree's log-probability of one cell's annotations in their order, from scipy's beta-binomials."""
    n0, nt, n1 = counts
    nd = n0 + n1
    q = pr[2] / (pr[0] + pr[2])
    kt, kd = 1 / icc_tie - 1, 1 / icc_dir - 1
    return (betabinom.logpmf(nt, nd + nt, kt * pr[1], kt * (1 - pr[1])) - np.log(comb(nd + nt, nt))
            + betabinom.logpmf(n1, nd, kd * q, kd * (1 - q)) - np.log(comb(nd, n1)))


def test_pairwise_potential_is_two_beta_binomials():
    d = _data(6)
    d.lab_cat = np.array([0, 1, 2, 2, 2, 2, 1, 1, 0, 0, 0, 0, 2, 2, 1, 1, 1, 1])
    model = build_model([d])
    assert {v.name for v in model.free_RVs} == {"cut", "beta_mu", "item_icc", "tie_icc"}
    cut, icc_dir, icc_tie = np.array([-1.0, 0.7]), 0.6, 0.1
    point = {"cut_ordered__": np.array([[cut[0], np.log(cut[1] - cut[0])]]), "beta_mu": np.zeros((1, 2)),
             "item_icc_logodds__": np.array([logit(icc_dir)]), "tie_icc_logodds__": np.array([logit(icc_tie)])}
    got = float(model.compile_logp(vars=model.potentials)(point))
    pr = np.diff(np.r_[0.0, 1 / (1 + np.exp(-cut)), 1.0])  # beta = 0: every cell's eta is 0
    counts = np.stack([np.bincount(d.lab_cat[3 * r:3 * r + 3], minlength=3) for r in range(6)])
    assert got == pytest.approx(sum(_betabinoms(c, pr, icc_tie, icc_dir) for c in counts), rel=1e-9)
    # the held-out check scores the cells the same way
    p = {"cut": cut[None], "alpha": np.zeros((1, 1)), "beta": np.zeros((1, 1, 2)), "seg_effect": np.zeros((1, 1, 1)),
         "item_icc": np.array([icc_dir]), "tie_icc": np.array([icc_tie])}
    ll = diagnostics.cell_loglik(d, p, np.arange(6), np.zeros(6, int), counts.astype(float))
    assert ll[0] == pytest.approx([_betabinoms(c, pr, icc_tie, icc_dir) for c in counts], abs=1e-9)


@pytest.mark.parametrize("icc_tie,icc_dir", [(0.02, 0.6), (0.5, 0.1), (0.3, 0.3)])
def test_mean_of_k_annotators_carries_the_trees_correlation(icc_tie, icc_dir):
    # a cell draws its tie probability and, apart, its direction among decisive annotations; the variance of the
    # mean of k = 3 annotators' labels is checked against Monte Carlo draws of exactly that
    X = np.linspace(-2, 2, 5)[:, None].astype(np.float32)
    p = {"cut": np.array([[-0.8, 0.8]]), "alpha": np.zeros((1, 1)), "beta": np.ones((1, 1, 1)),
         "seg_effect": np.zeros((1, 1, 1)), "item_icc": np.array([icc_dir]), "tie_icc": np.array([icc_tie])}
    mean, var, _ = _model_moments(X, np.zeros(5, int), p, 0, CAT, 3.0)
    rng = np.random.default_rng(2)
    n = 200_000
    for r in range(5):
        pr = np.diff(np.r_[0.0, 1 / (1 + np.exp(-(p["cut"][0] - X[r, 0]))), 1.0])
        q = pr[2] / (pr[0] + pr[2])
        kt, kd = 1 / icc_tie - 1, 1 / icc_dir - 1
        a = rng.beta(kt * pr[1], kt * (1 - pr[1]), (n, 1))
        b = rng.beta(kd * q, kd * (1 - q), (n, 1))
        u, w = rng.random((2, n, 3))
        y = np.where(u < a, 0.5, np.where(w < b, 1.0, 0.0)).mean(axis=1)
        assert mean[0, r] == pytest.approx(y.mean(), abs=0.005)
        assert var[0, r] == pytest.approx(y.var(), rel=0.03)


def test_fit_finds_annotators_agree_on_direction_more_than_on_ties():
    # The simulated pairwise world's annotators share a latent preference and cut their own logistic noise at
    # +-tie: the tie indicator's intra-cell correlation is about 0.015, the decisive ones' 0.06-0.08 (and more
    # once the linear judge-to-human fit's misfit is in the residual). All 400 requests labelled: the fit must
    # tell the two agreements apart (seeds 5 and 6 gave 0.028 / 0.123 and 0.027 / 0.131; one concentration for
    # both fitted 0.052), and predict the within-request variance of the mean of 3 about as realised.
    t = simulate_pairwise(5, n_requests=400, n_labels=400)
    d = prepare(t.scores, t.labels, "incumbent", None, "quality", "pairwise", t.traffic, ["region"])
    _, params = fit([d], draws=300, tune=300, seed=5)
    assert np.median(params["tie_icc"]) < 0.5 * np.median(params["item_icc"])
    p = {k: v[:, 0] for k, v in params.items()}
    req, mod, ybar, _ = d.labelled_cells()
    for m in (0, 1):
        mean, var, _ = _model_moments(d.X[:, m, :], d.seg_idx, p, m, d.cat_values, 3.0)
        sel = mod == m
        resid = ybar[sel] - mean.mean(axis=0)[req[sel]]
        ratio = float(np.mean(resid ** 2) / var.mean(axis=0)[req[sel]].mean())
        assert 0.85 < ratio < 1.15, (m, ratio)

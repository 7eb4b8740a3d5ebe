"""The held-out check's per-cell likelihood (calibration.diagnostics.cell_loglik) and the retry of an unconverged fit."""
import numpy as np
import pytest
from scipy.special import expit, factorial, gammaln, logsumexp
from scipy.stats import dirichlet_multinomial

from calibration import diagnostics
from calibration.data import CalibrationData


def _data(counts_cells: int) -> CalibrationData:
    rng = np.random.default_rng(0)
    R = counts_cells
    return CalibrationData(
        kind="pairwise", dimension="quality", incumbent="inc", candidates=["cand"], row_models=["cand"],
        request_ids=np.array([f"r{i}" for i in range(R)], dtype=object),
        X=rng.normal(size=(R, 1, 2)).astype(np.float32), feature_names=["a", "b"], seg_idx=np.zeros(R, int),
        segment_names=["all"], cat_values=np.array([0.0, 0.5, 1.0]), lab_req=np.repeat(np.arange(R), 3),
        lab_model=np.zeros(3 * R, int), lab_cat=rng.integers(0, 3, 3 * R), lab_annotator=np.tile(np.arange(3), R))


def test_cell_loglik_is_the_dirichlet_multinomial_of_the_annotations():
    # Three annotators of one request agree beyond chance: the cell's likelihood is the Dirichlet-multinomial of its
    # annotations (models.rising_log_factorial), not the product of the marginals. The product treated three
    # agreeing annotators as independent, which made the PSIS-LOO weights 1 / p(cell) so uneven on PandaLM that the
    # held-out log score fell below a uniform guess and the predictive-check guard blocked a non-inferior candidate.
    d = _data(4)
    D = 3
    p = {"cut": np.tile([-1.0, 0.7], (D, 1)), "alpha": np.array([[0.0], [0.3], [-0.2]]),
         "beta": np.array([[[0.5, -0.2]], [[0.1, 0.4]], [[0.0, 0.0]]]), "seg_effect": np.zeros((D, 1, 1)),
         "item_icc": np.array([0.9, 0.5, 0.05])}
    req, mod = np.arange(4), np.zeros(4, int)
    counts = np.array([[3, 0, 0], [0, 0, 3], [1, 1, 1], [2, 0, 1]], float)
    got = diagnostics.cell_loglik(d, p, req, mod, counts)
    for k in range(D):
        kappa = 1 / p["item_icc"][k] - 1
        for c in range(4):
            eta = d.X[c, 0] @ p["beta"][k, 0] + p["alpha"][k, 0]
            pr = np.diff(np.r_[0.0, expit(p["cut"][k] - eta), 1.0])
            # scipy's pmf counts every order of the annotations: divide by the multinomial coefficient
            want = dirichlet_multinomial.logpmf(counts[c], kappa * pr, 3) \
                - np.log(factorial(3) / np.prod(factorial(counts[c])))
            assert got[k, c] == pytest.approx(want, abs=1e-9), (k, c)
    # agreeing annotators under a strong correlation are far more likely than three independent draws say
    probs = diagnostics.category_probs(d, p, req, mod)
    product = np.einsum("dck,ck->dc", np.log(probs), counts)
    assert got[0, 0] > product[0, 0] + 1.0 and got[0, 1] > product[0, 1] + 1.0
    gain = got - product  # the weaker the correlation, the nearer the product
    assert 0 < gain[2, 0] < gain[1, 0] < gain[0, 0]


def test_retry_asks_for_small_steps_only_when_the_fit_diverged():
    from calibration.diagnostics import DIVERGENT_SHARE_MAX
    from calibration.pipeline import SamplerSettings, retry_sampler

    st = SamplerSettings(draws=400, tune=300, chains=2)
    allowed = DIVERGENT_SHARE_MAX * 400 * 2  # 4 of 800 draws
    # divergences beyond what the diagnostics tolerate: smaller steps, longer tuning, same draws
    assert retry_sampler({"divergences": int(allowed) + 1}, st) == {"draws": 400, "tune": 600, "target_accept": 0.99}
    # slow mixing without (too many) divergences: longer chains at the default step size
    for div in (0, int(allowed)):
        assert retry_sampler({"divergences": div}, st) == {"draws": 800, "tune": 600}


def test_cell_loglik_integrates_the_request_effect_accurately():
    # With a request effect (absolute dimensions) a cell's likelihood is the Dirichlet-multinomial of its
    # annotations averaged over N(0, req_sigma). Against that integral on a dense grid, with the Dirichlet-multinomial
    # written out in gamma functions (not models.rising_log_factorial), over request-effect sds from 0.05 to 8 and
    # cells whose annotators all chose the category the model finds least likely: the integral's mass then sits in
    # the normal's tail, which the 64 equal-mass points used before miss (here by 0.004-0.08 at s = 0.3-3).
    rng = np.random.default_rng(5)
    s_grid = np.array([0.05, 0.3, 0.7, 1.0, 1.4, 2.0, 3.0, 4.5, 8.0])
    D, C, K = len(s_grid), 30, 5
    d = _data(C)
    d.cat_values = np.arange(5.0)
    p = {"cut": np.sort(rng.normal(0, 1.5, (D, K - 1)), axis=1), "alpha": rng.normal(0, 1, (D, 1)),
         "beta": rng.normal(0, 1, (D, 1, 2)), "seg_effect": np.zeros((D, 1, 1)),
         "item_icc": rng.uniform(0.001, 0.9, D), "req_sigma": s_grid}
    # 1-4 annotations per cell, some cells with no two alike; every third cell's three annotators at one extreme
    counts = np.stack([np.bincount(rng.integers(0, K, rng.integers(1, 5)), minlength=K) if c % 3
                       else np.bincount(np.full(3, (0, K - 1)[c % 2]), minlength=K) for c in range(C)]).astype(float)
    req, mod = np.arange(C), np.zeros(C, int)
    got = diagnostics.cell_loglik(d, p, req, mod, counts)
    eta = diagnostics.linear_predictor(d, p, req, mod)
    z = np.linspace(-10, 10, 8001)
    log_w = -z ** 2 / 2 - logsumexp(-z ** 2 / 2)
    want = np.zeros((D, C))
    for k in range(D):
        e = eta[k][None, :, None] + p["req_sigma"][k] * z[:, None, None]  # (node, cell, 1)
        cum = np.concatenate([np.zeros(e.shape), expit(p["cut"][k] - e), np.ones(e.shape)], axis=2)
        a = (1 / p["item_icc"][k] - 1) * np.clip(np.diff(cum, axis=2), 1e-12, 1.0)
        # Dirichlet-multinomial of the annotations in their order (Mosimann 1962)
        ll = (gammaln(a + counts) - gammaln(a)).sum(axis=2) - gammaln(a.sum(axis=2) + counts.sum(axis=1)) \
            + gammaln(a.sum(axis=2))
        want[k] = logsumexp(ll + log_w[:, None], axis=0)
    err = np.abs(got - want).max(axis=1)
    assert err.max() < 1e-4, dict(zip(s_grid, err))
    # without correlated annotators: the product of the annotations' probabilities, integrated the same way
    p0 = {**p, "item_icc": np.zeros(D)}
    got0 = diagnostics.cell_loglik(d, p0, req, mod, counts)
    assert np.all(np.isfinite(got0)) and not np.allclose(got0, got)


def test_request_effect_rules_cover_every_draw_once_with_weights_summing_to_one():
    s = np.array([0.0, 0.2, 0.5, 0.9, 1.5, 3.0, 6.0, 0.0, 2.5])
    seen = []
    for draws, z, log_w in diagnostics.request_effect_rules(s):
        assert len(z) == len(log_w) and np.exp(log_w).sum() == pytest.approx(1.0)
        # N(0, 1)'s variance: exact for Gauss-Hermite, about so for equal-mass points
        assert np.exp(log_w) @ z ** 2 == pytest.approx(0.0 if np.all(s[draws] == 0) else 1.0, abs=0.01)
        seen.extend(draws)
    assert sorted(seen) == list(range(len(s)))

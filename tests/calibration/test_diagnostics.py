"""The held-out check's per-cell likelihood (calibration.diagnostics.cell_loglik) and the retry of an unconverged fit."""
import numpy as np
import pytest
from scipy.special import expit, factorial
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


def test_cell_loglik_integrates_the_request_effect_as_the_model_has_it():
    # With a request effect (absolute dimensions) the cell's likelihood is the Dirichlet-multinomial averaged over
    # equal-mass nodes of N(0, req_sigma), on the (cell, category) pairs the annotations fall in; against scipy's
    # Dirichlet-multinomial over every category (of the annotations in order: minus the multinomial coefficient).
    rng = np.random.default_rng(5)
    d = _data(30)
    d.cat_values = np.arange(5.0)
    D, C, K, nodes = 7, 30, 5, 16
    p = {"cut": np.sort(rng.normal(0, 1.5, (D, K - 1)), axis=1), "alpha": rng.normal(0, 1, (D, 1)),
         "beta": rng.normal(0, 1, (D, 1, 2)), "seg_effect": np.zeros((D, 1, 1)),
         "item_icc": rng.uniform(0.05, 0.9, D), "req_sigma": rng.uniform(0.2, 2.0, D)}
    # 1-4 annotations per cell, some cells with no two alike (their largest count is below their total)
    counts = np.stack([np.bincount(rng.integers(0, K, rng.integers(1, 5)), minlength=K) for _ in range(C)])
    req, mod = np.arange(C), np.zeros(C, int)
    got = diagnostics.cell_loglik(d, p, req, mod, counts.astype(float), nodes=nodes)
    eta = diagnostics.linear_predictor(d, p, req, mod)
    kappa = 1 / p["item_icc"] - 1
    log_coef = np.log(factorial(counts.sum(axis=1)) / np.prod(factorial(counts), axis=1))
    want = np.zeros((D, C))
    for k in range(D):
        for c in range(C):
            ll = []
            for zq in diagnostics.ndtri((np.arange(nodes) + 0.5) / nodes):
                pr = np.diff(np.r_[0.0, expit(p["cut"][k] - eta[k, c] - p["req_sigma"][k] * zq), 1.0])
                ll.append(dirichlet_multinomial.logpmf(counts[c], kappa[k] * pr, counts[c].sum()) - log_coef[c])
            want[k, c] = np.logaddexp.reduce(ll) - np.log(nodes)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)
    # without correlated annotators: the product of the annotations' probabilities, integrated the same way
    p0 = {**p, "item_icc": np.zeros(D)}
    got0 = diagnostics.cell_loglik(d, p0, req, mod, counts.astype(float), nodes=nodes)
    assert np.all(np.isfinite(got0)) and not np.allclose(got0, got)

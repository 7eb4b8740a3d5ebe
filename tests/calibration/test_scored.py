"""The baselines' and guards' sums over the unlabelled requests (calibration.scored): the moments combine exactly,
the PPI++ interval from moments is ppi_py's, and every baseline made from the labelled requests plus the sums of
the rest equals the one made from all requests' arrays, also when the data holds the labelled requests only."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from ppi_py import classical_mean_ci, ppi_mean_ci

from calibration import baselines, guards
from calibration.data import CalibrationData, prepare
from calibration.scored import Moments, Predictors, local_scored_sums
from tests.calibration.test_aggregate_split import _params
from tests.support.simulate import simulate_binary, simulate_pairwise


def test_moments_of_parts_add_to_the_moments_of_the_whole():
    rng = np.random.default_rng(0)
    v = rng.normal(1e3, 2.0, (5000, 3))  # a mean far from 0: the pairwise update keeps the spread exact
    mask = rng.random((5000, 3)) < 0.7
    whole = Moments.of(v, mask)
    parts = Moments.zeros(3)
    for idx in np.array_split(rng.permutation(5000), 7):
        parts = parts.add(Moments.of(v[idx], mask[idx]))
    np.testing.assert_allclose(parts.n, mask.sum(axis=0))
    for c in range(3):
        x = v[mask[:, c], c]
        np.testing.assert_allclose(parts.mean[c], x.mean(), rtol=1e-13)
        np.testing.assert_allclose(parts.m2[c], ((x - x.mean()) ** 2).sum(), rtol=1e-9)
    np.testing.assert_allclose(parts.m2, whole.m2, rtol=1e-9)


@pytest.mark.parametrize("seed,n,N,rho", [(0, 40, 2000, 0.8), (1, 12, 500, 0.0), (2, 200, 100_000, 0.95),
                                          (3, 30, 50, -0.5)])
def test_ppi_interval_from_moments_is_ppi_py(seed, n, N, rho):
    """Correlated, uncorrelated (lambda near 0) and anti-correlated (lambda clipped to 0) predictions."""
    rng = np.random.default_rng(seed)
    yhat_all = rng.normal(0.5, 0.2, n + N)
    y = rho * yhat_all[:n] + rng.normal(0, 0.2, n) + 0.1
    yhat, yhat_u = yhat_all[:n], yhat_all[n:]
    want = ppi_mean_ci(y, yhat, yhat_u, alpha=0.1)
    m = Moments.of(yhat_u[:, None], np.ones((N, 1), bool))
    got = baselines.ppi_mean_interval(y, yhat, m.pick(0), 0.1)
    np.testing.assert_allclose(got, [float(np.ravel(want[0])[0]), float(np.ravel(want[1])[0])], rtol=1e-10)


def _subset(d: CalibrationData, rows: np.ndarray) -> CalibrationData:
    """``d`` restricted to the requests ``rows`` (sorted; every labelled request among them)."""
    pos = np.full(d.n_req, -1)
    pos[rows] = np.arange(len(rows))
    assert (pos[d.lab_req] >= 0).all()
    take = {f: getattr(d, f)[rows] for f in ("request_ids", "X", "seg_idx", "judge_raw", "present", "unit_pi")
            if getattr(d, f) is not None}
    return dataclasses.replace(d, lab_req=pos[d.lab_req], **take)


def _cases():
    t = simulate_pairwise(11, n_requests=1200, n_labels=80)
    yield prepare(t.scores, t.labels, "incumbent", None, "quality", "pairwise", t.traffic, ["region"]), False
    t = simulate_binary(12, n_requests=1200, n_labels=100)
    yield prepare(t.scores, t.labels, "incumbent", None, "correctness", "binary", t.traffic, ["region"]), True


@pytest.mark.parametrize("case", [0, 1])
def test_baselines_from_labelled_requests_and_sums_equal_the_full_arrays(case):
    d, req_effect = list(_cases())[case]
    p = _params(d, with_req_effect=req_effect)
    obs = baselines.cell_matrix(d)
    labelled = baselines.labelled_requests(d)
    lab_rows, unl_rows = np.flatnonzero(labelled), np.flatnonzero(~labelled)
    assert 0 < len(lab_rows) < d.n_req
    full_pred = baselines.crossfit_predictions(d, obs, 0)
    pred, w, const = baselines.crossfit(d, obs, 0, unlabelled=False)
    np.testing.assert_array_equal(pred[lab_rows], full_pred[lab_rows])
    assert np.isnan(pred[unl_rows]).all()  # the unlabelled requests are left to the sums
    full_bayes = guards.predictive_means(d, p)
    bayes = guards.predictive_means(d, p, rows=lab_rows)
    # float32 arithmetic: a matmul over another set of rows may round differently (BLAS picks kernels and threads
    # by shape; CI saw 4 of 310 cells 1 float32 ulp apart), so the Bayesian figures agree to float32 precision
    np.testing.assert_allclose(bayes[lab_rows], full_bayes[lab_rows], rtol=1e-6)
    pr = Predictors.build(d.kind, len(d.candidates), d.n_models, d.cat_values, w, const, guards.thin_draws(p))
    rest = local_scored_sums(d.X, np.asarray(d.seg_idx), d.present, d.judge_raw, unl_rows, pr, chunk=97)
    assert rest.n_req == len(unl_rows)
    # the same numbers from the labelled requests and the sums, whether the data holds every request or only
    # the labelled ones (what a driver that never reads the others holds)
    sub = _subset(d, lab_rows)
    sub_pred, sub_bayes = pred[lab_rows], bayes[lab_rows]
    for c in range(len(d.candidates)):
        n_scored = int(d.estimand_mask()[:, c].sum())
        assert int(d.estimand_mask()[lab_rows, c].sum() + rest.ridge.n[c]) == n_scored
        want = {"human": baselines.human_only(d, c, 0.1),
                "judge": baselines.judge_only(d, c, 0.1, d.judge_raw),
                "ppi": baselines.ppi(d, c, 0.1, full_pred),
                "dv": guards.design_valid(d, c, 0.1, full_bayes)}
        # the all-arrays numbers are ppi_py's
        jt = baselines.target_predictions(d, d.judge_raw, c)
        np.testing.assert_allclose(want["judge"]["interval"], classical_mean_ci(jt[np.isfinite(jt)], alpha=0.1),
                                   rtol=1e-10)
        y, ok = baselines.target_values(d, obs, c)
        yh = baselines.target_predictions(d, full_pred, c)
        lo, hi = ppi_mean_ci(y[ok], yh[ok], yh[~ok & d.estimand_mask()[:, c]], alpha=0.1)
        np.testing.assert_allclose(want["ppi"]["interval_population"], [lo[0], hi[0]], rtol=1e-10)
        for data, pp, bp in ((d, pred, bayes), (sub, sub_pred, sub_bayes)):
            got = {"human": baselines.human_only(data, c, 0.1, n_scored=n_scored),
                   "judge": baselines.judge_only(data, c, 0.1, data.judge_raw, rest.judge),
                   "ppi": baselines.ppi(data, c, 0.1, pp, rest=rest.ridge.pick(c)),
                   "dv": guards.design_valid(data, c, 0.1, bp, rest=rest.bayes.pick(c))}
            for name in want:
                rtol = 1e-6 if name == "dv" else 1e-9  # the Bayesian predictions are float32 (above), the rest float64
                for k, v in want[name].items():
                    if isinstance(v, (float, list)):
                        np.testing.assert_allclose(got[name][k], v, rtol=rtol, atol=1e-12, err_msg=f"{name}.{k}")
                    else:
                        assert got[name][k] == v, f"{name}.{k}"

"""The PPI++ baseline's cross-fitted ridge predictions (calibration.baselines.crossfit_predictions), made without a
copy of every scored cell's features, equal the dense textbook construction: one (cells x features) design with
model indicators, a ridge per request-level fold, the held-out fold's cells predicted by its model and the cells of
unlabelled requests by the average of the fold models."""
from __future__ import annotations

import numpy as np
import pytest

from calibration import baselines
from calibration.data import prepare
from tests.support.simulate import simulate_binary, simulate_pairwise


def _dense_reference(data, obs, seed, folds=5, lam=5.0):
    R, M, F = data.X.shape
    onehot = np.broadcast_to(np.eye(M)[None, :, 1:], (R, M, M - 1))
    feats = np.concatenate([data.X.astype(float), onehot], axis=2).reshape(R * M, -1)
    y = obs.reshape(-1)
    lab = np.isfinite(y)
    req_of = np.repeat(np.arange(R), M)
    lab_reqs = np.unique(req_of[lab])
    fold_of_req = np.full(R, -1)
    fold_of_req[lab_reqs] = np.random.default_rng(seed).permutation(len(lab_reqs)) % folds
    fold = fold_of_req[req_of]
    pred = np.zeros(R * M)
    K = min(folds, len(lab_reqs))
    for k in range(K):
        tr = lab & (fold != k)
        Xa = np.column_stack([np.ones(tr.sum()), feats[tr]])
        pen = lam * np.eye(Xa.shape[1])
        pen[0, 0] = 0.0
        w = np.linalg.solve(Xa.T @ Xa + pen, Xa.T @ y[tr])
        pred[fold == k] = w[0] + feats[fold == k] @ w[1:]
        pred[fold < 0] += (w[0] + feats[fold < 0] @ w[1:]) / K
    return pred.reshape(R, M)


@pytest.mark.parametrize("case", ["pairwise", "binary-3-models", "few-labels"])
def test_crossfit_predictions_equal_the_dense_construction(case):
    if case == "pairwise":
        t, dim, kind = simulate_pairwise(5, n_requests=900, n_labels=90), "quality", "pairwise"
    elif case == "binary-3-models":
        t = simulate_binary(6, n_requests=900, n_labels=120, candidates=("cand-a", "cand-b"),
                            model_effect=(0.0, 0.2, -0.1), judge_bias=(0.0, 0.6, 0.2))
        dim, kind = "correctness", "binary"
    else:
        t, dim, kind = simulate_binary(7, n_requests=300, n_labels=3), "correctness", "binary"
    d = prepare(t.scores, t.labels, "incumbent", None, dim, kind, t.traffic, ["region"])
    obs = baselines.cell_matrix(d)
    got = baselines.crossfit_predictions(d, obs, 2, chunk=64)  # several chunks
    if case == "few-labels":  # under 4 labelled requests: every cell gets the labels' mean
        assert np.allclose(got, np.nanmean(obs))
    else:
        np.testing.assert_allclose(got, _dense_reference(d, obs, 2), rtol=0, atol=1e-12)
        assert np.isfinite(got).all() and got.std() > 0

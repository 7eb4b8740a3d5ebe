"""Baselines reported beside the Bayesian estimate: human labels only, judge only, PPI++.

- human_only: classical CLT interval on the labelled requests' mean label (pairwise) or on the paired
  candidate-minus-incumbent differences (absolute; unpaired Welch form when no request is labelled for both).
- judge_only: the raw, uncalibrated judge metric(s) averaged over all scored requests (names ``judge.*``, those
  naming the dimension preferred); its interval is the CLT interval of that mean and ignores judge bias.
- ppi: PPI++ (Angelopoulos, Duchi & Zrnic 2023, "PPI++: Efficient Prediction-Powered Inference",
  arXiv:2311.01453) via ``ppi_py.ppi_mean_ci`` with power tuning; the predictor is a ridge regression of the label
  on all (standardised) metrics, cross-fitted on the labelled requests (5 folds; Zrnic & Candes 2024,
  "Cross-prediction-powered inference") so the labels never score their own prediction.

When the labels come from a design with unequal inclusion probabilities (stratified with Neyman allocation,
active), the plain mean and PPI++ would be biased towards the over-sampled units. Then human_only is the Hajek
mean and ppi the design-weighted difference estimator (active inference, Zrnic & Candes 2024), both in
calibration.design, with ``method`` saying which was used.
"""
from __future__ import annotations

import numpy as np
from ppi_py import classical_mean_ci, ppi_mean_ci
from scipy.stats import norm

from calibration import design
from calibration.data import CalibrationData


def _span(data: CalibrationData) -> float:
    v = data.cat_values
    return float(v.max() - v.min())


def _wide(data: CalibrationData) -> list[float]:
    lo = float(data.cat_values.min()) if data.kind == "pairwise" else -_span(data)
    hi = float(data.cat_values.max()) if data.kind == "pairwise" else _span(data)
    return [lo, hi]


def cell_matrix(data: CalibrationData) -> np.ndarray:
    """(n_req, n_models) mean observed label, NaN when unlabelled."""
    req, mod, ybar, _ = data.labelled_cells()
    obs = np.full((data.n_req, data.n_models), np.nan)
    obs[req, mod] = ybar
    return obs


def target_values(data: CalibrationData, obs: np.ndarray, c: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-request observed target for candidate index c, and the mask of requests where it is observed."""
    if data.kind == "pairwise":
        y = obs[:, c]
    else:
        y = obs[:, c + 1] - obs[:, 0]
    return y, np.isfinite(y)


def human_only(data: CalibrationData, c: int, alpha: float, mask: np.ndarray | None = None) -> dict:
    obs = cell_matrix(data)
    if mask is not None:
        obs = np.where(mask[:, None], obs, np.nan)
    y, ok = target_values(data, obs, c)
    n = int(ok.sum())
    if n >= 2 and data.design_weighted:
        r = design.hajek_estimate(y[ok], data.target_pi(c)[ok], confidence=1 - alpha)
        return {"estimate": r["estimate"], "interval": list(r["interval"]), "n": n, "method": "hajek"}
    if n >= 2:
        lo, hi = classical_mean_ci(y[ok], alpha=alpha)
        return {"estimate": float(y[ok].mean()), "interval": [float(lo), float(hi)], "n": n}
    if data.kind != "pairwise":  # unpaired: candidate labels and incumbent labels on different requests
        a, b = obs[:, c + 1], obs[:, 0]
        a, b = a[np.isfinite(a)], b[np.isfinite(b)]
        if len(a) >= 2 and len(b) >= 2:
            est = a.mean() - b.mean()
            se = np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
            z = norm.ppf(1 - alpha / 2)
            return {"estimate": float(est), "interval": [float(est - z * se), float(est + z * se)],
                    "n": int(min(len(a), len(b))), "paired": False}
    est = float(y[ok].mean()) if n else float("nan")
    return {"estimate": est, "interval": _wide(data), "n": n}


def judge_columns(data: CalibrationData) -> list[int]:
    names = data.raw_metric_names
    judge = [i for i, m in enumerate(names) if m.startswith("judge.")]
    named = [i for i in judge if data.dimension in names[i].split(".")]
    return named or judge


def judge_only(data: CalibrationData, c: int, alpha: float, judge_raw: np.ndarray | None) -> dict:
    """judge_raw: (n_req, n_models) raw judge value per cell (mean of the judge columns), NaN when missing."""
    if judge_raw is None:
        return {"estimate": None, "interval": None, "note": "no judge.* metric"}
    if data.kind == "pairwise":
        y = judge_raw[:, c]
    else:
        y = judge_raw[:, c + 1] - judge_raw[:, 0]
    y = y[np.isfinite(y)]
    if len(y) < 2:
        return {"estimate": None, "interval": None, "note": "judge metric missing"}
    lo, hi = classical_mean_ci(y, alpha=alpha)
    return {"estimate": float(y.mean()), "interval": [float(lo), float(hi)], "n": int(len(y))}


def _ridge_fit(X: np.ndarray, y: np.ndarray, lam: float) -> np.ndarray:
    Xa = np.column_stack([np.ones(len(X)), X])
    pen = lam * np.eye(Xa.shape[1])
    pen[0, 0] = 0.0
    return np.linalg.solve(Xa.T @ Xa + pen, Xa.T @ y)


def _ridge_predict(X: np.ndarray, w: np.ndarray) -> np.ndarray:
    return w[0] + X @ w[1:]


def crossfit_predictions(data: CalibrationData, obs: np.ndarray, seed: int, folds: int = 5, lam: float = 5.0):
    """Cross-fitted ridge predictions of the per-cell mean label from the cell's metrics and model identity.

    Returns (n_req, n_models) predictions for every cell; a labelled cell's prediction comes from the models that
    did not see its request (request-level folds), an unlabelled cell's from the average of the fold models.
    """
    R, M, F = data.X.shape
    onehot = np.broadcast_to(np.eye(M)[None, :, 1:], (R, M, M - 1))
    feats = np.concatenate([data.X.astype(float), onehot], axis=2).reshape(R * M, -1)
    yflat = obs.reshape(-1)
    lab = np.isfinite(yflat)
    req_of = np.repeat(np.arange(R), M)
    lab_reqs = np.unique(req_of[lab])
    pred = np.zeros(R * M)
    if len(lab_reqs) < 4:
        pred[:] = np.nanmean(yflat) if lab.any() else 0.0
        return pred.reshape(R, M)
    rng = np.random.default_rng(seed)
    fold_of_req = np.full(R, -1)
    fold_of_req[lab_reqs] = rng.permutation(len(lab_reqs)) % folds
    fold = fold_of_req[req_of]
    unl = fold < 0
    for k in range(min(folds, len(lab_reqs))):
        tr = lab & (fold != k)
        w = _ridge_fit(feats[tr], yflat[tr], lam)
        te = fold == k
        pred[te] = _ridge_predict(feats[te], w)
        pred[unl] += _ridge_predict(feats[unl], w) / min(folds, len(lab_reqs))
    return pred.reshape(R, M)


def ppi(data: CalibrationData, c: int, alpha: float, pred: np.ndarray) -> dict:
    """PPI++ interval for the candidate's estimand with the cross-fitted predictions ``pred`` (n_req, n_models)."""
    obs = cell_matrix(data)
    y, ok = target_values(data, obs, c)
    yhat = pred[:, c] if data.kind == "pairwise" else pred[:, c + 1] - pred[:, 0]
    scored = data.estimand_mask()[:, c]
    unl = ~ok & scored
    if ok.sum() < 2 or unl.sum() < 1:
        return {"estimate": None, "interval": None, "note": "too few labelled/unlabelled requests"}
    if data.design_weighted:
        every = scored | ok
        r = design.difference_estimate(yhat[every], y[ok], yhat[ok], data.target_pi(c)[ok], confidence=1 - alpha)
        return {"estimate": r["estimate"], "interval": list(r["interval"]), "n": int(ok.sum()),
                "method": "design-weighted difference"}
    # ppi_mean_ci's interval is symmetric around the PPI++ point estimate, so its midpoint is that estimate
    lo, hi = ppi_mean_ci(y[ok], yhat[ok], yhat[unl], alpha=alpha)
    lo, hi = float(np.ravel(lo)[0]), float(np.ravel(hi)[0])
    return {"estimate": (lo + hi) / 2, "interval": [lo, hi], "n": int(ok.sum())}

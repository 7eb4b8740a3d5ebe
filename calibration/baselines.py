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

Like with like: the Bayesian ``interval`` is for the N scored requests (finite population) and
``interval_population`` for the traffic they were drawn from, so every baseline reports both. For the scored
requests the labelled ones are a sample without replacement of the N, hence the finite-population correction
``1 - n/N`` on the variance (Cochran 1977, sec. 2.6; for PPI++ the SRS difference estimator of Sarndal, Swensson
& Wretman 1992, eq. 6.3.1, with the power-tuned lambda); for the population the superpopulation variance, i.e. the
scored-requests variance plus ``S_y^2 / N`` for having drawn the N (the same decomposition as
calibration.estimands). Without the correction a "narrower than labels alone" claim is flattered by
``sqrt(1 - n/N)``.
"""
from __future__ import annotations

import numpy as np
from scipy.stats import norm

from calibration import design, scored
from calibration.data import CalibrationData
from calibration.scored import Moments


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


def fpc(n: int, n_pop: int) -> float:
    """Finite-population correction ``1 - n/N`` of a sample of n from N without replacement (Cochran 1977)."""
    return float(max(0.0, 1.0 - n / n_pop)) if n_pop > 0 else 1.0


def two_intervals(est: float, var_scored: float, s2: float, n_pop: int, alpha: float) -> dict:
    """Normal intervals for the scored requests (variance ``var_scored``) and for the traffic (plus ``s2 / N``,
    the variance of the mean of N requests drawn from it)."""
    z = norm.ppf(1 - alpha / 2)
    var_pop = var_scored + s2 / max(n_pop, 1)
    se, se_pop = float(np.sqrt(max(var_scored, 0.0))), float(np.sqrt(max(var_pop, 0.0)))
    return {"estimate": float(est), "interval": [est - z * se, est + z * se], "se": se,
            "interval_population": [est - z * se_pop, est + z * se_pop], "se_population": se_pop}


def _weighted_var(y: np.ndarray, w: np.ndarray) -> float:
    m = np.sum(w * y) / w.sum()
    return float(np.sum(w * (y - m) ** 2) / w.sum() * len(y) / max(len(y) - 1, 1))


def human_only(data: CalibrationData, c: int, alpha: float, mask: np.ndarray | None = None,
               n_scored: int | None = None) -> dict:
    """Labels alone, for the scored requests (``interval``, with the finite-population correction) and for the
    traffic (``interval_population``, the classical CLT interval). ``n_scored``: the requests in the candidate's
    estimand when ``data`` does not hold them all (calibration.scored)."""
    obs = cell_matrix(data)
    if mask is not None:
        obs = np.where(mask[:, None], obs, np.nan)
    y, ok = target_values(data, obs, c)
    n = int(ok.sum())
    n_pop = int(max(data.estimand_mask()[:, c].sum() if n_scored is None else n_scored, n))
    if n >= 2 and data.design_weighted:
        pi = data.target_pi(c)[ok]
        r = design.hajek_estimate(y[ok], pi, confidence=1 - alpha)  # design variance: already for the scored
        out = two_intervals(r["estimate"], r["se"] ** 2, _weighted_var(y[ok], 1.0 / pi), n_pop, alpha)
        return {**out, "n": n, "N": n_pop, "method": "hajek"}
    if n >= 2:
        s2 = float(y[ok].var(ddof=1))
        # population variance (1 - n/N) s^2/n + s^2/N = s^2/n: the classical CLT interval (ppi_py's
        # classical_mean_ci, up to its ddof=0 standard deviation)
        out = two_intervals(float(y[ok].mean()), fpc(n, n_pop) * s2 / n, s2, n_pop, alpha)
        return {**out, "n": n, "N": n_pop}
    if data.kind != "pairwise":  # unpaired: candidate labels and incumbent labels on different requests
        a, b = obs[:, c + 1], obs[:, 0]
        a, b = a[np.isfinite(a)], b[np.isfinite(b)]
        if len(a) >= 2 and len(b) >= 2:
            est = a.mean() - b.mean()
            va, vb = a.var(ddof=1), b.var(ddof=1)
            var = fpc(len(a), n_pop) * va / len(a) + fpc(len(b), n_pop) * vb / len(b)
            out = two_intervals(float(est), var, va + vb, n_pop, alpha)
            return {**out, "n": int(min(len(a), len(b))), "N": n_pop, "paired": False}
    est = float(y[ok].mean()) if n else float("nan")
    return {"estimate": est, "interval": _wide(data), "interval_population": _wide(data), "n": n, "N": n_pop}


def judge_columns(data: CalibrationData) -> list[int]:
    names = data.raw_metric_names
    judge = [i for i, m in enumerate(names) if m.startswith("judge.")]
    named = [i for i in judge if data.dimension in names[i].split(".")]
    return named or judge


def judge_only(data: CalibrationData, c: int, alpha: float, judge_raw: np.ndarray | None,
               rest: Moments | None = None) -> dict:
    """judge_raw: (n_req, n_models) raw judge value per cell (mean of the judge columns), NaN when missing.
    ``rest``: the judge target's moments over the requests outside ``data``'s labelled ones (calibration.scored);
    None: every request of ``data`` is used. The interval is ``ppi_py.classical_mean_ci``'s (ddof 0)."""
    if judge_raw is None:
        return {"estimate": None, "interval": None, "note": "no judge.* metric"}
    t = scored.target(judge_raw, data.kind)
    if rest is not None:
        t = t[labelled_requests(data)]
    m = Moments.of(t, np.isfinite(t))
    n, mean, m2 = (m if rest is None else m.add(rest)).pick(c)
    if n < 2:
        return {"estimate": None, "interval": None, "note": "judge metric missing"}
    half = norm.ppf(1 - alpha / 2) * np.sqrt(m2 / n) / np.sqrt(n)
    return {"estimate": float(mean), "interval": [float(mean - half), float(mean + half)], "n": int(n)}


def labelled_requests(data: CalibrationData) -> np.ndarray:
    """(n_req,) bool: the requests with a label row in the dimension (any model)."""
    out = np.zeros(data.n_req, dtype=bool)
    out[data.lab_req] = True
    return out


def _ridge_fit(X: np.ndarray, y: np.ndarray, lam: float) -> np.ndarray:
    Xa = np.column_stack([np.ones(len(X)), X])
    pen = lam * np.eye(Xa.shape[1])
    pen[0, 0] = 0.0
    return np.linalg.solve(Xa.T @ Xa + pen, Xa.T @ y)


def _ridge_predict(X: np.ndarray, w: np.ndarray) -> np.ndarray:
    return w[0] + X @ w[1:]


def crossfit_predictions(data: CalibrationData, obs: np.ndarray, seed: int, folds: int = 5, lam: float = 5.0,
                         chunk: int = 1 << 16) -> np.ndarray:
    """(n_req, n_models) cross-fitted ridge predictions of every cell (:func:`crossfit`)."""
    return crossfit(data, obs, seed, folds, lam, chunk)[0]


def crossfit(data: CalibrationData, obs: np.ndarray, seed: int, folds: int = 5, lam: float = 5.0,
             chunk: int = 1 << 16, unlabelled: bool = True) -> tuple[np.ndarray, np.ndarray | None, float]:
    """Cross-fitted ridge predictions of the per-cell mean label from the cell's metrics and model identity.

    Returns (predictions (n_req, n_models), the fold-averaged weights or None, the constant used without them).
    A cell of a labelled request gets its prediction from the model that did not see that request (request-level
    folds), a cell of an unlabelled request the average of the fold models' predictions: the prediction with the
    averaged weights (calibration.scored.ridge_cells), made ``chunk`` requests at a time, or left NaN with
    ``unlabelled=False`` (their sums are made elsewhere, calibration.scored). The fits need the labelled requests'
    cells only, so no (cells x features) float64 copy of all scored cells is made (~3 GB at 10M requests).
    With fewer than 4 labelled requests every cell gets the mean label.
    """
    R, M, F = data.X.shape
    pred = np.zeros((R, M)) if unlabelled else np.full((R, M), np.nan)
    labelled = np.isfinite(obs)
    lab_reqs = np.flatnonzero(labelled.any(axis=1))
    if len(lab_reqs) < 4:
        const = float(np.nanmean(obs)) if labelled.any() else 0.0
        pred[lab_reqs if not unlabelled else slice(None)] = const
        return pred, None, const

    def cells(req: np.ndarray, mod: np.ndarray) -> np.ndarray:  # metrics, then indicators of models 1..M-1
        f = np.zeros((len(req), F + M - 1))
        f[:, :F] = data.X[req, mod, :]
        other = mod > 0
        f[np.flatnonzero(other), F + mod[other] - 1] = 1.0
        return f

    req = np.repeat(lab_reqs, M)  # every cell of a labelled request, request-major as before
    mod = np.tile(np.arange(M), len(lab_reqs))
    feats, y = cells(req, mod), obs[req, mod]
    lab = np.isfinite(y)
    fold_of_req = np.full(R, -1)
    fold_of_req[lab_reqs] = np.random.default_rng(seed).permutation(len(lab_reqs)) % folds
    fold = fold_of_req[req]
    K = min(folds, len(lab_reqs))
    w_mean = 0.0
    for k in range(K):
        w = _ridge_fit(feats[lab & (fold != k)], y[lab & (fold != k)], lam)
        te = fold == k
        pred[req[te], mod[te]] = _ridge_predict(feats[te], w)
        w_mean = w_mean + w / K
    if unlabelled:
        unl = np.flatnonzero(fold_of_req < 0)
        for r0 in range(0, len(unl), chunk):
            r = unl[r0:r0 + chunk]
            pred[r] = scored.ridge_cells(data.X[r], w_mean, 0.0)
    return pred, w_mean, 0.0


def target_predictions(data: CalibrationData, pred: np.ndarray, c: int) -> np.ndarray:
    """Per-request predicted target for candidate c from per-cell predictions (n_req, n_models)."""
    return pred[:, c] if data.kind == "pairwise" else pred[:, c + 1] - pred[:, 0]


def power_lambda(y: np.ndarray, yhat: np.ndarray) -> float:
    """Variance-minimising weight of the prediction in ``y - lambda yhat`` (Cov / Var, clipped to [0, 1] as in
    PPI++'s power tuning, Angelopoulos, Duchi & Zrnic 2023)."""
    v = float(np.var(yhat, ddof=1)) if len(yhat) > 1 else 0.0
    if v <= 1e-12:
        return 0.0
    return float(np.clip(np.cov(y, yhat, ddof=1)[0, 1] / v, 0.0, 1.0))


def difference_intervals(data: CalibrationData, c: int, alpha: float, yhat: np.ndarray, y: np.ndarray,
                         ok: np.ndarray, tune: bool = True, rest: tuple[float, float, float] | None = None) -> dict:
    """Prediction-powered (difference) estimate of the candidate's estimand with both intervals.

    ``theta = mean_scored(lambda yhat) + HT mean of (y - lambda yhat)`` over the labelled requests (Sarndal,
    Swensson & Wretman 1992, eq. 6.3.1): unbiased for the scored requests' mean under the labels' design whatever
    the predictor; its design variance (calibration.design, Hajek-Deville, which is ``(1 - n/N) s_r^2 / n`` under
    simple random sampling) gives ``interval``; adding ``S_y^2 / N`` gives ``interval_population``.
    ``rest``: (n, mean, m2) of ``yhat`` over the scored requests outside ``data``'s labelled ones
    (calibration.scored); None: ``data`` holds every scored request.
    """
    scored_ = data.estimand_mask()[:, c]
    every = scored_ | ok
    if rest is not None:
        every &= labelled_requests(data)
    m = Moments.of(yhat[:, None], every[:, None])
    if rest is not None:
        m = m.add(Moments(*(np.array([v]) for v in rest)))
    n, n_pop, pred_mean = int(ok.sum()), int(m.n[0]), float(m.mean[0])
    if n < 2:  # (every scored request labelled is fine: the scored variance is then 0)
        return {"estimate": None, "interval": None, "interval_population": None,
                "note": "too few labelled requests"}
    lam = power_lambda(y[ok], yhat[ok]) if tune else 1.0
    pi = data.target_pi(c)[ok] if data.design_weighted else np.full(n, n / n_pop)
    r = design.difference_estimate_from_mean(lam * pred_mean, n_pop, y[ok], lam * yhat[ok], pi,
                                             confidence=1 - alpha)
    out = two_intervals(r["estimate"], r["se"] ** 2, _weighted_var(y[ok], 1.0 / pi), n_pop, alpha)
    return {**out, "n": n, "N": n_pop, "lambda": round(lam, 4)}


def ppi_mean_interval(y: np.ndarray, yhat: np.ndarray, unl: tuple[float, float, float],
                      alpha: float) -> tuple[float, float]:
    """``ppi_py.ppi_mean_ci`` (power-tuned PPI++ for a mean, Angelopoulos, Duchi & Zrnic 2023, unweighted,
    two-sided) from the unlabelled predictions' (n, mean, m2) instead of their values, so the unlabelled requests
    can be summed elsewhere: the same arithmetic (its lambda from the pooled ddof-1 variance of all predictions,
    its standard errors with ddof 0), checked against it in tests/calibration/test_scored.py."""
    n, N = len(y), unl[0]
    mu_u, m2_u = unl[1], unl[2]
    pt1 = mu_u + float(np.mean(y - yhat))
    g, gh = y - pt1, yhat - pt1
    cov = 2.0 * float(np.sum((g - g.mean()) * (gh - gh.mean()))) / n
    # pooled variance of [yhat, yhat_unlabelled] (np.cov: ddof 1), by the pairwise update
    pooled = Moments.of(yhat[:, None], np.ones((n, 1), bool)).add(Moments(*(np.array([v]) for v in unl)))
    var_all = float(pooled.m2[0]) / (n + N - 1)
    lam = float(np.clip(cov / (2.0 * (1.0 + n / N) * var_all), 0.0, 1.0)) if var_all > 0 else 0.0
    est = lam * mu_u + float(np.mean(y - lam * yhat))
    se = np.sqrt(lam * lam * (m2_u / N) / N + float(np.std(y - lam * yhat)) ** 2 / n)
    z = norm.ppf(1 - alpha / 2)
    return est - z * se, est + z * se


def ppi(data: CalibrationData, c: int, alpha: float, pred: np.ndarray,
        rest: tuple[float, float, float] | None = None) -> dict:
    """PPI++ for the candidate's estimand with the cross-fitted predictions ``pred`` (n_req, n_models).

    ``interval`` (scored requests): the power-tuned difference estimator with its finite-population design
    variance (:func:`difference_intervals`). ``interval_population``: ``ppi_py.ppi_mean_ci``'s arithmetic
    (:func:`ppi_mean_interval`; superpopulation PPI++) for simple random samples, the design-based variance plus
    ``S_y^2 / N`` under a weighted design. ``rest``: (n, mean, m2) of the predicted target over the scored
    requests outside ``data``'s labelled ones (calibration.scored); None: ``data`` holds every scored request."""
    obs = cell_matrix(data)
    y, ok = target_values(data, obs, c)
    yhat = target_predictions(data, pred, c)
    unl = ~ok & data.estimand_mask()[:, c]
    if rest is not None:
        unl &= labelled_requests(data)
    m = Moments.of(yhat[:, None], unl[:, None])
    if rest is not None:
        m = m.add(Moments(*(np.array([v]) for v in rest)))
    if ok.sum() < 2 or m.n[0] < 1:
        return {"estimate": None, "interval": None, "interval_population": None,
                "note": "too few labelled/unlabelled requests"}
    out = difference_intervals(data, c, alpha, yhat, y, ok, rest=rest)
    if data.design_weighted:
        return {**out, "method": "design-weighted difference"}
    # ppi_mean_ci's interval is symmetric around the PPI++ point estimate, so its midpoint is that estimate
    lo, hi = ppi_mean_interval(y[ok], yhat[ok], m.pick(0), alpha)
    out["interval_population"] = [float(lo), float(hi)]
    return out

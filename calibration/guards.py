"""Guards: checks that do not trust the calibration model and can block ``migrate`` (verdict ``more_labels``).

The Bayesian verdict is only as good as the model; a wrong model (judge quality that differs by segment, a
non-linear judge-to-human relation, a judge that favours the candidate's style) can give a narrow interval in the
wrong place. Each guard returns ``{name, fired, value, threshold, detail}``; a fired guard turns a ``migrate`` into
``more_labels`` (it never turns anything into ``migrate`` or ``reject``).

- ``design_valid``: a prediction-powered interval whose validity rests on the labels' sampling design, not on the
  model (PPI++ / difference estimator, Angelopoulos, Duchi & Zrnic 2023; Sarndal, Swensson & Wretman 1992 eq.
  6.3.1), with the Bayesian predictive mean as predictor, cross-fitted by PSIS-LOO for the labelled requests
  (Vehtari, Gelman & Gabry 2017). Value: its P(non-inferior) on the decision's basis, from a Student t with
  n - 1 degrees of freedom (the standard error is estimated from the n labels); fires below the confidence C.
  Because this interval covers at about its nominal rate whatever the model, a candidate inferior beyond the
  margin passes it with probability at most about 1 - C, which bounds the guarded false-migrate rate. That rests
  on the central limit theorem, so it also fires with fewer than ``MIN_DESIGN_LABELS`` labelled requests for the
  candidate: with two or three labels that happen to agree the estimated standard error is near zero, and on
  PandaLM with 2-3 labels per model pair this let one candidate far below the margin (full-human win rate 0.348)
  migrate when its two labels both favoured it (benchmarks/calibration_real.py, n = 25).
- ``predictive_check``: the model's held-out (PSIS-LOO) log score per annotation minus that of the label-frequency
  baseline (fitted in-sample, so favoured); fires when it is below minus two standard errors of the paired per-cell
  difference (the metrics, through the model, predict held-out labels worse than no metrics at all, beyond noise).
- ``interval_agreement``: the gap between the Bayesian interval and the PPI++ baseline's interval (ridge
  predictor, calibration.baselines) on the same basis; fires when they do not overlap.
"""
from __future__ import annotations

import numpy as np
from scipy.stats import t as student_t

from calibration import baselines, scored
from calibration.data import CalibrationData
from calibration.diagnostics import loo_cell_means

# Fewest labelled requests of a candidate with which the design-valid guard can let ``migrate`` through.
MIN_DESIGN_LABELS = 10


def thin_draws(p: dict[str, np.ndarray], max_draws: int = 250) -> dict[str, np.ndarray]:
    """``max_draws`` evenly spaced posterior draws: enough for a posterior mean."""
    D = p["cut"].shape[0]
    idx = np.linspace(0, D - 1, min(D, max_draws)).astype(int)
    return {k: v[idx] for k, v in p.items()}


def predictive_means(data: CalibrationData, p: dict[str, np.ndarray], max_draws: int = 250,
                     chunk: int = 8192, rows: np.ndarray | None = None, loo=None) -> np.ndarray:
    """(n_req, n_models) Bayesian prediction of each cell's mean label: the posterior mean of the predictive mean
    for unlabelled cells (calibration.scored.bayes_cells), the PSIS-LOO predictive mean for labelled ones (so no
    label predicts itself).

    ``max_draws`` evenly spaced draws suffice for a posterior mean; chunks of ``chunk`` requests bound memory.
    ``rows``: predict only these requests (the others NaN; the labelled requests' rows must be among them).
    ``loo``: the labelled cells' calibration.diagnostics.psis_loo, when already computed."""
    q = thin_draws(p, max_draws)
    pred = scored.Predictors.build(data.kind, len(data.candidates), data.n_models, data.cat_values, None, 0.0, q)
    rows = np.arange(data.n_req) if rows is None else np.asarray(rows)
    out = np.zeros((data.n_req, data.n_models)) if len(rows) == data.n_req else \
        np.full((data.n_req, data.n_models), np.nan)
    seg = np.asarray(data.seg_idx)
    for r0 in range(0, len(rows), chunk):
        r = rows[r0:r0 + chunk]
        out[r] = scored.bayes_cells(pred, data.X[r], seg[r])
    if len(data.lab_req):
        req, mod, mean = loo_cell_means(data, p, loo)
        out[req, mod] = mean
    return out


def design_valid(data: CalibrationData, c: int, alpha: float, pred: np.ndarray,
                 rest: tuple[float, float, float] | None = None) -> dict:
    """Prediction-powered estimate with both intervals (calibration.baselines.difference_intervals) for candidate
    ``c`` with the Bayesian predictions ``pred`` from :func:`predictive_means`; ``rest`` as there."""
    obs = baselines.cell_matrix(data)
    y, ok = baselines.target_values(data, obs, c)
    return baselines.difference_intervals(data, c, alpha, baselines.target_predictions(data, pred, c), y, ok,
                                          rest=rest)


def _gap(a, b) -> float | None:
    if not a or not b or a[0] is None or b[0] is None:
        return None
    return float(max(0.0, a[0] - b[1], b[0] - a[1]))


def evaluate(dv: dict, ppc: dict, bayes_interval: list[float], ppi: dict, thr_ni: float, confidence: float,
             basis: str) -> list[dict]:
    """The guards of one candidate and dimension (see module docstring), on the decision's ``basis``."""
    key = "interval_population" if basis == "population" else "interval"
    se_key = "se_population" if basis == "population" else "se"
    out = []
    if dv.get("estimate") is None:
        out.append({"name": "design_valid", "fired": True, "value": None, "threshold": confidence,
                    "detail": "too few labelled requests for a design-valid interval: the model alone cannot migrate"})
    else:
        se, n = dv[se_key], int(dv.get("n") or 0)
        p_ni = float(student_t.sf((thr_ni - dv["estimate"]) / se, df=max(n - 1, 1))) if se > 0 \
            else float(dv["estimate"] > thr_ni)
        few = n < MIN_DESIGN_LABELS
        detail = (f"design-valid (PPI++ with the Bayesian predictor) P(non-inferior) = {p_ni:.3f}, "
                  f"interval {[round(v, 3) for v in dv[key]]}")
        if few:
            detail = (f"only {n} labelled requests for this candidate, fewer than {MIN_DESIGN_LABELS}: too few for a "
                      f"design-valid interval, the model alone cannot migrate ({detail})")
        out.append({"name": "design_valid", "fired": bool(few or p_ni < confidence - 1e-9), "value": round(p_ni, 4),
                    "threshold": confidence, "interval": [round(v, 4) for v in dv[key]], "detail": detail})
    if ppc.get("heldout_log_score") is not None and ppc.get("baseline_log_score") is not None:
        d = float(ppc["heldout_log_score"] - ppc["baseline_log_score"])
        tol = -2.0 * float(ppc.get("log_score_diff_se") or 0.0)
        out.append({"name": "predictive_check", "fired": bool(d < tol), "value": round(d, 4),
                    "threshold": round(tol, 4),
                    "detail": f"held-out log score {ppc['heldout_log_score']:.3f} vs label-frequency baseline "
                              f"{ppc['baseline_log_score']:.3f} per annotation"})
    gap = _gap(bayes_interval, ppi.get(key))
    if gap is not None:
        out.append({"name": "interval_agreement", "fired": bool(gap > 0), "value": round(gap, 4), "threshold": 0.0,
                    "detail": f"Bayesian interval {[round(v, 3) for v in bayes_interval]} vs PPI++ "
                              f"{[round(v, 3) for v in ppi[key]]}"})
    return out


def labels_needed(dv: dict, thr_ni: float, confidence: float, available: int, basis: str) -> int:
    """Extra labelled requests after which the design-valid interval would likely support non-inferiority (when
    the ``design_valid`` guard is what blocks migrate, the model's own labels_needed is 0): its standard error
    shrinks like 1/sqrt(labels), so the smallest total m with ``gap >= t_{C, m-1} se sqrt(n / m)`` (the guard's own
    Student t rule, :func:`evaluate`), minus n; all still-unlabelled requests ``available`` when its estimate is
    not above the threshold."""
    se = dv.get("se_population" if basis == "population" else "se")
    n = int(dv.get("n") or 0)
    short = max(0, MIN_DESIGN_LABELS - n)  # the guard cannot pass below MIN_DESIGN_LABELS whatever the estimate
    if dv.get("estimate") is None:
        return int(min(available, short))
    gap = dv["estimate"] - thr_ni
    if gap <= 0:
        return int(available)

    def settles(m: int) -> bool:
        return bool(gap >= student_t.ppf(confidence, df=max(m - 1, 1)) * se * np.sqrt(n / m))

    if not se or settles(n):  # se 0: every scored request labelled, the estimate is the value
        return int(min(available, short))
    lo, hi = n, n + max(int(available), 1)  # settles(lo) is False; bisect for the first m that settles
    if not settles(hi):
        return int(available)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if settles(mid) else (mid, hi)
    return int(min(available, max(1, short, hi - n)))

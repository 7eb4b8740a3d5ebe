"""Sampling designs for human labels, their inclusion probabilities, and design-weighted estimators.

Pure functions over arrays of the N scored units (pandas only to read a labels table's design columns) (a unit is a (request, candidate) pair). Every design returns the
chosen unit indices and the first-order inclusion probability ``pi`` of *every* unit, so an estimate from the
labels can be re-weighted by ``1 / pi`` (Horvitz & Thompson 1952) and stays unbiased for the mean over all
scored units whichever design chose them.

Designs
- random: simple random sampling without replacement, ``pi = n / N``.
- stratified: simple random sampling within strata (segments), proportional or Neyman allocation
  (Neyman 1934: ``n_h`` proportional to ``N_h S_h``), ``pi = n_h / N_h``.
- active: probability proportional to the predicted uncertainty of the label (for a label with predicted mean
  ``p`` in [0, 1], ``sqrt(p (1 - p))``), mixed with the uniform design so that no unit has a tiny probability
  (the ``tau`` mixing of Zrnic & Candes 2024, "Active Statistical Inference", ICML), capped at 1. This is the
  Neyman-optimal choice for the difference estimator below when the uncertainty is the residual's standard
  deviation. Units are drawn by randomised systematic probability-proportional-to-size sampling (Goodman & Kish
  1950; Hartley & Rao 1962), which has a fixed sample size and exactly the inclusion probabilities asked for.

Estimators
:func:`hajek_estimate` is the human-only mean of the labels weighted by ``1 / pi`` (Hajek 1971).
:func:`difference_estimate` is the design-weighted difference (model-assisted) estimator of Sarndal, Swensson &
Wretman (1992, ch. 6), the finite-population form of prediction-powered / active inference: the mean of the
automated prediction over all units plus the Horvitz-Thompson estimate of the mean residual on the labelled
ones. Its variance uses the Hajek (1964) / Deville (1999) approximation for fixed-size high-entropy designs.

The labels' sampling design as arrays for one dimension (:func:`unit_probabilities` onward), and how the
calibration model adjusts for it.

`baton labels export` chooses units (request, candidate) with known inclusion probabilities ``pi``
(above). When they differ between units (active; stratified with unequal sampling fractions), the
labelled units are not a miniature of the scored ones, and the model adjusts in one of two ways:

- ``covariate`` (default when every scored unit's ``pi`` is known): ``log pi`` enters the model as one more
  feature. A design that depends only on variables in the model is ignorable for model-based inference (Rubin
  1976; Gelman et al., Bayesian Data Analysis 3rd ed., ch. 8), and conditioning on the probability of selection
  keeps a misspecified model right along the direction the design selects on (the propensity-covariate idea of
  Little 2004 and Zheng & Little 2003, here a linear term rather than their spline). Labels weigh the same, so an
  active design keeps its efficiency.
- ``weights`` (when only the labelled units' ``pi`` is known, e.g. `baton decide` on a labels table): each labelled
  cell's log-likelihood is weighted by ``1 / pi`` (calibration.models.cell_weights), the survey-weighted
  pseudo-posterior of Savitsky & Toth (2016). Design-consistent under misspecification, at a cost in width.

The frequentist baselines always use the design's weights (calibration.baselines).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from calibration.checks import InputError, numeric, require

__all__ = [
    "ht_weights", "random_design", "stratified_allocation", "stratified_design", "active_probabilities",
    "active_design", "systematic_pps", "bernoulli_sd", "combine_inclusion", "ht_mean",
    "kish_n_eff", "hajek_estimate", "difference_estimate", "fit_logistic", "predict_logistic",
    "LOG_PI", "unit_probabilities", "any_unit_probability", "label_probabilities", "log_pi_feature",
]


def _rng(seed: int | np.random.Generator | None) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def ht_weights(pi: np.ndarray) -> np.ndarray:
    """Horvitz-Thompson weights ``1 / pi`` (Horvitz & Thompson 1952); raises on a probability outside (0, 1]."""
    pi = np.asarray(pi, dtype=float)
    if np.any(~np.isfinite(pi)) or np.any(pi <= 0) or np.any(pi > 1 + 1e-9):
        bad = int(np.flatnonzero(~np.isfinite(pi) | (pi <= 0) | (pi > 1 + 1e-9))[0])
        raise ValueError(f"inclusion probability at position {bad} is {pi[bad]!r}; must be in (0, 1]")
    return 1.0 / pi


def random_design(n_pop: int, n: int, seed=None) -> tuple[np.ndarray, np.ndarray]:
    """Simple random sample without replacement of ``n`` of ``n_pop`` units: (sorted indices, pi = n / N)."""
    if not 0 <= n <= n_pop:
        raise ValueError(f"sample size n={n} must be between 0 and the population size {n_pop}")
    idx = np.sort(_rng(seed).choice(n_pop, size=n, replace=False))
    return idx, np.full(n_pop, n / n_pop if n_pop else 0.0)


def stratified_allocation(sizes: np.ndarray, n: int, sd: np.ndarray | None = None) -> np.ndarray:
    """Sample size per stratum: proportional to ``N_h`` or, with ``sd``, Neyman's ``N_h S_h`` (Neyman 1934).

    Largest-remainder rounding keeps the total at ``n``; no stratum gets more than its size, and every
    non-empty stratum gets at least one unit while ``n`` allows (so each has a positive inclusion probability).
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    total = int(sizes.sum())
    if not 0 <= n <= total:
        raise ValueError(f"sample size n={n} must be between 0 and the population size {total}")
    score = sizes.astype(float) if sd is None else sizes * np.maximum(np.asarray(sd, dtype=float), 1e-12)
    alloc = np.zeros(len(sizes), dtype=np.int64)
    if n >= np.count_nonzero(sizes):
        alloc[sizes > 0] = 1
    remaining = n - int(alloc.sum())
    while remaining > 0:
        room = sizes - alloc
        share = np.where(room > 0, score, 0.0)
        if share.sum() <= 0:
            share = room.astype(float)
        ideal = remaining * share / share.sum()
        add = np.minimum(np.floor(ideal).astype(np.int64), room)
        if add.sum() == 0:  # hand out single units by largest remainder
            order = np.argsort(-(ideal - np.floor(ideal)) - (room > 0) * 1e-9, kind="stable")
            for h in order:
                if remaining == 0:
                    break
                if room[h] > 0:
                    alloc[h] += 1
                    remaining -= 1
            continue
        alloc += add
        remaining -= int(add.sum())
    return alloc


def stratified_design(strata: np.ndarray, n: int, seed=None, sd_by_stratum: dict | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Stratified simple random sample: (sorted indices, pi = n_h / N_h per unit).

    ``strata`` holds a label per unit; ``sd_by_stratum`` (label -> predicted label sd) switches from proportional
    to Neyman allocation.
    """
    strata = np.asarray(strata)
    labels, codes = np.unique(strata, return_inverse=True)
    sizes = np.bincount(codes, minlength=len(labels))
    sd = None if sd_by_stratum is None else np.array([float(sd_by_stratum.get(lab, 0.0)) for lab in labels])
    alloc = stratified_allocation(sizes, n, sd)
    rng = _rng(seed)
    chosen, pi = [], np.zeros(len(strata))
    for h in range(len(labels)):
        members = np.flatnonzero(codes == h)
        chosen.append(rng.choice(members, size=int(alloc[h]), replace=False))
        pi[members] = alloc[h] / sizes[h]
    return np.sort(np.concatenate(chosen)) if chosen else np.array([], dtype=np.int64), pi


def bernoulli_sd(p: np.ndarray) -> np.ndarray:
    """Predicted standard deviation ``sqrt(p (1 - p))`` of a label in [0, 1] with predicted mean ``p``."""
    p = np.clip(np.asarray(p, dtype=float), 0.0, 1.0)
    return np.sqrt(p * (1.0 - p))


def active_probabilities(uncertainty: np.ndarray, n: int, tau: float = 0.2) -> np.ndarray:
    """Inclusion probabilities proportional to ``uncertainty``, floored and capped, summing to ``n``.

    ``pi = (1 - tau) * n u / sum(u) + tau * n / N`` (Zrnic & Candes 2024, eq. for the "mixed" rule), so every unit
    has at least ``tau n / N``; probabilities over 1 are set to 1 and the excess is shared among the others in
    proportion to their probabilities (the usual pps capping), so the total stays ``n``.
    """
    u = np.asarray(uncertainty, dtype=float)
    n_pop = len(u)
    if not 0 < n <= n_pop:
        raise ValueError(f"sample size n={n} must be between 1 and the population size {n_pop}")
    if not 0 < tau <= 1:
        raise ValueError(f"tau={tau} must be in (0, 1] (it floors the probabilities at tau * n / N)")
    if np.any(~np.isfinite(u)) or np.any(u < 0):
        bad = int(np.flatnonzero(~np.isfinite(u) | (u < 0))[0])
        raise ValueError(f"uncertainty at position {bad} is {u[bad]!r}; must be finite and >= 0")
    shape = u / u.sum() if u.sum() > 0 else np.full(n_pop, 1.0 / n_pop)
    pi = (1 - tau) * n * shape + tau * n / n_pop
    for _ in range(n_pop):
        over = pi > 1
        if not over.any():
            break
        capped = pi >= 1
        pi[capped] = 1.0
        free = ~capped
        pi[free] *= (n - capped.sum()) / pi[free].sum()
    return np.minimum(pi, 1.0)


def systematic_pps(pi: np.ndarray, seed=None) -> np.ndarray:
    """Randomised systematic pps sample (Goodman & Kish 1950): sorted indices, unit i included w.p. ``pi[i]``.

    Units are put in a random order, then a grid of step 1 with a uniform start picks every unit whose cumulative
    probability interval it crosses; the sample size is ``sum(pi)`` (rounded), fixed.
    """
    pi = np.asarray(pi, dtype=float)
    total = pi.sum()
    if abs(total - round(total)) > 1e-6:
        raise ValueError(f"inclusion probabilities must sum to an integer sample size, got {total:.6f}")
    rng = _rng(seed)
    order = rng.permutation(len(pi))
    cum = np.concatenate([[0.0], np.cumsum(pi[order])])
    points = rng.uniform() + np.arange(int(round(total)))
    # unit k covers [cum[k], cum[k+1]); a point falls in exactly one interval
    pos = np.searchsorted(cum, points, side="right") - 1
    pos = np.clip(pos, 0, len(pi) - 1)
    return np.sort(order[np.unique(pos)])


def active_design(uncertainty: np.ndarray, n: int, seed=None, tau: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """Active design: (sorted indices, pi) with pi from :func:`active_probabilities`, drawn by :func:`systematic_pps`."""
    pi = active_probabilities(uncertainty, n, tau)
    return systematic_pps(pi, seed), pi


def combine_inclusion(pis: list[np.ndarray]) -> np.ndarray:
    """Inclusion probability over several label batches on the same units: ``1 - prod_b (1 - pi_b)``.

    Exact when the batches are drawn independently; for a later batch drawn from the units not yet labelled, with
    ``pi_b`` its probability given that, it is the usual approximation (the batches rarely overlap in practice).
    """
    out = np.ones_like(np.asarray(pis[0], dtype=float))
    for p in pis:
        out *= 1.0 - np.clip(np.asarray(p, dtype=float), 0.0, 1.0)
    return 1.0 - out


def ht_mean(y: np.ndarray, pi: np.ndarray, n_pop: int) -> float:
    """Horvitz-Thompson estimate of the population mean: ``sum(y / pi) / N`` (Horvitz & Thompson 1952)."""
    return float(np.sum(np.asarray(y, dtype=float) * ht_weights(pi)) / n_pop)


def kish_n_eff(w: np.ndarray) -> float:
    """Kish (1965) effective sample size of weights ``w``: ``(sum w)^2 / sum w^2`` (``n`` when they are equal)."""
    w = np.asarray(w, dtype=float)
    return float(w.sum() ** 2 / np.sum(w * w))


def _deville_variance(e: np.ndarray, pi: np.ndarray, n_pop: float) -> float:
    """Variance of ``sum(e) / N`` for expanded values ``e_k = r_k / pi_k`` under a fixed-size, high-entropy design:
    ``n/(n-1) / N^2 * sum c_k (e_k - e_bar)^2`` with ``c_k = 1 - pi_k``, ``e_bar = sum c_k e_k / sum c_k`` (Hajek
    1964; Deville 1999, eq. 2.8). Under simple random sampling it is the textbook ``(1 - n/N) s^2 / n``."""
    n = len(e)
    if n < 2:
        return float("inf")
    c = 1.0 - pi
    e_bar = np.sum(c * e) / c.sum() if c.sum() > 0 else 0.0
    return float(n / (n - 1) * np.sum(c * (e - e_bar) ** 2) / n_pop**2)


def _normal_interval(est: float, var: float, n: int, confidence: float) -> dict:
    se = float(np.sqrt(var))
    z = stats.norm.ppf(0.5 + confidence / 2)
    return {"estimate": est, "se": se, "interval": (est - z * se, est + z * se), "n": n}


def hajek_estimate(y: np.ndarray, pi: np.ndarray, confidence: float = 0.9) -> dict:
    """Hajek (1971) mean of the labels with a normal interval; the design-weighted human-only estimate.

    ``theta = sum(y / pi) / sum(1 / pi)``; its linearised variance is :func:`_deville_variance` of the residuals
    ``y - theta`` expanded by ``1 / pi``, with the estimated population size ``sum(1 / pi)`` (Sarndal, Swensson &
    Wretman 1992, sec. 5.7). Returns estimate, se, interval, n.
    """
    y = np.asarray(y, dtype=float)
    pi = np.asarray(pi, dtype=float)
    w = ht_weights(pi)
    n_hat = w.sum()
    est = float(np.sum(y * w) / n_hat) if len(y) else float("nan")
    return _normal_interval(est, _deville_variance((y - est) * w, pi, n_hat), len(y), confidence)


def difference_estimate(pred_all: np.ndarray, y_lab: np.ndarray, pred_lab: np.ndarray, pi_lab: np.ndarray,
                        confidence: float = 0.9) -> dict:
    """Design-weighted difference estimator of the mean label over all N units, with a normal interval.

    ``theta = mean(pred_all) + sum((y - pred) / pi) / N`` over the labelled units (Sarndal, Swensson & Wretman
    1992, eq. 6.3.1; with ``pred = 0`` it is plain Horvitz-Thompson). Unbiased under any design with known
    ``pi > 0`` whatever the quality of the prediction; a good prediction only shrinks the variance. The variance
    is the Hajek-Deville approximation for a fixed-size, high-entropy design (:func:`_deville_variance`).
    Returns estimate, se, interval, n.
    """
    pred_all = np.asarray(pred_all, dtype=float)
    return difference_estimate_from_mean(float(pred_all.mean()), len(pred_all), y_lab, pred_lab, pi_lab,
                                         confidence)


def difference_estimate_from_mean(pred_mean: float, n_pop: int, y_lab: np.ndarray, pred_lab: np.ndarray,
                                  pi_lab: np.ndarray, confidence: float = 0.9) -> dict:
    """:func:`difference_estimate` from the mean ``pred_mean`` of the predictions over the ``n_pop`` units, which
    is all it needs of them (so they can be summed elsewhere, calibration.scored)."""
    r = np.asarray(y_lab, dtype=float) - np.asarray(pred_lab, dtype=float)
    pi = np.asarray(pi_lab, dtype=float)
    n = len(r)
    w = ht_weights(pi) if n else np.zeros(0)
    est = float(pred_mean + np.sum(r * w) / n_pop)
    return _normal_interval(est, _deville_variance(r * w, pi, n_pop), n, confidence)


def fit_logistic(X: np.ndarray, y: np.ndarray, weights: np.ndarray | None = None, ridge: float = 1e-2,
                 iters: int = 50) -> np.ndarray:
    """Weighted (fractional) logistic regression by Newton-Raphson / IRLS; ``y`` in [0, 1] (ties = 0.5 allowed).

    Returns coefficients with the intercept first. The ridge term keeps separable data finite. Used to calibrate
    the automated metrics on earlier labels before choosing where the model is least sure (quasi-likelihood of
    Papke & Wooldridge 1996 for fractional outcomes).
    """
    X = np.column_stack([np.ones(len(y)), np.asarray(X, dtype=float).reshape(len(y), -1)])
    y = np.asarray(y, dtype=float)
    w = np.ones(len(y)) if weights is None else np.asarray(weights, dtype=float)
    beta = np.zeros(X.shape[1])
    penalty = ridge * np.eye(X.shape[1])
    penalty[0, 0] = 0.0
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-np.clip(X @ beta, -30, 30)))
        grad = X.T @ (w * (y - p)) - penalty @ beta
        hess = (X * (w * p * (1 - p))[:, None]).T @ X + penalty
        step = np.linalg.solve(hess + 1e-9 * np.eye(len(beta)), grad)
        beta += step
        if np.max(np.abs(step)) < 1e-8:
            break
    return beta


def predict_logistic(beta: np.ndarray, X: np.ndarray) -> np.ndarray:
    """Predicted probabilities of :func:`fit_logistic`'s model."""
    X = np.asarray(X, dtype=float).reshape(len(X), -1)
    return 1.0 / (1.0 + np.exp(-np.clip(beta[0] + X @ beta[1:], -30, 30)))


# -- the labels' design in the calibration model ------------------------------------------------------------
LOG_PI = "design.log_pi"


def unit_probabilities(table: pd.DataFrame, name: str, req_index: pd.Index, candidates: list[str]):
    """(n_req, n_candidates) inclusion probability of each candidate unit, NaN where no design covers it; None
    when ``table`` records no design. Several batches of one unit combine as ``1 - prod_b (1 - pi_b)``
    (:func:`combine_inclusion`)."""
    if "inclusion_prob" not in table.columns:
        return None
    require(table, ["request_id", "model"], name)
    pi = numeric(table["inclusion_prob"], name, "inclusion_prob", allow_nan=True)
    bad = np.isfinite(pi) & ((pi <= 0) | (pi > 1 + 1e-9))
    if bad.any():
        pos = int(np.flatnonzero(bad)[0])
        raise InputError(f"{name}: row {pos} (0-based data row), column 'inclusion_prob': {float(pi[pos])!r} is "
                         f"not a probability in (0, 1] ({int(bad.sum())} such rows)")
    ok = np.isfinite(pi)
    if not ok.any():
        return None
    frame = pd.DataFrame({"request_id": table["request_id"].astype(str).to_numpy()[ok],
                          "model": table["model"].astype(str).to_numpy()[ok], "miss": 1.0 - np.minimum(pi[ok], 1.0)})
    # one probability per unit and batch (its annotators and dimensions repeat it), then across batches
    frame["batch"] = table["batch"].astype(str).to_numpy()[ok] if "batch" in table.columns else ""
    frame = frame.drop_duplicates(["request_id", "model", "batch"])
    miss = frame.groupby(["request_id", "model"], sort=False)["miss"].prod()
    out = np.full((len(req_index), len(candidates)), np.nan)
    for c, cand in enumerate(candidates):
        if cand not in miss.index.get_level_values("model"):
            continue
        m = miss.xs(cand, level="model")
        pos = req_index.get_indexer(m.index)
        out[pos[pos >= 0], c] = 1.0 - m.to_numpy()[pos >= 0]
    return out


def any_unit_probability(unit_pi: np.ndarray) -> np.ndarray:
    """(n_req,) probability that some candidate's unit on each request was chosen: an absolute dimension's incumbent
    cell is labelled then (units no design covers count as never chosen)."""
    return combine_inclusion([np.nan_to_num(unit_pi[:, c], nan=0.0) for c in range(unit_pi.shape[1])])


def label_probabilities(unit_pi: np.ndarray, lab_req: np.ndarray, lab_model: np.ndarray, kind: str,
                         present: np.ndarray, candidates: list[str], warns: list[str]) -> np.ndarray:
    """Inclusion probability of each label row's cell; fills ``unit_pi`` for labelled units no design covers.

    A labelled unit without a probability (labels from a plain table beside designed batches) is taken as part of
    a simple random sample of its candidate's scored units (pi = labelled / scored), with a warning. An incumbent
    cell (absolute dimensions) is labelled when any candidate's unit on its request is chosen."""
    n_req, n_cand = unit_pi.shape
    cand_of = lab_model if kind == "pairwise" else lab_model - 1
    is_cand = cand_of >= 0
    for c in range(n_cand):
        reqs = np.unique(lab_req[is_cand & (cand_of == c)])
        gap = reqs[~np.isfinite(unit_pi[reqs, c])]
        if len(gap):
            scored = int(present[:, c if kind == "pairwise" else c + 1].sum())
            unit_pi[gap, c] = min(1.0, len(gap) / max(scored, 1))
            warns.append(f"labels: {len(gap)} labelled unit(s) of candidate {candidates[c]!r} have no inclusion_prob; "
                         f"taken as a simple random sample (pi = {unit_pi[gap[0], c]:.4g})")
    lab_pi = np.empty(len(lab_req))
    lab_pi[is_cand] = unit_pi[lab_req[is_cand], cand_of[is_cand]]
    if (~is_cand).any():
        inc = lab_req[~is_cand]
        pi_inc = any_unit_probability(unit_pi)[inc]
        if (pi_inc <= 0).any():  # incumbent labels with no candidate unit chosen on their request
            pi_inc = np.where(pi_inc > 0, pi_inc, min(1.0, len(np.unique(inc)) / max(n_req, 1)))
        lab_pi[~is_cand] = pi_inc
    return lab_pi


def log_pi_feature(unit_pi: np.ndarray, kind: str, present: np.ndarray, warns: list[str]) -> np.ndarray | None:
    """(n_req, n_row_models) ``log pi`` of every cell, the covariate of the ``covariate`` adjustment; None when
    ``pi`` does not vary (nothing to adjust for).

    An absolute dimension's incumbent cell takes :func:`any_unit_probability`. A scored cell no batch could choose (pi 0 or unknown: scored after the export, or outside its segment) gets the smallest
    log pi seen, with a warning: the estimate extrapolates to it from the model."""
    pis = unit_pi if kind == "pairwise" else np.column_stack([any_unit_probability(unit_pi), unit_pi])
    known = np.isfinite(pis) & (pis > 0)
    if not known.any():
        return None
    logs = np.log(np.where(known, pis, 1.0))
    lo = logs[known].min()
    if np.ptp(logs[known]) <= 1e-9:
        return None
    gap = int((~known & present).sum())
    if gap:
        warns.append(f"design: {gap} scored cell(s) were in no exported batch's pool (pi 0 or unknown); the "
                     f"estimate extrapolates to them from the model (their log pi is set to the smallest seen)")
    return np.where(known, logs, lo)

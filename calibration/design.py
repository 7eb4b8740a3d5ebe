"""Sampling designs for human labels, their inclusion probabilities, and design-weighted estimators.

Pure numpy, over arrays of the N scored units (a unit is a (request, candidate) pair). Every design returns the
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
"""

from __future__ import annotations

import numpy as np
from scipy import stats

__all__ = [
    "ht_weights", "random_design", "stratified_allocation", "stratified_design", "active_probabilities",
    "active_design", "systematic_pps", "bernoulli_sd", "combine_inclusion", "ht_mean",
    "kish_n_eff", "hajek_estimate", "difference_estimate", "fit_logistic", "predict_logistic",
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
    r = np.asarray(y_lab, dtype=float) - np.asarray(pred_lab, dtype=float)
    pi = np.asarray(pi_lab, dtype=float)
    n_pop, n = len(pred_all), len(r)
    w = ht_weights(pi) if n else np.zeros(0)
    est = float(pred_all.mean() + np.sum(r * w) / n_pop)
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

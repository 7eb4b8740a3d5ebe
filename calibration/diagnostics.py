"""Sampler diagnostics and a held-out posterior predictive check.

- R-hat (rank-normalised, split) and bulk ESS from ArviZ (Vehtari et al. 2021), NUTS divergences.
- Held-out check: Pareto-smoothed importance-sampling leave-one-request-out (PSIS-LOO, Vehtari, Gelman & Gabry
  2017) predictive of each labelled cell's annotations: mean log score per annotation, accuracy of the LOO modal
  category, and the same log score for a metric-free baseline (the labels' marginal frequencies) so a reader can
  see whether the metrics help. Pareto k above 0.7 flags cells whose LOO estimate is unreliable.
"""
from __future__ import annotations

import arviz as az
import numpy as np
from numpy.polynomial.hermite_e import hermegauss
from scipy.special import expit, ndtri

from calibration.data import CalibrationData
from calibration.models import label_pairs, rising_log_factorial

FREE_VARS = ("cut", "alpha_free", "alpha_between", "alpha_gamma", "alpha_sigma", "alpha_z", "beta_mu", "beta_tau",
             "beta_z", "seg_sigma", "seg_z", "item_icc", "req_sigma", "beta_seg_tau", "beta_seg_z")
RHAT_MAX = 1.05
ESS_MIN = 100.0
DIVERGENT_SHARE_MAX = 0.005  # a handful of divergences (< 0.5% of draws) with good R-hat/ESS is tolerated, reported


def sampler_diagnostics(idata, block: int | None = None) -> dict:
    """Convergence of the fit; with ``block``, of that block's parameters only (every free variable's first
    dimension is the block), as a replicate of a vectorised multi-block fit would have on its own. Divergences are
    the whole fit's."""
    names = [v for v in FREE_VARS if v in idata.posterior]
    post = idata.posterior[names]
    if block is not None:
        post = post.map(lambda a: a.isel({a.dims[2]: block}))
    rhat = az.rhat(post)
    ess = az.ess(post, method="bulk")
    r_max = float(max(np.nanmax(rhat[v].to_numpy()) for v in names))
    e_min = float(min(np.nanmin(ess[v].to_numpy()) for v in names))
    divergent = idata.sample_stats["diverging"].to_numpy()
    div = int(divergent.sum())
    converged = bool(np.isfinite(r_max) and r_max <= RHAT_MAX and e_min >= ESS_MIN
                     and div <= DIVERGENT_SHARE_MAX * divergent.size)
    return {"r_hat_max": round(r_max, 4), "ess_bulk_min": round(e_min, 1), "divergences": div,
            "converged": converged, "criteria": f"r_hat <= {RHAT_MAX}, ess_bulk >= {ESS_MIN:g}, divergences <= "
                                                f"{DIVERGENT_SHARE_MAX:.1%} of draws"}


def linear_predictor(data: CalibrationData, p: dict[str, np.ndarray], req: np.ndarray, mod: np.ndarray) -> np.ndarray:
    """(draw, cell) linear predictor of cells (req, mod) without the random effects (models.build_model)."""
    x = data.X[req, mod, :].astype(np.float64)
    eta = np.einsum("cf,dcf->dc", x, p["beta"][:, mod, :]) + p["alpha"][:, mod] \
        + p["seg_effect"][:, mod, data.seg_idx[req]]
    if "beta_seg" in p:  # segment-varying slopes (models.build_model)
        eta = eta + np.einsum("cf,dcf->dc", x, p["beta_seg"][:, data.seg_idx[req], :])
    return eta


def category_probs(data: CalibrationData, p: dict[str, np.ndarray], req: np.ndarray, mod: np.ndarray) -> np.ndarray:
    """P(category) for cells (req, mod) under each posterior draw: (draw, cell, K)."""
    eta = linear_predictor(data, p, req, mod)
    # marginal over the request effect (logistic-normal approximation, see estimands.cell_moments)
    s2 = p.get("req_sigma", np.zeros(len(eta))) ** 2
    scale = 1.0 / np.sqrt(1.0 + np.pi * s2 / 8.0)
    le = expit((p["cut"][:, None, :] - eta[:, :, None]) * scale[:, None, None])  # P(label <= k)
    cum = np.concatenate([np.zeros(le.shape[:2] + (1,)), le, np.ones(le.shape[:2] + (1,))], axis=2)
    return np.clip(np.diff(cum, axis=2), 1e-12, 1.0)


# Quadrature of the request effect in cell_loglik, by the effect's sd s of each posterior draw: (largest s, rule,
# nodes). A cell's likelihood as a function of the effect's z-score has features about 1 / s wide and, where the
# annotations lie far from the model's prediction, most of its mass in the normal's tail (near z = 3 when s = 1),
# which equal-mass points miss (the last of 64 is at z = 2.4). Gauss-Hermite resolves the tail and converges fast
# while s is small; where s is large the integrand is nearly a step in z, which equal-mass points resolve. Against a
# dense grid (docs/calibration.md, "The held-out check's quadrature"), the worst error of a cell's log-likelihood was
# 3e-5 with three annotators and 7e-4 with six (both at s = 3.5-4.5), where 64 equal-mass points for every s, the
# rule before, erred by up to 2 and 10 (at s = 1-2). On HANNA (s about 0.05) it is also faster: 0.7 s instead of
# 2.3 s per n = 50 label draw.
REQ_EFFECT_RULES = ((0.5, "hermite", 16), (1.0, "hermite", 24), (2.0, "hermite", 64), (3.5, "hermite", 128),
                    (np.inf, "equal_mass", 256))


def request_effect_rules(s: np.ndarray):
    """Yield ``(draws, z, log_w)``: the posterior draws (indices) that share a quadrature rule for the request
    effect ``N(0, s)``, with its nodes as z-scores and their log-weights (summing to 1). Draws without the effect
    (``s == 0``) get the one node 0."""
    s = np.asarray(s, dtype=float)
    left = np.ones(len(s), bool)
    zero = left & (s == 0)
    if zero.any():
        yield np.flatnonzero(zero), np.zeros(1), np.zeros(1)
    left &= ~zero
    for hi, rule, k in REQ_EFFECT_RULES:
        sel = left & (s <= hi)
        if sel.any():
            if rule == "hermite":
                z, w = hermegauss(k)
                log_w = np.log(w / w.sum())
            else:
                z, log_w = ndtri((np.arange(k) + 0.5) / k), np.full(k, -np.log(k))
            yield np.flatnonzero(sel), z, log_w
        left &= ~sel


def cell_loglik(data: CalibrationData, p: dict[str, np.ndarray], req: np.ndarray, mod: np.ndarray,
                counts: np.ndarray) -> np.ndarray:
    """(draw, cell) log-likelihood of each labelled cell's annotations jointly, as the model has it: the
    annotators of one request agree beyond chance (the Dirichlet-multinomial with intra-cell correlation
    ``item_icc``, models.rising_log_factorial), and on absolute dimensions the request effect is integrated
    numerically (:data:`REQ_EFFECT_RULES`). The product of the annotations' marginal probabilities instead treats
    three agreeing annotators as three independent requests: it made the PSIS-LOO weights (1 / p(cell | theta))
    far too uneven (Pareto k above 2 on PandaLM) and the held-out check unstable.

    Computed on the (cell, category) pairs the annotations fall in (models.label_pairs), as the model does: the same
    sum as over every category, about 3x faster on HANNA-shaped cells (550 cells, 800 draws: 4.5 -> 1.6 s), where
    it was nearly all of a decision's time after sampling."""
    eta = linear_predictor(data, p, req, mod)
    D, C = eta.shape
    s = p.get("req_sigma", np.zeros(D))
    icc = p.get("item_icc", np.zeros(D))
    correlated = bool(np.any(icc > 0))  # extract_params gives zeros when the fit had no such term
    kappa = (1.0 / np.clip(icc, 1e-9, 1.0 - 1e-9) - 1.0)[:, None]
    cell, cat, n_k = label_pairs(counts)
    if len(np.unique(cell)) != C:
        raise ValueError("cell_loglik: every cell needs at least one annotation")
    starts = np.searchsorted(cell, np.arange(C))
    cuts = np.concatenate([np.full((D, 1), -np.inf), p["cut"], np.full((D, 1), np.inf)], axis=1)
    n_cell = counts.sum(axis=1)
    # the Dirichlet-multinomial's normaliser does not depend on the request effect: once, outside the integral
    const = -rising_log_factorial(kappa, n_cell, np.log, n_cell.max()) if correlated else 0.0
    out = np.full(eta.shape, -np.inf)
    for draws, z, log_w in request_effect_rules(s):
        upper, lower = cuts[draws][:, cat + 1], cuts[draws][:, cat]  # category k is c_{k-1} < latent <= c_k
        e0, sd, kap = eta[draws][:, cell], s[draws, None], kappa[draws]
        acc = np.full((len(draws), C), -np.inf)
        for zq, lw in zip(z, log_w):
            e = e0 + sd * zq
            pr = np.clip(expit(upper - e) - expit(lower - e), 1e-12, 1.0)
            term = rising_log_factorial(kap * pr, n_k, np.log, n_k.max()) if correlated else n_k * np.log(pr)
            acc = np.logaddexp(acc, np.add.reduceat(term, starts, axis=1) + lw)
        out[draws] = acc
    return out + const


def psis_loo(data: CalibrationData, p: dict[str, np.ndarray]):
    """PSIS-LOO predictive category probabilities of each labelled cell: (req, mod, counts, p_loo, pareto k,
    log weights (cell, draw)).

    The held-out check and the guards' Bayesian predictor both need it; a decision computes it once and passes it
    to both (on HANNA at n = 50 it took 4.6 s per fit, nearly all of a decision's time after sampling, before
    cell_loglik worked on the annotated (cell, category) pairs alone)."""
    req, mod, counts, _ = data.cell_counts()
    probs = category_probs(data, p, req, mod)  # (D, C, K)
    loglik = cell_loglik(data, p, req, mod, counts) if counts.sum(axis=1).max() > 1 \
        else np.einsum("dck,ck->dc", np.log(probs), counts)
    lw, k = az.psislw(-loglik.T)  # (C, D)
    w = np.exp(lw)
    p_loo = np.einsum("cd,dck->ck", w, probs)
    return req, mod, counts, p_loo, k, lw


def loo_cell_means(data: CalibrationData, p: dict[str, np.ndarray],
                   loo=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(req, mod, mean label) of each labelled cell under its PSIS-LOO predictive: the Bayesian prediction of a
    labelled request from a fit that did not see it (an n-fold cross-fit at the cost of one fit). ``loo``: the
    :func:`psis_loo` of the same ``data`` and ``p``, when already computed."""
    req, mod, _, p_loo, *_ = loo if loo is not None else psis_loo(data, p)
    return req, mod, p_loo @ data.cat_values.astype(float)


def heldout_check(data: CalibrationData, loo) -> dict:
    """Held-out log score and accuracy of the labelled cells under PSIS-LOO (``loo``: :func:`psis_loo` of the
    fit) against the label-frequency baseline."""
    K = data.n_cat
    req, mod, counts, p_loo, k, _ = loo
    n_ann = counts.sum()
    cell_model = (counts * np.log(np.clip(p_loo, 1e-12, 1))).sum(axis=1)
    log_score = float(cell_model.sum() / n_ann)
    acc = float(counts[np.arange(len(req)), p_loo.argmax(axis=1)].sum() / n_ann)
    freq = (counts.sum(axis=0) + 0.5) / (n_ann + 0.5 * K)
    cell_base = (counts * np.log(freq)[None, :]).sum(axis=1)
    base = float(cell_base.sum() / n_ann)
    # standard error of the per-annotation difference, from the per-cell differences (paired, as in loo_compare)
    diff = (cell_model - cell_base) / counts.sum(axis=1).mean()
    se = float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else float("inf")
    return {"method": "psis-loo over labelled requests", "heldout_log_score": round(log_score, 4),
            "heldout_accuracy": round(acc, 4), "baseline_log_score": round(base, 4),
            "log_score_diff_se": round(se, 4) if np.isfinite(se) else None,
            "pareto_k_max": round(float(np.max(k)), 3), "n_cells": int(len(req))}

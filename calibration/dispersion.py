"""How far the labelled cells' annotator means stray from the model's prediction, against what the model says.

The finite-population estimand sums the unlabelled cells' predicted annotator means and their predictive
variance (calibration.estimands). With several annotators per cell that variance has a free part, how much of one
annotation's noise the cell's annotators share, which the model fits as the Dirichlet-multinomial's intra-cell
correlation ``item_icc`` in [0, 1) (calibration.models). Real annotators break that both ways: on PandaLM the
unlabelled cells' 3-annotator means strayed 1.13 times as far (in variance) as the model said, up to 1.48 for one
pair; HANNA's raters of one story disagree more than independent raters would (within-system ICC(1) -0.06 to
-0.33), which the model cannot express, so it overstated the noise there (docs/calibration.md, "The annotators'
noise").

:func:`pearson_dispersion` measures the factor on the labelled cells themselves, held out: the quasi-likelihood
dispersion parameter estimated from Pearson residuals (Wedderburn 1974, Biometrika 61(3); McCullagh & Nelder 1989,
Generalized Linear Models 2nd ed., sec. 9.2), with each cell's PSIS-LOO predictive (Vehtari, Gelman & Gabry 2017)
in place of the fitted value and its degrees-of-freedom correction:

    phi_m = (sum_c (ybar_c - m_c)^2 - sum_c o_c) / sum_c n_c     over row model m's labelled cells

``m_c`` the cell's held-out predictive mean, ``n_c`` the annotators' part of its predictive variance (what phi
scales) and ``o_c`` the rest (the parameters' uncertainty and the shared request effect). One factor per row model
(on HANNA the human stories' raters agree, ICC(1) +0.14, the systems' do not), partially pooled on the log scale
by a normal hierarchical model (a random-effects meta-analysis with the between-model sd integrated out, :func:`_pool`):
each model's log phi has sampling variance trigamma(nu_m / 2) (about 2 / nu_m) with Satterthwaite's (1946)
effective degrees of freedom ``nu_m``, and a model with few cells is shrunk towards the pooled factor. Posterior
draws of log phi_m, floored at 1 (:data:`PHI_RANGE`), carry the uncertainty into the intervals. Pure numpy.
"""
from __future__ import annotations

import numpy as np
from scipy.special import digamma, polygamma

from calibration.data import CalibrationData
from calibration.diagnostics import psis_loo
from calibration.estimands import cell_moments, k_pred_of

MIN_CELLS = 20  # labelled cells with >= 2 annotations below which the factor is not estimated (its df would be few)
# Draws are clipped here. Never below 1: where the labels stray less than the model says (HANNA), its wider noise
# was also what covered the bias of its shrunk intercepts, which the residuals of labelled cells cannot show
# (narrowed there, coverage fell from 0.92 to 0.83 over 250 intervals; docs/calibration.md), so the factor only
# ever widens, as the quasi-likelihood practice of taking c-hat = 1 when below 1 (Burnham & Anderson 2002, Model
# Selection and Multimodel Inference, sec. 6.2). Above 10 the model, not its noise, is what is wrong.
PHI_RANGE = (1.0, 10.0)
TAU_SCALE = 0.5  # half-Cauchy scale (its median) of the between-model sd of log factors: factors 1.6x apart
TAU_MAX = 3.0  # grid's end: factors e^3 apart are clipped by PHI_RANGE anyway
NU_MIN = 4.0  # a row model whose residuals hold fewer effective degrees of freedom is drawn from the models' spread
METHOD = ("quasi-likelihood dispersion of the annotator means per row model, partially pooled: Pearson "
          "residuals on the PSIS-LOO predictive of labelled cells with >= 2 annotations")


def pearson_dispersion(data: CalibrationData, p: dict[str, np.ndarray], loo=None, *,
                       rng: np.random.Generator) -> tuple[dict[str, np.ndarray], dict]:
    """``(p, summary)``: the posterior draws ``p`` with ``noise_scale`` (draw, row model) added when the factor
    applies, and its summary for ``diagnostics.dispersion``. ``loo``: calibration.diagnostics.psis_loo of
    ``data`` and ``p`` when the caller has it; otherwise computed here, and only when the factor applies.

    Applies only when the predicted cells have several annotators (``k_pred`` >= 2) and at least
    :data:`MIN_CELLS` labelled cells do: with one annotation per cell its variance is fixed by the category
    probabilities, and a residual beyond it says the probabilities are wrong, which the guards check
    (calibration.guards)."""
    req, mod, counts, _ = data.cell_counts()  # the cells of psis_loo, in its order
    n_ann = counts.sum(axis=1)
    multi = n_ann >= 2
    summary = {"method": METHOD, "applied": False, "cells": int(multi.sum())}
    if k_pred_of(data) < 2 or multi.sum() < MIN_CELLS:
        summary["reason"] = (f"{int(multi.sum())} labelled cells with >= 2 annotations (< {MIN_CELLS})"
                             if multi.sum() < MIN_CELLS else "one annotator per predicted cell")
        return p, summary
    lw = (loo if loo is not None else psis_loo(data, p))[5]
    req, mod, counts, n_ann, w = req[multi], mod[multi], counts[multi], n_ann[multi], np.exp(lw[multi])
    r2, other, part = _residuals(data, p, req, mod, counts, n_ann, w / w.sum(axis=1, keepdims=True))
    M, D = data.n_models, p["cut"].shape[0]
    y, v = np.full(M, np.nan), np.full(M, np.nan)
    for m in range(M):
        sel = mod == m
        if sel.sum() >= 2:
            y[m], v[m] = _log_factor(r2[sel], other[sel], part[sel])
    if not np.isfinite(y).any():  # no row model alone has enough: one factor from all cells
        y_all, v_all = _log_factor(r2, other, part)
        if not np.isfinite(y_all):
            summary["reason"] = f"the residuals hold fewer than {NU_MIN:g} effective degrees of freedom"
            return p, summary
        # one estimate for all: its own sampling uncertainty, not M copies of it pooled
        log_phi = np.repeat(y_all + np.sqrt(v_all) * rng.standard_normal((D, 1)), M, axis=1)
        pooled, tau, mean = y_all, 0.0, np.full(M, y_all)
    else:
        log_phi, pooled, tau, mean = _pool(y, v, D, rng)
    draws = np.clip(np.exp(log_phi), *PHI_RANGE).astype(np.float32)
    names = data.row_models
    summary.update({"applied": True, "pooled": round(float(np.exp(pooled)), 4),
                    "between_sd": round(float(tau), 4),
                    "per_model": {name: round(float(np.exp(mean[m])), 4) for m, name in enumerate(names)},
                    "applied_mean": {name: round(float(draws[:, m].mean()), 4) for m, name in enumerate(names)}})
    return {**p, "noise_scale": draws}, summary


def _log_factor(r2: np.ndarray, other: np.ndarray, part: np.ndarray) -> tuple[float, float]:
    """Bias-corrected log of the factor over some cells and its sampling variance; NaN when the cells hold fewer
    than :data:`NU_MIN` effective degrees of freedom. With normal residuals the estimate is phi chi2_nu / nu,
    whose log has mean log phi + digamma(nu / 2) - log(nu / 2) and variance trigamma(nu / 2)."""
    if part.sum() <= 0:
        return np.nan, np.nan
    phi = max((r2.sum() - other.sum()) / part.sum(), 1e-3)
    nu = phi ** 2 * part.sum() ** 2 / ((phi * part + other) ** 2).sum()
    if nu < NU_MIN:
        return np.nan, np.nan
    return float(np.log(phi) - (digamma(nu / 2) - np.log(nu / 2))), float(polygamma(1, nu / 2))


def _residuals(data: CalibrationData, p: dict[str, np.ndarray], req, mod, counts, n_ann, w):
    """Per labelled cell: squared held-out residual of its annotator mean, the predictive variance's part not
    scaled (parameters, shared request effect) and the annotators' part (scaled). ``w`` (cell, draw) PSIS
    weights summing to 1 per cell."""
    ybar = counts @ data.cat_values.astype(float) / n_ann
    ureq, inv = np.unique(req, return_inverse=True)
    seg = np.asarray(data.seg_idx)[ureq]
    C = len(req)
    m, total, part = np.zeros(C), np.zeros(C), np.zeros(C)
    for k in np.unique(n_ann):  # the predictive of a mean of k annotations, per count present
        sel = np.flatnonzero(n_ann == k)
        e1, var, shared = cell_moments(data.X[ureq], seg, p, data.cat_values, k=float(k), with_shared=True)
        e1, var, shared = (a[:, inv[sel], mod[sel]].astype(float) for a in (e1, var, shared))  # (draw, cell)
        ws = w[sel].T
        m[sel] = (ws * e1).sum(axis=0)
        total[sel] = (ws * (var + e1 * e1)).sum(axis=0) - m[sel] ** 2
        part[sel] = (ws * (var - shared * shared)).sum(axis=0)
    return (ybar - m) ** 2, total - part, part


def _pool(y: np.ndarray, v: np.ndarray, n_draws: int, rng: np.random.Generator):
    """Posterior draws of the per-model log factors under the normal hierarchical model ``y_m ~ N(theta_m, v_m)``,
    ``theta_m ~ N(mu, tau^2)``, flat on ``mu``, half-Cauchy(:data:`TAU_SCALE`) on ``tau`` (Gelman 2006, Bayesian
    Analysis 1(3)), computed exactly on a grid of ``tau`` (Gelman et al. 2013, Bayesian Data Analysis 3rd ed.,
    sec. 5.4). ``v`` NaN: no estimate, the model's factor is drawn from the population. Returns the (draw, model)
    draws and, for the summary, the pooled log factor (posterior mean of ``mu``), the posterior median of ``tau``
    and the per-model posterior mean log factors.

    DerSimonian-Laird, the first version, plugs in a point estimate of ``tau``, which is 0 whenever the models'
    spread is within their sampling noise: it then pooled every model fully. On PandaLM at n = 200 (about 20
    labelled cells per pair) it did so in 78% of the draws, giving the pair whose annotator means strayed most
    (1.48 times the model's variance, docs/calibration.md) the pooled factor; integrating over ``tau`` keeps the
    chance that the models differ, and each model then keeps part of its own estimate."""
    ok = np.isfinite(y) & np.isfinite(v)
    yo, vo = y[ok], v[ok]
    tau = np.linspace(0.0, TAU_MAX, 601)[:, None]  # (grid, 1)
    s = vo[None, :] + tau ** 2
    v_mu = 1.0 / (1.0 / s).sum(axis=1)
    mu_hat = v_mu * (yo[None, :] / s).sum(axis=1)
    log_post = (0.5 * np.log(v_mu) - 0.5 * np.log(s).sum(axis=1)
                - 0.5 * ((yo[None, :] - mu_hat[:, None]) ** 2 / s).sum(axis=1)
                - np.log1p((tau[:, 0] / TAU_SCALE) ** 2))
    w = np.exp(log_post - log_post.max())
    w /= w.sum()
    g = rng.choice(len(w), size=n_draws, p=w)
    t = tau[g, 0]
    mu = mu_hat[g] + np.sqrt(v_mu[g]) * rng.standard_normal(n_draws)
    theta = mu[:, None] + t[:, None] * rng.standard_normal((n_draws, len(y)))  # no estimate: the population's
    # given mu and tau, each model's own estimate shrunk towards mu (precision-weighted)
    inv_t2 = 1.0 / np.maximum(t[:, None], 1e-9) ** 2
    prec = 1.0 / vo[None, :] + inv_t2
    cond_mean = (yo[None, :] / vo[None, :] + mu[:, None] * inv_t2) / prec
    theta[:, ok] = cond_mean + rng.standard_normal(cond_mean.shape) / np.sqrt(prec)
    cdf = np.cumsum(w)
    return theta, float((w * mu_hat).sum()), float(tau[np.searchsorted(cdf, 0.5), 0]), theta.mean(axis=0)

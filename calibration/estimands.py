"""Posterior of the decision estimands, aggregated over all scored requests in vectorised chunks.

Finite-population estimand (the scored requests), per candidate and segment:
- pairwise: mean over requests of the human label (1 candidate better, 0.5 tie, 0 incumbent better);
- absolute: mean over requests of (candidate label - incumbent label), paired on the same request.
A labelled cell contributes its observed mean label; an unlabelled cell contributes its posterior-predictive
mean label (``k_pred`` annotators, the typical count of the labelled cells): for each posterior draw the sum of
the independent predictive draws is replaced by its exact mean plus a normal term with the exact summed variance
(central limit theorem over many requests; the usual posterior-predictive finite-population inference of
Ericson 1969 / Little 2004 without materialising a draw per request).

Population estimand (the traffic the scored requests were sampled from): the finite-population draw plus a normal
term with variance Var_r(value_r) / N per draw, the large-N form of the Bayesian bootstrap (Rubin 1981).
Cost: O(draws x requests x models) in chunks of ``chunk`` requests, float32.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import expit

from calibration.data import CalibrationData


@dataclass
class EstimandDraws:
    """Draws (draw, candidate) overall and (draw, candidate, segment) per segment."""

    fp: np.ndarray
    pop: np.ndarray
    fp_seg: np.ndarray
    pop_seg: np.ndarray
    n_seg: np.ndarray  # (candidate, segment) requests in each candidate's estimand


def thin_params(params: dict[str, np.ndarray], block: int, max_draws: int, rng: np.random.Generator):
    n = params["cut"].shape[0]
    idx = np.arange(n) if n <= max_draws else np.sort(rng.choice(n, max_draws, replace=False))
    return {k: v[idx, block] for k, v in params.items()}


def cell_moments(X: np.ndarray, seg: np.ndarray, p: dict[str, np.ndarray], cat_values: np.ndarray,
                 k: float = 1.0):
    """Predictive mean label and variance of the mean of ``k`` annotators of one new request.

    Arrays (draw, request, model) for requests X (R, M, F). The request effect e ~ N(0, s^2) is integrated with the
    logistic-normal approximation E[logistic(z + e)] ~ logistic(z / sqrt(1 + pi s^2 / 8)) (Monahan & Stefanski
    1992); the between-request part of the variance, Var_e(E[y | e]), by the delta method. The mean of k annotators
    has variance Var_between + (Var_one_annotation - Var_between) / k.
    """
    v = cat_values.astype(np.float32)
    dv, dv2 = np.diff(v), np.diff(v * v)
    beta = p["beta"].astype(np.float32)  # (D, M, F)
    D, M = beta.shape[0], beta.shape[1]
    R = X.shape[0]
    eta = np.empty((D, R, M), dtype=np.float32)
    for m in range(M):
        eta[:, :, m] = beta[:, m, :] @ X[:, m, :].T if X.shape[2] else 0.0
    eta += p["alpha"].astype(np.float32)[:, None, :]
    eta += np.transpose(p["seg_effect"].astype(np.float32)[:, :, seg], (0, 2, 1))
    s2 = p.get("item_sigma", np.zeros(D)).astype(np.float32) ** 2
    scale = (1.0 / np.sqrt(1.0 + np.pi * s2 / 8.0))[:, None, None]
    e1 = np.full_like(eta, v[0])
    e2 = np.full_like(eta, v[0] * v[0])
    slope = np.zeros_like(eta)
    cut = p["cut"].astype(np.float32)
    for j in range(len(dv)):
        gt = expit((eta - cut[:, j, None, None]) * scale)  # P(label > category j)
        e1 += dv[j] * gt
        e2 += dv2[j] * gt
        slope += dv[j] * gt * (1.0 - gt)
    var1 = np.maximum(e2 - e1 * e1, 0.0)
    between = np.minimum((slope * scale) ** 2 * s2[:, None, None], var1)
    return e1, between + (var1 - between) / k


def aggregate(data: CalibrationData, p: dict[str, np.ndarray], rng: np.random.Generator, chunk: int = 4096,
              k_pred: float | None = None) -> EstimandDraws:
    """Posterior draws of the finite-population and population estimands (see module docstring)."""
    D = p["cut"].shape[0]
    M, S, N = data.n_models, len(data.segment_names), data.n_req
    C = len(data.candidates)
    req, mod, ybar, cnt = data.labelled_cells()
    obs = np.full((N, M), np.nan, dtype=np.float32)
    obs[req, mod] = ybar
    if k_pred is None:
        k_pred = float(np.median(cnt)) if len(cnt) else 1.0
    emask = data.estimand_mask().astype(np.float32)  # (N, C)
    s1 = np.zeros((D, C, S))
    s2 = np.zeros((D, C, S))
    nv = np.zeros((D, C, S))
    onehot_all = np.zeros((N, S), dtype=np.float32)
    onehot_all[np.arange(N), data.seg_idx] = 1.0
    n_seg = (emask.T @ onehot_all).astype(float)  # (C, S)
    for r0 in range(0, N, chunk):
        sl = slice(r0, min(N, r0 + chunk))
        seg = data.seg_idx[sl]
        e1, var = cell_moments(data.X[sl], seg, p, data.cat_values, k_pred)
        o = obs[sl]
        lab = np.isfinite(o)
        e1 = np.where(lab[None], o[None], e1)
        var = np.where(lab[None], 0.0, var)
        if data.kind == "pairwise":
            diff, dvar = e1, var
        else:
            diff, dvar = e1[:, :, 1:] - e1[:, :, :1], var[:, :, 1:] + var[:, :, :1]
        onehot = onehot_all[sl]
        mk = emask[sl][None]
        diff, dvar = diff * mk, dvar * mk
        # (D, R, C) x (R, S) -> (D, C, S)
        s1 += np.einsum("drc,rs->dcs", diff, onehot, optimize=True)
        s2 += np.einsum("drc,rs->dcs", diff * diff, onehot, optimize=True)
        nv += np.einsum("drc,rs->dcs", dvar, onehot, optimize=True)
    ns = np.maximum(n_seg, 1.0)
    mean_s = s1 / ns
    pop_var_s = np.maximum(s2 / ns - mean_s**2, 0.0) / ns
    z1, z2 = rng.standard_normal((2, D, C, S))
    # The normal terms are large-n approximations; in a segment of a few requests they can step outside the scale
    # (a win rate above 1), so draws are kept on the estimand's range.
    lo_v, hi_v = float(np.min(data.cat_values)), float(np.max(data.cat_values))
    lo, hi = (lo_v, hi_v) if data.kind == "pairwise" else (lo_v - hi_v, hi_v - lo_v)
    fp_seg = np.clip(mean_s + np.sqrt(nv) / ns * z1, lo, hi)
    pop_seg = np.clip(fp_seg + np.sqrt(pop_var_s) * z2, lo, hi)
    Ntot = np.maximum(n_seg.sum(axis=1), 1.0)  # (C,)
    fp = (fp_seg * n_seg[None]).sum(axis=2) / Ntot
    mean_all = s1.sum(axis=2) / Ntot
    pop_var = np.maximum(s2.sum(axis=2) / Ntot - mean_all**2, 0.0) / Ntot
    pop = np.clip(fp + np.sqrt(pop_var) * rng.standard_normal((D, C)), lo, hi)
    return EstimandDraws(fp=fp, pop=pop, fp_seg=fp_seg, pop_seg=pop_seg, n_seg=n_seg)

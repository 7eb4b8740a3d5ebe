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
term with variance Var_r(value_r) / N per draw, the large-N form of the Bayesian bootstrap (Rubin 1981), where
Var_r is the spread of the realised values: that of the cells' means plus the mean predictive variance of the
unlabelled cells (law of total variance; the means alone understated it).
Cost: O(draws x requests x models) in chunks of ``chunk`` requests, float32, memory bounded by the chunk.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from calibration.data import CalibrationData

# Draw x request cells per chunk of requests: ~1 MB float32 work arrays, which stay in the CPU's caches. With 4M
# cells (16 MB arrays) the element-wise passes of :func:`_model_moments` ran at half the speed (126 against 271
# million cells/s on this project's 2-core machine, 1,000 draws, one process).
CHUNK_CELLS = 1 << 18


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


def _effect_variances(p: dict[str, np.ndarray], D: int, shared: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per draw: the variance of a new cell's logit-scale random effect (the request effect shared by the row
    models of an absolute dimension, when ``shared``; zero otherwise) and the annotators' intra-cell correlation
    ``icc`` (calibration.models: the cell's Dirichlet-multinomial overdispersion; zero without it)."""
    s2 = p.get("req_sigma", np.zeros(D)).astype(np.float32) ** 2 if shared else np.zeros(D, np.float32)
    return s2, p.get("item_icc", np.zeros(D)).astype(np.float32)


def _model_terms(p: dict[str, np.ndarray], m: int, cat_values: np.ndarray, shared: bool = True) -> dict:
    """Per-draw float32 coefficients of one row model, computed once for all chunks of requests.

    ``shared=False``: the request effect is not integrated (its draw is known: a request labelled for another
    row model, see :func:`aggregate`)."""
    v = cat_values.astype(np.float32)
    beta = p["beta"][:, m, :].astype(np.float32)  # (D, F)
    D = beta.shape[0]
    s2, icc = _effect_variances(p, D, shared)
    scale = (1.0 / np.sqrt(1.0 + np.pi * s2 / 8.0)).astype(np.float32)
    hs = (0.5 * scale)[:, None]  # half the scale: tanh takes half the scaled linear predictor
    shift = (p["alpha"][:, m, None] + p["seg_effect"][:, m, :]).astype(np.float32)  # (D, S): alpha + u_s
    # segment-varying slopes (models.build_model): per-segment slope deviations, shared by the row models
    bseg = p.get("beta_seg")
    bseg_h = None
    if bseg is not None and bseg.shape[1] > 1 and bseg.shape[2] and np.any(bseg):
        bseg_h = (bseg.astype(np.float32) * hs[:, :, None]).astype(np.float32)  # (D, S, F)
    # calibration.dispersion: a factor on the non-shared part of a cell's predictive variance, fitted on the
    # labelled cells' held-out residuals (absent: 1)
    phi = p.get("noise_scale")
    phi = None if phi is None else np.asarray(phi if phi.ndim == 1 else phi[:, m], dtype=np.float32)
    return {"v": v, "dv": np.diff(v), "dv2": np.diff(v * v), "s2": s2, "icc": icc, "phi": phi, "hs": hs,
            "scale": scale, "D": D,
            "F": beta.shape[1], "S": shift.shape[1], "beta_h": beta * hs, "shift_h": shift * hs,
            "coef_h": np.ascontiguousarray(np.concatenate([beta, shift], axis=1) * hs),
            "half_cut": p["cut"].astype(np.float32) * hs, "bseg_h": bseg_h}


def _model_moments(Xm: np.ndarray, seg: np.ndarray, p: dict[str, np.ndarray], m: int, cat_values: np.ndarray,
                   k: float, terms: dict | None = None,
                   offset: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`cell_moments` for one row model: (draw, request) float32 arrays, contiguous: mean, variance, and the
    sd of the part shared with the request's other row models (``dE[y]/dv * sigma_req``, delta method, at most
    the between-request sd), whose products give the covariance of two row models' cells of one request.
    ``offset`` (draw, request): a known shift of the linear predictor (a drawn shared request effect).

    The logistic is evaluated as logistic(x) = (1 + tanh(x / 2)) / 2 (identical function; float32 ``tanh`` is a
    SIMD loop, ~10x faster than ``scipy.special.expit``), and the category sums are accumulated in place."""
    tm = terms or _model_terms(p, m, cat_values)
    v, dv, dv2, s2, scale, half_cut = tm["v"], tm["dv"], tm["dv2"], tm["s2"], tm["scale"], tm["half_cut"]
    D, F, S, R = tm["D"], tm["F"], tm["S"], Xm.shape[0]
    if S <= 64:
        # intercept, segment offset and scale folded into one matmul: [beta | alpha + u_s] @ [x | onehot(s)]^T
        design = np.zeros((R, F + S), dtype=np.float32)
        design[:, :F] = Xm
        design[np.arange(R), F + seg] = 1.0
        z = tm["coef_h"] @ design.T  # (D, R)
    else:
        z = tm["beta_h"] @ Xm.astype(np.float32, copy=False).T if F else np.zeros((D, R), dtype=np.float32)
        z += tm["shift_h"][:, seg]
    if tm.get("bseg_h") is not None:  # x . b[s]: one matmul per segment present in the chunk
        Xf = Xm.astype(np.float32, copy=False)
        for s in np.unique(seg):
            idx = np.flatnonzero(seg == s)
            z[:, idx] += tm["bseg_h"][:, s, :] @ Xf[idx].T
    if offset is not None:
        z += tm["hs"] * offset
    # e1 = v0 + sum_j dv_j * g_j, e2 = v0^2 + sum_j dv2_j * g_j, slope = sum_j dv_j g_j (1 - g_j), with
    # g_j = P(label > category j) = (1 + t_j) / 2 and t_j = tanh(half scaled (eta - cut_j)).
    e1 = np.full_like(z, v[0] + 0.5 * dv.sum())
    e2 = np.full_like(z, v[0] * v[0] + 0.5 * dv2.sum())
    slope = np.full_like(z, 0.25 * dv.sum())
    t = np.empty_like(z)
    tmp = np.empty_like(z)
    for j in range(len(dv)):
        np.subtract(z, half_cut[:, j, None], out=t)
        np.tanh(t, out=t)
        np.multiply(t, np.float32(0.5 * dv[j]), out=tmp)
        e1 += tmp
        np.multiply(t, np.float32(0.5 * dv2[j]), out=tmp)
        e2 += tmp
        np.multiply(t, t, out=tmp)
        tmp *= np.float32(0.25 * dv[j])
        slope -= tmp
    del z, t
    # var1 = max(e2 - e1^2, 0): one annotation's variance; between = min((slope * scale)^2 * s^2, var1): the part
    # the shared request effect moves (delta method); of the rest, a share icc is common to the cell's annotators:
    # var(mean of k) = between + (var1 - between) * (icc + (1 - icc) / k)
    np.multiply(e1, e1, out=tmp)
    np.subtract(e2, tmp, out=e2)
    np.maximum(e2, 0.0, out=e2)
    var1 = e2
    np.multiply(slope, slope, out=slope)
    slope *= (scale * scale * s2)[:, None]
    between = np.minimum(slope, var1, out=slope)
    np.subtract(var1, between, out=var1)
    var1 *= (tm["icc"] + (1.0 - tm["icc"]) / np.float32(k))[:, None]
    if tm.get("phi") is not None:
        var1 *= tm["phi"][:, None]
    var1 += between
    if s2.any():
        np.sqrt(between, out=between)  # the sd the row models of one request share
    else:  # no shared effect (pairwise, or unpaired): nothing in common, a memset rather than a pass
        between.fill(0.0)
    return e1, var1, between


def cell_moments(X: np.ndarray, seg: np.ndarray, p: dict[str, np.ndarray], cat_values: np.ndarray,
                 k: float = 1.0, with_shared: bool = False):
    """Predictive mean label and variance of the mean of ``k`` annotators of one new request.

    Arrays (draw, request, model) for requests X (R, M, F). The shared request effect v ~ N(0, s^2) of absolute
    dimensions is integrated with the logistic-normal approximation E[logistic(z + v)] ~ logistic(z / sqrt(1 + pi
    s^2 / 8)) (Monahan & Stefanski 1992); its part of the variance, Var_v(E[y | v]), by the delta method. The k
    annotators of the cell share its Dirichlet draw (calibration.models), so of the rest a share ``icc`` does not
    average away: Var = Var_between + (Var_one_annotation - Var_between) (icc + (1 - icc) / k), the second term
    times ``p["noise_scale"]`` when given (calibration.dispersion). ``with_shared``: also the (draw, request, model)
    sd of the part shared with the request's other row models (sqrt(Var_between)).
    """
    parts = [_model_moments(X[:, m, :], seg, p, m, cat_values, k) for m in range(X.shape[1])]
    out = tuple(np.stack([part[i] for part in parts], axis=2) for i in range(3 if with_shared else 2))
    return out


def _drawn_request_effects(data: CalibrationData, p: dict[str, np.ndarray]):
    """(sorted labelled requests, (draw, request) drawn shared effect ``v``) when the fit has the shared request
    effect (calibration.models), else None. A request labelled for one row model only has its other cells
    predicted given that draw of ``v`` rather than integrated over its prior: the incumbent's label informs the
    candidate's prediction on the same request (exact within the model)."""
    v = p.get("req_effect")
    if data.kind == "pairwise" or v is None or v.shape[-1] == 0 or len(data.lab_req) == 0:
        return None
    reqs = np.unique(data.lab_req)
    return reqs, np.ascontiguousarray(v[:, :len(reqs)], dtype=np.float32)


def _condition_on_drawn_effects(moments, Xc: np.ndarray, segc: np.ndarray, drawn_local, p: dict[str, np.ndarray],
                                m: int, cat_values: np.ndarray, k: float, terms: dict) -> None:
    """Overwrite, in place, the (mean, variance, shared sd) of row model ``m``'s cells on the chunk's labelled
    requests (``drawn_local``: their sorted rows in the chunk ``Xc`` and their (draw, request) drawn shared effect)
    with their moments given that draw (no covariance left to share)."""
    loc, v = drawn_local
    if len(loc) == 0:
        return
    a, b, _ = _model_moments(Xc[loc, m, :], segc[loc], p, m, cat_values, k, terms, offset=v)
    moments[0][:, loc], moments[1][:, loc], moments[2][:, loc] = a, b, 0.0


def candidate_cell(e1: list, var: list, shared: list, c: int, kind: str, paired: bool):
    """(mean, variance) of candidate ``c``'s estimand value per request from the row models' predictive moments
    (lists over row models of (draw, request) arrays): the candidate's own cell for pairwise dimensions, the
    candidate-minus-incumbent difference for absolute ones. ``paired``: the shared request effect moves both cells
    together and cancels in the difference, so its covariance comes off the variance."""
    if kind == "pairwise":
        return e1[c], var[c]
    dvar = var[c + 1] + var[0]
    if paired:
        dvar = dvar - 2.0 * shared[c + 1] * shared[0]
    return e1[c + 1] - e1[0], dvar


@dataclass
class AggregateSums:
    """Per-draw sufficient statistics of the estimands over a set of requests: sums per (draw, candidate, segment)
    of the cells' predictive means ``s1``, their squares ``s2`` and their predictive variances ``nv``, and the
    requests in each candidate's estimand per segment ``n_seg`` (candidate, segment). Sums over disjoint sets of
    requests add, so any partition of the requests (chunks, shards on other machines) gives the same totals up to
    the order of float additions; :func:`finish` turns them into draws."""

    s1: np.ndarray
    s2: np.ndarray
    nv: np.ndarray
    n_seg: np.ndarray

    @classmethod
    def zeros(cls, D: int, C: int, S: int) -> "AggregateSums":
        return cls(np.zeros((D, C, S)), np.zeros((D, C, S)), np.zeros((D, C, S)), np.zeros((C, S)))

    def add(self, other: "AggregateSums") -> "AggregateSums":
        """Adds ``other`` in place (returns self)."""
        self.s1 += other.s1
        self.s2 += other.s2
        self.nv += other.nv
        self.n_seg += other.n_seg
        return self


@dataclass
class AggregationModel:
    """What :func:`chunk_sums` needs besides the requests' rows, computed once from the posterior draws ``p``:
    the kind, the categories' values, ``k_pred`` (annotators per predicted cell) and each row model's per-draw
    coefficients. Small: O(draws x models x (features + segments)), so it travels to remote tasks cheaply."""

    p: dict
    kind: str
    cat_values: np.ndarray
    k_pred: float
    n_candidates: int
    terms: list
    cond_terms: list | None  # with a drawn shared request effect (calibration.models), else None
    paired: bool

    @classmethod
    def build(cls, p: dict[str, np.ndarray], kind: str, cat_values: np.ndarray, n_models: int, n_candidates: int,
              k_pred: float, conditioned: bool) -> "AggregationModel":
        terms = [_model_terms(p, m, cat_values) for m in range(n_models)]
        paired = kind != "pairwise" and bool(np.any(p.get("req_sigma", np.zeros(1)) > 0))
        cond = [_model_terms(p, m, cat_values, shared=False) for m in range(n_models)] if conditioned else None
        return cls(p, kind, np.asarray(cat_values), float(k_pred), n_candidates, terms, cond, paired)


def k_pred_of(data: CalibrationData) -> float:
    """Annotators per predicted cell: the median count of the labelled cells (1 without labels)."""
    cnt = data.labelled_cells()[3]
    return float(np.median(cnt)) if len(cnt) else 1.0


def chunk_sums(model: AggregationModel, X: np.ndarray, seg: np.ndarray, grp: np.ndarray, emask: np.ndarray,
               obs: np.ndarray, S: int, drawn_local=None) -> AggregateSums:
    """:class:`AggregateSums` of one chunk of requests (a pure function of its rows).

    ``X`` (R, models, features) standardised features, ``seg`` (R,) segment codes (the model's terms), ``grp``
    (R,) codes of the groups summed (the segments, or e.g. turn positions), ``emask`` (R, candidates) float 0/1:
    the requests in each candidate's estimand, ``obs`` (R, models) float32 mean observed label, NaN where
    unlabelled, ``drawn_local`` (sorted chunk rows of labelled requests, their (draw, row) drawn shared effect)
    or None. Memory: a few (draw, R) float32 arrays per row model."""
    D, C, M = model.p["cut"].shape[0], model.n_candidates, len(model.terms)
    R = len(seg)
    out = AggregateSums.zeros(D, C, S)
    for c in range(C):
        out.n_seg[c] = np.bincount(grp, weights=emask[:, c], minlength=S)[:S]
    e1, var, shared = [], [], []
    for m in range(M):
        a, b, g = _model_moments(X[:, m, :], seg, model.p, m, model.cat_values, model.k_pred, model.terms[m])
        if drawn_local is not None:
            _condition_on_drawn_effects((a, b, g), X, seg, drawn_local, model.p, m, model.cat_values,
                                        model.k_pred, model.cond_terms[m])
        lab = np.flatnonzero(np.isfinite(obs[:, m]))
        if len(lab):  # a labelled cell contributes its observed mean label, exactly
            a[:, lab] = obs[:, m][lab][None, :]
            b[:, lab] = 0.0
            g[:, lab] = 0.0
        e1.append(a)
        var.append(b)
        shared.append(g)
    if S <= 64:
        onehot = np.zeros((R, S), dtype=np.float32)
        onehot[np.arange(R), grp] = 1.0
    else:  # many segments: sums over runs of requests sorted by segment instead of a wide one-hot matmul
        order = np.argsort(grp, kind="stable")
        starts = np.flatnonzero(np.r_[True, np.diff(grp[order]) != 0])
        seg_ids = grp[order][starts]
    for c in range(C):
        diff, dvar = candidate_cell(e1, var, shared, c, model.kind, model.paired)
        mk = emask[:, c]
        for acc, a in ((out.s1, diff), (out.s2, diff * diff), (out.nv, dvar)):
            if S <= 64:  # (D, R) @ (R, S): sums per segment over this candidate's estimand requests
                acc[:, c, :] += a @ (onehot * mk[:, None])
            else:
                acc[:, c, seg_ids] += np.add.reduceat((a * mk[None, :])[:, order], starts, axis=1)
    return out


def finish(sums: AggregateSums, rng: np.random.Generator, kind: str, cat_values: np.ndarray) -> EstimandDraws:
    """Posterior draws of the finite-population and population estimands (module docstring) from the summed
    sufficient statistics of all requests: O(draws x candidates x segments), whatever the number of requests."""
    s1, s2, nv, n_seg = sums.s1, sums.s2, sums.nv, sums.n_seg
    D, C, S = s1.shape
    ns = np.maximum(n_seg, 1.0)
    mean_s = s1 / ns
    # Var_r over the traffic of the *realised* values: the spread of the predictive means plus the mean predictive
    # variance of the unlabelled ones (law of total variance); the means alone understate it most where the judges
    # are weak and each unlabelled request's own label is most uncertain.
    pop_var_s = (np.maximum(s2 / ns - mean_s**2, 0.0) + nv / ns) / ns
    z1, z2 = rng.standard_normal((2, D, C, S))
    # The normal terms are large-n approximations; in a segment of a few requests they can step outside the scale
    # (a win rate above 1), so draws are kept on the estimand's range.
    lo_v, hi_v = float(np.min(cat_values)), float(np.max(cat_values))
    lo, hi = (lo_v, hi_v) if kind == "pairwise" else (lo_v - hi_v, hi_v - lo_v)
    fp_seg = np.clip(mean_s + np.sqrt(nv) / ns * z1, lo, hi)
    pop_seg = np.clip(fp_seg + np.sqrt(pop_var_s) * z2, lo, hi)
    Ntot = np.maximum(n_seg.sum(axis=1), 1.0)  # (C,)
    fp = (fp_seg * n_seg[None]).sum(axis=2) / Ntot
    mean_all = s1.sum(axis=2) / Ntot
    pop_var = (np.maximum(s2.sum(axis=2) / Ntot - mean_all**2, 0.0) + nv.sum(axis=2) / Ntot) / Ntot
    pop = np.clip(fp + np.sqrt(pop_var) * rng.standard_normal((D, C)), lo, hi)
    return EstimandDraws(fp=fp, pop=pop, fp_seg=fp_seg, pop_seg=pop_seg, n_seg=n_seg)


def aggregation_model(data: CalibrationData, p: dict[str, np.ndarray], k_pred: float | None = None):
    """(:class:`AggregationModel`, drawn shared effects or None) of ``data`` and the posterior draws ``p``."""
    drawn = _drawn_request_effects(data, p)
    model = AggregationModel.build(p, data.kind, data.cat_values, data.n_models, len(data.candidates),
                                   k_pred_of(data) if k_pred is None else k_pred, drawn is not None)
    return model, drawn


def observed_cells(data: CalibrationData) -> np.ndarray:
    """(n_req, n_models) float32 mean observed label, NaN where unlabelled."""
    req, mod, ybar, _ = data.labelled_cells()
    obs = np.full((data.n_req, data.n_models), np.nan, dtype=np.float32)
    obs[req, mod] = ybar
    return obs


def local_sums(data: CalibrationData, p: dict[str, np.ndarray], chunk: int | None = None,
               k_pred: float | None = None, groups: tuple[np.ndarray, int] | None = None) -> AggregateSums:
    """:class:`AggregateSums` of all of ``data``'s requests, in chunks of ``chunk`` requests in this process."""
    D = p["cut"].shape[0]
    N = data.n_req
    S = len(data.segment_names) if groups is None else int(groups[1])
    if chunk is None:
        chunk = max(256, CHUNK_CELLS // max(D, 1))
    model, drawn = aggregation_model(data, p, k_pred)
    obs = observed_cells(data)
    emask = data.estimand_mask().astype(np.float32)  # (N, C)
    seg_all = np.asarray(data.seg_idx)
    grp_all = seg_all if groups is None else np.asarray(groups[0])
    total = AggregateSums.zeros(D, len(data.candidates), S)
    for r0 in range(0, N, chunk):
        sl = slice(r0, min(N, r0 + chunk))
        local = None
        if drawn is not None:
            reqs, v = drawn
            lo, hi = np.searchsorted(reqs, [sl.start, sl.stop])
            local = (reqs[lo:hi] - sl.start, v[:, lo:hi])
        total.add(chunk_sums(model, data.X[sl], seg_all[sl], grp_all[sl], emask[sl], obs[sl], S, local))
    return total


def aggregate(data: CalibrationData, p: dict[str, np.ndarray], rng: np.random.Generator, chunk: int | None = None,
              k_pred: float | None = None, groups: tuple[np.ndarray, int] | None = None) -> EstimandDraws:
    """Posterior draws of the finite-population and population estimands (see module docstring):
    :func:`local_sums` then :func:`finish`.

    ``chunk`` requests at a time (default: about ``CHUNK_CELLS`` draw x request cells, i.e. a few 1 MB float32 work
    arrays per row model whatever the number of draws), so memory stays bounded at any number of requests.
    ``groups`` (code per request, number of groups): the ``*_seg`` draws are per group instead of per segment (e.g.
    turn positions); the model still predicts each request with its own segment's terms."""
    return finish(local_sums(data, p, chunk, k_pred, groups), rng, data.kind, data.cat_values)

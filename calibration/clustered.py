"""Conversations: turns grouped into clusters, and the estimands and baselines that account for it.

Turns of one conversation share a user, a topic and a history, so their human labels (and a judge's errors on them)
are correlated. Treating them as independent requests understates every variance. Here:

- :func:`cluster_codes`: the conversation of every scored request, read from a traffic column (``cluster_col`` of
  calibration.data.prepare); a request without one is its own conversation.
- the calibration model gets a per-(row model, conversation) effect (calibration.models ``_conversation_effect``);
  :func:`conversation_effects` extracts its draws.
- :func:`aggregate_clustered`: the finite-population estimand draws with one conversation effect per (draw, model,
  conversation): the posterior draw for a labelled conversation, a prior draw ``N(0, sigma_conv)`` for the others,
  shared by all of its turns (so unlabelled turns of one conversation move together), then the moments of every turn
  given it (calibration.estimands). The population term is the between-conversation variance of the ratio-to-size
  estimator, ``sum_g (T_g - ybar n_g)^2 / N^2 * G / (G - 1)`` with ``T_g`` the conversation's total and ``n_g`` its
  turns (Cochran 1977, sec. 9A.3 and 6.9; Lohr 2019, *Sampling: Design and Analysis*, sec. 5.3), not the per-turn
  ``Var_r / N``.
- :func:`human_only_cluster_robust`: the labels-only baseline with the cluster-robust (CR1, sandwich over
  conversation sums) standard error of a mean (Liang & Zeger 1986, Biometrika 73(1); Cameron & Miller 2015,
  "A Practitioner's Guide to Cluster-Robust Inference", J. Human Resources 50(2)) and a t quantile with G - 1 degrees
  of freedom; for the scored requests with the finite-population correction over conversations, ``1 - g/G``.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.stats import t as student_t

from calibration.checks import InputError, require as _require
from calibration.data import CalibrationData
from calibration.estimands import CHUNK_CELLS, EstimandDraws, _model_moments, _model_terms, candidate_cell


def cluster_codes(traffic: pd.DataFrame | None, cluster_col: str, request_ids: np.ndarray,
                  warns: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(conversation code per request, conversation ids) from the traffic table's ``cluster_col``.

    A scored request absent from traffic or with an empty conversation is its own conversation (a single-turn
    exchange), with a warning, so no row is dropped."""
    if traffic is None:
        raise InputError(f"conversation column {cluster_col!r} given without a traffic table")
    _require(traffic, ["request_id", cluster_col], "traffic")
    tid = traffic["request_id"].astype(str).to_numpy()
    first = ~pd.Series(tid).duplicated(keep="first").to_numpy()
    conv = traffic[cluster_col].to_numpy()[first]
    pos = pd.Index(tid[first]).get_indexer(pd.Index(request_ids))
    val = np.where(pos >= 0, conv[np.maximum(pos, 0)] if len(conv) else None, None)
    empty = pd.isna(pd.Series(val, dtype=object)).to_numpy()
    if empty.any():
        warns.append(f"traffic: {int(empty.sum())} scored request(s) have no {cluster_col!r}; each is taken as its "
                     f"own conversation")
    keys = np.where(empty, np.array([f"<single>{r}" for r in request_ids], dtype=object),
                    pd.Series(val, dtype=object).astype(str).to_numpy())
    codes, names = pd.factorize(keys)
    return codes.astype(np.int64), np.asarray(names, dtype=object)


def labelled_units(d: CalibrationData) -> np.ndarray:
    """Sorted ``model * G + conversation`` keys of the (row model, conversation) pairs with a label."""
    G = len(d.cluster_names)
    return np.unique(d.lab_model.astype(np.int64) * G + d.cluster_idx[d.lab_req])


def conversation_effects(idata, blocks: list[CalibrationData]) -> dict[str, np.ndarray]:
    """``conv_effect`` (draw, block, model, max conversations): the drawn effect of each labelled (model,
    conversation), zero elsewhere; ``conv_sigma`` (draw, block). Keys are numbered as in models._conversation_effect
    (sorted by block, model, conversation)."""
    post = idata.posterior
    z = post["conv_z"].to_numpy()
    z = z.reshape(-1, z.shape[-1])
    sig = post["conv_sigma"].to_numpy().reshape(z.shape[0], -1)
    G = max(len(d.cluster_names) for d in blocks)
    M = blocks[0].n_models
    out = np.zeros((z.shape[0], len(blocks), M, G), dtype=np.float32)
    start = 0
    for b, d in enumerate(blocks):
        keys = labelled_units(d)
        Gb = len(d.cluster_names)
        mods, convs = keys // Gb, keys % Gb
        out[:, b, mods, convs] = z[:, start:start + len(keys)] * sig[:, b, None]
        start += len(keys)
    return {"conv_effect": out, "conv_sigma": sig}


def _cluster_var(totals: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Per draw, the between-conversation variance of the ratio-to-size mean ``sum T_g / sum n_g``:
    ``sum_g (T_g - ybar n_g)^2 / N^2 * G / (G - 1)`` over conversations with ``n_g > 0`` (Cochran 1977, 9A.3).
    ``totals`` (draw, G); ``sizes`` (G,)."""
    keep = sizes > 0
    T, n = totals[:, keep], sizes[keep]
    G, N = int(keep.sum()), float(n.sum())
    if G < 2:
        return np.zeros(totals.shape[0])
    ybar = T.sum(axis=1) / N
    return ((T - ybar[:, None] * n[None, :]) ** 2).sum(axis=1) / N**2 * G / (G - 1)


def aggregate_clustered(data: CalibrationData, p: dict[str, np.ndarray], rng: np.random.Generator,
                        chunk: int | None = None, k_pred: float | None = None,
                        groups: tuple[np.ndarray, int] | None = None) -> EstimandDraws:
    """Finite-population and population estimand draws for clustered requests (module docstring).

    Same estimands as calibration.estimands.aggregate (``groups`` too); the request effect of a paired absolute
    dimension is integrated for every cell (not conditioned on its drawn value), which is slightly conservative."""
    if data.cluster_idx is None:
        raise ValueError("aggregate_clustered needs data prepared with a cluster_col")
    D = p["cut"].shape[0]
    M, N, C = data.n_models, data.n_req, len(data.candidates)
    S = len(data.segment_names) if groups is None else int(groups[1])
    G = len(data.cluster_names)
    cl = np.asarray(data.cluster_idx)
    chunk = chunk or max(256, CHUNK_CELLS // max(D, 1))
    req, mod, ybar, cnt = data.labelled_cells()
    obs = np.full((N, M), np.nan, dtype=np.float32)
    obs[req, mod] = ybar
    k_pred = k_pred or (float(np.median(cnt)) if len(cnt) else 1.0)
    # one effect per (draw, model, conversation), shared by every turn of it: posterior draw where labelled
    sig = p.get("conv_sigma", np.zeros(D)).astype(np.float32)
    W = sig[:, None, None] * rng.standard_normal((D, M, G), dtype=np.float32)
    if "conv_effect" in p:
        keys = labelled_units(data)
        W[:, keys // G, keys % G] = p["conv_effect"][:, keys // G, keys % G]
    emask = data.estimand_mask().astype(np.float32)
    seg_all = np.asarray(data.seg_idx)
    grp_all = seg_all if groups is None else np.asarray(groups[0])
    n_seg = np.stack([np.bincount(grp_all, weights=emask[:, c], minlength=S)[:S] for c in range(C)])
    # population units: conversations overall, (segment, conversation) pairs per segment (or group)
    pair, pair_seg = pd.factorize(grp_all.astype(np.int64) * G + cl)
    pair_seg = np.asarray(pair_seg) // G
    P = len(pair_seg)
    s1 = np.zeros((D, C, S))
    nv = np.zeros((D, C, S))
    T_pair = np.zeros((D, C, P))
    terms = [_model_terms(p, m, data.cat_values) for m in range(M)]
    paired = data.kind != "pairwise" and bool(np.any(p.get("req_sigma", np.zeros(1)) > 0))
    for r0 in range(0, N, chunk):
        sl = slice(r0, min(N, r0 + chunk))
        seg, R = seg_all[sl], sl.stop - sl.start
        e1, var, shared = [], [], []
        for m in range(M):
            a, b, g = _model_moments(data.X[sl, m, :], seg, p, m, data.cat_values, k_pred, terms[m],
                                     offset=np.ascontiguousarray(W[:, m, cl[sl]]))
            lab = np.flatnonzero(np.isfinite(obs[sl, m]))
            a[:, lab], b[:, lab], g[:, lab] = obs[sl, m][lab][None, :], 0.0, 0.0
            e1.append(a), var.append(b), shared.append(g)
        to_seg = sparse.csr_matrix((np.ones(R), (np.arange(R), grp_all[sl])), shape=(R, S))
        to_pair = sparse.csr_matrix((np.ones(R), (np.arange(R), pair[sl])), shape=(R, P))
        for c in range(C):
            diff, dvar = candidate_cell(e1, var, shared, c, data.kind, paired)
            mk = emask[sl, c][None, :]
            s1[:, c, :] += np.asarray((to_seg.T @ (diff * mk).T).T)
            nv[:, c, :] += np.asarray((to_seg.T @ (dvar * mk).T).T)
            T_pair[:, c, :] += np.asarray((to_pair.T @ (diff * mk).T).T)
    ns = np.maximum(n_seg, 1.0)
    lo_v, hi_v = float(np.min(data.cat_values)), float(np.max(data.cat_values))
    lo, hi = (lo_v, hi_v) if data.kind == "pairwise" else (lo_v - hi_v, hi_v - lo_v)
    fp_seg = np.clip(s1 / ns + np.sqrt(nv) / ns * rng.standard_normal((D, C, S)), lo, hi)
    Ntot = np.maximum(n_seg.sum(axis=1), 1.0)
    fp = (fp_seg * n_seg[None]).sum(axis=2) / Ntot
    pop_seg = np.empty_like(fp_seg)
    pop = np.empty_like(fp)
    pair_cl = np.asarray(pd.factorize(grp_all.astype(np.int64) * G + cl)[1]) % G
    for c in range(C):
        size_pair = np.bincount(pair, weights=emask[:, c], minlength=P)
        # The totals T_g are built from the unlabelled turns' predictive means; a realised total also carries
        # their predictive variance, E[(T_g - ybar n_g)^2] = (mean part)^2 + Var(T_g), so the between-conversation
        # term adds sum_r Var_r / N^2 (the turn-level noise the means leave out).
        for s in range(S):
            on = pair_seg == s
            v = _cluster_var(T_pair[:, c, on], size_pair[on]) + nv[:, c, s] / ns[c, s] ** 2
            pop_seg[:, c, s] = fp_seg[:, c, s] + np.sqrt(v) * rng.standard_normal(D)
        to_conv = sparse.csr_matrix((np.ones(P), (np.arange(P), pair_cl)), shape=(P, G))
        T_conv = np.asarray((to_conv.T @ T_pair[:, c, :].T).T)
        v = _cluster_var(T_conv, np.asarray(to_conv.T @ size_pair).ravel()) + nv[:, c, :].sum(axis=1) / Ntot[c] ** 2
        pop[:, c] = fp[:, c] + np.sqrt(v) * rng.standard_normal(D)
    return EstimandDraws(fp=fp, pop=np.clip(pop, lo, hi), fp_seg=fp_seg, pop_seg=np.clip(pop_seg, lo, hi),
                         n_seg=n_seg)


def human_only_cluster_robust(data: CalibrationData, c: int, alpha: float) -> dict:
    """Labels alone with a cluster-robust (CR1) standard error over conversations (module docstring).

    ``interval`` is for the scored requests (finite-population correction ``1 - g/G`` over the labelled ``g`` of
    the scored ``G`` conversations), ``interval_population`` for the traffic. Paired targets only (pairwise, or an
    absolute dimension labelled for incumbent and candidate on the same turns)."""
    from calibration.baselines import cell_matrix, target_values  # noqa: PLC0415

    if data.cluster_idx is None:
        raise ValueError("human_only_cluster_robust needs data prepared with a cluster_col")
    y, ok = target_values(data, cell_matrix(data), c)
    cl = np.asarray(data.cluster_idx)[ok]
    y = y[ok]
    n = len(y)
    codes, uniq = pd.factorize(cl)
    g = len(uniq)
    scored = data.estimand_mask()[:, c]
    G = max(len(np.unique(np.asarray(data.cluster_idx)[scored])), g)
    if g < 2:
        return {"estimate": float(y.mean()) if n else float("nan"), "interval": None, "interval_population": None,
                "n": n, "conversations": g, "note": "fewer than two labelled conversations"}
    est = float(y.mean())
    u = np.bincount(codes, weights=y - est, minlength=g)  # score of the mean, summed per conversation
    var = g / (g - 1) * float(np.sum(u**2)) / n**2
    q = float(student_t.ppf(1 - alpha / 2, g - 1))
    se, se_fp = np.sqrt(var), np.sqrt(max(0.0, 1.0 - g / G) * var)
    return {"estimate": est, "interval": [est - q * se_fp, est + q * se_fp], "se": float(se_fp),
            "interval_population": [est - q * se, est + q * se], "se_population": float(se), "n": n,
            "conversations": g, "N_conversations": G, "method": "cluster-robust CR1"}

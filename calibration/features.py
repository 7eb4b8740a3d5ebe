"""The metric features' transform (impute, indicate missingness, drop constants, standardise, PCA-compress) as a
fitted object, so rows scored anywhere (a shard on a Ray worker) get exactly the features of the fit.

:func:`fit_transform` is the transform of calibration.data (module docstring there) on all scored rows: it
returns the features of those rows, computed as before, and the :class:`FeatureTransform` that records every
quantity taken from all rows (per-model imputation means, which missingness indicators exist, the columns kept,
their means and standard deviations, the duplicates dropped, the principal axes and their moments).
:meth:`FeatureTransform.apply` maps any subset of rows with those recorded quantities, so a row's features do
not depend on which other rows are transformed with it."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from calibration.design import LOG_PI

_BLOCK = 65536  # requests projected at a time: a bounded stacked copy


@dataclass
class FeatureTransform:
    """Everything the features take from all scored rows (see :func:`fit_transform`)."""

    sources: list[tuple[int, np.ndarray, np.ndarray, float, bool]]  # (raw column, model seen, model means, grand, indicator)
    mu: np.ndarray  # (columns kept,) means of the imputed columns
    sd: np.ndarray
    keep: np.ndarray  # (imputed columns,) bool: not constant
    order: np.ndarray  # kept columns after dropping duplicates, log pi last
    n_log_pi: int  # trailing columns of ``order`` left out of the principal components
    comp: np.ndarray | None  # (max_features, columns) principal axes, None without compression
    pca_mu: np.ndarray | None
    pca_sd: np.ndarray | None
    names: list[str]

    def apply(self, raw: np.ndarray, present: np.ndarray) -> np.ndarray:
        """(rows, models, features) float32 features of the rows ``raw`` (rows, models, raw columns) with
        ``present`` (rows, models) (the model was scored on the row), as :func:`fit_transform` computed them."""
        n_req, n_mod = raw.shape[:2]
        cols = []
        for j, seen, means, grand, indicator in self.sources:
            v = np.array(raw[:, :, j], dtype=np.float64)
            miss = ~np.isfinite(v) & present
            for m in range(n_mod):
                if seen[m]:
                    v[~np.isfinite(v[:, m]), m] = means[m]
            v[:, ~seen] = grand
            cols.append(v)
            if indicator:
                cols.append(miss.astype(float))
        cols = [c for c, k in zip(cols, self.keep) if k]
        for c, m_, s_ in zip(cols, self.mu, self.sd):
            c -= m_
            c /= s_
        cols = [cols[i] for i in self.order]
        if self.comp is not None:
            main, tail = cols[:len(cols) - self.n_log_pi], cols[len(cols) - self.n_log_pi:]
            k = self.comp.shape[0]
            A = np.empty((n_req, n_mod, k))
            for r0 in range(0, n_req, _BLOCK):
                A[r0:r0 + _BLOCK] = np.stack([c[r0:r0 + _BLOCK] for c in main], axis=2) @ self.comp.T
            A -= self.pca_mu
            A /= self.pca_sd
            cols = [A[:, :, i] for i in range(k)] + tail
        out = np.empty((n_req, n_mod, len(cols)), dtype=np.float32)
        for j, c in enumerate(cols):
            out[:, :, j] = c
        return out


def fit_transform(raw: np.ndarray, names: list[str], max_features: int,
                  present: np.ndarray) -> tuple[np.ndarray, list[str], FeatureTransform]:
    """Impute (per model mean + indicator), drop constants, standardise, PCA-compress beyond max_features; the
    features (float32), their names and the fitted transform.

    Cells of a model that was not scored on a request (``present`` false) are imputed but flagged as nothing:
    they never enter an estimand. ``raw`` is overwritten (its columns are worked on in place, to save a copy)."""
    n_req, n_mod, n_feat = raw.shape
    cols, out_names, sources = [], [], []
    for j in range(n_feat):
        v = raw[:, :, j]  # imputed and standardised in place: ``raw`` is the caller's scratch array
        miss = ~np.isfinite(v) & present
        present_any = (~miss).any(axis=0)
        if not present_any.any():
            continue
        means = np.full(n_mod, np.nan)
        for m in range(n_mod):
            if present_any[m]:
                means[m] = np.nanmean(v[:, m])
                v[~np.isfinite(v[:, m]), m] = means[m]
        grand = np.mean(v[:, present_any])
        v[:, ~present_any] = grand
        cols.append(v)
        out_names.append(names[j])
        # an indicator only where missingness varies within some model
        varies = [(miss[:, m].any() and not miss[:, m].all()) for m in range(n_mod)]
        if any(varies):
            cols.append(miss.astype(float))
            out_names.append(f"{names[j]}[missing]")
        sources.append((j, present_any, means, float(grand), bool(any(varies))))
    empty = FeatureTransform(sources, np.zeros(0), np.zeros(0), np.zeros(len(cols), bool), np.zeros(0, int), 0,
                             None, None, None, [])
    if not cols:
        return np.zeros((n_req, n_mod, 0)), [], empty
    del v, miss
    # Column by column (each (request, model) float64), never the whole (request, model, feature) tensor in
    # float64 more than once: the same statistics as on the stacked array, a fraction of the peak memory.
    mu = np.array([c.mean() for c in cols])
    sd = np.array([c.std() for c in cols])
    keep = sd > 1e-9 * np.maximum(1.0, np.abs(mu))
    cols = [c for c, k in zip(cols, keep) if k]
    out_names = [n for n, k in zip(out_names, keep) if k]
    mu, sd = mu[keep], sd[keep]
    if not cols:
        empty.keep = keep
        return np.zeros((n_req, n_mod, 0)), [], empty
    for c, m_, s_ in zip(cols, mu, sd):
        c -= m_
        c /= s_
    # drop exact duplicates (e.g. identical indicators)
    head = np.stack([c.reshape(-1)[:50000] for c in cols], axis=1)
    _, first = np.unique(np.round(head.T, 9), axis=0, return_index=True)
    first = np.sort(first)
    # log pi of the labels' design stays a covariate of its own: folded into principal components it would no
    # longer be the term the model conditions on (and decision.json reports as 'covariate')
    order = np.array([i for i in first if out_names[i] != LOG_PI] + [i for i in first if out_names[i] == LOG_PI],
                     dtype=int)
    n_log_pi = int(sum(out_names[i] == LOG_PI for i in first))
    cols, out_names = [cols[i] for i in order], [out_names[i] for i in order]
    t = FeatureTransform(sources, mu, sd, keep, order, n_log_pi, None, None, None, out_names)
    main = len(cols) - n_log_pi
    if main > max_features:
        step = max(1, (n_req * n_mod) // 200000)
        sub = np.stack([c.reshape(-1)[::step] for c in cols[:main]], axis=1)
        _, s, vt = np.linalg.svd(sub - sub.mean(axis=0), full_matrices=False)
        comp = vt[:max_features]
        A = np.empty((n_req, n_mod, max_features))
        for r0 in range(0, n_req, _BLOCK):  # projected in blocks of requests: a bounded stacked copy at a time
            A[r0:r0 + _BLOCK] = np.stack([c[r0:r0 + _BLOCK] for c in cols[:main]], axis=2) @ comp.T
        tail = cols[main:]
        del cols
        flat = A.reshape(-1, max_features)
        t.comp, t.pca_mu, t.pca_sd = comp, flat.mean(axis=0), flat.std(axis=0)
        A -= t.pca_mu
        A /= t.pca_sd
        cols = [A[:, :, i] for i in range(max_features)] + tail
        out_names = [f"pc{i + 1}" for i in range(max_features)] + out_names[main:]
        t.names = out_names
    A = np.empty((n_req, n_mod, len(cols)), dtype=np.float32)
    for j, c in enumerate(cols):
        A[:, :, j] = c
    return A, out_names, t

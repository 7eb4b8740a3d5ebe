"""Agreement between annotators and representativeness of the labelled requests. Pure numpy.

- :func:`krippendorff_alpha`: Krippendorff's alpha for nominal, ordinal or interval data with any number of
  annotators and missing values, computed from the coincidence matrix as in Krippendorff (2011), "Computing
  Krippendorff's Alpha-Reliability", and Krippendorff (2004), *Content Analysis*, ch. 11.
- :func:`representativeness`: per automated metric, the design-weighted standardised mean difference (Austin 2009)
  and Kolmogorov-Smirnov distance between the labelled requests and all scored requests, with a warning when the
  difference exceeds what sampling noise at the labels' effective size (Kish 1965) explains.
"""

from __future__ import annotations

import numpy as np

from calibration.design import kish_n_eff

__all__ = ["krippendorff_alpha", "alpha_from_long", "representativeness"]

LEVELS = ("nominal", "ordinal", "interval")


def _delta2(values: np.ndarray, n_v: np.ndarray, level: str) -> np.ndarray:
    """Squared difference function delta^2(c, k) between the observed values (Krippendorff 2011, sec. E)."""
    if level == "nominal":
        return 1.0 - np.eye(len(values))
    if level == "interval":
        return (values[:, None] - values[None, :]) ** 2
    if level == "ordinal":
        cum = np.concatenate([[0.0], np.cumsum(n_v)])
        # sum_{g=c}^{k} n_g - (n_c + n_k) / 2, for c <= k (symmetric)
        lo = np.minimum.outer(np.arange(len(values)), np.arange(len(values)))
        hi = np.maximum.outer(np.arange(len(values)), np.arange(len(values)))
        between = cum[hi + 1] - cum[lo]
        return (between - (n_v[:, None] + n_v[None, :]) / 2.0) ** 2
    raise ValueError(f"level must be one of {LEVELS}, got {level!r}")


def krippendorff_alpha(data: np.ndarray, level: str = "nominal") -> float:
    """Krippendorff's alpha of a reliability matrix ``data[annotator, unit]`` (NaN = not labelled).

    ``alpha = 1 - (n - 1) * sum_ck o_ck d2_ck / sum_ck n_c n_k d2_ck``, with ``o`` the coincidence matrix (each
    unit with ``m_u >= 2`` values adds its ordered value pairs weighted ``1 / (m_u - 1)``), ``n_c`` its margins and
    ``n`` the number of pairable values. Units with fewer than two values are not pairable and are ignored.
    Returns NaN when fewer than two pairable values exist or every value is the same (no variation to agree on).
    """
    data = np.asarray(data, dtype=float)
    if data.ndim != 2:
        raise ValueError(f"data must be a 2-d annotator x unit matrix, got shape {data.shape}")
    present = np.isfinite(data)
    values = np.unique(data[present])
    if len(values) < 2:
        return float("nan")
    m = present.sum(axis=0)
    keep = m >= 2
    if not keep.any():
        return float("nan")
    # counts[u, v]: how many annotators gave unit u value v
    code = np.searchsorted(values, np.where(present, data, values[0]))
    counts = np.zeros((data.shape[1], len(values)))
    for a in range(data.shape[0]):
        np.add.at(counts, (np.flatnonzero(present[a]), code[a, present[a]]), 1.0)
    counts, m = counts[keep], m[keep].astype(float)
    scaled = counts / (m - 1.0)[:, None]
    o = scaled.T @ counts - np.diag(scaled.sum(axis=0))
    n_v = o.sum(axis=1)
    n = n_v.sum()
    d2 = _delta2(values, n_v, level)
    expected = (np.outer(n_v, n_v) * d2).sum()
    if expected == 0:
        return float("nan")
    return float(1.0 - (n - 1.0) * (o * d2).sum() / expected)


def alpha_from_long(items: np.ndarray, annotators: np.ndarray, values: np.ndarray, level: str) -> dict:
    """Alpha from long rows (item, annotator, value): builds the reliability matrix; reports what it used.

    Returns ``alpha``, ``items`` (with >= 2 annotators), ``annotators`` and ``pairable_values``.
    """
    items, annotators = np.asarray(items), np.asarray(annotators)
    values = np.asarray(values, dtype=float)
    item_codes, item_names = _codes(items)
    ann_codes, ann_names = _codes(annotators)
    matrix = np.full((len(ann_names), len(item_names)), np.nan)
    matrix[ann_codes, item_codes] = values
    per_item = np.isfinite(matrix).sum(axis=0)
    return {
        "alpha": krippendorff_alpha(matrix, level),
        "level": level,
        "items": int((per_item >= 2).sum()),
        "annotators": int(len(ann_names)),
        "pairable_values": int(per_item[per_item >= 2].sum()),
    }


def _codes(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    names, codes = np.unique(x.astype(str), return_inverse=True)
    return codes, names


def _weighted_ecdf_distance(x_lab: np.ndarray, w: np.ndarray, x_all: np.ndarray) -> float:
    grid = np.unique(np.concatenate([x_lab, x_all]))
    order = np.argsort(x_lab, kind="stable")
    cw = np.concatenate([[0.0], np.cumsum(w[order])]) / w.sum()
    f_lab = cw[np.searchsorted(x_lab[order], grid, side="right")]
    f_all = np.searchsorted(np.sort(x_all), grid, side="right") / len(x_all)
    return float(np.max(np.abs(f_lab - f_all)))


def representativeness(metrics_all: np.ndarray, labelled: np.ndarray, weights: np.ndarray | None = None,
                       names: list[str] | None = None, alpha: float = 0.01, smd_floor: float = 0.1) -> list[dict]:
    """Compare the labelled units' metric distribution (weighted by the design) with all scored units.

    ``metrics_all[unit, metric]`` holds every scored unit; ``labelled`` the indices of the labelled units;
    ``weights`` their design weights ``1 / pi`` (None: equal). Per metric: the weighted standardised mean
    difference ``(mean_w(lab) - mean(all)) / sd(all)``, the weighted KS distance between the labelled units'
    weighted ECDF and the population's ECDF, and the Kish effective size ``n_eff = (sum w)^2 / sum w^2``.
    ``warn`` is true when the KS distance exceeds its asymptotic critical value at level ``alpha`` for a
    sample of ``n_eff`` against a known distribution (``sqrt(-log(alpha / 2) / 2) / sqrt(n_eff)``), or when
    ``|smd|`` is above both ``smd_floor`` (Austin 2009's 0.1) and ``z_{1-alpha/2} / sqrt(n_eff)``.
    NaN metric values are left out metric by metric.
    """
    from scipy import stats

    metrics_all = np.asarray(metrics_all, dtype=float)
    if metrics_all.ndim == 1:
        metrics_all = metrics_all[:, None]
    labelled = np.asarray(labelled, dtype=np.int64)
    w_all = np.ones(len(labelled)) if weights is None else np.asarray(weights, dtype=float)
    if len(w_all) != len(labelled):
        raise ValueError(f"weights has {len(w_all)} entries for {len(labelled)} labelled units")
    names = names or [f"metric_{j}" for j in range(metrics_all.shape[1])]
    z = stats.norm.ppf(1 - alpha / 2)
    ks_c = np.sqrt(-np.log(alpha / 2) / 2)
    out = []
    for j, name in enumerate(names):
        col = metrics_all[:, j]
        ok_all = np.isfinite(col)
        x_lab = col[labelled]
        ok_lab = np.isfinite(x_lab)
        row = {"metric": name, "n_labelled": int(ok_lab.sum()), "n_scored": int(ok_all.sum())}
        if ok_lab.sum() < 2 or ok_all.sum() < 2:
            out.append({**row, "smd": None, "ks": None, "n_eff": None, "warn": False,
                        "note": "fewer than two values"})
            continue
        x_lab, w = x_lab[ok_lab], w_all[ok_lab]
        pop = col[ok_all]
        sd = pop.std(ddof=1)
        mean_lab = float(np.sum(w * x_lab) / w.sum())
        smd = 0.0 if sd == 0 else (mean_lab - pop.mean()) / sd
        ks = _weighted_ecdf_distance(x_lab, w, pop)
        n_eff = kish_n_eff(w)
        warn = bool(ks > ks_c / np.sqrt(n_eff) or (abs(smd) > smd_floor and abs(smd) > z / np.sqrt(n_eff)))
        out.append({**row, "mean_labelled": mean_lab, "mean_scored": float(pop.mean()), "smd": float(smd),
                    "ks": ks, "ks_critical": float(ks_c / np.sqrt(n_eff)), "n_eff": n_eff, "warn": warn})
    return out

"""The labels' sampling design as arrays for one dimension, and how the calibration model adjusts for it.

`baton labels export` chooses units (request, candidate) with known inclusion probabilities ``pi``
(calibration.design). When they differ between units (active; stratified with unequal sampling fractions), the
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

from calibration.checks import InputError, numeric, require
from calibration.design import combine_inclusion

LOG_PI = "design.log_pi"


def unit_probabilities(table: pd.DataFrame, name: str, req_index: pd.Index, candidates: list[str]):
    """(n_req, n_candidates) inclusion probability of each candidate unit, NaN where no design covers it; None
    when ``table`` records no design. Several batches of one unit combine as ``1 - prod_b (1 - pi_b)``
    (calibration.design.combine_inclusion)."""
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

"""The migration decision rule and the labels-needed estimate.

Non-inferiority testing in its Bayesian form (posterior probability of the non-inferior region, e.g. Spiegelhalter,
Abrams & Myles 2004, ch. 6): with margin M and confidence C,
- thresholds: pairwise win rate 0.5 - M (non-inferior) and 0.5 (superior); absolute difference -M and 0;
- ``migrate``: P(non-inferior) >= C on the dimension, the sampler converged, and no gating segment credibly
  regresses beyond the margin, judged jointly over all gating segments and dimensions of the candidate
  (calibration.segments: a simultaneous credible band, not one veto per segment);
- ``reject``: P(non-inferior) <= 1 - C (credibly inferior) on a converged run;
- otherwise ``more_labels``; and a ``migrate`` becomes ``more_labels`` when a guard that does not trust the model
  fires (calibration.guards).
A candidate's verdict combines its gating dimensions: reject if any rejects, migrate if all migrate.
"""
from __future__ import annotations

import numpy as np
from scipy.stats import norm

from calibration.schema import Verdict

MIGRATE, MORE, REJECT = Verdict.MIGRATE, Verdict.MORE_LABELS, Verdict.REJECT
SETTLE_PROBABILITY = 0.8  # "likely settles": P(decided after the extra labels) >= 0.8


def thresholds(kind: str, margin: float) -> tuple[float, float]:
    """(non-inferior, superior) thresholds of a dimension kind: the one place the rule is written."""
    return (0.5 - margin, 0.5) if kind == "pairwise" else (-margin, 0.0)


def prob_above(draws: np.ndarray, thr: float) -> float:
    """P(estimand > thr); a draw exactly at the threshold counts one half (so 'exactly at the margin' is 0.5)."""
    d = np.asarray(draws, dtype=float)
    return float(np.mean(d > thr) + 0.5 * np.mean(d == thr))


def dimension_verdict(p_noninferior: float, confidence: float, converged: bool,
                      regressing_segments: list[str], guards: list[dict] | None = None) -> tuple[Verdict, list[str]]:
    """Verdict and reasons; a fired guard (calibration.guards) turns ``migrate`` into ``more_labels``."""
    verdict, reasons = _model_verdict(p_noninferior, confidence, converged, regressing_segments)
    fired = [g for g in guards or [] if g.get("fired")]
    if verdict == MIGRATE and fired:
        reasons.append("the model says non-inferior but a guard blocks migrate: "
                       + "; ".join(f"{g['name']} ({g.get('detail') or g.get('value')})" for g in fired))
        return MORE, reasons
    return verdict, reasons


def _model_verdict(p_noninferior: float, confidence: float, converged: bool,
                   regressing_segments: list[str]) -> tuple[Verdict, list[str]]:
    reasons = []
    eps = 1e-9  # 1 - 0.9 is 0.0999...98 in floating point: compare with a tolerance
    if not converged:
        reasons.append("sampler did not converge (see diagnostics): no migrate or reject from this run")
        return MORE, reasons
    if p_noninferior <= 1 - confidence + eps:
        reasons.append(f"credibly inferior: P(non-inferior) = {p_noninferior:.3f} <= {1 - confidence:.3f}")
        return REJECT, reasons
    if p_noninferior >= confidence - eps:
        if regressing_segments:
            reasons.append(f"non-inferior overall (P = {p_noninferior:.3f}) but segment(s) credibly regress beyond "
                           f"the margin: {', '.join(regressing_segments)}")
            return MORE, reasons
        reasons.append(f"non-inferior: P(non-inferior) = {p_noninferior:.3f} >= {confidence}")
        return MIGRATE, reasons
    reasons.append(f"undecided: {1 - confidence:.3f} < P(non-inferior) = {p_noninferior:.3f} < {confidence}")
    return MORE, reasons


def p_decided(m: np.ndarray, thr: float, z_up: float, z_lo: float, *, mu: float, sd: float, n: int,
              est_n: float | None = None, sigma1: float | None = None) -> np.ndarray:
    """Preposterior probability that ``m`` more labels leave the question decided (Raiffa & Schlaifer 1961,
    *Applied Statistical Decision Theory*, ch. 3: the distribution, before sampling, of the posterior after it).

    Label-limited normal model: the decision's estimate after ``n + m`` labels is the label-weighted mean
    ``(n est_n + m ybar_new) / (n + m)`` with sd ``sigma1 / sqrt(n + m)``, where the new labels' mean is
    ``ybar_new ~ N(theta, sigma1^2 / m)`` and theta is drawn from the present posterior ``N(mu, sd^2)``.
    Decided: the estimate is at least ``z_up`` of its sd above ``thr`` or at least ``z_lo`` below. Defaults
    ``est_n = mu`` and ``sigma1 = sd sqrt(n)`` say all present information came from the n labels (conservative
    when the judges carry information); then the future mean is N(mu, sd^2 m / (n + m)), the conjugate
    normal-normal update. This is the closed form of the simulation-based sample-size search of Wang & Gelfand
    (2002, Statistical Science 17(2) 193-208) under that update, so it carries no Monte Carlo error."""
    m = np.asarray(m, dtype=float)
    est_n = mu if est_n is None else est_n
    sigma1 = sd * np.sqrt(max(n, 1)) if sigma1 is None else sigma1
    t = np.maximum(n + m, 1e-12)
    mean = (n * est_n + m * mu) / t
    spread = np.sqrt(np.where(m > 0, (m / t) ** 2 * (sd**2 + sigma1**2 / np.maximum(m, 1e-12)), 0.0))
    sd_after = sigma1 / np.sqrt(t)
    hi, lo = thr + z_up * sd_after, thr - z_lo * sd_after
    with np.errstate(divide="ignore", invalid="ignore"):
        # no spread (m = 0 or a degenerate posterior): decided only strictly beyond a bound, so a posterior sitting
        # exactly on the threshold is undecided as in prob_above
        p_hi = np.where(spread > 0, norm.sf((hi - mean) / spread), (mean > hi).astype(float))
        p_lo = np.where(spread > 0, norm.cdf((lo - mean) / spread), (mean < lo).astype(float))
    return np.where(n + m > 0, p_hi + p_lo, 0.0)


def smallest_settling_m(available: int, target: float = SETTLE_PROBABILITY, **kw) -> int:
    """Smallest m in [0, available] with :func:`p_decided` >= target (geometric grid, then bisection: P(decided)
    grows with m); ``available`` itself when even labelling everything would likely not settle it."""
    available = int(max(0, available))
    if p_decided(np.array([0.0]), **kw)[0] >= target:
        return 0
    if available == 0:
        return 0
    grid = np.unique(np.r_[np.round(np.geomspace(1, available, 64)), available]).astype(int)
    ok = np.flatnonzero(p_decided(grid.astype(float), **kw) >= target)
    if not len(ok):
        return available
    hi = int(grid[ok[0]])
    lo = int(grid[ok[0] - 1]) if ok[0] > 0 else 0
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if p_decided(np.array([float(mid)]), **kw)[0] >= target:
            hi = mid
        else:
            lo = mid
    return hi


def labels_needed(draws: np.ndarray, thr: float, confidence: float, labels_used: int, available: int,
                  target: float = SETTLE_PROBABILITY) -> int | None:
    """Extra labelled requests after which the dimension would be decided (P(non-inferior) >= C or <= 1 - C) with
    probability ``target`` (0.8), by preposterior analysis (:func:`p_decided`) of the posterior ``draws``.

    ``None`` in cold start (no label yet: the posterior is the judges' alone and says nothing about how fast labels
    would move it); capped at the ``available`` unlabelled requests."""
    if labels_used <= 0:
        return None
    d = np.asarray(draws, dtype=float)
    if not d.std() > 0:  # a point posterior: labels cannot move it
        p = prob_above(d, thr)
        return 0 if p >= confidence or p <= 1 - confidence else int(max(0, available))
    z = float(norm.ppf(confidence))
    return smallest_settling_m(available, target, thr=thr, z_up=z, z_lo=z, mu=float(d.mean()),
                               sd=float(d.std()), n=int(labels_used))


def segment_labels_needed(seg_draws: np.ndarray, thr: float, confidence: float, z_block: float,
                          labels_mean: float | None, labels_n: int, label_sd: float, available: int,
                          target: float = SETTLE_PROBABILITY) -> int:
    """Labels in a blocking segment after which its own human labels would, with probability ``target``, confirm
    the regression (mean label ``z_block`` label-sds below ``thr``, the joint band's multiplier) or clear it
    (``z_C`` above): a block rests on the model's reading of the segment, judges and pooling included, and these
    are the labels that let humans settle it. Preposterior as in :func:`p_decided`, theta drawn from the segment's
    posterior (``seg_draws``), the present evidence being the segment's ``labels_n`` labels of mean
    ``labels_mean`` and per-label sd ``label_sd``."""
    d = np.asarray(seg_draws, dtype=float)
    mu = float(d.mean())
    return smallest_settling_m(available, target, thr=thr, z_up=float(norm.ppf(confidence)), z_lo=z_block,
                               mu=mu, sd=float(d.std()), n=int(labels_n),
                               est_n=mu if labels_mean is None else float(labels_mean), sigma1=float(label_sd))


def combine(verdicts: list[Verdict]) -> Verdict:
    if not verdicts:
        return MORE
    if REJECT in verdicts:
        return REJECT
    if all(v == MIGRATE for v in verdicts):
        return MIGRATE
    return MORE

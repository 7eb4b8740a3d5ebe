"""The migration decision rule and the labels-needed estimate.

Non-inferiority testing in its Bayesian form (posterior probability of the non-inferior region, e.g. Spiegelhalter,
Abrams & Myles 2004, ch. 6): with margin M and confidence C,
- thresholds: pairwise win rate 0.5 - M (non-inferior) and 0.5 (superior); absolute difference -M and 0;
- ``migrate``: P(non-inferior) >= C on the dimension, the sampler converged, and no segment credibly regresses
  beyond the margin (P_segment(non-inferior) <= 1 - C);
- ``reject``: P(non-inferior) <= 1 - C (credibly inferior) on a converged run;
- otherwise ``more_labels``; and a ``migrate`` becomes ``more_labels`` when a guard that does not trust the model
  fires (calibration.guards).
A candidate's verdict combines its gating dimensions: reject if any rejects, migrate if all migrate.
"""
from __future__ import annotations

import numpy as np
from scipy.stats import norm

MIGRATE, MORE, REJECT = "migrate", "more_labels", "reject"


def thresholds(kind: str, margin: float) -> tuple[float, float]:
    return (0.5 - margin, 0.5) if kind == "pairwise" else (-margin, 0.0)


def prob_above(draws: np.ndarray, thr: float) -> float:
    """P(estimand > thr); a draw exactly at the threshold counts one half (so 'exactly at the margin' is 0.5)."""
    d = np.asarray(draws, dtype=float)
    return float(np.mean(d > thr) + 0.5 * np.mean(d == thr))


def dimension_verdict(p_noninferior: float, confidence: float, converged: bool,
                      regressing_segments: list[str], guards: list[dict] | None = None) -> tuple[str, list[str]]:
    """Verdict and reasons; a fired guard (calibration.guards) turns ``migrate`` into ``more_labels``."""
    verdict, reasons = _model_verdict(p_noninferior, confidence, converged, regressing_segments)
    fired = [g for g in guards or [] if g.get("fired")]
    if verdict == MIGRATE and fired:
        reasons.append("the model says non-inferior but a guard blocks migrate: "
                       + "; ".join(f"{g['name']} ({g.get('detail') or g.get('value')})" for g in fired))
        return MORE, reasons
    return verdict, reasons


def _model_verdict(p_noninferior: float, confidence: float, converged: bool,
                   regressing_segments: list[str]) -> tuple[str, list[str]]:
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


def labels_needed(draws: np.ndarray, thr: float, confidence: float, labels_used: int, available: int) -> int:
    """Extra labelled requests after which P(non-inferior) would likely leave the undecided band.

    Normal approximation with the posterior sd shrinking like 1/sqrt(labels) (label-limited regime, conservative when
    the judges carry information): need |mean - thr| / (sd * sqrt(n / (n + m))) >= z_C. Capped at the number of
    still-unlabelled requests ``available`` (returned as that cap when even labelling everything may not settle it).
    """
    mu, sd = float(np.mean(draws)), float(np.std(draws))
    z = norm.ppf(confidence)
    n = max(labels_used, 1)
    gap = abs(mu - thr)
    if sd <= 0 or gap >= z * sd:
        return 0
    if gap <= 1e-12:
        return int(available)
    total = n * (z * sd / gap) ** 2
    return int(min(available, max(1, int(np.ceil(total - n)))))


def combine(verdicts: list[str]) -> str:
    if not verdicts:
        return MORE
    if REJECT in verdicts:
        return REJECT
    if all(v == MIGRATE for v in verdicts):
        return MIGRATE
    return MORE

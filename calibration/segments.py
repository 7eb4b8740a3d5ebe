"""Segment gating without a multiplicity trap: one joint rule over every gating segment of a candidate.

One-sided vetoes at P_s(non-inferior) <= 1 - C, one per segment and dimension, block a candidate that sits exactly
at the margin everywhere in about 1 - C^G of runs (85% for G = 18 segment x dimension cells at C = 0.9). The rule
here is decided on the joint posterior instead:

- Within one dimension (one posterior), a one-sided **simultaneous credible band** over the G gating segments
  (Besag, Green, Higdon & Mengersen 1995, Statistical Science 10(1) 3-41; Held 2004, "Simultaneous posterior
  probability statements from Monte Carlo output", J. Comput. Graph. Stat. 13(1) 20-35): with
  t = max_g (theta_g - mean_g) / sd_g over the draws and k its level-quantile, the upper bounds mean_g + k sd_g
  hold for all g at once with posterior probability ``level``. A segment is blocking iff its bound is below the
  non-inferiority threshold. Equivalently its multiplicity-adjusted probability
  P_adj,g = P(t >= (thr - mean_g) / sd_g) is <= 1 - level. Because k is estimated from the draws it uses their
  correlation (segments of one model share slopes and cut-points), so it is never stricter than Bonferroni
  (k <= z_{1 - (1 - level) / G}) and much looser when segments move together.
- Across the candidate's D gating dimensions (independent fits, so independent posteriors) each band is set at
  level C^(1/D) (Sidak 1967), so that all D x G bounds hold jointly with probability exactly C.

Frequentist reading: a candidate non-inferior in every segment (theta_g >= thr for all g) is blocked only if some
theta_g lies above its bound, i.e. the joint band failed to cover, which a calibrated posterior does in at most
1 - C of runs whatever G is. `benchmarks/segment_gating.py` measures both error rates on a 6 x 3 world.
The draws here are the segments' population draws (the segment's quality in the traffic).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.stats import norm


def family_level(confidence: float, n_families: int) -> float:
    """Level of each of ``n_families`` independent joint bands so that all hold together with ``confidence``."""
    return float(confidence ** (1.0 / max(1, int(n_families))))


def _standardise(draws: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    d = np.asarray(draws, dtype=float)
    mu = d.mean(axis=0)
    sd = d.std(axis=0)
    sd = np.where(sd > 0, sd, np.finfo(float).tiny)  # a degenerate segment: all draws on one value
    return mu, sd, ((d - mu) / sd).max(axis=1)


def band_multiplier(draws: np.ndarray, level: float) -> float:
    """k such that P(theta_g <= mean_g + k sd_g for every column g) = level over the (draw, segment) draws."""
    _, _, t = _standardise(draws)
    return float(np.quantile(t, level))


def adjusted_p_noninferior(draws: np.ndarray, thr: float) -> np.ndarray:
    """Per segment, P_adj = P(max_h standardised theta_h >= (thr - mean_g) / sd_g): the smallest 1 - level at
    which segment g's simultaneous upper bound falls below ``thr`` (Held 2004). Always >= the marginal
    P(theta_g > thr) under normality; equal to it with one segment."""
    mu, sd, t = _standardise(draws)
    need = (thr - mu) / sd  # (G,)
    ts = np.sort(t)
    return 1.0 - np.searchsorted(ts, need, side="left") / len(ts)


def blocking_segments(draws: np.ndarray, names: list[str], thr: float, level: float) -> tuple[list[str], np.ndarray]:
    """Names of the segments (columns of ``draws``) whose simultaneous bound at ``level`` is below ``thr``, most
    credible first, and every segment's adjusted probability of non-inferiority."""
    if draws.shape[1] == 0:
        return [], np.zeros(0)
    p_adj = adjusted_p_noninferior(draws, thr)
    eps = 1e-9  # 1 - 0.9 is 0.0999...98 in floating point
    hit = np.flatnonzero(p_adj <= 1 - level + eps)
    return [names[i] for i in hit[np.argsort(p_adj[hit], kind="stable")]], p_adj


def normal_band_multiplier(n_segments: int, level: float) -> float:
    """Bonferroni's k for independent segments (an upper bound on :func:`band_multiplier`); used where no draws
    are at hand, e.g. for the labels that would confirm a block."""
    return float(norm.ppf(1 - (1 - level) / max(1, n_segments)))


def _interval(draws: np.ndarray, confidence: float) -> list[float]:
    a = (1 - confidence) / 2
    return [round(float(v), 4) for v in np.quantile(draws, [a, 1 - a])]


@dataclass
class Grouping:
    """A partition of the scored requests reported group by group: the traffic segments, or the turn positions
    (calibration.conversation_units). ``est``: estimand draws whose ``*_seg`` axis is this grouping's."""

    names: list[str]
    idx: np.ndarray  # (n_req,) group code
    est: object  # calibration.estimands.EstimandDraws
    gates: bool = True  # whether its groups may block migrate (else reported only)


@dataclass
class SegmentGate:
    """One candidate's segments in one dimension: decision-schema entries and the joint rule's outcome."""

    entries: dict[str, dict] = field(default_factory=dict)
    positions: dict[str, dict] = field(default_factory=dict)  # turn-position entries, same fields
    blocking: list[str] = field(default_factory=list)  # most credible first
    level: float = 0.0  # the band's level in this dimension, C^(1/D)
    band_k: float | None = None  # its multiplier (None when no segment gates)
    most_useful: str | None = None  # where labels shrink the posterior most (share x sd per label)
    where: dict[str, tuple[Grouping, int]] = field(default_factory=dict)  # group name -> (grouping, code)


def gate_segments(data, est, c: int, labelled: np.ndarray, in_estimand: np.ndarray, thr_ni: float,
                  thr_sup: float, confidence: float, level: float, min_segment_n: int,
                  basis: str = "population", positions: Grouping | None = None,
                  n_req_total: int | None = None) -> SegmentGate:
    """Segment entries of candidate ``c`` and the joint rule over its gating segments (those with at least
    ``min_segment_n`` scored requests), on the decision's basis: the population draws ``est.pop_seg`` (default)
    or the scored requests' ``est.fp_seg``.

    ``positions`` (the turn positions): entries of their own (``SegmentGate.positions``); when it gates, its groups
    join the segments in the one simultaneous band (their draws come from the same posterior, so the band uses
    their correlation too), and a blocking position is named like ``turn=3+``.

    ``n_req_total``: the number of scored requests when ``data`` holds only some of them (calibration.scored);
    a segment's count then comes from the estimand sums (``est.n_seg``), its labels from ``labelled``."""
    from calibration.decision import prob_above

    out = SegmentGate(level=level)
    groupings = []
    if len(data.segment_names) > 1:
        groupings.append((Grouping(list(data.segment_names), np.asarray(data.seg_idx), est), out.entries))
    if positions is not None and len(positions.names) > 1:
        groupings.append((positions, out.positions))
    gating_draws, gating_names, score = [], [], {}
    for g, entries in groupings:
        for s, name in enumerate(g.names):
            sd = g.est.fp_seg[:, c, s]
            pop = g.est.pop_seg[:, c, s]
            in_s = (g.idx == s) & in_estimand
            n_s, lab_s = int(in_s.sum()), int((labelled & in_s).sum())
            if n_req_total is not None:
                n_s = int(round(float(g.est.n_seg[c, s])))
            gates = g.gates and n_s >= min_segment_n
            entries[name] = {
                "estimate": round(float(sd.mean()), 4), "interval": _interval(sd, confidence),
                "interval_population": _interval(pop, confidence),
                "p_noninferior": round(prob_above(sd, thr_ni), 4),
                "p_noninferior_population": round(prob_above(pop, thr_ni), 4),
                "p_superior": round(prob_above(sd, thr_sup), 4), "labels_used": lab_s, "n_scored": n_s,
                "gating": gates}
            out.where[name] = (g, s)
            if gates:
                gating_draws.append((g.est.pop_seg if basis == "population" else g.est.fp_seg)[:, c, s])
                gating_names.append(name)
            if entries is out.entries:
                share = in_s.mean() if n_req_total is None else n_s / max(n_req_total, 1)
                score[name] = share * sd.std() / np.sqrt(lab_s + 1)
    out.most_useful = max(score, key=score.get) if score else None
    if gating_draws:
        draws = np.stack(gating_draws, axis=1)
        out.band_k = band_multiplier(draws, level)
        out.blocking, p_adj = blocking_segments(draws, gating_names, thr_ni, level)
        for name, p in zip(gating_names, p_adj):
            (out.entries if name in out.entries else out.positions)[name]["p_noninferior_joint"] = round(float(p), 4)
    return out

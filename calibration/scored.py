"""What the baselines and guards need from the scored requests that carry no label, as sums.

PPI++ and the design-valid guard (the difference estimator) need, of the requests no label touches, only the
count, mean and spread of each candidate's predicted target (the ridge's and the Bayesian predictive mean); the
judge-only baseline the same of the raw judge target; the segment counts come with the estimand sums
(calibration.estimands.AggregateSums). So the unlabelled requests enter as :class:`ScoredSums`, which add over
disjoint sets of requests: chunks in this process (:func:`local_scored_sums`) or shards on Ray workers
(jobs.decide_aggregate) give the same totals up to float rounding, and the driver never has to hold them. The
labelled requests (few) are used row by row as before.

Means and spreads combine with the pairwise update of Chan, Golub & LeVeque (1983, "Algorithms for computing the
sample variance"), not raw sums of squares, so a mean far from zero over 10M requests loses no precision.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from calibration.estimands import _model_moments, _model_terms


@dataclass
class Moments:
    """Per candidate: count ``n``, mean and sum of squared deviations ``m2`` (arrays of shape (C,))."""

    n: np.ndarray
    mean: np.ndarray
    m2: np.ndarray

    @classmethod
    def zeros(cls, C: int) -> "Moments":
        return cls(np.zeros(C), np.zeros(C), np.zeros(C))

    @classmethod
    def of(cls, values: np.ndarray, mask: np.ndarray) -> "Moments":
        """Moments of ``values`` (R, C) over the rows where ``mask`` (R, C) is true, column by column."""
        v = np.where(mask, values, 0.0).astype(np.float64)
        n = mask.sum(axis=0).astype(np.float64)
        mean = np.divide(v.sum(axis=0), n, out=np.zeros_like(n), where=n > 0)
        m2 = (np.where(mask, values - mean[None, :], 0.0) ** 2).sum(axis=0)
        return cls(n, mean, m2)

    def add(self, o: "Moments") -> "Moments":
        """The moments of the union of the two (disjoint) sets; a new object."""
        n = self.n + o.n
        d = o.mean - self.mean
        safe = np.maximum(n, 1.0)
        mean = np.where(n > 0, self.mean + d * o.n / safe, 0.0)
        m2 = self.m2 + o.m2 + d * d * self.n * o.n / safe
        return Moments(n, mean, m2)

    def pick(self, c: int) -> tuple[float, float, float]:
        """(n, mean, m2) of candidate ``c``."""
        return float(self.n[c]), float(self.mean[c]), float(self.m2[c])


@dataclass
class ScoredSums:
    """Sums over a set of unlabelled requests: how many (``n_req``), and per candidate the moments of the raw judge
    target where it is finite (``judge``) and of the ridge's and the Bayesian predicted target over the requests
    in the candidate's estimand (``ridge``, ``bayes``; their ``n`` is the estimand's count)."""

    n_req: int
    judge: Moments
    ridge: Moments
    bayes: Moments

    @classmethod
    def zeros(cls, C: int) -> "ScoredSums":
        return cls(0, Moments.zeros(C), Moments.zeros(C), Moments.zeros(C))

    def add(self, o: "ScoredSums") -> "ScoredSums":
        return ScoredSums(self.n_req + o.n_req, self.judge.add(o.judge), self.ridge.add(o.ridge),
                          self.bayes.add(o.bayes))


@dataclass
class Predictors:
    """How an unlabelled request's cells are predicted, fitted on the labels (small; travels to Ray tasks):
    the ridge's fold-averaged weights ``ridge`` ([intercept, features, indicators of row models 1..M-1];
    calibration.baselines.crossfit) or, with too few labels for it, the constant ``ridge_const``; and the
    thinned posterior draws ``q`` with each row model's terms for the Bayesian predictive mean
    (calibration.guards.predictive_means)."""

    kind: str
    n_candidates: int
    cat_values: np.ndarray
    ridge: np.ndarray | None
    ridge_const: float
    q: dict
    terms: list

    @classmethod
    def build(cls, kind: str, n_candidates: int, n_models: int, cat_values: np.ndarray, ridge: np.ndarray | None,
              ridge_const: float, q: dict) -> "Predictors":
        return cls(kind, n_candidates, np.asarray(cat_values), ridge, float(ridge_const), q,
                   [_model_terms(q, m, cat_values) for m in range(n_models)])


def target(cells: np.ndarray, kind: str) -> np.ndarray:
    """(R, C) per-candidate target from (R, row models) cell values: the candidate's own cell (pairwise) or the
    candidate-minus-incumbent difference (absolute dimensions)."""
    return cells if kind == "pairwise" else cells[:, 1:] - cells[:, :1]


def ridge_cells(X: np.ndarray, w: np.ndarray | None, const: float) -> np.ndarray:
    """(R, M) ridge prediction of each cell: intercept + model m's indicator weight + features @ weights."""
    R, M, F = X.shape
    if w is None:
        return np.full((R, M), const)
    out = np.empty((R, M))
    for m in range(M):
        out[:, m] = w[0] + (w[F + m] if m > 0 else 0.0) + X[:, m, :].astype(np.float64) @ w[1:F + 1]
    return out


def bayes_cells(pred: Predictors, X: np.ndarray, seg: np.ndarray) -> np.ndarray:
    """(R, M) posterior mean of each cell's predictive mean label (one annotator)."""
    out = np.empty(X.shape[:2])
    for m in range(X.shape[1]):
        out[:, m] = _model_moments(X[:, m, :], seg, pred.q, m, pred.cat_values, 1.0, pred.terms[m])[0].mean(axis=0)
    return out


def chunk_scored_sums(pred: Predictors, X: np.ndarray, seg: np.ndarray, present: np.ndarray,
                      judge_raw: np.ndarray | None) -> ScoredSums:
    """:class:`ScoredSums` of one chunk of unlabelled requests (a pure function of its rows): ``X`` (R, M, F)
    features, ``seg`` (R,) segment codes, ``present`` (R, M) which row models were scored, ``judge_raw`` (R, M)
    raw judge value or None."""
    C = pred.n_candidates
    emask = present if pred.kind == "pairwise" else present[:, 1:]
    judge = Moments.zeros(C)
    if judge_raw is not None:
        t = target(judge_raw, pred.kind)
        judge = Moments.of(t, np.isfinite(t))
    return ScoredSums(len(seg), judge, Moments.of(target(ridge_cells(X, pred.ridge, pred.ridge_const), pred.kind),
                                                  emask),
                      Moments.of(target(bayes_cells(pred, X, seg), pred.kind), emask))


def local_scored_sums(X: np.ndarray, seg: np.ndarray, present: np.ndarray, judge_raw: np.ndarray | None,
                      rows: np.ndarray, pred: Predictors, chunk: int = 8192) -> ScoredSums:
    """:class:`ScoredSums` of the requests ``rows`` of in-memory arrays, ``chunk`` at a time."""
    total = ScoredSums.zeros(pred.n_candidates)
    for r0 in range(0, len(rows), chunk):
        r = rows[r0:r0 + chunk]
        total = total.add(chunk_scored_sums(pred, X[r], seg[r], present[r],
                                            None if judge_raw is None else judge_raw[r]))
    return total

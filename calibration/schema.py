"""The decision document (decision.json, schema_version 1) as typed models: the one contract between the decision
(calibration.pipeline.decide) and everything that reads it (the pipeline, `baton decide`, the nightly history,
the report, the demo). docs/decision-schema.md documents these fields; tests/calibration/test_decision_schema.py
checks that the two agree.

The verdict names live here (``Verdict``) and nowhere else. Nested figures whose keys differ between estimators
(baselines, segments, diagnostics, guards) stay mappings, documented in docs/decision-schema.md.
"""
from __future__ import annotations

from enum import Enum
from typing import Any, Literal

from pydantic import Field

from common.models import Strict


class Verdict(str, Enum):
    """A dimension's or a candidate's verdict; a ``str`` so it compares and serialises as its name."""

    MIGRATE = "migrate"
    MORE_LABELS = "more_labels"
    REJECT = "reject"

    def __str__(self) -> str:  # f-strings and str() give the name written in decision.json
        return self.value


Interval = list[float | None]


class DimensionResult(Strict):
    """``candidates[<name>].dimensions[<dimension>]``: one candidate on one dimension."""

    kind: Literal["pairwise", "binary", "ordinal"] = Field(..., description="The dimension's kind.")
    gating: bool = Field(..., description="Whether the dimension gates the candidate's verdict.")
    n_scored: int = Field(..., description="Scored requests of the candidate in the estimand.")
    estimate: float | None = Field(..., description="Posterior mean over the scored requests.")
    interval: Interval = Field(..., description="Credible interval for the scored requests (finite population).")
    interval_population: Interval = Field(..., description="Credible interval for the traffic they were sampled from.")
    basis: Literal["population", "scored"] = Field(..., description="Which posterior the verdict and probabilities use.")
    threshold_noninferior: float | None = Field(..., description="Non-inferior above this (calibration.decision.thresholds).")
    threshold_superior: float | None = Field(..., description="Superior above this.")
    p_noninferior: float | None = Field(..., description="P(estimand > threshold_noninferior) on the basis.")
    p_superior: float | None = Field(..., description="P(estimand > threshold_superior) on the basis.")
    verdict: Verdict = Field(..., description="The dimension's verdict, guards applied.")
    verdict_unguarded: Verdict = Field(..., description="The model's verdict without the guards.")
    guards: list[dict[str, Any]] = Field(..., description="Checks that do not trust the model: name, fired, value, threshold, detail.")
    design_valid: dict[str, Any] = Field(..., description="The design_valid guard's prediction-powered estimate.")
    labels_used: int = Field(..., description="Labelled requests the calibration used.")
    labels_needed: int | None = Field(..., description="Extra labels after which the verdict likely settles; null in cold start.")
    labels_needed_segment: str | None = Field(..., description="The blocking segment those labels go to, if any.")
    human_only: dict[str, Any] = Field(..., description="Baseline from the human labels alone.")
    judge_only: dict[str, Any] = Field(..., description="Baseline from the judges alone.")
    ppi: dict[str, Any] = Field(..., description="Prediction-powered (PPI++) baseline.")
    disagreement: str | None = Field(..., description="Set when the Bayesian and PPI++ intervals do not overlap.")
    segments: dict[str, dict[str, Any]] = Field(..., description="Per traffic segment figures, keyed 'column=value'.")
    turn_positions: dict[str, dict[str, Any]] | None = Field(None, description="Conversations only: per turn-position figures, keyed 'turn=1', 'turn=2', 'turn=3+' (the segments' fields); null otherwise.")
    estimand: Literal["turn", "conversation"] = Field("turn", description="What the estimand averages over: turns (requests) or conversations (a dimension labelled per conversation; n_scored and labels then count conversations).")
    diagnostics: dict[str, Any] = Field(..., description="Sampler diagnostics and the held-out predictive check.")
    calibration: dict[str, dict[str, Any]] = Field(..., description="Calibration coefficient per metric: mean and interval.")
    design: dict[str, Any] = Field(..., description="How the labels' sampling design entered.")
    posterior_draws: list[float] = Field(..., description="Thinned posterior draws on the basis (at most 1000).")


class CandidateDecision(Strict):
    """``candidates[<name>]``: a candidate's combined verdict and its dimensions."""

    verdict: Verdict = Field(..., description="Reject if a gating dimension rejects, migrate if all migrate, else more_labels.")
    reasons: list[str] = Field(..., description="Human-readable reasons, each prefixed with its dimension.")
    dimensions: dict[str, DimensionResult] = Field(..., description="One entry per dimension.")


RESULT_FIELDS = ("estimate", "interval", "interval_population", "basis", "p_noninferior", "p_superior", "verdict",
                 "labels_used", "labels_needed", "human_only", "ppi", "judge_only", "estimand")


class ResultRow(Strict):
    """``results[*]``: a flat row per candidate and dimension, the same figures as ``candidates``."""

    candidate: str = Field(..., description="Candidate model name.")
    dimension: str = Field(..., description="Dimension name.")
    estimate: float | None = Field(..., description="As in the dimension entry.")
    interval: Interval = Field(..., description="As in the dimension entry.")
    interval_population: Interval = Field(..., description="As in the dimension entry.")
    basis: Literal["population", "scored"] = Field(..., description="As in the dimension entry.")
    p_noninferior: float | None = Field(..., description="As in the dimension entry.")
    p_superior: float | None = Field(..., description="As in the dimension entry.")
    verdict: Verdict = Field(..., description="The dimension's verdict.")
    labels_used: int = Field(..., description="As in the dimension entry.")
    labels_needed: int | None = Field(..., description="As in the dimension entry.")
    human_only: dict[str, Any] = Field(..., description="As in the dimension entry.")
    ppi: dict[str, Any] = Field(..., description="As in the dimension entry.")
    judge_only: dict[str, Any] = Field(..., description="As in the dimension entry.")
    estimand: Literal["turn", "conversation"] = Field("turn", description="As in the dimension entry.")

    @classmethod
    def of(cls, candidate: str, dimension: str, d: DimensionResult) -> ResultRow:
        return cls(candidate=candidate, dimension=dimension, **{k: getattr(d, k) for k in RESULT_FIELDS})


class Decision(Strict):
    """decision.json."""

    schema_version: Literal[1] = Field(1, description="Version of this schema.")
    created_at: str = Field(..., description="UTC time the decision was made, ISO 8601 (YYYY-MM-DDTHH:MM:SSZ).")
    incumbent: str = Field(..., description="The incumbent model.")
    margin: float = Field(..., description="Non-inferiority margin M.")
    confidence: float = Field(..., description="Confidence level C.")
    seed: int = Field(..., description="Seed of the sampler.")
    verdicts: dict[str, Verdict] = Field(..., description="Each candidate's verdict.")
    candidates: dict[str, CandidateDecision] = Field(..., description="Each candidate's verdict, reasons and dimensions.")
    results: list[ResultRow] = Field(..., description="Flat rows, one per candidate and dimension.")
    warnings: list[str] = Field(default_factory=list, description="What the input checks noticed without refusing the input (e.g. quarantined labels), prefixed with the dimension.")
    candidate_order: list[str] | None = Field(None, description="Candidates in the order the calibration indexed them (the order of the scores table); null when no dimension was decided.")
    run_id: str | None = Field(None, description="The pipeline run's id; absent from `baton decide`'s documents.")
    drift: dict[str, Any] | None = Field(None, description="Nightly runs only (jobs.nightly_drift, docs/drift.md): the night's drift alerts; absent otherwise.")

    def gate_passes(self) -> bool:
        """True when every candidate's verdict is migrate (what `--fail-unless-migrate` asks)."""
        return all(v is Verdict.MIGRATE for v in self.verdicts.values())

    def as_dict(self) -> dict:
        """The document as Python for ``json.dumps`` (verdicts are ``str`` enums); ``run_id`` and ``drift`` only
        when set. Python mode, not pydantic's JSON mode, so figures pass through exactly as computed."""
        return self.model_dump(exclude={k for k in ("run_id", "drift") if getattr(self, k) is None} or None)

"""The decision config: one model for the run config's ``decision`` section and for `baton decide`'s flags.

Run-level facts (incumbent, candidates, segments) are not part of it: the caller passes them beside it.
The margin's bound depends on the dimensions' kinds (``margin_bound``), checked here once for every entry point.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator

from common.models import Strict as _Strict

# The largest margin that still leaves a non-inferior region inside the estimand's range: a pairwise win rate is
# non-inferior above 0.5 - M (so M < 0.5), a binary difference of rates above -M (so M < 1).
_KIND_BOUND = {"pairwise": 0.5, "binary": 1.0}


class DimensionConfig(_Strict):
    """One dimension of quality on the human scale."""

    name: str = Field(..., min_length=1, description="Dimension name as in the labels table (e.g. quality, correctness).")
    kind: Literal["pairwise", "binary", "ordinal"] = Field(..., description="Pairwise win rate, or an absolute binary/ordinal score.")
    gating: bool = Field(True, description="Whether this dimension must be non-inferior to migrate.")
    metrics: list[str] | None = Field(None, min_length=1, description="Metric names used as covariates (None: every numeric metric).")
    levels: list[float] | None = Field(None, min_length=2, description="Ordinal dimensions: the declared scale, e.g. [1, 2, 3, 4, 5] (every level can be predicted even when no label uses it; a label outside it is an error). None: the range of the labels seen.")
    label_unit: Literal["turn", "conversation"] = Field("turn", description="What one label judges: a turn (request; the estimand is the mean over turns) or a whole conversation (one value per conversation, keyed by its conversation_id or any of its turns' request_id; metrics are averaged over its turns and the estimand is the mean over conversations). docs/conversations.md.")


def margin_bound(dim: DimensionConfig) -> float | None:
    """Exclusive upper bound of the margin for a dimension; None where the scale is not known from the config
    (an ordinal dimension without declared levels: its range is checked against the labels instead)."""
    if dim.kind in _KIND_BOUND:
        return _KIND_BOUND[dim.kind]
    levels = getattr(dim, "levels", None)  # ordinal levels, where the config declares them
    if levels:
        values = [float(v) for v in levels]
        return max(values) - min(values)
    return None


def check_margin(margin: float, dims: list[DimensionConfig]) -> None:
    """Raise ValueError unless 0 <= margin < the bound of every dimension (the message names the dimension)."""
    if not math.isfinite(margin) or margin < 0:
        raise ValueError(f"must be a finite number >= 0, got {margin!r}")
    for dim in dims:
        bound = margin_bound(dim)
        if bound is not None and margin >= bound:
            scale = {"pairwise": "a win rate is non-inferior above 0.5 - margin",
                     "binary": "a difference of two rates lies in [-1, 1]"}.get(dim.kind, "the scale's range")
            raise ValueError(f"{margin!r} must be below {bound:g} for {dim.kind} dimension {dim.name!r} ({scale})")


class DecisionConfig(_Strict):
    """The decision rule."""

    # dimensions precede margin so that the margin's bound can depend on their kinds (and its error names margin)
    dimensions: list[DimensionConfig] = Field(..., min_length=1, description="Dimensions judged.")
    margin: float = Field(0.05, ge=0, description="Non-inferiority margin M on the human scale.")
    confidence: float = Field(0.9, gt=0.5, lt=1, description="Confidence level of intervals and verdicts.")
    seed: int = Field(0, description="Seed of the sampler.")
    draws: int = Field(500, ge=50, description="NUTS draws per chain.")
    tune: int = Field(500, ge=50, description="NUTS tuning steps per chain.")
    chains: int = Field(2, ge=1, description="NUTS chains (at least 2 for R-hat).")
    min_segment_n: int = Field(20, ge=1, description="Scored requests a segment needs before its credible regression can block migrate.")
    fail_unless_migrate: bool = Field(False, description="Exit non-zero unless every candidate's verdict is migrate (for CI gates).")
    basis: Literal["population", "scored"] = Field("population", description="Which posterior the verdicts, P(non-inferior), P(superior) and labels_needed use: 'population' (the future traffic the scored requests were sampled from) or 'scored' (the scored requests themselves, for a night judged as that night). decision.json keeps both intervals.")
    turn_positions: list[int] = Field([1, 2, 3], description="When the traffic carries `turn`: lower bounds of the turn-position groups reported per dimension (default [1, 2, 3]: turns 1, 2 and 3+). Empty: no per-turn-position results. docs/conversations.md.")
    turn_positions_gating: bool = Field(True, description="Whether a turn position with a credible regression blocks migrate, judged jointly with the segments (one simultaneous band, calibration.segments); false: reported only.")
    aggregate: Literal["local", "ray", "auto"] = Field("auto", description="Where the sums over the scored requests are made (the estimands: the posterior predictive of every unlabelled request; the baselines' and guards' predictions; the report's judge bias): 'local' in the driver, which reads every scored request; 'ray' as Ray tasks over the run's score shards that return per-draw sums per segment, the driver reading only the labelled requests and a hash sample of 200,000 (for the feature transform), so its memory does not grow with the run; 'auto' on Ray from 200,000 requests on. With every request in the sample (smaller runs) the decision equals the local one to float32 precision; with a sample, the features' standardisation and principal axes come from it. Conversation traffic and `baton decide` (no run store) are always local. docs/scaling.md.")
    design_adjustment: Literal["covariate", "weights", "none"] = Field("covariate", description="How the calibration accounts for labels chosen with unequal probabilities (`baton labels export --design active|stratified`): 'covariate' puts log pi in the model (labels weigh the same; efficient), 'weights' weights each label's likelihood by 1/pi (robust, wider), 'none' ignores the design (baselines unweighted too). See docs/labels.md.")

    @field_validator("turn_positions")
    @classmethod
    def _turn_edges(cls, value: list[int]) -> list[int]:
        if value and (min(value) < 1 or len(set(value)) != len(value)):
            raise ValueError(f"must be distinct turn numbers >= 1, got {value!r}")
        return sorted(value)

    @field_validator("margin")
    @classmethod
    def _margin_in_scale(cls, value: float, info: ValidationInfo) -> float:
        check_margin(value, info.data.get("dimensions") or [])  # no dimensions: they failed and are reported
        return value

"""Human labelling tasks: the dimensions annotators judge (``--task-config`` YAML) and their answer scales.

Shared by `baton labels export` (which writes the questions and scales into the annotator files and the key) and
`baton labels import` (which reads an answer back onto a dimension's scale and un-blinds it to a model and a value
on the labels table's scale).
"""

from __future__ import annotations

from typing import Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from common.models import Strict
from jobs.config import RunConfig, repeated
from jobs.errors import ConfigError

KEY_SCHEMA = 1
PAIRWISE_CHOICES = {"a": "A", "a better": "A", "tie": "tie", "equal": "tie", "b": "B", "b better": "B"}


# -- configuration --------------------------------------------------------------------------------------------
class LabelDimension(Strict):
    """One dimension the annotators judge."""

    name: str = Field(..., min_length=1, description="Dimension name as in the labels table (e.g. quality).")
    kind: Literal["pairwise", "binary", "ordinal"] = Field(..., description="pairwise: A better / tie / B better; binary: 0/1 per answer; ordinal: an integer scale per answer.")
    rubric: str = Field("", description="What the annotator is asked; shown with every task. Empty: a generic question.")
    scale_min: int = Field(1, description="Lowest value of an ordinal scale (ignored for other kinds).")
    scale_max: int = Field(5, description="Highest value of an ordinal scale (ignored for other kinds).")

    @model_validator(mode="after")
    def _scale(self) -> "LabelDimension":
        if self.kind == "ordinal" and self.scale_max <= self.scale_min:
            raise ValueError(f"scale_max ({self.scale_max}) must be above scale_min ({self.scale_min})")
        if not self.rubric:
            self.rubric = {
                "pairwise": f"{self.name}: which answer is better, A or B (or a tie)?",
                "binary": f"{self.name}: is the answer acceptable? 1 yes, 0 no.",
                "ordinal": f"{self.name}: rate the answer from {self.scale_min} (worst) to {self.scale_max} (best).",
            }[self.kind]
        return self

    def fields(self) -> list[tuple[str, str | None]]:
        """(column name in the annotator files, answer side or None for pairwise)."""
        if self.kind == "pairwise":
            return [(self.name, None)]
        return [(f"{self.name}_a", "a"), (f"{self.name}_b", "b")]

    def allowed(self) -> list[str]:
        if self.kind == "pairwise":
            return ["A", "tie", "B"]
        if self.kind == "binary":
            return ["0", "1"]
        return [str(v) for v in range(self.scale_min, self.scale_max + 1)]


class LabelTaskConfig(Strict):
    """Export/import options of human labelling (``--task-config`` YAML)."""

    instructions: str = Field("Read the conversation and the two answers, then answer every question. The answers "
                              "come from different systems in a random order.",
                              description="Shown at the top of every task.")
    dimensions: list[LabelDimension] = Field(default_factory=list, description="Dimensions to judge; empty: the run config's decision.dimensions with default rubrics and a 1-5 ordinal scale.")
    annotators: dict[str, list[str]] = Field(default_factory=dict, description="One identity per annotator: identity -> the other names the same person appears under (a Label Studio numeric user id such as '7', an email, a CSV name). Imports store the identity, so agreement and duplicate checks see one person.")

    @model_validator(mode="after")
    def _unique(self) -> "LabelTaskConfig":
        dupes = repeated([d.name for d in self.dimensions])
        if dupes:
            raise ValueError(f"dimension names must be unique; repeated: {dupes}")
        self.annotator_identities()
        return self

    def annotator_identities(self) -> dict[str, str]:
        """alias -> identity (each identity also maps to itself); an alias of two identities is an error."""
        out: dict[str, str] = {}
        for ident, aliases in self.annotators.items():
            for alias in [ident, *aliases]:
                if out.setdefault(str(alias), ident) != ident:
                    raise ValueError(f"annotators: {alias!r} is listed under both {out[str(alias)]!r} and {ident!r}")
        return out


def load_task_config(path: str | None, cfg: RunConfig) -> LabelTaskConfig:
    raw: dict = {}
    if path:
        try:
            with open(path) as fh:
                raw = yaml.safe_load(fh) or {}
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the task config ({exc.strerror})") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    try:
        task = LabelTaskConfig.model_validate(raw)
    except ValidationError as err:
        lines = [f"{path}: invalid task config"]
        for e in err.errors():
            lines.append(f"  {'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}")
        raise ConfigError("\n".join(lines)) from None
    if not task.dimensions:
        task.dimensions = [LabelDimension(name=d.name, kind=d.kind) for d in cfg.decision.dimensions]
    return task


# -- answers on a dimension's scale ---------------------------------------------------------------------------
def parse_value(d: LabelDimension, raw: str) -> tuple[str | None, str | None]:
    """(canonical value, error)."""
    text = raw.strip()
    if d.kind == "pairwise":
        canon = PAIRWISE_CHOICES.get(text.lower())
        return (canon, None) if canon else (None, f"{text!r} is not one of A, tie, B")
    try:
        num = float(text)
    except ValueError:
        return None, f"{text!r} is not a number on the scale {d.allowed()}"
    if not num.is_integer() or str(int(num)) not in d.allowed():
        return None, f"{text!r} is off the {d.kind} scale {d.allowed()}"
    return str(int(num)), None


def unblind(d: LabelDimension, side: str | None, canon: str, it: dict, incumbent: str) -> tuple[str, float]:
    """Map a blinded answer to (model, value on the contract's scale)."""
    cand_is_a = it["a_is"] == "candidate"
    if d.kind == "pairwise":
        if canon == "tie":
            return it["candidate"], 0.5
        return it["candidate"], 1.0 if (canon == "A") == cand_is_a else 0.0
    model = it["candidate"] if (side == "a") == cand_is_a else incumbent
    return model, float(canon)

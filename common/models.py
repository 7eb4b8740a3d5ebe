"""``Strict``: the one pydantic base of Baton's config models."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """A config model whose unknown keys are errors (a misspelt key must not be silently ignored)."""

    model_config = ConfigDict(extra="forbid")

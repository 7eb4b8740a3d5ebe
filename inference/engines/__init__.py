"""Engines that replay traffic to a model: one interface, chosen by the candidate config's ``kind``.

``make_engine(config)`` builds the engine for a config; engines import their heavy libraries (vLLM, torch,
openai) only when built.

May import: common/, the rest of inference/ and third-party packages; never jobs/ or calibration/.
"""

from inference.engines.base import RESPONSE_COLUMNS, EngineDeadError, EngineError, EngineStartupError
from inference.engines.config import (
    CandidateConfig,
    OpenAIEngineConfig,
    RecordedEngineConfig,
    SamplingConfig,
    TransformersEngineConfig,
    VLLMEngineConfig,
)


def engine_class(kind: str) -> type:
    """The engine class for a config ``kind``."""
    if kind == "openai":
        from inference.engines.openai_engine import OpenAIEngine as cls
    elif kind == "vllm":
        from inference.engines.vllm_engine import VLLMEngine as cls
    elif kind == "transformers":
        from inference.engines.transformers_engine import TransformersEngine as cls
    elif kind == "recorded":
        from inference.engines.recorded import RecordedEngine as cls
    else:
        raise ValueError(f"unknown engine kind {kind!r}; kinds are openai, vllm, transformers, recorded")
    return cls


def make_engine(config, **kwargs):
    """Build the engine for a candidate config (a pydantic model or a plain dict with ``kind``)."""
    if isinstance(config, dict):
        from pydantic import TypeAdapter

        config = TypeAdapter(CandidateConfig).validate_python(config)
    return engine_class(config.kind)(config, **kwargs)


__all__ = [
    "RESPONSE_COLUMNS",
    "CandidateConfig",
    "EngineDeadError",
    "EngineError",
    "EngineStartupError",
    "OpenAIEngineConfig",
    "RecordedEngineConfig",
    "SamplingConfig",
    "TransformersEngineConfig",
    "VLLMEngineConfig",
    "engine_class",
    "make_engine",
]

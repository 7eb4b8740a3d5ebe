"""Candidate engines: one interface, chosen by the candidate config's ``kind``."""

from inference.engines.config import (
    CandidateConfig,
    OpenAIEngineConfig,
    RecordedEngineConfig,
    SamplingConfig,
    TransformersEngineConfig,
    VLLMEngineConfig,
)

__all__ = [
    "CandidateConfig",
    "OpenAIEngineConfig",
    "RecordedEngineConfig",
    "SamplingConfig",
    "TransformersEngineConfig",
    "VLLMEngineConfig",
]

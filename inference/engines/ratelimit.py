"""One rate limiter per provider key, shared by every actor sending to that provider.

``RateLimiter`` holds two token buckets (requests per minute, tokens per minute) that refill continuously up to
``burst_s`` seconds of their rate. ``reserve(tokens)`` takes a request and an estimate of its tokens *now*
(levels may go negative: later callers queue behind) and returns how long the caller must wait before sending,
so the limiter never sleeps itself and one serial actor can pace thousands of requests. The estimate is corrected
once the server's ``usage`` is known (``correct``); a 429's Retry-After stops everyone (``block``); the
``x-ratelimit-*`` headers lower the limits to the provider's real ones and pause senders when the provider says
nothing remains (``observe``).

On Ray the limiter is a named actor ``baton-limiter-<provider_key>`` (``get_limiter``): the first creator's
limits win, later callers attach to it. Without Ray it is a plain in-process object. When the limiter's node dies,
Ray restarts it elsewhere and resends the calls that were in flight; it comes back with empty buckets, so the
provider never sees more than one burst in a window (docs/multinode.md).
"""

from __future__ import annotations

import re
import time

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")


def parse_duration(text: str | None) -> float | None:
    """Seconds of a provider duration such as '1s', '6m0s', '250ms', '0.5' (plain seconds)."""
    if text is None:
        return None
    text = str(text).strip()
    try:
        return float(text)
    except ValueError:
        pass
    parts = _DURATION.findall(text)
    if not parts:
        return None
    scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    return sum(float(n) * scale[u] for n, u in parts)


class RateLimiter:
    """Requests-per-minute and tokens-per-minute buckets with reservations (see the module docstring)."""

    def __init__(self, rpm: float, tpm: float, burst_s: float = 1.0):
        self.rpm, self.tpm, self.burst_s = float(rpm), float(tpm), float(burst_s)
        now = time.monotonic()
        self._req = self._cap_req()
        self._tok = self._cap_tok()
        self._stamp = now
        self._blocked_until = now
        self.stats = {"reserved": 0, "reserved_tokens": 0.0, "blocked": 0, "corrections": 0, "limit_lowered": 0, "refunded": 0}

    def _cap_req(self) -> float:
        return max(1.0, self.rpm / 60.0 * self.burst_s)

    def _cap_tok(self) -> float:
        return max(1.0, self.tpm / 60.0 * self.burst_s)

    def _refill(self, now: float) -> None:
        dt = now - self._stamp
        self._stamp = now
        self._req = min(self._cap_req(), self._req + dt * self.rpm / 60.0)
        self._tok = min(self._cap_tok(), self._tok + dt * self.tpm / 60.0)

    def reserve(self, tokens: float) -> float:
        """Take one request and ``tokens`` now; returns the seconds to wait before sending."""
        now = time.monotonic()
        self._refill(now)
        self._req -= 1.0
        self._tok -= float(tokens)
        self.stats["reserved"] += 1
        self.stats["reserved_tokens"] += float(tokens)
        wait = max(0.0, -self._req * 60.0 / self.rpm, -self._tok * 60.0 / self.tpm, self._blocked_until - now)
        return wait

    def correct(self, estimated: float, actual: float) -> None:
        """Give back (or charge) the difference between a request's estimated and actual tokens."""
        self._refill(time.monotonic())
        self._tok = min(self._cap_tok(), self._tok + float(estimated) - float(actual))
        self.stats["corrections"] += 1

    def refund(self, tokens: float, request: bool = True) -> None:
        """A request the server answered without charging tokens: return its tokens, and its request slot too
        when ``request`` (a 429; other error answers still count against the provider's requests per minute)."""
        self._refill(time.monotonic())
        if request:
            self._req = min(self._cap_req(), self._req + 1.0)
        self._tok = min(self._cap_tok(), self._tok + float(tokens))
        self.stats["refunded"] += 1

    def block(self, seconds: float) -> None:
        """Nobody sends for ``seconds`` (a 429's Retry-After)."""
        now = time.monotonic()
        self._blocked_until = max(self._blocked_until, now + max(0.0, float(seconds)))
        self.stats["blocked"] += 1

    def observe(self, headers: dict[str, str]) -> None:
        """Learn from x-ratelimit-* headers: the provider's real limits, and whether anything remains."""
        for kind, attr in (("requests", "rpm"), ("tokens", "tpm")):
            limit = _num(headers.get(f"x-ratelimit-limit-{kind}"))
            if limit and limit < getattr(self, attr):
                setattr(self, attr, limit)
                self.stats["limit_lowered"] += 1
            remaining = _num(headers.get(f"x-ratelimit-remaining-{kind}"))
            reset = parse_duration(headers.get(f"x-ratelimit-reset-{kind}"))
            if remaining is not None and remaining <= 0 and reset:
                # Nothing left: wait for the next unit to come back, not the full reset (that is the whole window).
                per_unit = 60.0 / getattr(self, attr)
                self.block(min(reset, per_unit))

    def snapshot(self) -> dict:
        return {"rpm": self.rpm, "tpm": self.tpm, **self.stats}


def _num(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        return None


def limiter_name(provider_key: str) -> str:
    return "baton-limiter-" + re.sub(r"[^A-Za-z0-9._-]", "_", provider_key)[:150]


# The limiter's claim on each of the worker nodes' custom resources: enough to keep it off the head, small enough
# to fit beside the actors on a node that declares the resource with room to spare.
LIMITER_SHARE = 0.001


def limiter_resources(worker_resources: dict[str, float] | None) -> dict[str, float]:
    """The custom resources a limiter asks for when the run's actors ask for ``worker_resources``."""
    return {name: LIMITER_SHARE for name in (worker_resources or {})}


class RateLimiterActor(RateLimiter):
    """The limiter as a Ray actor. Restarted after its node died, it starts with empty buckets: its predecessor may
    have spent the burst just before, and one burst is all a provider should see in any window."""

    def __init__(self, rpm: float, tpm: float, burst_s: float = 1.0):
        import ray

        super().__init__(rpm, tpm, burst_s)
        if ray.get_runtime_context().was_current_actor_reconstructed:
            self._req, self._tok = 0.0, 0.0
            self.stats["restarted"] = 1


def get_limiter(provider_key: str, rpm: float, tpm: float, burst_s: float = 1.0,
                resources: dict[str, float] | None = None):
    """The named Ray actor for ``provider_key`` (created on first use, with ``resources``: see
    ``limiter_resources``), or None when Ray is not running. When its node dies Ray restarts it elsewhere."""
    import ray

    if not ray.is_initialized():
        return None
    # max_task_retries: a call in flight when the limiter's node died is sent again to the restarted limiter (a
    # reservation taken twice only slows the run); without it every engine waiting on the limiter fails its shard.
    actor_cls = ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1, max_concurrency=1)(RateLimiterActor)
    return actor_cls.options(name=limiter_name(provider_key), get_if_exists=True,
                             resources=resources or None).remote(rpm, tpm, burst_s)


class AsyncLimiter:
    """Async face of a limiter: a Ray actor handle or a local RateLimiter, awaited the same way."""

    def __init__(self, handle=None, local: RateLimiter | None = None):
        self.handle, self.local = handle, local

    async def reserve(self, tokens: float) -> float:
        if self.handle is not None:
            return await self.handle.reserve.remote(tokens)
        return self.local.reserve(tokens)

    def _fire(self, method: str, *args: object) -> None:
        # Corrections need no answer: fire and forget keeps them off the request's path.
        if self.handle is not None:
            getattr(self.handle, method).remote(*args)
        else:
            getattr(self.local, method)(*args)

    def correct(self, estimated: float, actual: float) -> None:
        self._fire("correct", estimated, actual)

    def refund(self, tokens: float, request: bool = True) -> None:
        self._fire("refund", tokens, request)

    def block(self, seconds: float) -> None:
        self._fire("block", seconds)

    def observe(self, headers: dict[str, str]) -> None:
        self._fire("observe", headers)

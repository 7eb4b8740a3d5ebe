"""API replay throughput: Baton's openai engine on Ray vs a plain asyncio client, against a rate-limited server.

5,000 requests go to the loopback OpenAI-compatible server (tests/support/openai_server.py) enforcing a
600 RPM / 60k TPM tier (token buckets with 2 s bursts) scaled up by a time factor (x10: the run takes about a minute instead of ten), with 10% of
attempts faulted (HTTP 500, hangs past the client timeout, malformed bodies). Figures:

- utilisation: attempts the server accepted (not 429) per second over the run, as a fraction of the binding
  limit (requests or tokens, whichever is closer to its limit); faulted attempts count, as the provider charged
  them. Goal: >= 0.9, with zero lost and zero duplicated rows.
- goodput: the share of the binding limit spent on attempts that produced a row (utilisation x good/accepted).
- lost / duplicated rows, 429s received, attempts per row.

The baseline is AsyncOpenAI at the same total concurrency with its own retries (which honour Retry-After),
in its own process like Baton's actors. Run: ``python benchmarks/api_throughput.py`` (``--requests 500`` for a
quick look). Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def _support():
    from tests.support import fixtures, openai_server

    return fixtures, openai_server


def window_figures(log, rpm: float, tpm: float) -> dict:
    """Utilisation of the limits over the span of accepted attempts (server-side timestamps)."""
    accepted = sorted((e for e in log if e.status != 429), key=lambda e: e.t)
    if len(accepted) < 2:
        return {"span_s": 0.0, "req_per_s": 0.0, "tok_per_s": 0.0, "utilisation": 0.0, "goodput_frac": 0.0}
    span = accepted[-1].t - accepted[0].t
    req_rate = (len(accepted) - 1) / span
    tok_rate = sum(e.prompt_tokens + e.completion_tokens for e in accepted[:-1]) / span
    good = sum(1 for e in accepted if e.status == 200 and e.fault is None)
    # Goodput: the share of the binding limit spent on attempts that produced a row.
    util = max(req_rate / (rpm / 60), tok_rate / (tpm / 60))
    binding = "requests" if req_rate / (rpm / 60) >= tok_rate / (tpm / 60) else "tokens"
    return {"span_s": round(span, 2), "req_per_s": round(req_rate, 2), "tok_per_s": round(tok_rate, 1),
            "utilisation": round(util, 4), "binding": binding,
            "goodput_frac": round(util * good / len(accepted), 4)}


def run_baton(srv, n: int, rpm: float, tpm: float, actors: int, concurrency: int, fixtures) -> dict:
    import ray

    from jobs.config import parse_config
    from jobs.replay import replay
    from jobs.store import RunStore

    root = tempfile.mkdtemp(prefix="baton-bench-api-")
    cand = {"kind": "openai", "name": "bench", "model": "m", "base_url": srv.base_url, "rpm": rpm, "tpm": tpm,
            "num_actors": actors, "max_concurrency": concurrency, "timeout_s": 1.0, "max_attempts": 8,
            "backoff_base_s": 0.1, "backoff_max_s": 2.0, "sampling": {"max_tokens": 64}}
    cfg = parse_config(fixtures.run_config(root, "bench", [cand]))
    store = RunStore(cfg.store, cfg.run_id)
    traffic = fixtures.traffic_frame(n, words=20)
    fixtures.write_traffic(store, traffic, 500)
    fixtures.start_local_ray(2)
    try:
        srv.reset()
        t0 = time.monotonic()
        replay(cfg, store, progress=False)
        wall = time.monotonic() - t0
    finally:
        ray.shutdown()
    out = store.read_table("responses")
    counts = Counter(out["request_id"])
    return {"rows": int(len(out)), "lost": len(set(traffic["request_id"]) - set(counts)),
            "duplicated": sum(1 for c in counts.values() if c > 1), "errors": int(out["error"].notna().sum()),
            "wall_s": round(wall, 2)}


async def _plain_client(base_url: str, n: int, concurrency: int, fixtures) -> dict:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=base_url, api_key="x", max_retries=7, timeout=1.0)
    traffic = fixtures.traffic_frame(n, words=20)
    sem = asyncio.Semaphore(concurrency)
    done: Counter = Counter()

    async def one(rid, msgs):
        async with sem:
            try:
                await client.chat.completions.create(model="m", messages=msgs, max_tokens=64,
                                                     extra_headers={"x-client-request-id": rid})
                done["ok"] += 1
            except Exception as exc:  # noqa: BLE001 - a lost row for the baseline
                done[type(exc).__name__] += 1

    t0 = time.monotonic()
    await asyncio.gather(*[one(r, m) for r, m in zip(traffic["request_id"], traffic["messages"])])
    return {"rows": done["ok"], "lost": n - done["ok"], "duplicated": 0, "errors": n - done["ok"],
            "wall_s": round(time.monotonic() - t0, 2), "exceptions": {k: v for k, v in done.items() if k != "ok"}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=5000)
    ap.add_argument("--time-factor", type=float, default=10.0, help="Limits are 600 RPM / 60k TPM times this.")
    ap.add_argument("--faults", type=float, default=0.10, help="Fraction of attempts faulted (500/hang/malformed).")
    ap.add_argument("--actors", type=int, default=2)
    ap.add_argument("--concurrency", type=int, default=32, help="In-flight requests per actor.")
    ap.add_argument("--plain-client", nargs=3, metavar=("BASE_URL", "N", "CONCURRENCY"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    fixtures, server_mod = _support()
    if args.plain_client:
        base, n, conc = args.plain_client
        print(json.dumps(asyncio.run(_plain_client(base, int(n), int(conc), fixtures))))
        return

    rpm, tpm = 600 * args.time_factor, 60_000 * args.time_factor
    f = args.faults
    srv = server_mod.OpenAIServer(rpm=rpm, tpm=tpm, burst_s=2.0, fault_500=f * 0.5, fault_malformed=f * 0.3,
                                  fault_hang=f * 0.2, hang_s=3.0, seed=11).start()
    try:
        baton = run_baton(srv, args.requests, rpm, tpm, args.actors, args.concurrency, fixtures)
        baton.update(window_figures(srv.log, rpm, tpm), http_429=srv.statuses()["429"],
                     attempts_per_row=round(len(srv.log) / args.requests, 3))
        srv.reset()
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--plain-client", srv.base_url,
                               str(args.requests), str(args.actors * args.concurrency)],
                              capture_output=True, text=True, check=True)
        plain = json.loads(proc.stdout.strip().splitlines()[-1])
        plain.update(window_figures(srv.log, rpm, tpm), http_429=srv.statuses()["429"],
                     attempts_per_row=round(len(srv.log) / args.requests, 3))
    finally:
        srv.stop()

    print(f"\n{args.requests} requests, limits {rpm:.0f} RPM / {tpm:.0f} TPM (600 RPM / 60k TPM x{args.time_factor:g}), "
          f"{f:.0%} of attempts faulted, concurrency {args.actors}x{args.concurrency}")
    cols = ["utilisation", "binding", "goodput_frac", "req_per_s", "tok_per_s", "span_s", "wall_s", "lost",
            "duplicated", "errors", "http_429", "attempts_per_row"]
    print(f"{'':24}" + "".join(f"{c:>17}" for c in ("baton (Ray)", "plain asyncio")))
    for c in cols:
        print(f"{c:24}" + "".join(f"{str(r.get(c)):>17}" for r in (baton, plain)))
    goal = 0.9
    meets = baton["utilisation"] >= goal and baton["lost"] == 0 and baton["duplicated"] == 0
    print(json.dumps({"benchmark": "api_throughput", "requests": args.requests, "rpm_limit": rpm, "tpm_limit": tpm,
                      "fault_fraction": f, "baton": baton, "plain_asyncio": plain,
                      "goal": {"utilisation_min": goal, "lost": 0, "duplicated": 0}, "meets_goal": meets}))


if __name__ == "__main__":
    main()

"""API replay throughput: Baton's openai engine on Ray vs a plain asyncio client, against a rate-limited server.

5,000 chats of varied length and kind go to the loopback OpenAI-compatible server (tests/support/openai_server.py)
enforcing a 600 RPM / 30k TPM tier scaled up by a time factor (x10: Baton's run takes under two minutes instead of
fifteen), as token buckets with 1 s bursts, no larger than the client limiter's. The server counts tokens with a real tokenizer
(all-MiniLM-L6-v2's WordPiece, offline), so the client's four-characters-a-token estimate is wrong, by row and
both ways, as in life; the heavy rows (ids, code, non-English text) come as whole 500-row shards (``--mix
blocked``, the default), as a region's or an app's traffic arrives together, so the client's learnt ratio is wrong
for the rows in flight when such a shard starts. 10% of attempts are faulted (HTTP 500, hangs past the client timeout, malformed bodies).
Where the faults happen decides what they cost: ``--faults-at gateway`` (the default) answers them in front of the
provider's limiter, as a flaky gateway, proxy or network path does, so they cost the client time and retries but
no tier; ``--faults-at server`` has the model server fail after the limiter charged the attempt, so every faulted
attempt spends the tier for nothing and goodput cannot pass about 1 - fault fraction (0.90 at 10%: the goal would
sit on the ceiling itself, which no client with a start-up reaches). Figures:

Baton runs twice: with its limiter configured at the tier (as a team sets it), and at ``--over-factor`` (1.25)
times the tier, as when another job shares the organisation's limit or the configured tier is wrong: then the
server's token limit binds before the client's and the server answers 429, which Baton must live with.

- goodput: rows that succeeded per second over the whole wall time of the replay stage (actor start-up
  included), divided by the rows per second the tier allows for this workload (requests per second, or tokens per
  second over the server-counted tokens of a successful row, whichever binds). Goal: >= 0.9 in both runs with
  zero lost and zero duplicated rows, and 429s sent by the server (> 0) in the run where the server's token limit
  binds first: the run pressed on the real limit. At the tier, Baton paces under the limit and the server has to
  refuse only when a block of heavy rows starts (few or no 429s): the JSON reports that count beside.
  Beside the 429s (not gated): how often a charged attempt left the server's token bucket under one row's tokens,
  and its median level left: how far into the server's burst the client went (a client pacing itself just under
  the limit keeps the bucket nearly full however close to the limit it runs; goodput says how close).
- ceiling: successful / charged attempts, what a perfect client could reach with these faults (without the burst):
  1.0 with the faults at the gateway. For the record (not gated): goodput over the dispatch-to-commit window
  (engine actors' start-up left out), and goodput / ceiling.
- server_429s, lost / duplicated rows, attempts per row, the stage's dispatch-to-commit time.

The baseline (for the record; its wall time leaves out its process start and imports) is AsyncOpenAI at the same
total concurrency with its own retries (which honour Retry-After), in its own process like Baton's actors. Run: ``python benchmarks/api_throughput.py`` (``--requests 500`` for a
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

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def _support():
    from tests.support import fixtures, openai_server

    return fixtures, openai_server


def traffic(n: int, mix: str = "blocked", block: int = 500):
    """Chats of varied length and kind: English questions of 8-40 words, a third of them three-turn conversations,
    and a fifth carrying ids, numbers, code or non-English text (which a real tokenizer splits finer than four
    characters a token), so the client's estimate errs both ways, by row.

    ``mix="blocked"`` (the default) puts the heavy rows together, every fifth block of ``block`` rows (one traffic
    shard), as a region or app whose users write ids, code or Japanese arrives together in production traffic: the
    client's learnt tokens-per-character ratio is then wrong for the rows in flight when a block starts.
    ``mix="shuffled"`` spreads them, every fifth row, so per-row errors average out within one burst."""
    import random

    fixtures, _ = _support()
    df = fixtures.traffic_frame(n, multi_turn_every=3, words=20)
    rng = random.Random(5)
    words = ("please explain the replay number detail model answer question traffic shard request response token "
             "limit rate engine batch cluster worker retry error timeout server client summarise translate").split()
    heavy = ["order #{i}-{j}: SKU 4{j}7-{i}X, qty {j}, total 1{i}.{j} EUR", "fn_{i}(x_{j}) => {{'k{i}': [{j}, {i}]}}",
             "Übersetze bitte: «Größenordnung {i}» — naïve café déjà vu", "東京 {i} 大阪 {j} の天気は？", "0x{i:04x}{j:04x} 0b{j:b}"]
    msgs = []
    for i, m in enumerate(df["messages"]):
        text = " ".join(rng.choice(words) for _ in range(rng.randint(8, 40))) + f" {i}?"
        if (i // block) % 5 == 4 if mix == "blocked" else i % 5 == 0:
            text = " ".join(rng.choice(heavy).format(i=i, j=rng.randint(1, 999)) for _ in range(rng.randint(1, 4)))
        msgs.append([*m[:-1], {"role": "user", "content": text}])
    df["messages"] = msgs
    return df


def goodput_figures(log, ok_rows: int, wall_s: float, rpm: float, tpm: float, burst_s: float) -> dict:
    """Goodput: rows that succeeded per second of the whole wall time, as a fraction of the rows per second the
    tier allows for this workload (requests per second, or tokens per second over the server-counted tokens of a
    successful row, whichever is smaller). Faulted attempts spend the tier but produce no row, so they lower it.

    How far into the server's burst the client went: the share of charged attempts after which the server's token
    bucket held less than one row's tokens (the next row would have had to wait), and the median level left, as a
    share of the bucket (``burst_s`` seconds of the TPM limit). A bucket refills at the limit, so a client that
    paces itself just under the limit keeps it nearly full however close to the limit it runs (goodput says how
    close); one that sends in bursts runs it dry and meets 429s."""
    good = [e for e in log if e.status == 200 and e.fault is None]
    charged = [e for e in log if e.charged]
    if not good or wall_s <= 0:
        return {"goodput": 0.0, "binding": None, "server_429s": sum(e.status == 429 for e in log)}
    tok_per_row = sum(e.prompt_tokens + e.completion_tokens for e in good) / len(good)
    req_rows, tok_rows = rpm / 60, tpm / 60 / tok_per_row
    limit_rows = min(req_rows, tok_rows)
    return {"goodput": round(ok_rows / wall_s / limit_rows, 4), "binding": "requests" if req_rows <= tok_rows else "tokens",
            "limit_rows_per_s": round(limit_rows, 2), "ok_rows_per_s": round(ok_rows / wall_s, 2),
            "server_tok_per_row": round(tok_per_row, 1), "server_429s": sum(e.status == 429 for e in log),
            "faulted_attempts": sum(1 for e in log if e.fault is not None),
            # What a perfect client could reach: a charged attempt that faulted spent the tier for nothing.
            "ceiling": round(len(good) / len(charged), 4), **_burst_used(charged, tok_per_row, tpm / 60 * burst_s)}


def _burst_used(charged, tok_per_row: float, capacity: float) -> dict:
    left = np.array([e.tok_left for e in charged if e.tok_left is not None], dtype=float)
    if not len(left):
        return {}
    return {"server_bucket_below_one_row": round(float((left < tok_per_row).mean()), 3),
            "server_bucket_median_left": round(float(np.median(left) / capacity), 3)}


def run_baton(srv, df, rpm: float, tpm: float, actors: int, concurrency: int, client_factor: float = 1.0) -> dict:
    """Baton's replay stage against ``srv``; its limiter is configured at ``client_factor`` times the server's tier
    (1.0: the tier as it is; more: a client told more than it gets, as when another job shares the organisation's
    limit, so the server's limit binds before the client's and answers 429)."""
    import ray

    from jobs.config import parse_config
    from jobs.replay import replay
    from jobs.store import RunStore

    fixtures, _ = _support()
    root = tempfile.mkdtemp(prefix="baton-bench-api-")
    cand = {"kind": "openai", "name": "bench", "model": "m", "base_url": srv.base_url, "rpm": rpm * client_factor,
            "tpm": tpm * client_factor,
            "num_actors": actors, "max_concurrency": concurrency, "timeout_s": 1.0, "max_attempts": 8,
            "backoff_base_s": 0.1, "backoff_max_s": 2.0, "sampling": {"max_tokens": 64}}
    cfg = parse_config(fixtures.run_config(root, "bench", [cand]))
    store = RunStore(cfg.store, cfg.run_id)
    fixtures.write_traffic(store, df, 500)
    fixtures.start_local_ray(2)
    try:
        srv.reset()
        t0 = time.monotonic()
        stats = replay(cfg, store, progress=False)["bench"]
        wall = time.monotonic() - t0
    finally:
        ray.shutdown()
    out = store.read_table("responses")
    counts = Counter(out["request_id"])
    return {"rows": int(len(out)), "ok_rows": int(out["error"].isna().sum()),
            "lost": len(set(df["request_id"]) - set(counts)), "duplicated": sum(1 for c in counts.values() if c > 1),
            "errors": int(out["error"].notna().sum()), "wall_s": round(wall, 2),
            "dispatch_to_commit_s": stats.get("dispatch_to_commit_s")}


async def _plain_client(base_url: str, n: int, concurrency: int, mix: str) -> dict:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=base_url, api_key="x", max_retries=7, timeout=1.0)
    df = traffic(n, mix)
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
    await asyncio.gather(*[one(r, m) for r, m in zip(df["request_id"], df["messages"])])
    # A row the plain client gave up on is lost: it keeps no error row to retry later.
    return {"rows": n, "ok_rows": done["ok"], "lost": n - done["ok"], "duplicated": 0, "errors": n - done["ok"],
            "wall_s": round(time.monotonic() - t0, 2), "exceptions": {k: v for k, v in done.items() if k != "ok"}}


def estimate_error(srv, df) -> float:
    """Mean of the client's prompt estimate over the server's count (1.0: exact; >1: the client over-estimates)."""
    from inference.engines.openai_engine import estimate_prompt_tokens

    ratios = [estimate_prompt_tokens(m) / srv._prompt_tokens(m) for m in df["messages"]]
    return round(sum(ratios) / len(ratios), 3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=5000)
    ap.add_argument("--rpm", type=float, default=600, help="Requests per minute of the tier (before --time-factor).")
    ap.add_argument("--tpm", type=float, default=30_000, help="Tokens per minute of the tier (before --time-factor).")
    ap.add_argument("--time-factor", type=float, default=10.0, help="Limits are --rpm / --tpm times this.")
    ap.add_argument("--faults", type=float, default=0.10, help="Fraction of attempts faulted (500/hang/malformed).")
    ap.add_argument("--faults-at", choices=("gateway", "server"), default="gateway",
                    help="gateway: faults answered in front of the limiter (no tier spent); server: after it.")
    ap.add_argument("--actors", type=int, default=2)
    ap.add_argument("--concurrency", type=int, default=32, help="In-flight requests per actor.")
    ap.add_argument("--mix", choices=("blocked", "shuffled"), default="blocked",
                    help="blocked: the heavy rows (ids, code, non-English) come as whole 500-row shards, every fifth; "
                         "shuffled: every fifth row.")
    ap.add_argument("--over-factor", type=float, default=1.25,
                    help="Baton's second run configures its limiter at this multiple of the server's tier.")
    ap.add_argument("--no-baseline", action="store_true", help="Skip the plain asyncio client.")
    ap.add_argument("--plain-client", nargs=4, metavar=("BASE_URL", "N", "CONCURRENCY", "MIX"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    _, server_mod = _support()
    if args.plain_client:
        base, n, conc, mix = args.plain_client
        print(json.dumps(asyncio.run(_plain_client(base, int(n), int(conc), mix))))
        return

    rpm, tpm = args.rpm * args.time_factor, args.tpm * args.time_factor
    f = args.faults
    df = traffic(args.requests, args.mix)
    # Burst of 1 s: the client's limiter's own (RateLimiter's burst_s), never more.
    srv = server_mod.OpenAIServer(rpm=rpm, tpm=tpm, burst_s=1.0, fault_500=f * 0.5, fault_malformed=f * 0.3,
                                  fault_hang=f * 0.2, hang_s=3.0, seed=11, faults_before_limit=args.faults_at == "gateway",
                                  tokenizer=server_mod.minilm_tokenizer()).start()
    try:
        est_ratio = estimate_error(srv, df)
        runs = {}
        for name, factor in (("tier", 1.0), ("over", args.over_factor)):
            srv.reset()
            r = run_baton(srv, df, rpm, tpm, args.actors, args.concurrency, factor)
            r.update(goodput_figures(srv.log, r["ok_rows"], r["wall_s"], rpm, tpm, srv.burst_s),
                     attempts_per_row=round(len(srv.log) / args.requests, 3), client_factor=factor)
            # For the record, not the gate: the same over the dispatch-to-commit window (actor start-up left out).
            window = goodput_figures(srv.log, r["ok_rows"], r["dispatch_to_commit_s"], rpm, tpm, srv.burst_s)
            r.update(goodput_in_window=window["goodput"], startup_s=round(r["wall_s"] - r["dispatch_to_commit_s"], 2),
                     goodput_of_ceiling=round(r["goodput"] / r["ceiling"], 4) if r.get("ceiling") else None)
            runs[name] = r
        plain = {}
        if not args.no_baseline:
            srv.reset()
            proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--plain-client", srv.base_url,
                                   str(args.requests), str(args.actors * args.concurrency), args.mix],
                                  capture_output=True, text=True, check=True)
            plain = json.loads(proc.stdout.strip().splitlines()[-1])
            plain.update(goodput_figures(srv.log, plain["ok_rows"], plain["wall_s"], rpm, tpm, srv.burst_s),
                         attempts_per_row=round(len(srv.log) / args.requests, 3))
    finally:
        srv.stop()

    print(f"\n{args.requests} requests, limits {rpm:.0f} RPM / {tpm:.0f} TPM ({args.rpm:g} RPM / {args.tpm:g} TPM "
          f"x{args.time_factor:g}), server and client bursts 1 s, {f:.0%} of attempts faulted at the {args.faults_at}, "
          f"concurrency {args.actors}x{args.concurrency}; server counts tokens with MiniLM's WordPiece, the client's "
          f"prompt estimate is {est_ratio:g}x the server's count on average; heavy rows {args.mix}. Baton runs twice: "
          f"its limiter at the tier, and at {args.over_factor:g}x the tier (the server's limit binds first)")
    cols = ["client_factor", "goodput", "ceiling", "goodput_of_ceiling", "goodput_in_window", "startup_s", "binding",
            "limit_rows_per_s", "ok_rows_per_s", "server_tok_per_row", "wall_s", "dispatch_to_commit_s", "ok_rows",
            "lost", "duplicated", "errors", "server_429s", "server_bucket_below_one_row", "server_bucket_median_left",
            "faulted_attempts", "attempts_per_row"]
    table = (runs["tier"], runs["over"], plain)
    print(f"{'':28}" + "".join(f"{c:>18}" for c in ("baton at the tier", f"baton at {args.over_factor:g}x", "plain asyncio")))
    for c in cols:
        print(f"{c:28}" + "".join(f"{str(r.get(c)):>18}" for r in table))
    goal = 0.9
    ok = {k: r["goodput"] >= goal and r["lost"] == 0 and r["duplicated"] == 0 for k, r in runs.items()}
    # 429s > 0 where the server's token limit binds first: the evidence that the run pressed on the real limit and
    # that Baton lives with it. Configured at the tier, Baton paces under it and the server rarely has to refuse.
    over = runs["over"]
    pressed = over["binding"] == "tokens" and over["server_429s"] > 0
    print(json.dumps({"benchmark": "api_throughput", "requests": args.requests, "rpm_limit": rpm, "tpm_limit": tpm,
                      "fault_fraction": f, "faults_at": args.faults_at, "mix": args.mix,
                      "client_estimate_over_server_count": est_ratio, "goodput": runs["tier"]["goodput"],
                      "goodput_over": over["goodput"], "server_429s": over["server_429s"],
                      "server_429s_at_tier": runs["tier"]["server_429s"],
                      "lost": sum(r["lost"] for r in runs.values()),
                      "duplicated": sum(r["duplicated"] for r in runs.values()), "baton": runs["tier"],
                      "baton_over": over, "plain_asyncio": plain,
                      "goal": {"goodput_min": goal, "lost": 0, "duplicated": 0,
                               "server_429s_min_where_server_tokens_bind": 1},
                      "meets_goal": bool(all(ok.values()) and pressed)}))


if __name__ == "__main__":
    main()

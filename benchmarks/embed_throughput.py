"""Embedding throughput: sentences per second through the Ray path (a Ray Data actor pool running
inference.scorers.Embedder) against SentenceTransformer.encode called directly on the same texts.

Texts: the distinct instructions and responses of the PandaLM test set (real model outputs, no duplicates, so the
Embedder's de-duplication cannot flatter the Ray path). Both sides include loading the model once (the Ray
path's actor start and model load; the direct path's SentenceTransformer load), and both use the same encode
batch size and the same CPU count. The direct path runs before and after the Ray path and is averaged (the load of a shared machine drifts).
Goal: Ray path >= 0.8 x direct. Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd  # noqa: E402

from inference.scorers.config import EmbeddingConfig  # noqa: E402
from inference.scorers.embeddings import Embedder, default_model_path  # noqa: E402

DATA = Path("/work/shared/data/pandalm/testset-v1.json")
GOAL = 0.8


def texts(limit: int) -> list[str]:
    items = json.loads(DATA.read_text())
    seen: dict[str, None] = {}
    for it in items:
        for key in ("response1", "response2", "instruction"):
            value = it.get(key)
            if isinstance(value, str) and value.strip():
                seen.setdefault(value, None)
    return list(seen)[:limit]


def direct(sentences: list[str], batch_size: int, threads: int) -> tuple[float, float]:
    """(wall seconds including load, encode-only seconds) of SentenceTransformer.encode in this process."""
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    model = SentenceTransformer(default_model_path(), device="cpu")
    t1 = time.perf_counter()
    model.encode(sentences, batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False)
    t2 = time.perf_counter()
    return t2 - t0, t2 - t1


def through_ray(sentences: list[str], batch_size: int, cpus: int, rows_per_batch: int) -> float:
    """Wall seconds of the Ray path, actor start and model load included."""
    import ray

    df = pd.DataFrame({"request_id": [str(i) for i in range(len(sentences))], "model": "bench", "response": sentences})
    t0 = time.perf_counter()
    ds = ray.data.from_pandas(df).map_batches(
        Embedder, fn_constructor_kwargs={"config": EmbeddingConfig(batch_size=batch_size, device="cpu",
                                                                   torch_threads=cpus),
                                         "fields": ("response",)},
        batch_size=rows_per_batch, batch_format="pandas", compute=ray.data.ActorPoolStrategy(size=1), num_cpus=cpus)
    n = 0
    for batch in ds.iter_batches(batch_format="pandas", batch_size=None):
        n += len(batch)
    wall = time.perf_counter() - t0
    assert n == len(sentences), (n, len(sentences))
    return wall


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5000, help="sentences (at most the 871 distinct PandaLM texts)")
    ap.add_argument("--batch-size", type=int, default=64, help="encode batch size (both paths)")
    ap.add_argument("--rows-per-batch", type=int, default=512, help="rows per Ray Data batch")
    ap.add_argument("--cpus", type=int, default=os.cpu_count() or 2, help="CPUs for both paths")
    args = ap.parse_args()
    sentences = texts(args.n)

    import ray

    # Direct runs before and after the Ray run, averaged: on a shared machine the load drifts during the run.
    before = direct(sentences, args.batch_size, args.cpus)
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    try:
        ray_wall = through_ray(sentences, args.batch_size, args.cpus, args.rows_per_batch)
    finally:
        ray.shutdown()
    after = direct(sentences, args.batch_size, args.cpus)
    direct_wall, direct_encode = (before[0] + after[0]) / 2, (before[1] + after[1]) / 2

    n = len(sentences)
    figures = {
        "sentences": n,
        "cpus": args.cpus,
        "ray_sentences_per_s": round(n / ray_wall, 1),
        "direct_sentences_per_s": round(n / direct_wall, 1),
        "direct_encode_only_sentences_per_s": round(n / direct_encode, 1),
        "ratio_ray_vs_direct": round(direct_wall / ray_wall, 3),
        "ratio_ray_vs_direct_encode_only": round(direct_encode / ray_wall, 3),
    }
    print(f"{'path':<44}{'sentences/s':>12}")
    print(f"{'Ray Data actor pool (load included)':<44}{figures['ray_sentences_per_s']:>12.1f}")
    print(f"{'SentenceTransformer.encode (load included)':<44}{figures['direct_sentences_per_s']:>12.1f}   <- baseline")
    print(f"{'SentenceTransformer.encode (encode only)':<44}{figures['direct_encode_only_sentences_per_s']:>12.1f}")
    print(f"ratio Ray / direct: {figures['ratio_ray_vs_direct']:.3f} (goal >= {GOAL}); "
          f"against encode only: {figures['ratio_ray_vs_direct_encode_only']:.3f}")
    figures.update({"goal": f"ray_sentences_per_s >= {GOAL} x direct_sentences_per_s",
                    "meets_goal": bool(figures["ratio_ray_vs_direct"] >= GOAL)})
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())

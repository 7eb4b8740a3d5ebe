"""`baton demo` (`make demo`): the whole pipeline on the shipped PandaLM data, on a local Ray and a local store.

Bloom-7B is the incumbent; LLaMA-7B, Pythia-6.9B and Cerebras-GPT-6.7B are the candidates, with their recorded
answers. Automated metrics: the recorded GPT-3.5 and PandaLM-7B verdicts plus live embedding similarity and
checks. Human labels: a random subset of the PandaLM annotations. Truth: all of them, printed beside the verdict.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from calibration.decision import thresholds
from jobs.errors import EXIT_OK

DEMO_DIR = Path(__file__).resolve().parents[1] / "demo" / "pandalm"
INCUMBENT = "bloom-7b"
CANDIDATES = ["llama-7b", "pythia-6.9b", "cerebras-gpt-6.7B"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="./baton-store", help="store root for the demo run (default ./baton-store)")
    parser.add_argument("--run-id", default="demo-pandalm", help="run id (rerunning the same id resumes it)")
    parser.add_argument("--labels-per-candidate", type=int, default=40,
                        help="human-labelled requests per candidate shown to the calibration (the rest are hidden)")
    parser.add_argument("--margin", type=float, default=0.05, help="non-inferiority margin on the win rate")
    parser.add_argument("--confidence", type=float, default=0.9, help="confidence level")
    parser.add_argument("--seed", type=int, default=0, help="seed of the label subset and the sampler")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N requests (a quick slice)")
    parser.add_argument("--draws", type=int, default=500, help="NUTS draws per chain (fewer: a quicker, rougher look)")
    parser.add_argument("--tune", type=int, default=500, help="NUTS tuning steps per chain")


def build_inputs(out: Path, labels_per_candidate: int, seed: int, limit: int | None) -> tuple[dict, pd.DataFrame]:
    """Write the demo's inputs (traffic slice, label subset) under out/demo-inputs; return (raw config, all labels)."""
    inputs = out / "demo-inputs"
    inputs.mkdir(parents=True, exist_ok=True)
    traffic = pd.read_json(DEMO_DIR / "traffic.jsonl", lines=True, dtype=False)
    if limit:
        traffic = traffic.head(limit)
    traffic.to_json(inputs / "traffic.jsonl", orient="records", lines=True, force_ascii=False)
    labels = pd.read_csv(DEMO_DIR / "human_labels.csv", dtype={"request_id": str})
    labels = labels[labels["request_id"].isin(traffic["request_id"])]
    rng = np.random.default_rng(seed)
    shown = []
    for cand in CANDIDATES:
        ids = labels.loc[labels["model"] == cand, "request_id"].unique()
        keep = rng.choice(ids, size=min(labels_per_candidate, len(ids)), replace=False)
        shown.append(labels[(labels["model"] == cand) & labels["request_id"].isin(keep)])
    pd.concat(shown).to_csv(inputs / "labels.csv", index=False)
    raw = {
        "run_id": "demo-pandalm",
        "store": {"root": str(out)},
        "traffic": {"path": str(inputs / "traffic.jsonl"), "segments": ["app"]},
        "incumbent": {"name": INCUMBENT},
        "candidates": [{"name": c, "kind": "recorded", "path": str(DEMO_DIR / f"responses-{c}.jsonl")} for c in CANDIDATES],
        "recorded_scores": [str(DEMO_DIR / "judge_scores.csv")],
        "labels": {"path": str(inputs / "labels.csv")},
        "decision": {"dimensions": [{"name": "quality", "kind": "pairwise", "gating": True}]},
        "execution": {"shard_rows": 200, "num_cpus": 2},
    }
    return raw, labels


def truth_from_labels(labels: pd.DataFrame, margin: float) -> dict:
    """The full-human win rate per candidate (mean over items of the mean annotator verdict) and its verdict."""
    out = {}
    for cand, rows in labels.groupby("model"):
        value = float(rows.groupby("request_id")["value"].mean().mean())
        out[cand] = {"quality": {"value": value, "n_items": int(rows["request_id"].nunique()),
                                 "noninferior": value > thresholds("pairwise", margin)[0]}}
    return out


def main(args: argparse.Namespace) -> int:
    from jobs.config import parse_config
    from jobs.migrate import run_pipeline

    out = Path(args.out).resolve()
    raw, all_labels = build_inputs(out, args.labels_per_candidate, args.seed, args.limit)
    raw["run_id"] = args.run_id
    raw["decision"].update({"margin": args.margin, "confidence": args.confidence, "seed": args.seed,
                            "draws": args.draws, "tune": args.tune})
    (out / "demo-inputs" / "run.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    cfg = parse_config(raw, "demo config")
    truth = truth_from_labels(all_labels, args.margin)
    decision = run_pipeline(cfg, truth=truth)
    print("\nAgainst the full human labels (hidden from the calibration):")
    for cand, body in decision.candidates.items():
        d = body.dimensions["quality"]
        t = truth[cand]["quality"]
        inside = d.interval[0] <= t["value"] <= d.interval[1]
        fired = [g["name"] for g in d.guards if g.get("fired")]
        print(f"  {cand}: full-human win rate {t['value']:.3f} over {t['n_items']} items "
              f"({'inside' if inside else 'OUTSIDE'} the scored-requests interval {d.interval}; "
              f"population interval {d.interval_population}); verdict basis {d.basis}, "
              f"P(non-inferior) {d.p_noninferior}; labels used {d.labels_used}; verdict {body.verdict}"
              + (f" (guards fired: {', '.join(fired)})" if fired else "")
              + f" - the full labels say {'non-inferior' if t['noninferior'] else 'inferior'} at margin {args.margin}")
    return EXIT_OK


if __name__ == "__main__":
    from jobs.entry import module_entry

    sys.exit(module_entry("jobs.demo"))

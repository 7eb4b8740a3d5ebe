"""Build the shipped demo tables from the PandaLM test set (Apache-2.0; see demo/pandalm/SOURCE.txt).

Run once by a maintainer: `python demo/build_pandalm_demo.py /path/to/shared/data/pandalm`. The outputs are
committed, so the demo needs nothing outside the repository.

Framing: Bloom-7B is the incumbent being retired; LLaMA-7B, Pythia-6.9B and Cerebras-GPT-6.7B are candidates.
A request is one PandaLM item that compares a candidate with Bloom-7B (its instruction and input as one user
turn, the app it comes from as the `app` segment). Each candidate's answers were "shadow-recorded" only on its
own items, so its other requests come back as `not_recorded` errors from the recorded engine.
Judges: the recorded GPT-3.5-turbo and PandaLM-7B verdicts, oriented candidate-better = 1.
Human labels: the three annotators of every item, oriented the same way (the demo hides all but a few).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd

INCUMBENT = "bloom-7b"
CANDIDATES = ["llama-7b", "pythia-6.9b", "cerebras-gpt-6.7B"]
OUT = Path(__file__).resolve().parent / "pandalm"


def _verdict(first_better: float, candidate_first: bool) -> float:
    return first_better if candidate_first else 1.0 - first_better


def main(src: str) -> None:
    src_dir = Path(src)
    items = pd.DataFrame(json.loads((src_dir / "testset-v1.json").read_text()))
    gpt = pd.DataFrame(json.loads((src_dir / "gpt-3.5-turbo-testset-v1.json").read_text())).set_index("idx")
    pandalm = pd.DataFrame(json.loads((src_dir / "pandalm-7b-testset-v1.json").read_text())).set_index("idx")
    items[["a", "b"]] = items["cmp_key"].str.split("_", n=1, expand=True)

    traffic, responses, scores, labels = [], {c: [] for c in CANDIDATES}, [], []
    # Annotator code: 0 tie, 1 response1 better, 2 response2 better -> P(first response better).
    first_better = {0: 0.5, 1: 1.0, 2: 0.0}
    for _, it in items.iterrows():
        pair = {it["a"], it["b"]}
        if INCUMBENT not in pair:
            continue
        cand = (pair - {INCUMBENT}).pop()
        if cand not in CANDIDATES:
            continue
        cand_first = it["a"] == cand
        rid = f"pandalm-{int(it['idx']):04d}"
        user = it["instruction"] + (("\n\n" + it["input"]) if str(it["input"]).strip() else "")
        traffic.append({"request_id": rid, "messages": [{"role": "user", "content": user}],
                        "response": it["response2"] if cand_first else it["response1"], "app": it["motivation_app"]})
        responses[cand].append({"request_id": rid, "response": it["response1"] if cand_first else it["response2"]})
        for k in (1, 2, 3):
            labels.append({"request_id": rid, "model": cand, "dimension": "quality", "annotator": f"pandalm-annotator{k}",
                           "value": _verdict(first_better[int(it[f"annotator{k}"])], cand_first)})
        g = str(gpt.loc[it["idx"], "gpt_result"]).strip()
        g_val = {"1": 1.0, "2": 0.0, "Tie": 0.5}.get(g)
        if g_val is not None:  # an unparseable verdict is a missing score, not a guess
            scores.append({"request_id": rid, "model": cand, "metric": "judge.pairwise.quality.gpt35",
                           "value": _verdict(g_val, cand_first)})
        p_val = first_better[int(pandalm.loc[it["idx"], "pandalm_result"])]
        scores.append({"request_id": rid, "model": cand, "metric": "judge.pairwise.quality.pandalm7b",
                       "value": _verdict(p_val, cand_first)})

    OUT.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(traffic).to_json(OUT / "traffic.jsonl", orient="records", lines=True, force_ascii=False)
    for cand, rows in responses.items():
        pd.DataFrame(rows).to_json(OUT / f"responses-{cand}.jsonl", orient="records", lines=True, force_ascii=False)
    pd.DataFrame(scores).to_csv(OUT / "judge_scores.csv", index=False)
    pd.DataFrame(labels).to_csv(OUT / "human_labels.csv", index=False)
    print(f"{len(traffic)} requests, {len(scores)} judge scores, {len(labels)} human labels -> {OUT}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/pandalm")

"""`baton labels export`: choose requests for human labelling, blind them, write the annotator files and the key.

Picks (request, candidate) units of a run by a sampling design (calibration.design: random, stratified by segment,
or active where the automated prediction is least sure), records every unit's inclusion probability, hides model
names, puts the candidate's answer first or second by a coin flip, and writes a batch as CSV and as Label Studio
import JSON (plus the Label Studio labelling config). The key that maps blinded item ids back to requests, models
and answer order is a separate document (the run store's ``labels/key-<batch>.json``, or ``--key``), never in the
annotator files.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import secrets
from datetime import datetime, timezone
from xml.sax.saxutils import quoteattr

import numpy as np
import pandas as pd

from pydantic import ValidationError

from calibration import design
from calibration.schema import Decision
from jobs.config import RunConfig
from jobs.errors import ContractError
from jobs.labels.design_table import TABLE, read_design, write_design
from jobs.labels.task import KEY_SCHEMA, LabelTaskConfig
from jobs.store import RunStore

log = logging.getLogger("baton.labels")


# -- run tables -----------------------------------------------------------------------------------------------
def _render_messages(messages: object) -> str:
    if isinstance(messages, np.ndarray):
        messages = messages.tolist()
    if isinstance(messages, str):
        return messages
    return "\n\n".join(f"[{m.get('role')}]\n{m.get('content')}" for m in (messages or []))


def units_of_run(cfg: RunConfig, store: RunStore, candidates: list[str]) -> pd.DataFrame:
    """Every labellable (request, candidate) unit: both answers present. Columns: request_id, candidate, prompt,
    candidate_answer, incumbent_answer and the segment columns."""
    traffic = store.read_table("traffic")
    responses = store.read_table("responses")
    if traffic.empty or responses.empty:
        raise ContractError(f"{store.uri()}: the run has no traffic or responses table yet; run the pipeline first")
    segs = [s for s in cfg.traffic.segments if s in traffic.columns]
    if "turn" in traffic.columns and "turn" not in segs:  # a decision's turn position (turn=3+) can be asked for
        segs.append("turn")
    base = traffic[["request_id", "messages", *segs]].copy()
    base["request_id"] = base["request_id"].astype(str)
    base["prompt"] = [_render_messages(m) for m in base["messages"]]
    ok = responses[responses["error"].isna() & responses["response"].notna()].copy()
    ok["request_id"] = ok["request_id"].astype(str)
    inc = ok[ok["model"] == cfg.incumbent.name][["request_id", "response"]]
    if inc.empty and "response" in traffic.columns:
        inc = traffic[["request_id", "response"]].dropna().astype({"request_id": str})
    inc = inc.rename(columns={"response": "incumbent_answer"})
    frames = []
    for cand in candidates:
        c = ok[ok["model"] == cand][["request_id", "response"]].rename(columns={"response": "candidate_answer"})
        c["candidate"] = cand
        frames.append(c)
    units = pd.concat(frames, ignore_index=True).merge(inc, on="request_id").merge(base, on="request_id")
    return units.sort_values(["candidate", "request_id"], kind="stable").reset_index(drop=True)


def _segment_filter(units: pd.DataFrame, segment: str | None) -> pd.DataFrame:
    """Keep the units of a segment written as in decision.json: 'col=value' or 'col=value|col=value'."""
    if not segment:
        return units
    mask = np.ones(len(units), dtype=bool)
    for part in segment.split("|"):
        if "=" not in part:
            raise ContractError(f"segment {segment!r}: each part must be col=value")
        col, value = part.split("=", 1)
        if col not in units.columns:
            raise ContractError(f"segment {segment!r}: column {col!r} is not a segment column of the run's traffic")
        position = re.fullmatch(r"(\d+)(\+|-(\d+))?", value) if col == "turn" else None
        if position:  # a turn-position group of decision.json's turn_positions: 2, 1-2 or 3+
            lo = int(position[1])
            hi = np.inf if position[2] == "+" else int(position[3] or lo)
            turn = pd.to_numeric(units[col], errors="coerce").fillna(1).to_numpy()  # no turn: a single turn
            mask &= (turn >= lo) & (turn <= hi)
            continue
        mask &= units[col].astype(str).to_numpy() == value
    return units[mask].reset_index(drop=True)


def _uncertainty(units: pd.DataFrame, store: RunStore, task: LabelTaskConfig, metric: str | None,
                 uncertainty_path: str | None) -> np.ndarray:
    """Predicted sd of the label per unit: from a file (request_id, model, sd), or sqrt(p(1-p)) of the pairwise
    judge's probability, calibrated on earlier labels by a weighted logistic fit when there are enough."""
    if uncertainty_path:
        from jobs.contracts import read_table_file

        u = read_table_file(uncertainty_path)
        for col in ("request_id", "model", "sd"):
            if col not in u.columns:
                raise ContractError(f"{uncertainty_path}: missing column {col!r} (present: {list(u.columns)})")
        u = u.astype({"request_id": str, "model": str})
        merged = units.merge(u, left_on=["request_id", "candidate"], right_on=["request_id", "model"], how="left")
        if merged["sd"].isna().any():
            pos = int(np.flatnonzero(merged["sd"].isna().to_numpy())[0])
            raise ContractError(f"{uncertainty_path}: no sd for request_id {merged['request_id'].iat[pos]!r}, "
                                f"model {merged['candidate'].iat[pos]!r}")
        return merged["sd"].to_numpy(dtype=float)
    scores = store.read_table("scores")
    if scores.empty:
        raise ContractError("active design: the run has no scores; give --uncertainty FILE")
    names = [metric] if metric else sorted(m for m in scores["metric"].unique() if str(m).startswith("judge.pairwise."))
    if not names or not set(names) & set(scores["metric"].unique()):
        raise ContractError(f"active design: no metric {metric or 'judge.pairwise.*'} in the scores table; "
                            "pass --uncertainty-metric NAME (values in [0, 1]) or --uncertainty FILE")
    s = scores[scores["metric"].isin(names)].astype({"request_id": str, "model": str})
    p = s.groupby(["request_id", "model"])["value"].mean().rename("p").reset_index()
    merged = units.merge(p, left_on=["request_id", "candidate"], right_on=["request_id", "model"], how="left")
    prob = merged["p"].fillna(0.5).clip(0.0, 1.0).to_numpy()
    prob = _calibrate(prob, merged, store, task)
    return design.bernoulli_sd(prob)


def _calibrate(prob: np.ndarray, units: pd.DataFrame, store: RunStore, task: LabelTaskConfig) -> np.ndarray:
    pairwise = [d.name for d in task.dimensions if d.kind == "pairwise"]
    labels = store.read_table("labels")
    if not pairwise or labels.empty:
        return prob
    lab = labels[labels["dimension"] == pairwise[0]].astype({"request_id": str, "model": str})
    lab = lab.groupby(["request_id", "model"])["value"].mean().reset_index()
    idx = units.reset_index().merge(lab, left_on=["request_id", "candidate"], right_on=["request_id", "model"])
    if len(idx) < 20 or idx["value"].nunique() < 2:
        return prob
    logit = lambda q: np.log(np.clip(q, 1e-3, 1 - 1e-3) / (1 - np.clip(q, 1e-3, 1 - 1e-3)))  # noqa: E731
    beta = design.fit_logistic(logit(prob[idx["index"].to_numpy()]), idx["value"].to_numpy(), ridge=1.0)
    log.info("active design: judge probability calibrated on %d labelled units (intercept %.2f, slope %.2f)",
             len(idx), beta[0], beta[1])
    return design.predict_logistic(beta, logit(prob))


def needs_from_decision(path: str) -> tuple[dict[str, int], str | None]:
    """(labels_needed per candidate, the segment of the largest need) from a decision.json."""
    try:
        with open(path) as fh:
            doc = json.load(fh)
    except OSError as exc:
        raise ContractError(f"{path}: cannot read the decision ({exc.strerror})") from None
    except json.JSONDecodeError as exc:
        raise ContractError(f"{path}: not JSON (line {exc.lineno}: {exc.msg})") from None
    try:
        decision = Decision.model_validate(doc)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ContractError(f"{path}: not a decision document (docs/decision-schema.md): {where}: {first['msg']}"
                            + (f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else "")) from None
    needs: dict[str, int] = {}
    best: tuple[int, str | None] = (0, None)
    for cand, body in decision.candidates.items():
        for d in body.dimensions.values():
            need = d.labels_needed or 0
            if need > needs.get(cand, 0):
                needs[cand] = need
            if need > best[0]:
                best = (need, d.labels_needed_segment)
    return {c: n for c, n in needs.items() if n > 0}, best[1]


# -- export ---------------------------------------------------------------------------------------------------
def export_batch(cfg: RunConfig, store: RunStore, task: LabelTaskConfig, out_dir: str, *, n: int | None,
                 design_name: str = "random", seed: int = 0, candidates: list[str] | None = None,
                 stratify_by: list[str] | None = None, segment: str | None = None, tau: float = 0.2,
                 batch: str | None = None, key_path: str | None = None, from_decision: str | None = None,
                 uncertainty_metric: str | None = None, uncertainty_path: str | None = None) -> dict:
    """Choose, blind and write one batch; returns a summary (batch, files, counts)."""
    names = [c.name for c in cfg.candidates]
    per_candidate: dict[str, int] | None = None
    if from_decision:
        per_candidate, seg = needs_from_decision(from_decision)
        if not per_candidate:
            return {"batch": None, "items": 0, "message": f"{from_decision}: no dimension needs more labels"}
        segment = segment or seg
        candidates = [c for c in per_candidate if c in names]
        if not candidates:
            raise ContractError(f"{from_decision}: candidates {sorted(per_candidate)} are not in the run config ({names})")
    candidates = candidates or names
    unknown = [c for c in candidates if c not in names]
    if unknown:
        raise ContractError(f"--candidate {unknown[0]!r} is not a candidate of the run config ({names})")
    if per_candidate is None and (n is None or n < 1):
        raise ContractError("give --n N (labels per candidate) or --from-decision DIR/decision.json")
    batch = batch or f"b{datetime.now(timezone.utc):%Y%m%dT%H%M%S}-{secrets.token_hex(3)}"
    if not _SAFE_BATCH(batch):
        raise ContractError(f"--batch {batch!r}: use letters, digits, '.', '_' or '-'")
    if store.has_document("labels", f"key-{batch}.json") or (key_path and os.path.exists(key_path)):
        raise ContractError(f"batch {batch!r} already has a key; choose another --batch")
    if store.is_committed(TABLE, batch):
        raise ContractError(f"batch {batch!r} is already in the run's label design; choose another --batch")

    units = _segment_filter(units_of_run(cfg, store, candidates), segment)
    done = read_design(store)
    taken = set(zip(done.loc[done["selected"], "request_id"], done.loc[done["selected"], "model"]))
    if taken:
        keep = [(r, c) not in taken for r, c in zip(units["request_id"], units["candidate"])]
        units = units[keep].reset_index(drop=True)
    rng = np.random.default_rng([seed, int(hashlib.sha256(batch.encode()).hexdigest()[:8], 16)])
    strata_cols = stratify_by if stratify_by is not None else list(cfg.traffic.segments)
    chosen_parts, pool_parts = [], []
    for cand in candidates:
        pool = units[units["candidate"] == cand].reset_index(drop=True)
        want = per_candidate[cand] if per_candidate else n
        if len(pool) == 0:
            log.warning("candidate %s: no unlabelled unit left%s", cand, f" in segment {segment}" if segment else "")
            continue
        k = min(want, len(pool))
        if k < want:
            log.warning("candidate %s: only %d unlabelled units left (asked %d)", cand, k, want)
        if design_name == "random":
            idx, pi = design.random_design(len(pool), k, rng)
            strata = np.array(["all"] * len(pool))
        elif design_name == "stratified":
            missing = [c for c in strata_cols if c not in pool.columns]
            if not strata_cols or missing:
                raise ContractError(f"stratified design needs segment columns; {missing or 'none'} not in the traffic "
                                    f"(segments: {cfg.traffic.segments}); use --stratify-by COL")
            strata = pool[strata_cols].astype(str).apply(
                lambda r: "|".join(f"{c}={r[c]}" for c in strata_cols), axis=1).to_numpy()
            idx, pi = design.stratified_design(strata, k, rng)
        elif design_name == "active":
            sd = _uncertainty(pool, store, task, uncertainty_metric, uncertainty_path)
            idx, pi = design.active_design(sd, k, rng, tau=tau)
            strata = np.array(["all"] * len(pool))
        else:
            raise ContractError(f"--design {design_name!r}: use random, stratified or active")
        pool["inclusion_prob"] = pi
        pool["stratum"] = strata
        pool_parts.append(pool[["request_id", "candidate", "inclusion_prob"]])
        chosen_parts.append(pool.iloc[idx])
    if not chosen_parts:
        return {"batch": None, "items": 0, "message": "no unit to label"}
    chosen = pd.concat(chosen_parts, ignore_index=True)
    chosen = chosen.iloc[rng.permutation(len(chosen))].reset_index(drop=True)  # hide the design's order
    chosen["item_id"] = [f"i{secrets.token_hex(6)}" for _ in range(len(chosen))]
    chosen["a_is"] = np.where(rng.uniform(size=len(chosen)) < 0.5, "candidate", "incumbent")
    a_cand = chosen["a_is"] == "candidate"
    chosen["answer_a"] = np.where(a_cand, chosen["candidate_answer"], chosen["incumbent_answer"])
    chosen["answer_b"] = np.where(a_cand, chosen["incumbent_answer"], chosen["candidate_answer"])

    files = _write_batch_files(chosen, task, batch, out_dir)
    key = {
        "schema_version": KEY_SCHEMA, "batch": batch, "run_id": cfg.run_id, "incumbent": cfg.incumbent.name,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "design": design_name,
        "seed": seed, "tau": tau if design_name == "active" else None, "segment": segment,
        "from_decision": from_decision, "dimensions": [d.model_dump() for d in task.dimensions],
        "pool_sizes": {str(p["candidate"].iat[0]): len(p) for p in pool_parts},
        "items": [{"item_id": r.item_id, "request_id": r.request_id, "candidate": r.candidate, "a_is": r.a_is,
                   "inclusion_prob": float(r.inclusion_prob), "stratum": str(r.stratum)}
                  for r in chosen.itertuples()],
    }
    payload = json.dumps(key, indent=1)
    if key_path:
        with open(key_path, "x") as fh:
            fh.write(payload)
        key_uri = key_path
    else:
        key_uri = store.write_document("labels", f"key-{batch}.json", payload)
    write_design(store, batch, pd.concat(pool_parts, ignore_index=True), chosen)
    return {"batch": batch, "items": len(chosen), "design": design_name, "segment": segment,
            "per_candidate": chosen["candidate"].value_counts().to_dict(), "files": files, "key": key_uri}


def _SAFE_BATCH(batch: str) -> bool:
    return bool(batch) and len(batch) <= 100 and all(ch.isalnum() or ch in "._-" for ch in batch)


def _write_batch_files(chosen: pd.DataFrame, task: LabelTaskConfig, batch: str, out_dir: str) -> dict:
    os.makedirs(out_dir, exist_ok=True)
    rubric = task.instructions + "\n\n" + "\n".join(f"- {d.rubric} (answer with {' / '.join(d.allowed())}"
                                                  + (" for A and for B)" if d.kind != "pairwise" else ")")
                                                  for d in task.dimensions)
    csv = pd.DataFrame({"item_id": chosen["item_id"], "batch": batch, "prompt": chosen["prompt"],
                        "answer_a": chosen["answer_a"], "answer_b": chosen["answer_b"], "annotator": ""})
    for d in task.dimensions:
        for col, _ in d.fields():
            csv[col] = ""
    paths = {"csv": os.path.join(out_dir, f"{batch}.csv"),
             "labelstudio": os.path.join(out_dir, f"{batch}.labelstudio.json"),
             "labelstudio_config": os.path.join(out_dir, f"{batch}.label_config.xml"),
             "rubric": os.path.join(out_dir, f"{batch}.rubric.txt")}
    csv.to_csv(paths["csv"], index=False)
    tasks = [{"data": {"item_id": r.item_id, "batch": batch, "prompt": r.prompt, "answer_a": r.answer_a,
                       "answer_b": r.answer_b, "rubric": rubric}} for r in chosen.itertuples()]
    with open(paths["labelstudio"], "w") as fh:
        json.dump(tasks, fh, ensure_ascii=False, indent=1)
    with open(paths["labelstudio_config"], "w") as fh:
        fh.write(label_studio_config(task))
    with open(paths["rubric"], "w") as fh:
        fh.write(rubric + "\n")
    return paths


def label_studio_config(task: LabelTaskConfig) -> str:
    """Label Studio labelling interface: the conversation, answers A and B, one Choices control per field."""
    parts = ['<View>', '  <Text name="rubric" value="$rubric"/>', '  <Header value="Conversation"/>',
             '  <Text name="prompt" value="$prompt"/>', '  <Header value="Answer A"/>',
             '  <Text name="answer_a" value="$answer_a"/>', '  <Header value="Answer B"/>',
             '  <Text name="answer_b" value="$answer_b"/>']
    for d in task.dimensions:
        for col, side in d.fields():
            title = d.rubric + (f" (answer {side.upper()})" if side else "")
            to = {None: "prompt", "a": "answer_a", "b": "answer_b"}[side]
            parts.append(f"  <Header value={quoteattr(title)}/>")
            parts.append(f'  <Choices name="{col}" toName="{to}" choice="single" required="true" showInline="true">')
            parts += [f'    <Choice value="{v}"/>' for v in d.allowed()]
            parts.append("  </Choices>")
    parts.append("</View>")
    return "\n".join(parts) + "\n"

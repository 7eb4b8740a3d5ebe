"""`baton labels export|import|check`: choose requests for human labelling, blind them, take the answers back.

export: picks (request, candidate) units of a run by a sampling design (calibration.design: random, stratified
by segment, or active where the automated prediction is least sure), records every unit's inclusion probability,
hides model names, puts the candidate's answer first or second by a coin flip, and writes a batch as CSV and as
Label Studio import JSON (plus the Label Studio labelling config). The key that maps blinded item ids back to
requests, models and answer order is a separate document (the run store's ``labels/key-<batch>.json``, or
``--key``), never in the annotator files.

import: reads the annotators' CSV, JSONL or a Label Studio export, un-blinds it through the key and validates
every judgment. Unknown item ids, values off a dimension's scale, missing values, duplicates and one annotator's
conflicting values become quarantine rows with their reason (never a silent drop); a file that cannot be read or
lacks a column is an error naming the file and column (exit 2). Valid labels are committed to the labels table
with their batch, design weight and inclusion probability; agreement between annotators (Krippendorff's alpha)
and a representativeness check of the labelled requests are printed and stored in ``labels/checks.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import logging
import os
import secrets
from datetime import datetime, timezone
from typing import Literal
from xml.sax.saxutils import quoteattr

import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from calibration import agreement, design
from jobs.config import RunConfig, load_config
from jobs.contracts import QUARANTINE_COLUMNS, validate_labels
from jobs.errors import EXIT_OK, ConfigError, ContractError
from jobs.store import RunStore, shard_id

log = logging.getLogger("baton.labels")
KEY_SCHEMA = 1
PAIRWISE_CHOICES = {"a": "A", "a better": "A", "tie": "tie", "equal": "tie", "b": "B", "b better": "B"}


# -- configuration --------------------------------------------------------------------------------------------
class LabelDimension(BaseModel):
    """One dimension the annotators judge."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., min_length=1, description="Dimension name as in the labels table (e.g. quality).")
    kind: Literal["pairwise", "binary", "ordinal"] = Field(..., description="pairwise: A better / tie / B better; binary: 0/1 per answer; ordinal: an integer scale per answer.")
    rubric: str = Field("", description="What the annotator is asked; shown with every task. Empty: a generic question.")
    scale_min: int = Field(1, description="Lowest value of an ordinal scale (ignored for other kinds).")
    scale_max: int = Field(5, description="Highest value of an ordinal scale (ignored for other kinds).")

    @model_validator(mode="after")
    def _scale(self) -> "LabelDimension":
        if self.kind == "ordinal" and self.scale_max <= self.scale_min:
            raise ValueError(f"scale_max ({self.scale_max}) must be above scale_min ({self.scale_min})")
        if not self.rubric:
            self.rubric = {
                "pairwise": f"{self.name}: which answer is better, A or B (or a tie)?",
                "binary": f"{self.name}: is the answer acceptable? 1 yes, 0 no.",
                "ordinal": f"{self.name}: rate the answer from {self.scale_min} (worst) to {self.scale_max} (best).",
            }[self.kind]
        return self

    def fields(self) -> list[tuple[str, str | None]]:
        """(column name in the annotator files, answer side or None for pairwise)."""
        if self.kind == "pairwise":
            return [(self.name, None)]
        return [(f"{self.name}_a", "a"), (f"{self.name}_b", "b")]

    def allowed(self) -> list[str]:
        if self.kind == "pairwise":
            return ["A", "tie", "B"]
        if self.kind == "binary":
            return ["0", "1"]
        return [str(v) for v in range(self.scale_min, self.scale_max + 1)]


class LabelTaskConfig(BaseModel):
    """Export/import options of human labelling (``--task-config`` YAML)."""

    model_config = ConfigDict(extra="forbid")

    instructions: str = Field("Read the conversation and the two answers, then answer every question. The answers "
                              "come from different systems in a random order.",
                              description="Shown at the top of every task.")
    dimensions: list[LabelDimension] = Field(default_factory=list, description="Dimensions to judge; empty: the run config's decision.dimensions with default rubrics and a 1-5 ordinal scale.")

    @model_validator(mode="after")
    def _unique(self) -> "LabelTaskConfig":
        names = [d.name for d in self.dimensions]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"dimension names must be unique; repeated: {dupes}")
        return self


def load_task_config(path: str | None, cfg: RunConfig) -> LabelTaskConfig:
    raw: dict = {}
    if path:
        try:
            with open(path) as fh:
                raw = yaml.safe_load(fh) or {}
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the task config ({exc.strerror})") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    try:
        task = LabelTaskConfig.model_validate(raw)
    except ValidationError as err:
        lines = [f"{path}: invalid task config"]
        for e in err.errors():
            lines.append(f"  {'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}")
        raise ConfigError("\n".join(lines)) from None
    if not task.dimensions:
        task.dimensions = [LabelDimension(name=d.name, kind=d.kind) for d in cfg.decision.dimensions]
    return task


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
        mask &= units[col].astype(str).to_numpy() == value
    return units[mask].reset_index(drop=True)


def _keys(store: RunStore) -> list[dict]:
    try:
        names = store.fs.ls(store.path("labels"), detail=False, refresh=True)
    except FileNotFoundError:
        return []
    out = []
    for name in sorted(names):
        base = name.rsplit("/", 1)[-1]
        if base.startswith("key-") and base.endswith(".json"):
            out.append(json.loads(store.read_document("labels", base)))
    return out


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
    if not isinstance(doc.get("candidates"), dict):
        raise ContractError(f"{path}: no 'candidates' mapping (see docs/decision-schema.md)")
    needs: dict[str, int] = {}
    best: tuple[int, str | None] = (0, None)
    for cand, body in doc["candidates"].items():
        for dim, d in (body.get("dimensions") or {}).items():
            need = int(d.get("labels_needed") or 0)
            if need > needs.get(cand, 0):
                needs[cand] = need
            if need > best[0]:
                best = (need, d.get("labels_needed_segment"))
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

    units = _segment_filter(units_of_run(cfg, store, candidates), segment)
    taken = {(it["request_id"], it["candidate"]) for k in _keys(store) for it in k["items"]}
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
    buf = io.BytesIO()
    pd.concat(pool_parts, ignore_index=True).to_parquet(buf, index=False)
    store.write_document("labels", f"design-{batch}.parquet", buf.getvalue())
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


# -- import ---------------------------------------------------------------------------------------------------
def read_answers(path: str) -> tuple[pd.DataFrame, str]:
    """Wide answer rows (item_id, annotator, batch, <field>...) and a description of each row's origin.

    CSV and JSONL hold one row per (item, annotator); a Label Studio export holds tasks with annotations, each
    annotation one row (annotator = completed_by).
    """
    lower = path.lower()
    try:
        if lower.endswith(".csv"):
            df = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
            df["_origin"] = [f"row {i}" for i in range(len(df))]
            return df, "csv"
        if lower.endswith((".jsonl", ".ndjson")):
            rows = []
            with open(path) as fh:
                for i, line in enumerate(fh):
                    if line.strip():
                        try:
                            rows.append({**json.loads(line), "_origin": f"line {i + 1}"})
                        except json.JSONDecodeError as exc:
                            raise ContractError(f"{path}: line {i + 1} is not JSON ({exc.msg})") from None
            return _stringify(pd.DataFrame(rows)), "jsonl"
        if lower.endswith(".json"):
            with open(path) as fh:
                doc = json.load(fh)
            if not isinstance(doc, list):
                raise ContractError(f"{path}: expected a JSON list (a Label Studio export or rows)")
            if any(isinstance(t, dict) and "annotations" in t for t in doc):
                return _from_label_studio(doc, path), "labelstudio"
            return _stringify(pd.DataFrame([{**r, "_origin": f"element {i}"} for i, r in enumerate(doc)])), "json"
    except ContractError:
        raise
    except FileNotFoundError:
        raise ContractError(f"{path}: no such file") from None
    except (OSError, ValueError) as exc:
        raise ContractError(f"{path}: cannot be read ({type(exc).__name__}: {str(exc)[:200]})") from None
    raise ContractError(f"{path}: unknown format (use .csv, .jsonl, or .json from Label Studio)")


def _stringify(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    for col in out.columns:
        if col != "_origin":
            out[col] = [None if v is None or (isinstance(v, float) and np.isnan(v)) else
                        (str(int(v)) if isinstance(v, (bool, np.bool_)) else
                         str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)) for v in out[col]]
    return out


def _from_label_studio(doc: list, path: str) -> pd.DataFrame:
    rows = []
    for t, task in enumerate(doc):
        if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
            raise ContractError(f"{path}: element {t} has no 'data' mapping (not a Label Studio task)")
        data = task["data"]
        for a, ann in enumerate(task.get("annotations") or []):
            if ann.get("was_cancelled"):
                continue
            who = ann.get("completed_by")
            if isinstance(who, dict):
                who = who.get("email") or who.get("id")
            row = {"item_id": data.get("item_id"), "batch": data.get("batch"),
                   "annotator": None if who is None else str(who), "_origin": f"task {t} annotation {a}"}
            for res in ann.get("result") or []:
                value = res.get("value") or {}
                if "choices" in value and value["choices"]:
                    row[res.get("from_name")] = str(value["choices"][0])
                elif "rating" in value:
                    row[res.get("from_name")] = str(value["rating"])
            rows.append(row)
    if not rows:
        raise ContractError(f"{path}: the Label Studio export holds no (non-cancelled) annotations")
    return pd.DataFrame(rows)


def load_key(store: RunStore, batch: str, key_path: str | None) -> dict:
    try:
        if key_path:
            with open(key_path) as fh:
                key = json.load(fh)
        elif store.has_document("labels", f"key-{batch}.json"):
            key = json.loads(store.read_document("labels", f"key-{batch}.json"))
        else:
            raise ContractError(f"no key for batch {batch!r} in {store.uri('labels')} (key-{batch}.json); "
                                "pass --key PATH if the export wrote it elsewhere")
    except OSError as exc:
        raise ContractError(f"{key_path}: cannot read the key ({exc})") from None
    if key.get("schema_version") != KEY_SCHEMA or key.get("batch") != batch:
        raise ContractError(f"{key_path or 'key-' + batch + '.json'}: is not the key of batch {batch!r} "
                            f"(batch {key.get('batch')!r}, schema {key.get('schema_version')!r})")
    return key


def _parse(d: LabelDimension, raw: str) -> tuple[str | None, str | None]:
    """(canonical value, error)."""
    text = raw.strip()
    if d.kind == "pairwise":
        canon = PAIRWISE_CHOICES.get(text.lower())
        return (canon, None) if canon else (None, f"{text!r} is not one of A, tie, B")
    try:
        num = float(text)
    except ValueError:
        return None, f"{text!r} is not a number on the scale {d.allowed()}"
    if not num.is_integer() or str(int(num)) not in d.allowed():
        return None, f"{text!r} is off the {d.kind} scale {d.allowed()}"
    return str(int(num)), None


def import_answers(cfg: RunConfig, store: RunStore, path: str, key_path: str | None = None,
                   batch: str | None = None, dimensions: list[str] | None = None) -> dict:
    """Un-blind, validate and commit one file of answers; returns a summary with counts and quarantine reasons."""
    wide, fmt = read_answers(path)
    if "item_id" not in wide.columns:
        raise ContractError(f"{path}: missing column 'item_id' (present: {[c for c in wide.columns if c != '_origin']})")
    if batch is None:
        found = sorted({b for b in wide.get("batch", pd.Series(dtype=str)).dropna().unique()})
        if len(found) != 1:
            raise ContractError(f"{path}: column 'batch' must name exactly one batch, found {found}; pass --batch")
        batch = found[0]
    key = load_key(store, batch, key_path)
    dims = [LabelDimension(**d) for d in key["dimensions"]]
    if dimensions:
        unknown = sorted(set(dimensions) - {d.name for d in dims})
        if unknown:
            raise ContractError(f"--dimensions {unknown}: not in batch {batch!r} ({[d.name for d in dims]})")
        dims = [d for d in dims if d.name in dimensions]
    if fmt != "labelstudio":  # a Label Studio annotation without a field is a missing value, not a missing column
        for d in dims:
            for col, _ in d.fields():
                if col not in wide.columns:
                    raise ContractError(f"{path}: missing column {col!r} for dimension {d.name!r} "
                                        f"(import a subset with --dimensions)")
    items = {it["item_id"]: it for it in key["items"]}
    incumbent = key["incumbent"]
    if "annotator" not in wide.columns:
        wide["annotator"] = None

    long, quarantine = [], []

    def bad(origin: str, rid, field: str, reason: str, raw: dict) -> None:
        quarantine.append({"stage": "labels", "source": path, "row": _row_number(origin), "request_id": rid,
                           "field": field, "reason": f"{origin}: {reason}", "raw": json.dumps(raw, default=str)[:2000]})

    for rec in wide.to_dict("records"):
        origin = rec.pop("_origin")
        item_id = rec.get("item_id")
        it = items.get(item_id)
        if it is None:
            bad(origin, None, "item_id", f"item_id {item_id!r} is not in the key of batch {batch!r}", rec)
            continue
        if isinstance(rec.get("batch"), str) and rec["batch"] != batch:
            bad(origin, it["request_id"], "batch", f"batch {rec.get('batch')!r} but imported as batch {batch!r}", rec)
            continue
        annotator = rec.get("annotator")
        annotator = "anonymous" if annotator is None or (isinstance(annotator, float) and np.isnan(annotator)) else annotator
        for d in dims:
            for col, side in d.fields():
                raw = rec.get(col)
                if raw is None or (isinstance(raw, float) and np.isnan(raw)) or str(raw).strip() == "":
                    bad(origin, it["request_id"], col, f"no value for dimension {d.name!r}"
                        + (f" (answer {side.upper()})" if side else ""), rec)
                    continue
                canon, err = _parse(d, str(raw))
                if err:
                    bad(origin, it["request_id"], col, f"column {col!r}: {err}", rec)
                    continue
                model, value = _unblind(d, side, canon, it, incumbent)
                long.append({"request_id": it["request_id"], "model": model, "dimension": d.name, "value": value,
                             "annotator": str(annotator), "batch": batch, "item_id": item_id,
                             "inclusion_prob": it["inclusion_prob"], "weight": 1.0 / it["inclusion_prob"],
                             "design": key["design"], "_origin": origin, "_field": col, "_raw": rec})
    labels = pd.DataFrame(long)
    merged = [0]
    if len(labels):
        labels = _drop_duplicates(labels, store, bad, merged)
    out = labels.drop(columns=[c for c in labels.columns if c.startswith("_")]) if len(labels) else labels
    q = pd.DataFrame(quarantine, columns=QUARANTINE_COLUMNS)
    digest = hashlib.sha256(open(path, "rb").read()).hexdigest()[:10]
    shard = shard_id("labels", batch, digest)
    committed = False
    if len(out):
        checked = validate_labels(out, path)
        if len(checked.quarantine):  # cannot happen after the checks above; kept as a guard, reported if it does
            q = pd.concat([q, checked.quarantine], ignore_index=True)
        committed = store.write_shard("labels", shard, checked.valid, meta={"source": path, "batch": batch})
        if not committed:
            log.warning("%s: already imported (shard %s committed); nothing written", path, shard)
    if len(q) and (committed or not len(out)):
        store.write_shard("quarantine", shard, q[QUARANTINE_COLUMNS], meta={"source": path, "batch": batch})
    summary = {"file": path, "format": fmt, "batch": batch, "labels": int(len(out)), "committed": committed,
               "quarantined": int(len(q)), "reasons": _reason_counts(q),
               "merged_repeats": merged[0]}
    return summary


def _row_number(origin: str) -> int:
    digits = "".join(ch if ch.isdigit() else " " for ch in origin).split()
    return int(digits[0]) if digits else -1


def _unblind(d: LabelDimension, side: str | None, canon: str, it: dict, incumbent: str) -> tuple[str, float]:
    """Map a blinded answer to (model, value on the contract's scale)."""
    cand_is_a = it["a_is"] == "candidate"
    if d.kind == "pairwise":
        if canon == "tie":
            return it["candidate"], 0.5
        return it["candidate"], 1.0 if (canon == "A") == cand_is_a else 0.0
    model = it["candidate"] if (side == "a") == cand_is_a else incumbent
    return model, float(canon)


def _drop_duplicates(labels: pd.DataFrame, store: RunStore, bad, merged: list[int]) -> pd.DataFrame:
    """One judgment per (request, model, dimension, annotator). Different values quarantine the whole group (which
    one is right is unknown); a repeat within one item, or of a label already in the store, is quarantined as a
    duplicate; the same value for the same answer in two items (the incumbent's answer beside two candidates) is
    kept once and counted in ``merged``. Labels already in the store count as earlier members of the group."""
    key = ["request_id", "model", "dimension", "annotator"]
    prior = store.read_table("labels")
    prior_vals: dict[tuple, tuple[float, str]] = {}
    if len(prior):
        prior = prior.assign(annotator=prior["annotator"].fillna("anonymous").astype(str))
        for r in prior.itertuples():
            prior_vals.setdefault((str(r.request_id), str(r.model), str(r.dimension), r.annotator),
                                  (float(r.value), str(getattr(r, "batch", "?"))))
    keep = np.ones(len(labels), dtype=bool)
    for k, idx in labels.groupby(key, sort=False).indices.items():
        vals = labels["value"].to_numpy()[idx]
        origins = [labels["_origin"].iat[i] for i in idx]
        earlier = prior_vals.get(tuple(k))
        what = f"{k[3]} on request {k[0]!r}, model {k[1]!r}, dimension {k[2]!r}"
        if np.unique(np.r_[vals, [earlier[0]] if earlier else []]).size > 1:
            extra = f" and {earlier[0]} already imported in batch {earlier[1]}" if earlier else ""
            for i in idx:
                keep[i] = False
                bad(labels["_origin"].iat[i], k[0], labels["_field"].iat[i],
                    f"annotator {what} gave conflicting values {vals.tolist()} ({', '.join(origins)}){extra}",
                    labels["_raw"].iat[i])
            continue
        seen_items: dict[str, str] = {}
        for i in idx:
            item, origin = labels["item_id"].iat[i], labels["_origin"].iat[i]
            if earlier:
                reason = f"duplicate judgment by {what} (already imported in batch {earlier[1]})"
            elif item in seen_items:
                reason = f"duplicate judgment by {what} (first at {seen_items[item]})"
            elif seen_items:
                # the same answer (the incumbent's, shown beside two candidates) judged alike twice: one row
                keep[i] = False
                merged[0] += 1
                continue
            else:
                seen_items[item] = origin
                continue
            keep[i] = False
            bad(origin, k[0], labels["_field"].iat[i], reason, labels["_raw"].iat[i])
    return labels[keep].reset_index(drop=True)


def _reason_counts(q: pd.DataFrame) -> dict[str, int]:
    if q.empty:
        return {}
    kinds = q["reason"].str.split(": ", n=1).str[1].str.replace(r"'[^']*'|\[[^\]]*\]|\([^)]*\)|\d+(\.\d+)?", "_",
                                                                  regex=True)
    return {str(k): int(v) for k, v in kinds.value_counts().items()}


# -- weights and checks ---------------------------------------------------------------------------------------
def design_weights(store: RunStore) -> pd.DataFrame:
    """Inclusion probability of every (request_id, candidate) unit over all exported batches.

    ``inclusion_prob = 1 - prod_b (1 - pi_b)`` (calibration.design.combine_inclusion) with ``pi_b`` the unit's
    probability in batch b (0 where b's pool did not hold it); ``weight = 1 / inclusion_prob`` where positive.
    Columns: request_id, model, inclusion_prob, weight. This is what the calibration should weight labels by.
    """
    frames = []
    try:
        names = store.fs.ls(store.path("labels"), detail=False, refresh=True)
    except FileNotFoundError:
        names = []
    for name in sorted(names):
        base = name.rsplit("/", 1)[-1]
        if base.startswith("design-") and base.endswith(".parquet"):
            frames.append(pd.read_parquet(io.BytesIO(store.read_document("labels", base))).assign(b=base))
    if not frames:
        return pd.DataFrame(columns=["request_id", "model", "inclusion_prob", "weight"])
    allp = pd.concat(frames, ignore_index=True)
    allp["miss"] = 1.0 - allp["inclusion_prob"].clip(0, 1)
    comb = allp.groupby(["request_id", "candidate"])["miss"].prod().reset_index()
    comb["inclusion_prob"] = 1.0 - comb["miss"]
    comb["weight"] = np.where(comb["inclusion_prob"] > 0, 1.0 / comb["inclusion_prob"].where(comb["inclusion_prob"] > 0, 1), np.nan)
    return comb.rename(columns={"candidate": "model"})[["request_id", "model", "inclusion_prob", "weight"]]


def run_checks(cfg: RunConfig, store: RunStore, task: LabelTaskConfig) -> dict:
    """Agreement per dimension and representativeness per metric over all labels of the run; stored as
    labels/checks.json."""
    labels = store.read_table("labels")
    out: dict = {"agreement": {}, "representativeness": {}, "warnings": []}
    if labels.empty:
        return out
    labels = labels.astype({"request_id": str, "model": str})
    kinds = {d.name: d.kind for d in task.dimensions}
    for dim, rows in labels.groupby("dimension"):
        level = {"pairwise": "ordinal", "binary": "nominal", "ordinal": "ordinal"}.get(kinds.get(dim, ""), "interval")
        items = (rows["request_id"] + "\x1f" + rows["model"]).to_numpy()
        res = agreement.alpha_from_long(items, rows["annotator"].fillna("anonymous").astype(str).to_numpy(),
                                        rows["value"].to_numpy(dtype=float), level)
        out["agreement"][str(dim)] = res
        if res["items"] and np.isfinite(res["alpha"]) and res["alpha"] < 0.667:
            out["warnings"].append(f"dimension {dim}: Krippendorff's alpha {res['alpha']:.2f} < 0.667 on "
                                   f"{res['items']} items (Krippendorff's lowest bound for tentative conclusions)")
    scores = store.read_table("scores")
    cands = [c.name for c in cfg.candidates]
    weights = design_weights(store)
    if not scores.empty:
        scores = scores.astype({"request_id": str, "model": str})
        for cand in cands:
            wide = scores[scores["model"] == cand].pivot_table(index="request_id", columns="metric", values="value",
                                                              aggfunc="mean")
            lab_ids = labels.loc[labels["model"] == cand, "request_id"].unique()
            if wide.empty or len(lab_ids) == 0:
                continue
            pos = wide.index.get_indexer(lab_ids)
            lab_ids, pos = lab_ids[pos >= 0], pos[pos >= 0]
            w = weights[weights["model"] == cand].set_index("request_id")["weight"].reindex(lab_ids)
            w = w.fillna(1.0).to_numpy()  # labels imported without a design (e.g. a plain table): equal weight
            rows = agreement.representativeness(wide.to_numpy(dtype=float), pos, w, [str(c) for c in wide.columns])
            out["representativeness"][cand] = rows
            for r in rows:
                if r["warn"]:
                    out["warnings"].append(
                        f"candidate {cand}, metric {r['metric']}: labelled requests differ from all scored ones "
                        f"(weighted SMD {r['smd']:+.2f}, KS {r['ks']:.2f} > {r['ks_critical']:.2f} at n_eff "
                        f"{r['n_eff']:.0f}); the labels may not be representative")
    store.write_document("labels", "checks.json", json.dumps(out, indent=1, default=float))
    return out


# -- CLI ------------------------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="labels_command", metavar="SUBCOMMAND", required=True)
    ex = sub.add_parser("export", help="choose, blind and write a batch of tasks (CSV, Label Studio JSON)")
    ex.add_argument("--config", required=True, help="run config YAML (local path or s3://)")
    ex.add_argument("--out", required=True, help="folder for the annotator files (never holds the key)")
    ex.add_argument("--n", type=int, default=None, help="units to label per candidate")
    ex.add_argument("--from-decision", default=None, help="DIR/decision.json: ask for its labels_needed, on its segment")
    ex.add_argument("--design", choices=["random", "stratified", "active"], default="random", help="sampling design")
    ex.add_argument("--stratify-by", nargs="+", default=None, help="segment columns of the strata (default: traffic.segments)")
    ex.add_argument("--segment", default=None, help="only this segment, e.g. 'app=Grammarly' or 'app=X|region=EU'")
    ex.add_argument("--candidate", action="append", default=None, help="only this candidate (repeatable)")
    ex.add_argument("--tau", type=float, default=0.2, help="active design: uniform share, the floor tau*n/N of pi")
    ex.add_argument("--uncertainty-metric", default=None, help="active design: metric in [0,1] read as P(candidate better)")
    ex.add_argument("--uncertainty", default=None, help="active design: table (request_id, model, sd) of predicted label sd")
    ex.add_argument("--seed", type=int, default=0, help="seed of the design and the answer order")
    ex.add_argument("--batch", default=None, help="batch name (default: a timestamp)")
    ex.add_argument("--key", default=None, help="write the key here instead of the run store")
    ex.add_argument("--task-config", default=None, help="YAML of LabelTaskConfig (rubrics, scales)")
    im = sub.add_parser("import", help="un-blind, validate and commit annotators' answers")
    im.add_argument("--config", required=True, help="run config YAML (local path or s3://)")
    im.add_argument("file", help="answers: .csv, .jsonl, or a Label Studio export .json")
    im.add_argument("--key", default=None, help="key file if the export wrote it outside the run store")
    im.add_argument("--batch", default=None, help="batch name (default: the file's batch column)")
    im.add_argument("--dimensions", nargs="+", default=None, help="import only these dimensions")
    im.add_argument("--task-config", default=None, help="YAML of LabelTaskConfig (for the checks' dimension kinds)")
    ch = sub.add_parser("check", help="agreement and representativeness of the run's labels")
    ch.add_argument("--config", required=True, help="run config YAML (local path or s3://)")
    ch.add_argument("--task-config", default=None, help="YAML of LabelTaskConfig")


def main(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    store = RunStore(cfg.store, cfg.run_id)
    task = load_task_config(args.task_config, cfg)
    if args.labels_command == "export":
        res = export_batch(cfg, store, task, args.out, n=args.n, design_name=args.design, seed=args.seed,
                           candidates=args.candidate, stratify_by=args.stratify_by, segment=args.segment,
                           tau=args.tau, batch=args.batch, key_path=args.key, from_decision=args.from_decision,
                           uncertainty_metric=args.uncertainty_metric, uncertainty_path=args.uncertainty)
        if not res.get("batch"):
            print(res.get("message", "nothing to export"))
            return EXIT_OK
        print(f"batch {res['batch']}: {res['items']} tasks ({res['design']} design"
              + (f", segment {res['segment']}" if res["segment"] else "") + f"), per candidate {res['per_candidate']}")
        for kind, p in res["files"].items():
            print(f"  {kind}: {p}")
        print(f"  key (keep away from annotators): {res['key']}")
        return EXIT_OK
    if args.labels_command == "import":
        res = import_answers(cfg, store, args.file, key_path=args.key, batch=args.batch, dimensions=args.dimensions)
        print(f"{res['file']} ({res['format']}), batch {res['batch']}: {res['labels']} labels "
              f"{'committed' if res['committed'] else 'not committed (already imported or none valid)'}, "
              f"{res['quarantined']} quarantined")
        if res["merged_repeats"]:
            print(f"  {res['merged_repeats']} identical judgments of the same answer in two tasks kept once")
        for reason, count in res["reasons"].items():
            print(f"  quarantined {count}: {reason}")
    _print_checks(run_checks(cfg, store, task))
    return EXIT_OK


def _print_checks(checks: dict) -> None:
    for dim, a in checks["agreement"].items():
        alpha = "n/a" if not np.isfinite(a["alpha"]) else f"{a['alpha']:.3f}"
        print(f"agreement {dim}: Krippendorff's alpha ({a['level']}) {alpha} on {a['items']} items with >= 2 "
              f"annotators ({a['annotators']} annotators)")
    for w in checks["warnings"]:
        print(f"warning: {w}")

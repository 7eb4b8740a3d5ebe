"""Decide stage of the pipeline: the run's scores, labels and traffic segments -> decision/decision.json.

The same code as the standalone `baton decide` (jobs.decide.decide_tables), fed from the run store.
"""

from __future__ import annotations

import json
import logging

from calibration.data import InputError
from jobs.config import RunConfig
from jobs.decide import DecideSpec, DimensionSpec, decide_tables
from jobs.errors import ContractError
from jobs.store import RunStore

log = logging.getLogger(__name__)


def decision_spec(cfg: RunConfig) -> DecideSpec:
    d = cfg.decision
    return DecideSpec(
        incumbent=cfg.incumbent.name,
        candidates=[c.name for c in cfg.candidates],
        dimensions=[DimensionSpec(name=x.name, kind=x.kind, gating=x.gating) for x in d.dimensions],
        margin=d.margin, confidence=d.confidence, seed=d.seed, segments=list(cfg.traffic.segments),
        draws=d.draws, tune=d.tune, chains=d.chains,
    )


def decide_run(cfg: RunConfig, store: RunStore) -> dict:
    """Calibrate and decide from the run's tables; writes decision.json and returns it."""
    scores = store.read_table("scores", columns=["request_id", "model", "metric", "value"])
    labels = store.read_table("labels")
    if labels.empty:
        raise ContractError(f"{store.uri('labels')}: no human labels in this run (set labels.path or use `baton labels import`)")
    traffic = store.read_table("traffic", columns=["request_id", *cfg.traffic.segments]) if cfg.traffic.segments else None
    try:
        decision = decide_tables(scores, labels, traffic, decision_spec(cfg))
    except InputError as exc:
        raise ContractError(f"{store.uri()}: {exc}") from None
    decision["run_id"] = cfg.run_id
    store.write_document("decision", "decision.json", json.dumps(decision, indent=2, default=float))
    store.update_manifest(stages={"decide": {"verdicts": decision["verdicts"], "warnings": decision.get("warnings", [])}})
    return decision

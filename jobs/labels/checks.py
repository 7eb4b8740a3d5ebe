"""Design weights and checks of a run's human labels: bad rows, agreement between annotators, representativeness.

``screen_labels`` sets aside the rows of a labels table the decision cannot use (off-scale for the dimension's kind,
unknown dimension, request or model) as quarantine rows, so one bad label never ends a decision. Agreement per
dimension is Krippendorff's alpha; representativeness compares the labelled requests' automated scores with all
scored ones (weighted by the design). Both are printed by `baton labels import|check` and stored in
``labels/checks.json``.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from calibration import agreement
from jobs.config import RunConfig
from jobs.contracts import QUARANTINE_COLUMNS, Checked, validate_labels
from jobs.labels.design_table import read_design
from jobs.labels.task import LabelTaskConfig
from jobs.store import RunStore

# Values a dimension's kind allows on the labels table's scale (jobs.labels.task.unblind, calibration.data).
KIND_VALUES = {"pairwise": (0.0, 0.5, 1.0), "binary": (0.0, 1.0)}


# -- bad rows -------------------------------------------------------------------------------------------------
def screen_labels(df: pd.DataFrame, source: str, kinds: dict[str, str], *, requests=None, models=None,
                  other_dimensions: str = "quarantine", levels: dict[str, list[float]] | None = None) -> Checked:
    """The labels table's usable rows and, for the others, quarantine rows (``row`` = position in ``df``).

    Beyond the contract (jobs.contracts.validate_labels: ids, numeric value): a value off the dimension's kind
    (pairwise 0 / 0.5 / 1, binary 0 / 1, ordinal one of its declared ``levels``, else any finite number), a dimension not
    in ``kinds`` (``other_dimensions="keep"`` passes those rows through untouched, for `baton decide` on one
    dimension of a wider table), a request_id not in ``requests`` and a model not in ``models`` (when given).
    A table without the contract's columns is a ContractError naming the file and column."""
    checked = validate_labels(df, source)
    kept = np.setdiff1d(np.arange(len(df)), checked.quarantine["row"].to_numpy(dtype=int))
    valid = checked.valid
    bad = np.zeros(len(valid), dtype=bool)
    rows: list[dict] = []

    def add(mask: np.ndarray, field: str, reason) -> None:
        for pos in np.flatnonzero(mask & ~bad):
            bad[pos] = True
            r = valid.iloc[pos]
            rows.append({"stage": "labels", "source": source, "row": int(kept[pos]), "request_id": r["request_id"],
                         "field": field, "reason": reason(r),
                         "raw": json.dumps(df.iloc[int(kept[pos])].to_dict(), default=str)[:2000]})

    dim = valid["dimension"].astype(str)
    value = valid["value"].to_numpy(dtype=float)
    known = dim.isin(list(kinds)).to_numpy()
    if other_dimensions == "quarantine":
        add(~known, "dimension", lambda r: f"dimension {r['dimension']!r} is not one of the decision's dimensions "
                                           f"{sorted(kinds)}")
    for name, kind in kinds.items():
        allowed = KIND_VALUES.get(kind)
        if kind == "ordinal" and (levels or {}).get(name):
            allowed = tuple(float(v) for v in levels[name])
        off = ~np.isfinite(value) if allowed is None else ~np.isin(value, allowed)
        add((dim == name).to_numpy() & off, "value",
            lambda r, k=kind, a=allowed: f"value {float(r['value']):g} is off the {k} scale of dimension {r['dimension']!r}"
                                         + (f" (one of {list(a)})" if a else " (not a finite number)"))
    if requests is not None:
        add(~valid["request_id"].isin(set(requests)).to_numpy(), "request_id",
            lambda r: f"request_id {r['request_id']!r} is not in this run's traffic")
    if models is not None:
        add(~valid["model"].astype(str).isin(set(models)).to_numpy(), "model",
            lambda r: f"model {r['model']!r} is neither the incumbent nor a candidate {sorted(models)}")
    q = pd.concat([checked.quarantine, pd.DataFrame(rows, columns=QUARANTINE_COLUMNS)], ignore_index=True)
    return Checked(valid.loc[~bad].reset_index(drop=True), q.sort_values("row", kind="stable").reset_index(drop=True))


# -- weights and checks ---------------------------------------------------------------------------------------
def design_weights(store: RunStore) -> pd.DataFrame:
    """Inclusion probability of every (request_id, candidate) unit over all exported batches.

    ``inclusion_prob = 1 - prod_b (1 - pi_b)`` (calibration.design.combine_inclusion) with ``pi_b`` the unit's
    probability in batch b (0 where b's pool did not hold it), from the ``label_design`` table
    (jobs.labels.design_table.read_design); ``weight = 1 / inclusion_prob`` where positive.
    Columns: request_id, model, inclusion_prob, weight. This is what the calibration should weight labels by.
    """
    allp = read_design(store).dropna(subset=["inclusion_prob"])  # a legacy key alone has no pi
    if allp.empty:
        return pd.DataFrame(columns=["request_id", "model", "inclusion_prob", "weight"])
    allp["miss"] = 1.0 - allp["inclusion_prob"].clip(0, 1)
    comb = allp.groupby(["request_id", "model"])["miss"].prod().reset_index()
    comb["inclusion_prob"] = 1.0 - comb["miss"]
    comb["weight"] = np.where(comb["inclusion_prob"] > 0, 1.0 / comb["inclusion_prob"].where(comb["inclusion_prob"] > 0, 1), np.nan)
    return comb[["request_id", "model", "inclusion_prob", "weight"]]


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

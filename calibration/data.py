"""Long score/label tables -> compact arrays for calibration.

Layout: a dense grid of requests x "row models" with a metric tensor ``X[request, model, feature]``.
- pairwise dimensions: row models are the candidates (each row = candidate vs incumbent on a request);
- absolute dimensions: row model 0 is the incumbent, then the candidates (each row = one response).

Every numeric metric is a covariate. For pairwise dimensions a metric that also has incumbent rows enters as
candidate-minus-incumbent difference. Missing values are imputed with the model's column mean plus a missingness
indicator (only where missingness varies within a model: a metric absent for a whole model carries no information
about that model and would only duplicate its intercept). Constant columns are dropped; columns are standardised.
When there are more than ``max_features`` columns they are projected on their leading principal components,
computed on all scored rows (unsupervised, so the few labels are not used twice).
With labels from an unequal-probability design and every unit's inclusion probability known, ``log pi`` is one
more covariate (``design.log_pi``; calibration.design).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from calibration.checks import InputError, numeric as _numeric, require as _require
from calibration.design import (LOG_PI, any_unit_probability, label_probabilities, log_pi_feature,
                               unit_probabilities)
from calibration.features import FeatureTransform, fit_transform

KINDS = ("pairwise", "binary", "ordinal")
PAIRWISE_VALUES = (0.0, 0.5, 1.0)


ADJUSTMENTS = ("covariate", "weights", "none")


@dataclass
class CalibrationData:
    """Arrays for one dimension (all candidates at once)."""

    kind: str
    dimension: str
    incumbent: str
    candidates: list[str]
    row_models: list[str]  # models indexing axis 1 of X
    request_ids: np.ndarray  # (n_req,) object
    X: np.ndarray  # (n_req, n_models, n_feat) float32, standardised
    feature_names: list[str]
    seg_idx: np.ndarray  # (n_req,) int
    segment_names: list[str]  # "col=value|col=value" or ["all"]
    cat_values: np.ndarray  # (K,) float: human-scale value of each ordinal category
    # one entry per label row (annotator judgement)
    lab_req: np.ndarray
    lab_model: np.ndarray
    lab_cat: np.ndarray
    lab_annotator: np.ndarray  # int codes, -1 when unknown
    warnings: list[str] = field(default_factory=list)
    raw_metric_names: list[str] = field(default_factory=list)
    judge_raw: np.ndarray | None = None  # (n_req, n_models) raw judge value, for the judge-only baseline
    present: np.ndarray | None = None  # (n_req, n_models) bool: the model has score rows for the request
    # Sampling design of the labels (None: no design recorded, every label weighs the same). unit_pi[r, c] is the
    # probability that candidate c's unit on request r was chosen for labelling; lab_pi the probability of each
    # label row's cell (an incumbent cell is labelled when any candidate's unit on its request was chosen).
    unit_pi: np.ndarray | None = None  # (n_req, n_candidates) float, NaN for units no design covers
    lab_pi: np.ndarray | None = None  # (n_labels,) float in (0, 1]
    # how the model adjusts for the design: "covariate" (log pi is a feature), "weights" (pseudo-likelihood), None
    design_adjustment: str | None = None
    # conversation of each request (calibration.clustered): None when turns are independent requests
    cluster_idx: np.ndarray | None = None  # (n_req,) int code of the request's conversation
    cluster_names: np.ndarray | None = None  # (n_clusters,) object: the conversation ids
    # how X was made from the scores (FeatureSpec.rows: the same features for any subset of the scored requests)
    features: "FeatureSpec | None" = None
    # True when the arrays hold only some of the scored requests (the labelled ones and a sample; every sum over
    # the scored requests is then made elsewhere: calibration.scored, calibration.pipeline.Partial)
    partial: bool = False

    def estimand_mask(self) -> np.ndarray:
        """(n_req, n_candidates) bool: requests a candidate's estimand averages over (it was scored there)."""
        pres = self.present if self.present is not None else np.ones((self.n_req, self.n_models), bool)
        return pres if self.kind == "pairwise" else pres[:, 1:]

    @property
    def design_weighted(self) -> bool:
        """Whether the labels' inclusion probabilities vary, so estimates must weight them (Horvitz-Thompson)."""
        if self.lab_pi is None or len(self.lab_pi) == 0:
            return False
        return bool(np.ptp(self.lab_pi) > 1e-9 * self.lab_pi.max())

    def target_pi(self, c: int) -> np.ndarray:
        """(n_req,) probability that candidate c's estimand term on each request was labelled (1 without a design)."""
        if self.unit_pi is None:
            return np.ones(self.n_req)
        return self.unit_pi[:, c]

    @property
    def n_req(self) -> int:
        return len(self.request_ids)

    @property
    def n_models(self) -> int:
        return len(self.row_models)

    @property
    def n_cat(self) -> int:
        return len(self.cat_values)

    def labelled_cells(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Unique labelled (request, model) cells: req, model, mean label value, number of annotations (the
        cells of :meth:`cell_counts`, summarised)."""
        req, mod, counts, _ = self.cell_counts()
        n = counts.sum(axis=1)
        return req, mod, counts @ self.cat_values / n, n.astype(np.int64)

    def cell_counts(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Unique labelled (request, model) cells, in request-then-model order: req, model, annotations per category
        (cell, n_cat), and the first label row of each cell."""
        key = self.lab_req.astype(np.int64) * self.n_models + self.lab_model
        uniq, first, inv = np.unique(key, return_index=True, return_inverse=True)
        counts = np.zeros((len(uniq), self.n_cat))
        np.add.at(counts, (inv, self.lab_cat), 1.0)
        return uniq // self.n_models, uniq % self.n_models, counts, first


def _key(series: pd.Series):
    """A key column as strings; a categorical of strings stays categorical (int codes, one copy of each name), so
    a large scores table read compactly (jobs.compact.read_scores_compact) is never expanded row by row."""
    if isinstance(series.dtype, pd.CategoricalDtype) and all(isinstance(c, str) for c in series.cat.categories):
        return series.array
    return series.astype(str).to_numpy()


def _codes(series: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(int code per row, at most 32 bits, object array of the distinct string values) of a key column.

    A categorical of strings (jobs.compact.read_scores_compact) is used as is, dropping unused categories; other
    columns are factorised as strings."""
    if isinstance(series.dtype, pd.CategoricalDtype) and all(isinstance(c, str) for c in series.cat.categories):
        codes = np.asarray(series.cat.codes)
        cats = np.asarray(series.cat.categories, dtype=object)
        used = np.bincount(codes[codes >= 0], minlength=len(cats)) > 0
        if not used.all():
            remap = np.cumsum(used, dtype=np.int64) - 1
            codes = np.where(codes >= 0, remap[np.maximum(codes, 0)], -1)
            cats = cats[used]
        return codes if codes.dtype.itemsize <= 4 else codes.astype(np.int32), cats  # int8 for a few models
    codes, uniq = pd.factorize(series.astype(str).to_numpy())
    return codes.astype(np.int32), np.asarray(uniq, dtype=object)


def category_values(kind: str, values: np.ndarray) -> np.ndarray:
    if kind == "pairwise":
        return np.array(PAIRWISE_VALUES)
    if kind == "binary":
        return np.array([0.0, 1.0])
    uniq = np.unique(values)
    if np.allclose(uniq, np.round(uniq)):
        return np.arange(uniq.min(), uniq.max() + 1, dtype=float)
    return uniq


def declared_levels(kind: str, levels, dimension: str) -> np.ndarray:
    """The declared scale of an ordinal dimension as sorted category values.

    Declaring the scale matters because the categories are otherwise the range of the labels seen: with no label
    at 1, no posterior draw could ever predict a 1, and the estimand would be confined to the observed range."""
    if kind != "ordinal":
        raise InputError(f"dimension {dimension!r}: levels apply to ordinal dimensions only (kind is {kind!r})")
    try:
        vals = np.asarray([float(v) for v in levels], dtype=float)
    except (TypeError, ValueError) as e:
        raise InputError(f"dimension {dimension!r}: levels must be numbers, got {levels!r}") from e
    uniq = np.unique(vals)
    if len(uniq) < 2 or not np.isfinite(uniq).all() or len(uniq) != len(vals):
        raise InputError(f"dimension {dimension!r}: levels must be at least two distinct finite numbers, "
                         f"got {list(levels)!r}")
    return uniq


def _segments(traffic: pd.DataFrame | None, segment_cols: list[str] | None, request_ids: np.ndarray):
    if not segment_cols:
        return np.zeros(len(request_ids), dtype=np.int64), ["all"], []
    if traffic is None:
        raise InputError(f"segment columns {segment_cols} given without a traffic table")
    _require(traffic, ["request_id", *segment_cols], "traffic")
    # integer codes per column and per request, names built once per distinct combination: no string per request
    tid = traffic["request_id"].astype(str).to_numpy()
    first = ~pd.Series(tid).duplicated(keep="first").to_numpy()
    pos = pd.Index(tid[first]).get_indexer(pd.Index(request_ids))
    key = np.zeros(len(request_ids), dtype=np.int64)
    missing = pos < 0
    col_labels = []
    for c in segment_cols:
        codes, uniq = pd.factorize(traffic[c].to_numpy()[first], use_na_sentinel=True)
        code = np.where(pos >= 0, codes[np.maximum(pos, 0)] if len(codes) else -1, -1)
        missing |= code < 0
        col_labels.append(["<missing>", *pd.Index(uniq).astype("string").fillna("<missing>").tolist()])
        key = key * (len(uniq) + 1) + (code + 1)
    n_missing = int(missing.sum())
    warns = []
    if n_missing:
        warns.append(f"traffic: {n_missing} scored request(s) have no segment value; put in segment '<missing>'")
    combos, inverse = np.unique(key, return_inverse=True)
    combo_names = []
    for k in combos.tolist():
        parts = []
        for c, labels in zip(reversed(segment_cols), reversed(col_labels)):
            k, r = divmod(k, len(labels))
            parts.append(f"{c}={labels[r]}")
        combo_names.append("|".join(reversed(parts)))
    name_codes, names = pd.factorize(np.asarray(combo_names, dtype=object), sort=True)
    codes = name_codes[inverse.reshape(-1)] if len(combos) else np.zeros(0, dtype=np.int64)
    return codes.astype(np.int64), [str(n) for n in names], warns


def prepare(
    scores: pd.DataFrame,
    labels: pd.DataFrame,
    incumbent: str,
    candidates: list[str] | None,
    dimension: str,
    kind: str,
    traffic: pd.DataFrame | None = None,
    segment_cols: list[str] | None = None,
    max_features: int = 8,
    design: pd.DataFrame | None = None,
    design_adjustment: str = "covariate",
    metrics: list[str] | None = None,
    levels: list[float] | None = None,
    cluster_col: str | None = None,
) -> CalibrationData:
    """Validate and reshape the long tables (see docs/contracts) into a :class:`CalibrationData`.

    ``design`` (request_id, model, inclusion_prob; one row per candidate unit any label batch could have chosen)
    gives the labels' sampling design; without it the labels table's own ``inclusion_prob`` column is used when
    present. ``design_adjustment`` says how the model accounts for an unequal-probability design
    (calibration.design): ``covariate`` (needs ``design``; otherwise ``weights``), ``weights`` or ``none``
    (every label alike, design ignored everywhere). ``metrics`` restricts the covariates (and the judge-only
    baseline) to those metric names; None: every metric in scores. ``levels`` declares an ordinal dimension's scale (e.g. 1..5):
    every level is a category even when no label uses it, and a label outside it is an error. ``cluster_col``: a
    traffic column grouping requests into conversations (e.g. ``conversation_id``; calibration.clustered)."""
    if design_adjustment not in ADJUSTMENTS:
        raise InputError(f"design adjustment must be one of {ADJUSTMENTS}, got {design_adjustment!r}")
    if kind not in KINDS:
        raise InputError(f"dimension kind must be one of {KINDS}, got {kind!r}")
    _require(scores, ["request_id", "model", "metric", "value"], "scores")
    _require(labels, ["request_id", "model", "dimension", "value"], "labels")
    warns: list[str] = []
    rc, req_u = _codes(scores["request_id"])
    mc, mod_u = _codes(scores["model"])
    kc, met_u = _codes(scores["metric"])
    value = scores["value"]
    # a float column needs no coercion (NaN is a missing score); anything else is checked row by row
    value = value.to_numpy() if pd.api.types.is_float_dtype(value.dtype) and not isinstance(value.dtype, pd.ArrowDtype) \
        else _numeric(value, "scores", "value", allow_nan=True)
    models_in_scores = set(mod_u.tolist())
    if candidates is None or len(candidates) == 0:
        candidates = sorted(models_in_scores - {incumbent})
    candidates = list(dict.fromkeys(candidates))
    if incumbent in candidates:
        raise InputError(f"candidate {incumbent!r} is also the incumbent")
    for c in candidates:
        if c not in models_in_scores:
            raise InputError(f"scores: column 'model' has no rows for candidate {c!r}; models: {sorted(models_in_scores)}")
    if not candidates:
        raise InputError("no candidate given and none found in scores column 'model'")
    row_models = candidates if kind == "pairwise" else [incumbent, *candidates]
    # metric tensor (request, model, metric) from integer codes: one metric at a time, sums and counts per
    # (request, model) cell by bincount. Memory stays a few bytes per score row (int32 codes, no multi-key
    # groupby, no string per row), so a 1M-request run's ~20M score rows fit a small driver.
    order = np.argsort(req_u.astype(str), kind="stable")
    request_ids = req_u[order]
    rank = np.empty(len(order), dtype=np.int32)
    rank[order] = np.arange(len(order), dtype=np.int32)
    rc = rank[rc]
    req_index = pd.Index(request_ids)
    met_u = [str(m) for m in met_u]
    metric_names = sorted(met_u)
    if metrics is not None:
        unknown = sorted(set(metrics) - set(metric_names))
        if unknown:
            raise InputError(f"scores: no rows for metric(s) {unknown} named as covariates of {dimension!r}; "
                             f"metrics: {metric_names}")
        metric_names = [m for m in metric_names if m in set(metrics)]
    n_req, n_mod = len(request_ids), len(row_models)
    block_models = [incumbent, *candidates]
    tensor, present, dup = _score_tensor(rc, mc, kc, n_req, mod_u, met_u, value, metric_names, block_models,
                                         row_models)
    if dup:
        warns.append(f"scores: {dup} duplicate (request_id, model, metric) rows averaged")

    def block(model: str) -> np.ndarray:
        return tensor[:, block_models.index(model), :]

    inc_block = block(incumbent)
    cand_full = [block(c) for c in candidates]
    unit_pi, log_pi = None, None
    if design_adjustment != "none":
        unit_pi = unit_probabilities(design if design is not None else labels, "design" if design is not None
                                     else "labels", req_index, candidates)
    mode = None if unit_pi is None else design_adjustment
    if mode == "covariate":
        if design is None:  # only the labelled units' probabilities are known: the model cannot condition on pi
            mode = "weights"
        else:
            log_pi = log_pi_feature(unit_pi, kind, present, warns)
    has_inc = [bool(np.isfinite(inc_block[:, j]).any()) for j in range(len(metric_names))]
    raw, names = _raw_features(inc_block, cand_full, kind, metric_names, has_inc, log_pi)
    log_pi_floor = None if log_pi is None else float(np.min(log_pi))
    del log_pi
    del tensor, inc_block, cand_full
    judge_raw = _judge_raw(raw, names, metric_names, dimension, kind)
    X, feat_names, transform = fit_transform(raw, names, max_features, present)  # overwrites raw (scratch now)
    del raw
    spec = FeatureSpec(incumbent, list(candidates), kind, list(row_models), list(metric_names), has_inc,
                       log_pi_floor, transform, dimension)

    seg_idx, seg_names, seg_warn = _segments(traffic, segment_cols, request_ids)
    warns += seg_warn
    cluster_idx, cluster_names = None, None
    if cluster_col is not None:
        from calibration.clustered import cluster_codes  # noqa: PLC0415 (only conversation runs need it)

        cluster_idx, cluster_names = cluster_codes(traffic, cluster_col, request_ids, warns)

    # labels
    lab = labels[labels["dimension"].astype(str) == dimension]
    if len(lab) == 0:
        dims = sorted(labels["dimension"].astype(str).unique())
        raise InputError(f"labels: no rows with dimension == {dimension!r} (column 'dimension' has {dims})")
    lval = _numeric(lab["value"], "labels", "value", allow_nan=False)
    cat_values = declared_levels(kind, levels, dimension) if levels is not None else category_values(kind, lval)
    if levels is None and kind == "ordinal":
        warns.append(f"ordinal dimension {dimension!r} declares no levels: categories taken as the labels' range "
                     f"{cat_values.tolist()} (declare the dimension's levels)")
    cat = np.searchsorted(cat_values, lval)
    cat = np.clip(cat, 0, len(cat_values) - 1)
    off = ~np.isclose(cat_values[cat], lval)
    if off.any():
        pos = int(np.flatnonzero(off)[0])
        raise InputError(
            f"labels: row {lab.index[pos]!r}, column 'value': {float(lval[pos])!r} is not a valid {kind} label "
            f"(expected one of {cat_values.tolist()})"
        )
    lmodel = lab["model"].astype(str).to_numpy()
    lreq = lab["request_id"].astype(str).to_numpy()
    midx = pd.Index(row_models).get_indexer(lmodel)
    ridx = req_index.get_indexer(lreq)
    bad_model = midx < 0
    if bad_model.any():
        others = sorted(set(lmodel[bad_model]))
        warns.append(f"labels: {int(bad_model.sum())} row(s) of dimension {dimension!r} for model(s) {others} not in "
                     f"{row_models} ignored")
    absent = (ridx < 0) & ~bad_model
    if absent.any():
        ex = list(dict.fromkeys(lreq[absent]))[:5]
        warns.append(f"labels: {int(absent.sum())} row(s) for request_id(s) absent from scores quarantined "
                     f"(e.g. {ex})")
    keep = (midx >= 0) & (ridx >= 0)
    if not keep.any():
        raise InputError(f"labels: none of the {len(lab)} rows of dimension {dimension!r} match a scored "
                         f"request_id and model in {row_models}")
    if "annotator" in lab.columns:
        ann = pd.factorize(lab["annotator"].astype("string").fillna("<unknown>"))[0]
    else:
        ann = np.full(len(lab), -1)
    lab_pi = None
    if unit_pi is not None:
        lab_pi = label_probabilities(unit_pi, ridx[keep], midx[keep], kind, present, candidates, warns)
    return CalibrationData(
        kind=kind, dimension=dimension, incumbent=incumbent, candidates=candidates, row_models=row_models,
        request_ids=request_ids, X=X.astype(np.float32, copy=False), feature_names=feat_names, seg_idx=seg_idx,
        segment_names=seg_names, cat_values=cat_values, lab_req=ridx[keep].astype(np.int64),
        lab_model=midx[keep].astype(np.int64), lab_cat=cat[keep].astype(np.int64),
        lab_annotator=np.asarray(ann)[keep].astype(np.int64), warnings=warns, raw_metric_names=metric_names,
        judge_raw=judge_raw, present=present, unit_pi=unit_pi, lab_pi=lab_pi,
        design_adjustment=mode, cluster_idx=cluster_idx, cluster_names=cluster_names, features=spec,
    )


def _score_tensor(rc, mc, kc, n_req: int, mod_u, met_u: list[str], value: np.ndarray, metric_names: list[str],
                  block_models: list[str], row_models: list[str]) -> tuple[np.ndarray, np.ndarray, int]:
    """(request, block model, metric) mean score, (request, row model) presence and the number of duplicate score
    rows, from the scores' integer codes (request rank ``rc``, model ``mc``, metric ``kc``)."""
    n_mod = len(row_models)
    bm_of_code = pd.Index(block_models).get_indexer(pd.Index(np.asarray(mod_u, dtype=object)))
    n_all = len(mod_u)
    tensor = np.full((n_req, len(block_models), len(metric_names)), np.nan)
    dup = 0
    for j, m in enumerate(metric_names):
        rows = np.flatnonzero(kc == met_u.index(m)) if m in met_u else np.zeros(0, dtype=np.int64)
        cell = rc[rows].astype(np.int64) * n_all + mc[rows]
        dup += len(rows) - int(np.count_nonzero(np.bincount(cell, minlength=n_req * n_all)))
        fin = np.isfinite(value[rows])
        sums = np.bincount(cell[fin], weights=value[rows][fin], minlength=n_req * n_all).reshape(n_req, n_all)
        cnt = np.bincount(cell[fin], minlength=n_req * n_all).reshape(n_req, n_all)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(cnt > 0, sums / np.maximum(cnt, 1), np.nan)
        for code, b in enumerate(bm_of_code):
            if b >= 0:
                tensor[:, b, j] = mean[:, code]
        del rows, cell, sums, cnt, mean
    present = np.zeros((n_req, n_mod), dtype=bool)
    pm_of_code = pd.Index(row_models).get_indexer(pd.Index(np.asarray(mod_u, dtype=object)))
    for code, pm in enumerate(pm_of_code):  # one model at a time: no int64 index array per score row
        if pm >= 0:
            present[rc[mc == code], pm] = True
    return tensor, present, dup


def _raw_features(inc_block: np.ndarray, cand_full: list[np.ndarray], kind: str, metric_names: list[str],
                  has_inc: list[bool], log_pi: np.ndarray | None) -> tuple[np.ndarray, list[str]]:
    """(request, row model, column) raw covariates and their names: for pairwise dimensions a metric the incumbent
    has (``has_inc``) enters as candidate-minus-incumbent difference; log pi, when given, goes last."""
    n_req, n_mod = inc_block.shape[0], len(cand_full) + (kind != "pairwise")
    names = []
    # filled in place: no per-metric stacks held at once
    raw = np.empty((n_req, n_mod, len(metric_names) + (log_pi is not None)))
    if log_pi is not None:
        raw[:, :, -1] = log_pi
    for j, m in enumerate(metric_names):
        if kind == "pairwise":
            for i, cb in enumerate(cand_full):
                raw[:, i, j] = cb[:, j] - inc_block[:, j] if has_inc[j] else cb[:, j]
            names.append(f"{m}[diff]" if has_inc[j] else m)
        else:
            for i, b in enumerate([inc_block, *cand_full]):
                raw[:, i, j] = b[:, j]
            names.append(m)
    if log_pi is not None:
        names.append(LOG_PI)
    return raw, names


@dataclass
class FeatureSpec:
    """How :func:`prepare` made a dimension's features from the scores, so the same features can be made for any
    subset of the scored requests elsewhere (a shard on a Ray worker, :meth:`rows`): the models, the metrics,
    which enter as differences, the floor of log pi and the fitted transform (calibration.features)."""

    incumbent: str
    candidates: list[str]
    kind: str
    row_models: list[str]
    metric_names: list[str]
    has_inc: list[bool]
    log_pi_floor: float | None  # None: log pi is not a covariate
    transform: FeatureTransform
    dimension: str = ""  # for the raw judge value (the judge metrics naming it are preferred)

    def rows(self, scores: pd.DataFrame, design: pd.DataFrame | None = None, judge: bool = False) -> tuple:
        """(request ids sorted as strings, features (request, row model, feature) float32, presence (request, row
        model)) of the requests in ``scores`` (request_id, model, metric, value; every score row of each of its
        requests), as :func:`prepare` computed them on all scored requests. ``design``: the design table
        prepare was given, needed when log pi is a covariate. ``judge``: a fourth value, the raw judge value per
        cell (CalibrationData.judge_raw) or None."""
        rc, req_u = _codes(scores["request_id"])
        mc, mod_u = _codes(scores["model"])
        kc, met_u = _codes(scores["metric"])
        value = scores["value"].to_numpy(dtype=np.float64, na_value=np.nan)
        order = np.argsort(req_u.astype(str), kind="stable")
        request_ids = req_u[order]
        rank = np.empty(len(order), dtype=np.int32)
        rank[order] = np.arange(len(order), dtype=np.int32)
        block_models = [self.incumbent, *self.candidates]
        tensor, present, _ = _score_tensor(rank[rc], mc, kc, len(request_ids), mod_u, [str(m) for m in met_u],
                                           value, self.metric_names, block_models, self.row_models)
        log_pi = None
        if self.log_pi_floor is not None:
            if design is None:
                raise ValueError("log pi is a covariate of these features: pass the design table")
            unit_pi = unit_probabilities(design, "design", pd.Index(request_ids), self.candidates)
            pis = unit_pi if self.kind == "pairwise" else np.column_stack([any_unit_probability(unit_pi), unit_pi])
            known = np.isfinite(pis) & (pis > 0)
            log_pi = np.where(known, np.log(np.where(known, pis, 1.0)), self.log_pi_floor)
        raw, names = _raw_features(tensor[:, 0, :], [tensor[:, 1 + i, :] for i in range(len(self.candidates))],
                                   self.kind, self.metric_names, self.has_inc, log_pi)
        del tensor
        judge_raw = _judge_raw(raw, names, self.metric_names, self.dimension, self.kind) if judge else None
        X = self.transform.apply(raw, present)  # overwrites raw
        return (request_ids, X, present, judge_raw) if judge else (request_ids, X, present)


def _judge_raw(raw: np.ndarray, names: list[str], metric_names: list[str], dimension: str, kind: str):
    """Uncalibrated judge value per cell: mean of the ``judge.*`` metrics (those naming the dimension preferred)."""
    judge = [j for j, m in enumerate(metric_names) if m.startswith("judge.")]
    named = [j for j in judge if dimension in metric_names[j].split(".")]
    use = named or judge
    if not use:
        return None
    vals = []
    for j in use:
        v = raw[:, :, j]
        if kind == "pairwise" and names[j].endswith("[diff]"):
            v = (np.sign(v) + 1.0) / 2.0  # absolute judge scores -> which response the judge prefers
        vals.append(v)
    stack = np.stack(vals, axis=2)
    with np.errstate(all="ignore"):
        cnt = np.isfinite(stack).sum(axis=2)
        out = np.where(cnt > 0, np.nansum(stack, axis=2) / np.maximum(cnt, 1), np.nan)
    return out


def segment_codes(traffic: pd.DataFrame | None, segment_cols: list[str] | None, request_ids: np.ndarray,
                  segment_names: list[str]) -> np.ndarray:
    """(n_req,) codes in ``segment_names`` (a :class:`CalibrationData`'s, from all scored requests) of the segments
    of ``request_ids``, from ``traffic`` rows that include theirs: the same names as :func:`prepare` gives them."""
    codes, names, _ = _segments(traffic, segment_cols, request_ids)
    pos = pd.Index(list(segment_names)).get_indexer(pd.Index(names))
    if (pos < 0).any():
        raise InputError(f"traffic: segment {names[int(np.flatnonzero(pos < 0)[0])]!r} is not among the decision's "
                         f"segments {list(segment_names)[:10]}")
    return pos[codes] if len(codes) else np.zeros(0, dtype=np.int64)


def segment_names(combos: pd.DataFrame, segment_cols: list[str]) -> list[str]:
    """The names :func:`prepare` gives the segments of requests with these segment values (``combos``: one row per
    distinct combination of ``segment_cols``), so names made from a part of the requests match theirs."""
    if not segment_cols:
        return ["all"]
    ids = np.asarray([str(i) for i in range(len(combos))], dtype=object)
    return _segments(combos.reset_index(drop=True).assign(request_id=ids), segment_cols, ids)[1]

"""Table validation and reshaping (no sampling)."""
import numpy as np
import pandas as pd
import pytest

from calibration.data import InputError, prepare


def _tables():
    rid = [f"q{i}" for i in range(6)]
    rows = []
    for i, r in enumerate(rid):
        for m in ("inc", "cand"):
            rows.append((r, m, "judge.abs.correctness", float(i % 3) if not (m == "cand" and i == 2) else np.nan))
            rows.append((r, m, "check.constant", 1.0))
        rows.append((r, "cand", "check.length_ratio", 1.0 + 0.1 * i))  # candidate-only metric
    scores = pd.DataFrame(rows, columns=["request_id", "model", "metric", "value"])
    labels = pd.DataFrame({"request_id": ["q0", "q0", "q1", "q1", "q1", "zz"],
                           "model": ["inc", "cand", "inc", "cand", "cand", "cand"],
                           "dimension": "correctness", "value": [1, 0, 1, 1, 0, 1],
                           "annotator": ["a", "a", "a", "a", "b", "a"]})
    return scores, labels


def test_prepare_absolute_imputes_drops_and_quarantines():
    scores, labels = _tables()
    d = prepare(scores, labels, "inc", ["cand"], "correctness", "binary")
    assert d.row_models == ["inc", "cand"]
    assert d.X.shape[:2] == (6, 2)
    names = d.feature_names
    assert "check.constant" not in names  # constant metric dropped
    assert "judge.abs.correctness[missing]" in names  # NaN -> indicator
    assert "check.length_ratio" in names and "check.length_ratio[missing]" not in names  # absent for a whole model
    assert np.isfinite(d.X).all()
    assert len(d.lab_cat) == 5  # the label of request 'zz' (not scored) is quarantined
    assert any("absent from scores" in w and "zz" in w for w in d.warnings)
    req, mod, ybar, cnt = d.labelled_cells()
    assert cnt.max() == 2 and ybar[cnt == 2][0] == 0.5  # two annotators kept as two terms


def test_prepare_pairwise_uses_differences():
    scores, labels = _tables()
    labels = labels.assign(dimension="quality", value=[0.5, 1.0, 0.0, 0.5, 1.0, 0.0])
    cand_judge = (scores.model == "cand") & (scores.metric == "judge.abs.correctness")
    scores.loc[cand_judge, "value"] = [0.0, 2.0, np.nan, 1.0, 0.0, 1.0]
    d = prepare(scores, labels[labels.model == "cand"], "inc", ["cand"], "quality", "pairwise")
    assert "judge.abs.correctness[diff]" in d.feature_names
    assert list(d.cat_values) == [0.0, 0.5, 1.0]


def test_bad_value_names_row_and_column():
    scores, labels = _tables()
    scores = scores.astype({"value": object})
    scores.loc[3, "value"] = "oops"
    with pytest.raises(InputError, match=r"scores: row 3 .*column 'value'.*'oops'"):
        prepare(scores, labels, "inc", ["cand"], "correctness", "binary")


def test_bad_label_and_missing_column():
    scores, labels = _tables()
    labels.loc[1, "value"] = 3
    with pytest.raises(InputError, match=r"labels: row 1, column 'value': 3.0 is not a valid binary label"):
        prepare(scores, labels, "inc", ["cand"], "correctness", "binary")
    with pytest.raises(InputError, match=r"labels: missing required column\(s\) \['dimension'\]"):
        prepare(scores, labels.drop(columns="dimension"), "inc", ["cand"], "correctness", "binary")
    with pytest.raises(InputError, match="no rows with dimension == 'style'"):
        prepare(scores, labels, "inc", ["cand"], "style", "ordinal")
    with pytest.raises(InputError, match="candidate 'nobody'"):
        prepare(scores, labels, "inc", ["nobody"], "correctness", "binary")


def test_segments_from_traffic():
    scores, labels = _tables()
    traffic = pd.DataFrame({"request_id": [f"q{i}" for i in range(5)], "region": list("aabba")})
    d = prepare(scores, labels, "inc", ["cand"], "correctness", "binary", traffic=traffic, segment_cols=["region"])
    assert d.segment_names == ["region=<missing>", "region=a", "region=b"]
    assert any("no segment value" in w for w in d.warnings)
    with pytest.raises(InputError, match="traffic: missing required column"):
        prepare(scores, labels, "inc", ["cand"], "correctness", "binary", traffic=traffic, segment_cols=["app"])


def _ordinal_labels(values):
    return pd.DataFrame({"request_id": [f"q{i}" for i in range(len(values))], "model": "cand",
                         "dimension": "style", "value": values})


def test_declared_levels_are_the_categories():
    scores, _ = _tables()
    labels = _ordinal_labels([2, 3, 4, 3])
    d = prepare(scores, labels, "inc", ["cand"], "style", "ordinal", levels=[1, 2, 3, 4, 5])
    # no label at 1 or 5, yet both are categories a draw can predict
    assert list(d.cat_values) == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert list(d.cat_values[d.lab_cat]) == [2.0, 3.0, 4.0, 3.0]
    undeclared = prepare(scores, labels, "inc", ["cand"], "style", "ordinal")
    assert list(undeclared.cat_values) == [2.0, 3.0, 4.0]
    assert any("declares no levels" in w for w in undeclared.warnings)


def test_label_outside_declared_levels_names_table_row_and_column():
    scores, _ = _tables()
    labels = _ordinal_labels([2, 3, 6, 3])
    with pytest.raises(InputError, match=r"labels: row 2, column 'value': 6.0 is not a valid ordinal label "
                                         r"\(expected one of \[1.0, 2.0, 3.0, 4.0, 5.0\]\)"):
        prepare(scores, labels, "inc", ["cand"], "style", "ordinal", levels=[1, 2, 3, 4, 5])
    with pytest.raises(InputError, match="levels apply to ordinal dimensions only"):
        prepare(scores, _tables()[1], "inc", ["cand"], "correctness", "binary", levels=[0, 1])
    with pytest.raises(InputError, match="at least two distinct"):
        prepare(scores, labels, "inc", ["cand"], "style", "ordinal", levels=[1, 1])


def test_design_covariate_stays_out_of_principal_components():
    rng = np.random.default_rng(0)
    n, rid = 60, [f"q{i:02d}" for i in range(60)]
    scores = pd.concat([pd.DataFrame({"request_id": rid, "model": "cand", "metric": f"check.m{j}",
                                      "value": rng.normal(size=n)}) for j in range(12)], ignore_index=True)
    pi = np.where(np.arange(n) < 30, 0.1, 0.4)  # an unequal-probability design over all units
    design = pd.DataFrame({"request_id": rid, "model": "cand", "inclusion_prob": pi})
    pick = [0, 5, 31, 40, 45, 50]
    labels = pd.DataFrame({"request_id": [rid[i] for i in pick], "model": "cand", "dimension": "quality",
                           "value": [1.0, 0.5, 0.0, 1.0, 1.0, 0.5], "inclusion_prob": pi[pick]})
    d = prepare(scores, labels, "inc", ["cand"], "quality", "pairwise", design=design)
    assert d.design_adjustment == "covariate"
    # 12 metric columns -> 8 principal components, and log pi beside them, unmixed
    assert d.feature_names == [f"pc{i}" for i in range(1, 9)] + ["design.log_pi"]
    logpi = d.X[:, 0, -1]
    assert np.corrcoef(logpi, np.log(pi))[0, 1] == pytest.approx(1.0)

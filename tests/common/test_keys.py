"""common.keys.isin against pandas' own isin, on every input shape the stages pass it."""
import numpy as np
import pandas as pd
import pytest

from common.keys import isin


def _ids(n: int, step: int = 1, start: int = 0) -> list[str]:
    return [f"r{i:08d}" for i in range(start, start + n * step, step)]


@pytest.mark.parametrize("left_kind", ["str", "object", "category", "index", "list", "numpy"])
@pytest.mark.parametrize("right_kind", ["str", "object", "category", "index", "set", "numpy"])
def test_matches_pandas_isin(left_kind, right_kind):
    left, right = _ids(3000), _ids(2000, step=3, start=1)
    expected = pd.Series(left, dtype=object).isin(set(right)).to_numpy()
    assert 0 < expected.sum() < len(left)  # some in, some out: the test can fail either way

    def shape(values, kind):
        return {"str": lambda: pd.Series(values, dtype="str"), "object": lambda: pd.Series(values, dtype=object),
                "category": lambda: pd.Series(values).astype("category"), "index": lambda: pd.Index(values),
                "list": lambda: list(values), "set": lambda: set(values),
                "numpy": lambda: np.asarray(values, dtype=object)}[kind]()

    got = isin(shape(left, left_kind), shape(right, right_kind))
    assert got.dtype == bool and len(got) == len(left)
    np.testing.assert_array_equal(got, expected)


def test_missing_values_and_empty_inputs():
    left = pd.Series(["a", None, "b"], dtype=object)
    np.testing.assert_array_equal(isin(left, ["a"]), left.isin(["a"]).to_numpy())
    np.testing.assert_array_equal(isin(left, ["a", None]), left.isin(["a", None]).to_numpy())
    assert isin(np.array([], dtype=object), ["a"]).shape == (0,)
    np.testing.assert_array_equal(isin(["a", "b"], []), [False, False])
    # a categorical with no categories (every value missing)
    np.testing.assert_array_equal(isin(pd.Series([None, None], dtype="category"), ["a"]), [False, False])


def test_categorical_with_missing_values_and_unused_categories():
    s = pd.Series(pd.Categorical(["a", None, "c", "a"], categories=["a", "b", "c", "z"]))
    np.testing.assert_array_equal(isin(s, ["a", "b"]), [True, False, False, True])
    np.testing.assert_array_equal(isin(s, ["c", None]), [False, True, True, False])  # a missing value is in
    np.testing.assert_array_equal(isin(pd.CategoricalIndex(s), {"c"}), [False, False, True, False])
    np.testing.assert_array_equal(isin(s, []), [False] * 4)

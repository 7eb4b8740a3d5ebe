"""``isin``: membership of request ids (or any string keys) in another set of them, by Arrow's hash set.

pandas 3 keeps strings as Arrow ``str`` arrays, and its ``Series.isin`` / ``Index.isin`` on them builds the set
from ``values`` one Python scalar at a time (``pandas.core.arrays.string_arrow.ArrowStringArray.isin``): about
2-5 us per value, so checking 10M traffic ids against a labels file, or a shard's ids against its traffic,
spent most of its time there (6.3 of 6.9 s of the labels stage at 1M requests, measured with cProfile).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc


def _strings(x) -> pa.Array | pa.ChunkedArray:
    """``x`` (numpy, pandas, Arrow or a list/set) as an Arrow array of strings, dictionaries decoded."""
    if isinstance(x, (set, frozenset)):
        x = list(x)
    if isinstance(x, (pd.Series, pd.Index)) and isinstance(x.dtype, pd.CategoricalDtype):
        x = x.astype(object) if not len(x.cat.categories) else x
    arr = x if isinstance(x, (pa.Array, pa.ChunkedArray)) else pa.array(
        x.to_numpy(dtype=object) if isinstance(x, (pd.Series, pd.Index)) and x.dtype == object else x,
        from_pandas=True)
    if pa.types.is_dictionary(arr.type):
        arr = arr.cast(arr.type.value_type)
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        arr = arr.cast(pa.string())  # e.g. an all-null or empty object array (Arrow's null type)
    return arr.cast(pa.large_string())  # one type on both sides: is_in wants them equal


def isin(values, wanted) -> np.ndarray:
    """Boolean array: whether each of ``values`` is one of ``wanted`` (both string keys; a missing value is in
    ``wanted`` only when ``wanted`` holds one, as in pandas)."""
    if len(values) == 0:
        return np.zeros(0, dtype=bool)
    if isinstance(values, (pd.Series, pd.Index)) and isinstance(values.dtype, pd.CategoricalDtype):
        # each distinct value once, then spread by code (a missing value's code is -1)
        cats = values.cat.categories if isinstance(values, pd.Series) else values.categories
        codes = np.asarray(values.cat.codes if isinstance(values, pd.Series) else values.codes)
        missing = bool((codes < 0).any()) and bool(isin(np.array([None], dtype=object), wanted)[0])
        hit = np.append(isin(pd.Index(cats.to_numpy(dtype=object)), wanted) if len(cats) else np.zeros(0, bool),
                        missing)
        return hit[codes]
    left = _strings(values)
    right = _strings(wanted)
    if isinstance(right, pa.ChunkedArray):
        right = right.combine_chunks()
    out = pc.is_in(left, value_set=right)
    return np.asarray(out.to_numpy(zero_copy_only=False), dtype=bool)

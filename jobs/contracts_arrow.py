"""The traffic contract's message checks on an Arrow column, vectorised (jobs.contracts.validate_traffic).

Traffic read from Parquet holds ``messages`` as ``list<struct<role, content>>``. Turning every row into Python
lists of dicts, checking them one by one and turning them back into Arrow for the traffic shard was most of the
sample stage's time (about 12 of 20 us a row). Here the rows that pass every check of
jobs.contracts._normalise_messages *and end with a user turn* are found with Arrow compute and kept as Arrow;
every other row (a trailing incumbent answer, anything wrong or unusual) is left to the Python checks, which
give the exact reason. So this path only ever accepts a subset of what the Python path accepts, with the same
result for it (tests/jobs/test_contracts_arrow.py compares the two on every case).
"""
from __future__ import annotations

import functools

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])
MESSAGES = pa.list_(MESSAGE)


@functools.cache
def _not_space_pattern() -> str:
    """A regex class matching any character Python's ``str.strip()`` keeps: RE2's ``\\s`` is ASCII only, so the
    class lists every code point that ``str.isspace`` calls whitespace (a content is non-empty after
    ``strip()`` exactly when it holds one character outside that set)."""
    spaces = [c for c in map(chr, range(0x110000)) if c.isspace()]
    return "[^" + "".join(f"\\x{{{ord(c):x}}}" for c in spaces) + "]"


def arrow_list_column(col: pd.Series) -> pa.ChunkedArray | None:
    """The Arrow array behind a pandas column of lists, or None when it is not an Arrow-backed list column."""
    if not isinstance(col.dtype, pd.ArrowDtype):
        return None
    arr = col.array._pa_array
    return arr if pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type) else None


def fast_messages(col: pd.Series, roles: set[str]) -> tuple[np.ndarray, pa.Array] | None:
    """(which rows pass, their messages as ``list<struct<role: string, content: string>>``) for an Arrow-backed
    messages column, or None when the column is not one (or its elements are not role/content structs).

    A row passes when it is a non-empty list of non-null structs whose roles are all in ``roles``, whose contents
    are all non-null strings, whose last role is ``user`` and whose last content is not blank; extra struct fields
    are dropped, as the Python path drops extra keys."""
    arr = arrow_list_column(col)
    if arr is None:
        return None
    arr = arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
    item = arr.type.value_type
    if not pa.types.is_struct(item) or item.get_field_index("role") < 0 or item.get_field_index("content") < 0:
        return None
    if not all(pa.types.is_string(item.field(f).type) or pa.types.is_large_string(item.field(f).type)
               for f in ("role", "content")):
        return None
    lens = pc.fill_null(pc.list_value_length(arr), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    flat = pc.list_flatten(arr)  # the rows' elements, in order (null rows hold none)
    role, content = pc.struct_field(flat, "role"), pc.struct_field(flat, "content")
    good = pc.and_(pc.and_(pc.is_valid(flat), pc.is_in(role, value_set=pa.array(sorted(roles), role.type))),
                   pc.is_valid(content))
    good = pc.fill_null(good, False).to_numpy(zero_copy_only=False)
    starts = np.concatenate([[0], np.cumsum(lens)])
    ok = lens > 0
    # every element good: no bad element inside [start, end)
    bad_before = np.concatenate([[0], np.cumsum(~good)])
    ok &= bad_before[starts[1:]] == bad_before[starts[:-1]]
    last = np.maximum(starts[1:] - 1, 0)
    if len(flat):  # else every row is empty or missing, so none passed already
        last_role = pc.take(role, pa.array(last)).to_numpy(zero_copy_only=False)
        last_text = pc.take(content, pa.array(last))
        ok &= last_role == "user"
        ok &= pc.fill_null(pc.match_substring_regex(last_text, _not_space_pattern()), False).to_numpy(
            zero_copy_only=False)
    ok &= arr.is_valid().to_numpy(zero_copy_only=False)
    keep = pa.array(ok)
    rows = pc.filter(arr, keep)
    kept = pc.list_flatten(rows)
    offsets = np.concatenate([[0], np.cumsum(lens[ok])]).astype(np.int32)
    values = pa.StructArray.from_arrays([pc.cast(pc.struct_field(kept, "role"), pa.string()),
                                         pc.cast(pc.struct_field(kept, "content"), pa.string())],
                                        fields=list(MESSAGE))
    return ok, pa.ListArray.from_arrays(pa.array(offsets), values, type=MESSAGES)


def messages_column(n: int, fast_rows: np.ndarray, fast: pa.Array, slow: dict[int, list[dict] | None]) -> pd.Series:
    """One Arrow-backed messages column of ``n`` rows: ``fast`` at ``fast_rows`` (in order), the Python
    messages ``slow[pos]`` elsewhere (None for a row without messages)."""
    slow_pos = np.array(sorted(slow), dtype=np.int64)
    rest = pa.array([slow[p] for p in slow_pos.tolist()], type=MESSAGES)
    where = np.empty(n, dtype=np.int64)
    where[fast_rows] = np.arange(len(fast_rows))
    where[slow_pos] = len(fast_rows) + np.arange(len(slow_pos))
    both = pa.concat_arrays([fast, rest]) if len(rest) else fast
    return pd.Series(pd.arrays.ArrowExtensionArray(both.take(pa.array(where))))

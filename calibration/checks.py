"""Input checks shared by the table readers of calibration: errors that name the table, row and column."""
from __future__ import annotations

import numpy as np
import pandas as pd


class InputError(ValueError):
    """Bad input table; the message names the table, row and column."""


def require(df: pd.DataFrame, cols: list[str], table: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise InputError(f"{table}: missing required column(s) {missing}; found {list(df.columns)}")


def numeric(series: pd.Series, table: str, col: str, allow_nan: bool) -> np.ndarray:
    vals = pd.to_numeric(series, errors="coerce")
    bad = vals.isna() & series.notna()
    if not allow_nan:
        bad = bad | series.isna()
    if bad.any():
        pos = int(np.flatnonzero(bad.to_numpy())[0])
        raise InputError(
            f"{table}: row {pos} (0-based data row), column '{col}': value {series.iloc[pos]!r} is not a number"
            f" ({int(bad.sum())} such rows)"
        )
    return vals.to_numpy(dtype=float)

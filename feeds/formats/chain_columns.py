"""Column helpers shared by the option-chain formats: required and optional vendor
columns, vendor greeks, and implied volatility in the canonical unit (a fraction)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Literal

import numpy as np
import pandas as pd

from feeds.formats.sniffing import missing_columns, per_unique, to_float
from plumbing.errors import DataError

__all__ = ["GREEKS", "iv_fraction", "optional_columns", "require_columns"]

GREEKS = ("delta", "gamma", "vega", "theta")


def require_columns(raw: pd.DataFrame, needed: Mapping[str, str], source: str, fmt: str,
                    layout: str, display: Callable[[str], str] = str) -> None:
    """Raise naming every column of ``needed`` (canonical -> vendor) that ``raw`` lacks."""
    absent = [display(v) for v in needed.values() if v not in raw.columns]
    if absent:
        raise missing_columns(source, absent,
                              f"the {fmt} columns {[display(v) for v in needed.values()]}",
                              f"use the file as exported ({layout})")


def optional_columns(raw: pd.DataFrame, frame: pd.DataFrame, names: dict[str, str],
                     optional: Mapping[str, str], source: str,
                     display: Callable[[str], str] = str) -> None:
    """Copy the optional vendor columns ``raw`` has into ``frame`` (canonical names)."""
    for canon, col in optional.items():
        if col in raw.columns:
            names[canon] = display(col)
            if canon == "underlying_index":
                frame[canon] = per_unique(raw[col], str.strip).astype("string")
            else:
                frame[canon] = to_float(raw[col], display(col), source)


def iv_fraction(iv: pd.Series, unit: Literal["percent", "fraction"], source: str,
                column: str) -> pd.Series:
    """Implied volatility as a fraction; 0 (no mark) becomes NaN for percent layouts.

    The unit is checked on the median of the quoted values: a percent layout whose IV
    looks like fractions (median < 2) or a fraction layout that looks like percent
    (median > 5) is refused.
    """
    values = iv.to_numpy(dtype=np.float64, na_value=np.nan)
    negative = values < 0
    if negative.any():
        i = int(np.flatnonzero(negative)[0])
        raise DataError(f"negative implied volatility {values[i]}", source=source, row=i,
                        column=column, expected="IV >= 0 (0 or empty = no quote)",
                        fix="repair or remove the row")
    quoted = values[values > 0]
    median = float(np.median(quoted)) if len(quoted) else float("nan")
    if unit == "percent":
        if median < 2.0:
            raise DataError(f"implied volatility looks like a fraction (median {median:.3g})",
                            source=source, column=column,
                            expected="percent in this format (55 = 55%)",
                            fix="use the vendor's original file; if IV was converted to "
                                "fractions, write the chain as canonical Parquet instead")
        return pd.Series(np.where(values > 0, values / 100.0, np.nan), index=iv.index)
    if median > 5.0:
        raise DataError(f"implied volatility looks like percent (median {median:.3g})",
                        source=source, column=column,
                        expected="a fraction in canonical chains (0.55 = 55%)",
                        fix="divide mark_iv by 100")
    return pd.Series(values, index=iv.index)

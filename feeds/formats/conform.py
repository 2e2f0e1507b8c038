"""The conform step: format-independent checks and the canonical schema, for every kind.

Every table a loader returns passes through :func:`conform` exactly once per frame (the
dispatch calls it on what a format's ``map`` produced). It runs, in file order so that
errors name the file's rows and columns:

- bars: OHLC consistency, sorted and unique timestamps (:func:`check_bars`);
- chains: option rights to ``C``/``P``, a default ``multiplier`` of 1;
- one row per key: chain contracts per snapshot, funding / open-interest timestamps,
  futures (timestamp, expiry) (:func:`check_unique`);
- the canonical schema of :mod:`feeds.schema` (columns, types, time zones, NaN and sign
  rules), its errors naming the file's column rather than the canonical one;
- barrier books: dealer side, expiry after ``ts``, knock-outs already dead, IV unit.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import pyarrow as pa

from feeds.formats.base import Kind, Order
from feeds.formats.generic import OHLCV
from feeds.formats.sniffing import map_values, to_float
from feeds.schema import (
    BARRIERS,
    BARS,
    CHAIN,
    FUNDING,
    FUTURES,
    LIQUIDATIONS,
    PERP_OI,
    Schema,
)
from feeds.schema import conform as conform_schema
from plumbing.errors import DataError
from plumbing.timeconv import to_epoch_us

__all__ = ["SCHEMAS", "UNIQUE_KEYS", "check_bars", "check_unique", "conform"]

SCHEMAS: dict[Kind, Schema] = {"bars": BARS, "chain": CHAIN, "funding": FUNDING, "oi": PERP_OI,
                               "liquidations": LIQUIDATIONS, "futures": FUTURES,
                               "barriers": BARRIERS}
#: Columns that identify a row; two rows with the same key are refused.
UNIQUE_KEYS: dict[Kind, tuple[str, ...]] = {
    "chain": ("ts", "expiry", "strike", "right"), "funding": ("ts",), "oi": ("ts",),
    "futures": ("ts", "expiry")}
_RIGHTS = {"C": "C", "CALL": "C", "P": "P", "PUT": "P"}


def conform(kind: Kind, frame: pd.DataFrame, source: str, *,
            names: Mapping[str, str] | None = None, order: Order = "ascending",
            unique: bool = True) -> pa.Table:
    """Check a mapped frame of ``kind`` and return it as a canonical Arrow table.

    Parameters
    ----------
    kind
        The input kind; its schema is ``SCHEMAS[kind]``.
    frame
        Canonical columns in file order (as a format's ``map`` returns them).
    source
        The file, named in errors.
    names
        Canonical column -> the file's column, so errors name what the user sees.
    order
        Bars: ``"either"`` also accepts timestamps sorted newest first.
    unique
        Refuse two rows with the same :data:`UNIQUE_KEYS` (off while a chain still holds
        several quotes per contract and snapshot).

    Returns
    -------
    pyarrow.Table
        The schema's columns, sorted by its sort keys.

    Raises
    ------
    DataError
        Naming the file, the 0-based row (file order) and the column.
    """
    names = dict(names or {})
    if kind == "bars":
        check_bars(frame, source, order=order, time_column=names.get("ts", "ts"))
    elif kind == "chain":
        frame = frame.assign(right=map_values(
            frame["right"], _RIGHTS, source=source, column=names.get("right", "right"),
            what="option right", expected="call/put or C/P (any case)"))
        if "multiplier" not in frame:
            frame["multiplier"] = 1.0
    if unique:
        check_unique(kind, frame, source, names)
    try:
        table = conform_schema(frame, SCHEMAS[kind], source)
    except DataError as exc:
        if exc.column is None or names.get(exc.column, exc.column) == exc.column:
            raise
        raise DataError(exc.problem, source=exc.source, row=exc.row, column=names[exc.column],
                        expected=exc.expected, fix=exc.fix) from None
    if kind == "barriers":
        _check_barriers(frame, table, source, names)
    return table


def check_unique(kind: Kind, frame: pd.DataFrame, source: str,
                 names: Mapping[str, str] | None = None) -> None:
    """Refuse the first row whose :data:`UNIQUE_KEYS` repeat an earlier row's."""
    keys = list(UNIQUE_KEYS.get(kind, ()))
    if not keys or len(frame) < 2:
        return
    if kind == "chain":
        _check_unique_contracts(frame, source)
        return
    dup = frame.duplicated(keys, keep="first").to_numpy()
    if dup.any():
        i = int(np.flatnonzero(dup)[0])
        raise DataError(f"duplicate timestamp {frame['ts'].iloc[i]}", source=source, row=i,
                        column=(names or {}).get("ts", "ts"), expected="one row per timestamp"
                        + (f" and {', '.join(keys[1:])}" if len(keys) > 1 else ""),
                        fix="drop the duplicated rows (DataFrame.drop_duplicates)")


def check_bars(frame: pd.DataFrame, source: str, *, order: Order,
                time_column: str) -> None:
    """OHLC consistency and strictly monotonic timestamps, in file order.

    The OHLCV columns are parsed to float in place; NaN and sign rules are the schema's.
    """
    for name in OHLCV:
        frame[name] = to_float(frame[name], name, source)
        inf = np.isinf(frame[name].to_numpy())
        if inf.any():  # before the OHLC checks, which would blame another column
            i = int(np.flatnonzero(inf)[0])
            raise DataError(f"value {float(frame[name].iloc[i])!r} is not finite",
                            source=source, row=i, column=name, expected="a finite number",
                            fix="repair or remove the row")
    o, h, lo, c = (frame[n].to_numpy() for n in ("open", "high", "low", "close"))
    checks = (
        (h < lo, "high", "high < low", "high >= low"),
        ((o > h) | (o < lo), "open", "open outside [low, high]", "low <= open <= high"),
        ((c > h) | (c < lo), "close", "close outside [low, high]", "low <= close <= high"),
    )
    for bad, column, problem, expected in checks:
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError(f"{problem} (open {o[i]}, high {h[i]}, low {lo[i]}, close {c[i]})",
                            source=source, row=i, column=column, expected=expected,
                            fix="repair or remove the row (columns may be swapped)")
    us = to_epoch_us(frame["ts"], source=source, column=time_column)
    if len(us) < 2:
        return
    step = np.diff(us)
    dup = step == 0
    if dup.any():
        i = int(np.flatnonzero(dup)[0]) + 1
        raise DataError(f"duplicated timestamp {frame['ts'].iloc[i]} (same as row {i - 1})",
                        source=source, row=i, column=time_column,
                        expected="one bar per timestamp",
                        fix="drop duplicated rows, e.g. DataFrame.drop_duplicates('ts')")
    descending = order == "either" and step[0] < 0
    bad = step > 0 if descending else step < 0
    if bad.any():
        i = int(np.flatnonzero(bad)[0]) + 1
        direction = "decreasing (newest first)" if descending else "increasing"
        raise DataError(f"timestamps not sorted: {frame['ts'].iloc[i]} after "
                        f"{frame['ts'].iloc[i - 1]}", source=source, row=i, column=time_column,
                        expected=f"strictly {direction} timestamps",
                        fix="sort the file by time (oldest first)")


def _check_unique_contracts(frame: pd.DataFrame, source: str) -> None:
    keys = ["ts", "expiry", "strike", "right"]
    dup = frame.duplicated(keys, keep="first").to_numpy()
    if dup.any():
        i = int(np.flatnonzero(dup)[0])
        same = (frame[keys] == frame[keys].iloc[i]).all(axis=1).to_numpy()
        j = int(np.flatnonzero(same)[0])
        raise DataError(f"contract listed twice in snapshot {frame['ts'].iloc[i]} "
                        f"(expiry {frame['expiry'].iloc[i]}, strike {frame['strike'].iloc[i]}, "
                        f"{frame['right'].iloc[i]}; first at row {j})", source=source, row=i,
                        column="ts", expected="one row per contract per snapshot",
                        fix="drop the duplicated rows")


def _check_barriers(frame: pd.DataFrame, table: pa.Table, source: str,
                    names: Mapping[str, str]) -> None:
    """Checks on the conformed columns; rows are reported in the file's order."""
    order = frame.sort_values(list(BARRIERS.sort_keys), kind="stable").index.to_numpy()
    t = table.to_pandas()

    def fail(mask: np.ndarray, column: str, message: str, expected: str, fix: str) -> None:
        if mask.any():
            i = int(order[np.flatnonzero(mask)[0]])
            raise DataError(message, source=source, row=i, column=names.get(column, column),
                            expected=expected, fix=fix)

    side = t["dealer_side"].to_numpy()
    fail(~np.isin(side, (1.0, -1.0)), "dealer_side", "dealer_side is not +1 or -1",
         "+1 (dealers long the option) or -1 (dealers short)", "repair the row")
    fail((t["expiry"] <= t["ts"]).to_numpy(), "expiry", "expiry is not after ts",
         "an expiry later than the time the position is known", "repair or drop the row")
    K, H = t["strike"].to_numpy(), t["barrier"].to_numpy()
    dead = ((t["type"] == "up_out_call").to_numpy() & (H <= K)) | (
        (t["type"] == "down_out_put").to_numpy() & (H >= K))
    fail(dead, "barrier", "a knock-out whose barrier is already past the strike is worthless",
         "up_out_call: barrier > strike; down_out_put: barrier < strike",
         "check the strike and barrier columns (swapped?)")
    if "iv" in t.columns:
        fail((t["iv"] > 5.0).fillna(False).to_numpy(bool), "iv", "iv looks like percent",
             "implied volatility as a fraction (0.6 for 60%)", "divide iv by 100")

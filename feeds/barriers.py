"""Load barrier-option positions (structured-note books) into the BARRIERS schema.

A barrier file is CSV (optionally ``.gz``) or Parquet with the columns ``ts, type,
strike, barrier, expiry, notional, dealer_side`` and an optional ``iv``:

- ``ts``, ``expiry``: ISO 8601 timestamps with a UTC offset (``2026-02-03T00:00:00Z``);
  a position is used only from ``ts`` on (point in time).
- ``type``: one of ``indicators.barrier.BARRIER_TYPES`` (``down_in_put``,
  ``down_out_put``, ``up_out_call``, ...).
- ``strike``, ``barrier``: USD; ``notional``: BTC of underlying (> 0).
- ``dealer_side``: +1 when dealers are long the option, -1 when short.
- ``iv``: implied volatility as a fraction; empty = the chain's ATM IV as of each bar.
"""

from __future__ import annotations

import difflib
import os

import numpy as np
import pandas as pd
import pyarrow as pa

from feeds.derivs import _cols, _read
from feeds.loaders import _sniff, to_utc
from feeds.schema import BARRIERS, conform
from indicators.barrier import BARRIER_TYPES
from indicators.errors import DataError

PathLike = str | os.PathLike[str]

__all__ = ["load_barriers"]

_REQUIRED = ("ts", "type", "strike", "barrier", "expiry", "notional", "dealer_side")


def load_barriers(path: PathLike) -> pa.Table:
    """Read a barrier book file into the BARRIERS schema.

    Returns
    -------
    pyarrow.Table
        Sorted by ``ts, expiry, strike``.

    Raises
    ------
    DataError
        Missing columns, unknown ``type`` (with a suggestion), ``dealer_side`` not +1 /
        -1, expiry not after ``ts``, a knock-in/out barrier on the wrong side of its
        strike for the type (``up_out_call`` with barrier <= strike is worthless),
        implied volatility in percent, unparsable or naive timestamps; each naming the
        file, row and column.
    """
    df, src = _read(_sniff(path))
    c = _cols(df)
    missing = [name for name in _REQUIRED if name not in c]
    if missing:
        raise DataError(f"missing column(s) {missing}", source=src,
                        expected=f"columns {list(_REQUIRED)} (optional: iv)",
                        fix="rename the columns to the canonical names")
    out = pd.DataFrame({name: df[c[name]] for name in _REQUIRED})
    if "iv" in c:
        out["iv"] = df[c["iv"]]
    for col in ("ts", "expiry"):
        out[col] = to_utc(out[col], c[col], src)
    kind = out["type"].astype("string").str.strip().str.lower()
    unknown = ~kind.isin(BARRIER_TYPES).fillna(False).to_numpy(bool)
    if unknown.any():
        i = int(np.flatnonzero(unknown)[0])
        hint = difflib.get_close_matches(str(kind.iloc[i]), BARRIER_TYPES, n=1)
        raise DataError(f"unknown barrier type {out['type'].iloc[i]!r}"
                        + (f" (did you mean {hint[0]!r}?)" if hint else ""), source=src,
                        row=i, column=c["type"], expected=f"one of {list(BARRIER_TYPES)}",
                        fix="spell the type as listed")
    out["type"] = kind
    table = conform(out, BARRIERS, src)
    # checks on the conformed columns; rows are reported in the file's order
    order = out.sort_values(list(BARRIERS.sort_keys), kind="stable").index.to_numpy()
    t = table.to_pandas()

    def fail(mask: np.ndarray, column: str, message: str, expected: str, fix: str) -> None:
        if mask.any():
            i = int(order[np.flatnonzero(mask)[0]])
            raise DataError(message, source=src, row=i, column=c.get(column, column),
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
    return table

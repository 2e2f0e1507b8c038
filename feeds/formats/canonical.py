"""Canonical layouts: files already in a schema of :mod:`feeds.schema` (CSV or Parquet).

This is what the simulator and the repository's own exports write, and what a user
converts an unsupported vendor file to.

- chain: ``ts, expiry, strike, right, open_interest, mark_iv`` (+ the optional CHAIN
  columns); ``mark_iv`` as a fraction;
- funding: ``ts, rate_8h[, interval_h]`` (``interval_h`` defaults to 8);
- open interest: ``ts, oi_btc[, oi_usd]`` (either column);
- liquidations: ``ts, side ('long'/'short'), price, size``;
- futures: ``ts, expiry, price[, instrument]``;
- barriers: ``ts, type, strike, barrier, expiry, notional, dealer_side[, iv]``, ``ts`` and
  ``expiry`` as ISO 8601 with a UTC offset.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable

import numpy as np
import pandas as pd

from feeds.formats.base import Format, LoadOptions, Mapped
from feeds.formats.chain_columns import iv_fraction
from feeds.formats.sniffing import Sniff, column_lookup, map_values, read_table, to_float
from feeds.formats.times import time_to_utc, to_utc
from indicators.barrier import BARRIER_TYPES
from plumbing.errors import DataError

__all__ = ["BARRIER_COLUMNS", "FORMATS"]

_CHAIN_HEADER = {"ts", "expiry", "strike", "right", "open_interest", "mark_iv"}
BARRIER_COLUMNS = ("ts", "type", "strike", "barrier", "expiry", "notional", "dealer_side")


def _map_chain(raw: pd.DataFrame, source: str, _options: LoadOptions) -> Mapped:
    frame = raw.copy()
    for col in ("ts", "expiry"):
        frame[col] = time_to_utc(raw[col], col, source)
    frame["mark_iv"] = iv_fraction(to_float(raw["mark_iv"], "mark_iv", source), "fraction",
                                   source, "mark_iv")
    return Mapped(frame)


def _map_funding(df: pd.DataFrame, src: str, _options: LoadOptions) -> Mapped:
    c = column_lookup(df.columns)
    return Mapped(pd.DataFrame({
        "ts": to_utc(df[c["ts"]], c["ts"], src), "rate_8h": df[c["rate_8h"]],
        "interval_h": df[c["interval_h"]] if "interval_h" in c else 8.0}))


def _map_oi(df: pd.DataFrame, src: str, _options: LoadOptions) -> Mapped:
    c = column_lookup(df.columns)
    out = pd.DataFrame({"ts": to_utc(df[c["ts"]], c["ts"], src)})
    out["oi_btc"] = df[c["oi_btc"]] if "oi_btc" in c else np.nan
    if "oi_usd" in c:
        out["oi_usd"] = df[c["oi_usd"]]
    return Mapped(out)


def _map_liquidations(df: pd.DataFrame, src: str, _options: LoadOptions) -> Mapped:
    c = column_lookup(df.columns)
    side = map_values(df[c["side"]], {"long": "long", "short": "short"}, source=src,
                      column=c["side"], what="side", expected="'long' or 'short'")
    return Mapped(pd.DataFrame({"ts": to_utc(df[c["ts"]], c["ts"], src), "side": side,
                                "price": df[c["price"]], "size": df[c["size"]]}))


def _map_futures(df: pd.DataFrame, src: str, _options: LoadOptions) -> Mapped:
    c = column_lookup(df.columns)
    out = pd.DataFrame({"ts": to_utc(df[c["ts"]], c["ts"], src),
                        "expiry": to_utc(df[c["expiry"]], c["expiry"], src),
                        "price": df[c["price"]]})
    if "instrument" in c:
        out["instrument"] = df[c["instrument"]].astype("string")
    return Mapped(out, {"ts": c["ts"], "expiry": c["expiry"]})


def _map_barriers(df: pd.DataFrame, src: str, _options: LoadOptions) -> Mapped:
    c = column_lookup(df.columns)
    missing = [name for name in BARRIER_COLUMNS if name not in c]
    if missing:
        raise DataError(f"missing column(s) {missing}", source=src,
                        expected=f"columns {list(BARRIER_COLUMNS)} (optional: iv)",
                        fix="rename the columns to the canonical names")
    out = pd.DataFrame({name: df[c[name]] for name in BARRIER_COLUMNS})
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
    return Mapped(out, {name: c[name] for name in c if name in out.columns})


def _columns(*names: str) -> Callable[[Sniff], int]:
    """A detector scoring 1 when the header has all ``names`` (any case)."""
    wanted = set(names)
    return lambda sniff: int(wanted <= sniff.lower_columns)


FORMATS = (
    Format("chain", "canonical", "canonical CHAIN columns (Parquet or CSV; mark_iv as a "
           "fraction)", lambda sniff: int(_CHAIN_HEADER <= set(sniff.columns)), _map_chain,
           read_table),
    Format("funding", "canonical", "ts,rate_8h[,interval_h]", _columns("ts", "rate_8h"),
           _map_funding),
    Format("oi", "canonical", "ts,oi_btc[,oi_usd]",
           lambda sniff: int("ts" in sniff.lower_columns
                             and bool({"oi_btc", "oi_usd"} & sniff.lower_columns)), _map_oi),
    Format("liquidations", "canonical", "ts,side,price,size",
           _columns("ts", "side", "price", "size"), _map_liquidations),
    Format("futures", "canonical", "ts,expiry,price[,instrument]",
           lambda sniff: 10 * ({"ts", "expiry", "price"} <= sniff.lower_columns),
           _map_futures),
    Format("barriers", "canonical", "ts,type,strike,barrier,expiry,notional,dealer_side[,iv]",
           lambda sniff: 1, _map_barriers),
)

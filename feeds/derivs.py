"""Loaders for derivatives data: funding, perpetual bars and OI, liquidations, futures.

Every loader auto-detects the layout from the header (the formats of
:mod:`feeds.formats`), maps vendor columns to a canonical schema of :mod:`feeds.schema`
and returns a validated ``pyarrow.Table`` (via :func:`feeds.formats.conform.conform`). Bad input raises :class:`DataError` naming the
file, the 0-based data row, the column, what was expected and how to fix it; empty
files, duplicate timestamps and timezone-naive timestamps are rejected.

Files are sniffed and read as in :mod:`feeds.loaders` (gzip from its magic bytes, Parquet
from ``PAR1``), and every time column goes through :func:`feeds.formats.times.to_utc`: epoch
numbers in s, ms, us or ns by magnitude (per value, 1990..2100), text with a UTC offset
unless the layout below documents it as UTC.

Layouts
-------
``load_funding`` (FUNDING: ``ts, rate_8h, interval_h``)
    - daily aggregate ``date, funding_mean[, funding_abs]`` (mean of the day's 8-hourly
      rates): a daily mean is only known once the day is over, so the row is stamped
      at the **end** of the day (``date + 1 day``, 00:00 UTC) with ``interval_h = 24``;
    - 8-hourly ``Date, FundingRate`` with ``Date`` as ``dd/mm/yy H:MM`` (UTC), any order;
    - Binance API ``symbol, fundingTime, fundingRate[, markPrice]`` (epoch ms);
    - Binance download ``calc_time, funding_interval_hours, last_funding_rate`` (epoch ms;
      a rate per ``h``-hour interval becomes ``rate_8h = rate * 8 / h``, ``interval_h = h``);
    - canonical ``ts, rate_8h[, interval_h]`` (CSV or Parquet, e.g. the simulator's).
``load_perp`` (BARS)
    Any bars layout of :func:`feeds.loaders.load_bars` (CryptoDataDownload perp klines).
``load_open_interest`` (PERP_OI: ``ts, oi_btc[, oi_usd]``)
    - Binance API ``symbol, sumOpenInterest, sumOpenInterestValue, timestamp`` (epoch ms);
    - Binance download ``create_time, symbol, sum_open_interest, sum_open_interest_value``
      (``create_time`` UTC, text or epoch);
    - canonical ``ts, oi_btc[, oi_usd]``.
``load_liquidations`` (LIQUIDATIONS: ``ts, side, price, size``)
    - Binance ``forceOrder`` fields: ``symbol, side, price, quantity`` or ``origQty`` /
      ``executedQty`` / ``averagePrice``, ``time`` (epoch ms); also the websocket short
      names ``s, S, p, q, ap, z, T`` (optionally prefixed ``o.``). A ``SELL`` forced order
      closes a **long**, ``BUY`` a short. Price: ``averagePrice`` when > 0, else
      ``price``; size: ``executedQty`` when > 0, else ``quantity`` / ``origQty``;
    - canonical ``ts, side ('long'/'short'), price, size`` (the simulator's events).
``load_futures`` (FUTURES: ``ts, expiry, price, instrument``)
    - canonical ``ts, expiry, price[, instrument]`` CSV or Parquet;
    - any option chain :func:`feeds.loaders.load_chain` reads (OptionsDX EOD, Deribit API
      dumps) whose ``underlying_index`` names a listed future (``BTC-25MAR22``; the
      synthetic ``SYN.*`` forwards are skipped): one row per (snapshot, future) with the
      **median** ``underlying_price`` of its rows (rows of one snapshot quote slightly
      different prices), expiry from the name at 08:00 UTC.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import pandas as pd
import pyarrow as pa

from feeds.formats.conform import check_unique, conform
from feeds.formats.deribit import future_expiry
from feeds.formats.dispatch import load_table, read_mapped
from feeds.loaders import load_bars
from plumbing.aliases import PathLike
from plumbing.errors import DataError

__all__ = [
    "future_expiry",
    "load_funding",
    "load_futures",
    "load_liquidations",
    "load_open_interest",
    "load_perp",
]


def load_funding(path: PathLike) -> pa.Table:
    """Load funding rates into the FUNDING schema (layouts in the module docstring).

    Parameters
    ----------
    path
        CSV (optionally ``.gz``) or Parquet file.

    Returns
    -------
    pyarrow.Table
        ``ts`` (when the rate is known: funding time, or day end for daily means),
        ``rate_8h`` (fraction per 8 h), ``interval_h`` (hours covered by the row);
        sorted by ``ts``.

    Raises
    ------
    DataError
        Unknown layout, unparsable cell, empty file, duplicate or naive timestamps.
    """
    return load_table("funding", path)


def load_perp(path: PathLike, **kwargs: Any) -> pa.Table:
    """Perpetual-futures bars (BARS): :func:`feeds.loaders.load_bars` on a perp file.

    ``kwargs`` (``freq``, ``start``, ``end``, ``cache``) are passed through.
    """
    return load_bars(path, **kwargs)


def load_open_interest(path: PathLike) -> pa.Table:
    """Load perpetual open-interest history into PERP_OI (layouts in the module docstring).

    Returns
    -------
    pyarrow.Table
        ``ts`` (measurement time), ``oi_btc`` (contracts in BTC), ``oi_usd`` when the
        file has a value column; sorted by ``ts``.

    Raises
    ------
    DataError
        Unknown layout, unparsable cell, empty file, duplicate or naive timestamps.
    """
    return load_table("oi", path)


def load_liquidations(path: PathLike) -> pa.Table:
    """Load liquidation events into LIQUIDATIONS (layouts in the module docstring).

    Returns
    -------
    pyarrow.Table
        ``ts, side`` ('long' = a long position was force-closed by a sell), ``price``
        (USD), ``size`` (BTC); sorted by ``ts`` (several events may share a stamp).

    Raises
    ------
    DataError
        Unknown layout or side, unparsable cell, empty file, naive timestamps.
    """
    return load_table("liquidations", path)


def load_futures(path: PathLike | Sequence[PathLike]) -> pa.Table:
    """Load dated-futures prices into FUTURES (layouts in the module docstring).

    Parameters
    ----------
    path
        One file, or several (e.g. monthly OptionsDX files), concatenated.

    Returns
    -------
    pyarrow.Table
        ``ts, expiry, price, instrument`` sorted by ``ts, expiry``; one row per
        (snapshot, expiry).

    Raises
    ------
    DataError
        Unknown layout, no listed-future rows, duplicate (ts, expiry) in a canonical
        file, unparsable cells, naive timestamps.
    """
    paths = [path] if isinstance(path, str | os.PathLike) else list(path)
    if not paths:
        raise DataError("no futures file given", expected="at least one path", fix="pass a file")
    mapped = [read_mapped("futures", p)[1] for p in paths]
    src = str(paths[0]) if len(paths) == 1 else f"{paths[0]} (+{len(paths) - 1} files)"
    if len(mapped) == 1:
        return conform("futures", mapped[0].frame, src, names=mapped[0].names)
    frames = [m.frame for m in mapped]
    for m in mapped:  # duplicates inside one file are that file's error
        check_unique("futures", m.frame, src, m.names)
    out = pd.concat([f.assign(_file=str(p)) for f, p in zip(frames, paths, strict=True)],
                    ignore_index=True)
    # overlapping files: the same quote twice is kept once; two different prices for one
    # (ts, expiry) are refused with both files named
    out = out.drop_duplicates(["ts", "expiry", "price"], keep="first")
    clash = out.duplicated(["ts", "expiry"], keep=False)
    if clash.any():
        rows = out[clash].sort_values(["ts", "expiry"]).head(2)
        raise DataError(f"two prices for the future expiring {rows['expiry'].iloc[0]} at "
                        f"{rows['ts'].iloc[0]}", source=f"{rows['_file'].iloc[0]} and "
                        f"{rows['_file'].iloc[1]}", column="price",
                        expected="overlapping files that agree", fix="drop one of the files")
    return conform("futures", out.drop(columns="_file").reset_index(drop=True), src)

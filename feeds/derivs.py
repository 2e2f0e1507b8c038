"""Loaders for derivatives data: funding, perpetual bars and OI, liquidations, futures.

Every loader auto-detects the layout from the header, maps vendor columns to a
canonical schema of :mod:`feeds.schema` and returns a validated ``pyarrow.Table``
(via :func:`feeds.schema.conform`). Bad input raises :class:`DataError` naming the
file, the 0-based data row, the column, what was expected and how to fix it; empty
files, duplicate timestamps and timezone-naive timestamps are rejected.

Files are sniffed and read as in :mod:`feeds.loaders` (gzip from its magic bytes, Parquet
from ``PAR1``), and every time column goes through :func:`feeds.loaders.to_utc`: epoch
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
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from feeds.loaders import (
    _DERIBIT_EXPIRY_HOUR,
    _MONTHS,
    _read_csv,
    _read_parquet,
    _Sniff,
    _sniff,
    _to_float,
    load_bars,
    load_chain,
    to_utc,
)
from feeds.schema import FUNDING, FUTURES, LIQUIDATIONS, PERP_OI, conform
from indicators.errors import DataError

PathLike = str | os.PathLike[str]

__all__ = [
    "load_funding",
    "load_futures",
    "load_liquidations",
    "load_open_interest",
    "load_perp",
]

_FUTURE_NAME = re.compile(r"^([A-Z]+)-(\d{1,2})([A-Z]{3})(\d{2})$")


# --------------------------------------------------------------------------------------
# reading helpers
# --------------------------------------------------------------------------------------

def _read(sniff: _Sniff) -> tuple[pd.DataFrame, str]:
    """The sniffed file as a frame, and its path for error messages.

    A CSV may start with a URL line (CryptoDataDownload); ``[bracketed]`` and padded
    header names are trimmed.
    """
    if sniff.parquet:
        return _read_parquet(sniff), sniff.source
    skip = 1 if sniff.first_line.lower().startswith("http") else 0
    df = _read_csv(sniff, header_lines=1 + skip, skiprows=skip, skipinitialspace=True)
    df.columns = [str(c).strip().strip("[] ") for c in df.columns]
    return df, sniff.source


def _cols(df: pd.DataFrame) -> dict[str, str]:
    """Lower-case name -> actual name."""
    return {str(c).lower(): str(c) for c in df.columns}


def _reject_duplicates(ts: pd.Series, src: str, column: str, keys: pd.DataFrame | None = None,
                       ) -> None:
    frame = pd.DataFrame({"ts": ts.to_numpy()}) if keys is None else keys
    dup = frame.duplicated(keep="first").to_numpy()
    if dup.any():
        i = int(np.flatnonzero(dup)[0])
        raise DataError(f"duplicate timestamp {ts.iloc[i]}", source=src, row=i, column=column,
                        expected="one row per timestamp",
                        fix="drop the duplicated rows (DataFrame.drop_duplicates)")


def _unknown_layout(src: str, df: pd.DataFrame, what: str, layouts: str) -> DataError:
    return DataError(f"unrecognised {what} layout (columns {list(df.columns)[:8]})", source=src,
                     expected=layouts, fix="rename the columns to the canonical names")


# --------------------------------------------------------------------------------------
# funding
# --------------------------------------------------------------------------------------

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
    df, src = _read(_sniff(path))
    c = _cols(df)
    # the file's own column of each canonical one, named in errors
    names = {canon: c[k] for canon, k in (("ts", "date"), ("ts", "fundingtime"),
                                         ("ts", "calc_time"), ("rate_8h", "funding_mean"),
                                         ("rate_8h", "fundingrate"),
                                         ("rate_8h", "last_funding_rate"),
                                         ("interval_h", "funding_interval_hours")) if k in c}
    if {"date", "funding_mean"} <= c.keys():
        day = to_utc(df[c["date"]], c["date"], src, naive_utc=True, fmt="%Y-%m-%d")
        out = pd.DataFrame({"ts": day + pd.Timedelta(days=1),
                            "rate_8h": _to_float(df[c["funding_mean"]], c["funding_mean"], src), "interval_h": 24.0})
    elif {"date", "fundingrate"} <= c.keys():
        ts = to_utc(df[c["date"]], c["date"], src, naive_utc=True, fmt="%d/%m/%y %H:%M")
        out = pd.DataFrame({"ts": ts, "rate_8h": _to_float(df[c["fundingrate"]], c["fundingrate"], src),
                            "interval_h": 8.0})
    elif {"fundingtime", "fundingrate"} <= c.keys():
        out = pd.DataFrame({"ts": to_utc(df[c["fundingtime"]], c["fundingtime"], src),
                            "rate_8h": _to_float(df[c["fundingrate"]], c["fundingrate"], src), "interval_h": 8.0})
    elif {"calc_time", "last_funding_rate"} <= c.keys():
        hours = (_to_float(df[c["funding_interval_hours"]], c["funding_interval_hours"], src)
                 if "funding_interval_hours" in c else pd.Series(8.0, index=df.index))
        bad = ~(hours > 0).to_numpy()
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError(f"funding interval {float(hours.iloc[i])!r} not positive", source=src,
                            row=i, column="funding_interval_hours", expected="hours > 0",
                            fix="repair the row")
        rate = _to_float(df[c["last_funding_rate"]], c["last_funding_rate"], src)
        out = pd.DataFrame({"ts": to_utc(df[c["calc_time"]], c["calc_time"], src),
                            "rate_8h": rate * 8.0 / hours, "interval_h": hours})
    elif {"ts", "rate_8h"} <= c.keys():
        out = pd.DataFrame({"ts": to_utc(df[c["ts"]], c["ts"], src),
                            "rate_8h": df[c["rate_8h"]],
                            "interval_h": df[c["interval_h"]] if "interval_h" in c else 8.0})
    else:
        raise _unknown_layout(src, df, "funding", "date,funding_mean | Date,FundingRate | "
                              "symbol,fundingTime,fundingRate | calc_time,"
                              "funding_interval_hours,last_funding_rate | ts,rate_8h")
    _reject_duplicates(out["ts"], src, "ts")
    return conform(out, FUNDING, src, names=names)


# --------------------------------------------------------------------------------------
# perpetual bars and open interest
# --------------------------------------------------------------------------------------

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
    df, src = _read(_sniff(path))
    c = _cols(df)
    if {"sumopeninterest", "timestamp"} <= c.keys():
        out = pd.DataFrame({"ts": to_utc(df[c["timestamp"]], c["timestamp"], src),
                            "oi_btc": _to_float(df[c["sumopeninterest"]], c["sumopeninterest"], src)})
        if "sumopeninterestvalue" in c:
            out["oi_usd"] = _to_float(df[c["sumopeninterestvalue"]], c["sumopeninterestvalue"], src)
    elif {"create_time", "sum_open_interest"} <= c.keys():
        # create_time is UTC: epoch numbers or naive text, depending on the export
        ts = to_utc(df[c["create_time"]], c["create_time"], src, naive_utc=True)
        out = pd.DataFrame({"ts": ts, "oi_btc": _to_float(df[c["sum_open_interest"]], c["sum_open_interest"], src)})
        if "sum_open_interest_value" in c:
            out["oi_usd"] = _to_float(df[c["sum_open_interest_value"]], c["sum_open_interest_value"], src)
    elif "ts" in c and ({"oi_btc", "oi_usd"} & c.keys()):
        out = pd.DataFrame({"ts": to_utc(df[c["ts"]], c["ts"], src)})
        out["oi_btc"] = df[c["oi_btc"]] if "oi_btc" in c else np.nan
        if "oi_usd" in c:
            out["oi_usd"] = df[c["oi_usd"]]
    else:
        raise _unknown_layout(src, df, "open-interest",
                              "symbol,sumOpenInterest,sumOpenInterestValue,timestamp | "
                              "create_time,symbol,sum_open_interest,... | ts,oi_btc[,oi_usd]")
    _reject_duplicates(out["ts"], src, "ts")
    names = {canon: c[k] for canon, k in (("oi_btc", "sumopeninterest"),
                                         ("oi_usd", "sumopeninterestvalue"),
                                         ("oi_btc", "sum_open_interest"),
                                         ("oi_usd", "sum_open_interest_value")) if k in c}
    return conform(out, PERP_OI, src, names=names)


# --------------------------------------------------------------------------------------
# liquidations
# --------------------------------------------------------------------------------------

_WS_NAMES = {"s": "symbol", "S": "side", "p": "price", "q": "quantity", "ap": "averagePrice",
             "z": "executedQty", "T": "time"}


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
    df, src = _read(_sniff(path))
    df = df.rename(columns=lambda x: str(x)[2:] if str(x).startswith("o.") else x)
    if {"S", "p", "T"} <= set(df.columns):
        df = df.rename(columns=_WS_NAMES)
    c = _cols(df)
    if {"side", "time"} <= c.keys() and ({"price", "averageprice"} & c.keys()):
        side_raw = df[c["side"]].astype("string").str.strip().str.upper()
        side = side_raw.map({"SELL": "long", "BUY": "short"})
        _check_side(side, side_raw, src, c["side"], "SELL or BUY")
        price = _first_positive(df, c, ("averageprice", "price"), src)
        size = _first_positive(df, c, ("executedqty", "quantity", "origqty", "qty"), src)
        out = pd.DataFrame({"ts": to_utc(df[c["time"]], c["time"], src), "side": side,
                            "price": price, "size": size})
    elif {"ts", "side", "price", "size"} <= c.keys():
        side_raw = df[c["side"]].astype("string").str.strip().str.lower()
        _check_side(side_raw.where(side_raw.isin(["long", "short"])), side_raw, src, c["side"],
                    "'long' or 'short'")
        out = pd.DataFrame({"ts": to_utc(df[c["ts"]], c["ts"], src), "side": side_raw,
                            "price": df[c["price"]], "size": df[c["size"]]})
    else:
        raise _unknown_layout(src, df, "liquidation",
                              "symbol,side,price,quantity,time (Binance forceOrder) | "
                              "ts,side,price,size")
    names = {canon: c[k] for canon, k in (("price", "averageprice"), ("price", "price"),
                                         ("size", "quantity"), ("size", "executedqty"))
             if k in c and canon not in c}
    return conform(out, LIQUIDATIONS, src, names=names)


def _check_side(side: pd.Series, raw: pd.Series, src: str, column: str, expected: str) -> None:
    bad = side.isna().to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"side {raw.iloc[i]!r} not understood", source=src, row=i,
                        column=column, expected=expected, fix="repair or drop the row")


def _first_positive(df: pd.DataFrame, c: dict[str, str], names: Sequence[str],
                    src: str) -> pd.Series:
    result: pd.Series | None = None
    for name in names:
        if name not in c:
            continue
        vals = _to_float(df[c[name]], c[name], src)
        result = vals if result is None else result.where(result > 0, vals)
    if result is None:
        raise DataError(f"none of the columns {list(names)} present", source=src,
                        expected=f"one of {list(names)}", fix="check the layout")
    return result


# --------------------------------------------------------------------------------------
# dated futures
# --------------------------------------------------------------------------------------

def future_expiry(name: str) -> pd.Timestamp | None:
    """Expiry (08:00 UTC) of a listed Deribit future name like ``BTC-25MAR22``; else None."""
    m = _FUTURE_NAME.match(str(name))
    if not m or m.group(3) not in _MONTHS:
        return None
    day, mon, yy = int(m.group(2)), _MONTHS[m.group(3)], int(m.group(4))
    try:
        return pd.Timestamp(year=2000 + yy, month=mon, day=day, hour=_DERIBIT_EXPIRY_HOUR,
                            tz="UTC")
    except ValueError:
        return None


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
    frames = [_futures_one(p) for p in paths]
    src = str(paths[0]) if len(paths) == 1 else f"{paths[0]} (+{len(paths) - 1} files)"
    if len(frames) == 1:
        out = frames[0]
        _reject_duplicates(out["ts"], src, "ts", keys=out[["ts", "expiry"]])
        return conform(out, FUTURES, src)
    for frame in frames:  # duplicates inside one file are that file's error
        _reject_duplicates(frame["ts"], src, "ts", keys=frame[["ts", "expiry"]])
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
    return conform(out.drop(columns="_file").reset_index(drop=True), FUTURES, src)


def _futures_one(path: PathLike) -> pd.DataFrame:
    sniff = _sniff(path)
    if sniff.parquet:
        head_cols = sniff.parquet_columns
    elif sniff.first_line.lower().startswith("http"):
        head_cols = ()
    else:
        head_cols = tuple(n.strip().strip("[] ") for n in sniff.first_line.split(","))
    if {"ts", "expiry", "price"} <= {c.lower() for c in head_cols}:
        df, src = _read(sniff)
        c = _cols(df)
        out = pd.DataFrame({"ts": df[c["ts"]], "expiry": df[c["expiry"]],
                            "price": df[c["price"]]})
        for col in ("ts", "expiry"):
            out[col] = to_utc(out[col], c[col], src)
        if "instrument" in c:
            out["instrument"] = df[c["instrument"]].astype("string")
        _reject_duplicates(out["ts"], src, "ts", keys=out[["ts", "expiry"]])
        return out
    return _futures_from_chain(sniff.path)


def _futures_from_chain(p: Path) -> pd.DataFrame:
    src = str(p)
    chain = load_chain(p).to_pandas()
    if "underlying_index" not in chain.columns:
        raise DataError("the chain has no 'underlying_index' column", source=src,
                        column="underlying_index",
                        expected="rows naming their forward (e.g. 'BTC-25MAR22')",
                        fix="use an OptionsDX or Deribit API file, or a ts,expiry,price file")
    names = chain["underlying_index"].astype("string")
    uniq = names.dropna().unique()
    expiries = {n: future_expiry(n) for n in uniq}
    listed = names.isin([n for n, e in expiries.items() if e is not None])
    rows = chain.loc[listed.fillna(False).to_numpy(dtype=bool)]
    if rows.empty:
        raise DataError("no listed-future rows (only synthetic SYN.* forwards)", source=src,
                        column="underlying_index", expected="names like 'BTC-25MAR22'",
                        fix="pick a file whose expiries include listed futures")
    med = (rows.groupby(["ts", "underlying_index"], sort=True)["underlying_price"].median()
           .reset_index())
    med["expiry"] = pd.to_datetime(
        med["underlying_index"].map(lambda n: expiries[n]), utc=True).astype(
        "datetime64[us, UTC]")
    return pd.DataFrame({"ts": med["ts"], "expiry": med["expiry"],
                         "price": med["underlying_price"],
                         "instrument": med["underlying_index"].astype("string")})

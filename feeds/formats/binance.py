"""Binance: spot/futures klines, the hourly export, funding, open interest, forced orders.

Bars
    ``binance_kline``: data.binance.vision klines, headerless, 12 columns; open time in
    ms or us epochs (spot switched to us in 2025). ``binance_hourly``: the export
    ``symbol,interval,timestamp,open,...`` with ISO timestamps carrying an offset.
Funding (FUNDING)
    API ``symbol, fundingTime, fundingRate[, markPrice]`` (epoch ms); download
    ``calc_time, funding_interval_hours, last_funding_rate`` (epoch ms; a rate per
    ``h``-hour interval becomes ``rate_8h = rate * 8 / h``, ``interval_h = h``).
Open interest (PERP_OI)
    API ``symbol, sumOpenInterest, sumOpenInterestValue, timestamp`` (epoch ms);
    download ``create_time, symbol, sum_open_interest, sum_open_interest_value``
    (``create_time`` UTC, text or epoch).
Liquidations (LIQUIDATIONS)
    ``forceOrder`` fields ``symbol, side, price, quantity`` or ``origQty`` /
    ``executedQty`` / ``averagePrice``, ``time`` (epoch ms); also the websocket short
    names ``s, S, p, q, ap, z, T`` (optionally prefixed ``o.``). A ``SELL`` forced order
    closes a **long**, ``BUY`` a short. Price: ``averagePrice`` when > 0, else ``price``;
    size: ``executedQty`` when > 0, else ``quantity`` / ``origQty``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from feeds.formats.base import Format, LoadOptions, Mapped
from feeds.formats.generic import OHLCV, map_bars
from feeds.formats.sniffing import (
    Sniff,
    column_lookup,
    is_number,
    map_values,
    read_csv,
    split_header,
    to_float,
)
from feeds.formats.times import epoch_to_utc, to_utc
from plumbing.errors import DataError

__all__ = ["FORMATS"]

_KLINE_COLUMNS = ("open_time", "open", "high", "low", "close", "volume", "close_time",
                  "quote_volume", "count", "taker_buy_volume", "taker_buy_quote_volume",
                  "ignore")
_WS_NAMES = {"s": "symbol", "S": "side", "p": "price", "q": "quantity", "ap": "averagePrice",
             "z": "executedQty", "T": "time"}


# ----------------------------------------------------------------------------- bars

def _detect_kline(sniff: Sniff) -> int:
    if sniff.parquet:
        return 0
    fields = split_header(sniff.first_line)
    if not fields or not all(is_number(f) for f in fields if f):
        return 0
    if len(fields) != len(_KLINE_COLUMNS):  # the only headerless layout: say what is wrong
        raise DataError(f"headerless CSV with {len(fields)} columns", source=sniff.source,
                        row=0, expected="Binance klines (12 columns) or a CSV with a header "
                        "naming ts/open/high/low/close/volume",
                        fix="add a header line to the file")
    return 20


def _read_kline(sniff: Sniff) -> pd.DataFrame:
    return read_csv(sniff, header_lines=0, header=None, names=list(_KLINE_COLUMNS),
                    index_col=False)


def _map_kline(raw: pd.DataFrame, source: str, _options: LoadOptions) -> Mapped:
    frame = raw[list(OHLCV)].copy()
    frame.insert(0, "ts", epoch_to_utc(raw["open_time"], "open_time", source))
    return Mapped(frame, {"ts": "open_time"})


def _detect_hourly(sniff: Sniff) -> int:
    header = {"symbol", "interval", "timestamp"}
    return 10 if not sniff.parquet and header <= sniff.lower_columns else 0


def _read_hourly(sniff: Sniff) -> pd.DataFrame:
    return read_csv(sniff, header_lines=1)


def _map_hourly(raw: pd.DataFrame, source: str, options: LoadOptions) -> Mapped:
    interval = raw["interval"].astype("string")
    if interval.nunique(dropna=False) > 1:
        i = int(np.flatnonzero((interval != interval.iloc[0]).to_numpy(dtype=bool))[0])
        raise DataError(f"mixed intervals ({interval.iloc[0]!r} then {interval.iloc[i]!r})",
                        source=source, row=i, column="interval",
                        expected="one bar interval per file", fix="split the file by interval")
    return map_bars(raw, source, options)


# -------------------------------------------------------------------------- funding

def _has(score: int, *names: str) -> Callable[[Sniff], int]:
    """A detector scoring ``score`` when the header has all ``names`` (any case)."""
    wanted = {n.lower() for n in names}

    def detect(sniff: Sniff) -> int:
        return score if wanted <= sniff.lower_columns else 0

    return detect


def _map_funding_api(df: pd.DataFrame, src: str, _options: LoadOptions) -> Mapped:
    c = column_lookup(df.columns)
    return Mapped(pd.DataFrame({
        "ts": to_utc(df[c["fundingtime"]], c["fundingtime"], src),
        "rate_8h": to_float(df[c["fundingrate"]], c["fundingrate"], src), "interval_h": 8.0}),
        {"ts": c["fundingtime"], "rate_8h": c["fundingrate"]})


def _map_funding_download(df: pd.DataFrame, src: str, _options: LoadOptions) -> Mapped:
    c = column_lookup(df.columns)
    hours = (to_float(df[c["funding_interval_hours"]], c["funding_interval_hours"], src)
             if "funding_interval_hours" in c else pd.Series(8.0, index=df.index))
    bad = ~(hours > 0).to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"funding interval {float(hours.iloc[i])!r} not positive", source=src,
                        row=i, column="funding_interval_hours", expected="hours > 0",
                        fix="repair the row")
    rate = to_float(df[c["last_funding_rate"]], c["last_funding_rate"], src)
    return Mapped(pd.DataFrame({"ts": to_utc(df[c["calc_time"]], c["calc_time"], src),
                                "rate_8h": rate * 8.0 / hours, "interval_h": hours}),
                  {"ts": c["calc_time"], "rate_8h": c["last_funding_rate"],
                   "interval_h": c.get("funding_interval_hours", "funding_interval_hours")})


# ---------------------------------------------------------------------- open interest

def _map_oi_api(df: pd.DataFrame, src: str, _options: LoadOptions) -> Mapped:
    c = column_lookup(df.columns)
    out = pd.DataFrame({"ts": to_utc(df[c["timestamp"]], c["timestamp"], src),
                        "oi_btc": to_float(df[c["sumopeninterest"]], c["sumopeninterest"], src)})
    if "sumopeninterestvalue" in c:
        out["oi_usd"] = to_float(df[c["sumopeninterestvalue"]], c["sumopeninterestvalue"], src)
    return Mapped(out, {"ts": c["timestamp"], "oi_btc": c["sumopeninterest"],
                        "oi_usd": c.get("sumopeninterestvalue", "oi_usd")})


def _map_oi_download(df: pd.DataFrame, src: str, _options: LoadOptions) -> Mapped:
    c = column_lookup(df.columns)
    # create_time is UTC: epoch numbers or naive text, depending on the export
    ts = to_utc(df[c["create_time"]], c["create_time"], src, naive_utc=True)
    out = pd.DataFrame({"ts": ts, "oi_btc": to_float(df[c["sum_open_interest"]],
                                                     c["sum_open_interest"], src)})
    if "sum_open_interest_value" in c:
        out["oi_usd"] = to_float(df[c["sum_open_interest_value"]], c["sum_open_interest_value"],
                                 src)
    return Mapped(out, {"ts": c["create_time"], "oi_btc": c["sum_open_interest"],
                        "oi_usd": c.get("sum_open_interest_value", "oi_usd")})


# ----------------------------------------------------------------------- liquidations

def _force_order_names(columns: Sequence[str]) -> list[str]:
    """Column names with an ``o.`` prefix dropped and websocket short names spelt out."""
    names = [c[2:] if c.startswith("o.") else c for c in columns]
    if {"S", "p", "T"} <= set(names):
        names = [_WS_NAMES.get(c, c) for c in names]
    return names


def _detect_force_order(sniff: Sniff) -> int:
    lower = {c.lower() for c in _force_order_names(list(sniff.columns))}
    return 10 if {"side", "time"} <= lower and {"price", "averageprice"} & lower else 0


def _map_force_order(df: pd.DataFrame, src: str, _options: LoadOptions) -> Mapped:
    df = df.set_axis(_force_order_names([str(c) for c in df.columns]), axis=1)
    c = column_lookup(df.columns)
    side = map_values(df[c["side"]], {"SELL": "long", "BUY": "short"}, source=src,
                      column=c["side"], what="side", expected="SELL or BUY")
    price = _first_positive(df, c, ("averageprice", "price"), src)
    size = _first_positive(df, c, ("executedqty", "quantity", "origqty", "qty"), src)
    # errors name the file's first column of each (price and size may come from two)
    names = {canon: c[k] for canon, keys in (("price", ("averageprice", "price")),
                                             ("size", ("executedqty", "quantity", "origqty",
                                                       "qty")))
             for k in reversed(keys) if k in c}
    return Mapped(pd.DataFrame({"ts": to_utc(df[c["time"]], c["time"], src), "side": side,
                                "price": price, "size": size}),
                  {"ts": c["time"], "side": c["side"], **names})


def _first_positive(df: pd.DataFrame, c: dict[str, str], names: Sequence[str],
                    src: str) -> pd.Series:
    result: pd.Series | None = None
    for name in names:
        if name not in c:
            continue
        vals = to_float(df[c[name]], c[name], src)
        result = vals if result is None else result.where(result > 0, vals)
    if result is None:
        raise DataError(f"none of the columns {list(names)} present", source=src,
                        expected=f"one of {list(names)}", fix="check the layout")
    return result


FORMATS = (
    Format("bars", "binance_kline",
           "Binance kline CSV: headerless, 12 columns, open time in ms or us epochs",
           _detect_kline, _map_kline, _read_kline),
    Format("bars", "binance_hourly",
           "Binance export 'symbol,interval,timestamp,open,high,low,close,volume,...' with "
           "ISO timestamps carrying an offset", _detect_hourly, _map_hourly, _read_hourly),
    Format("funding", "binance_funding_api", "symbol,fundingTime,fundingRate[,markPrice]",
           _has(30, "fundingTime", "fundingRate"), _map_funding_api),
    Format("funding", "binance_funding_download",
           "calc_time,funding_interval_hours,last_funding_rate",
           _has(20, "calc_time", "last_funding_rate"), _map_funding_download),
    Format("oi", "binance_oi_api", "symbol,sumOpenInterest,sumOpenInterestValue,timestamp",
           _has(30, "sumOpenInterest", "timestamp"), _map_oi_api),
    Format("oi", "binance_oi_download",
           "create_time,symbol,sum_open_interest,sum_open_interest_value",
           _has(20, "create_time", "sum_open_interest"), _map_oi_download),
    Format("liquidations", "binance_force_order",
           "symbol,side,price,quantity,time (Binance forceOrder; websocket short names too)",
           _detect_force_order, _map_force_order),
)

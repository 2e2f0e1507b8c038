"""Small files in the real vendors' layouts, written by code into a test's tmp_path.

Each writer takes a destination path and returns it; values come from a named, seeded
RNG so a fixture is the same on every run. Nothing here is committed as data.

Layouts follow the vendors' documentation:

- Binance kline CSV (data.binance.vision): headerless, 12 columns ``open_time, open,
  high, low, close, volume, close_time, quote_volume, count, taker_buy_volume,
  taker_buy_quote_volume, ignore``; times in ms (us from 2025 for spot).
- CryptoDataDownload: line 1 the site URL, line 2 ``unix,date,symbol,open,high,low,
  close,Volume BTC,Volume USD``, rows newest first.
- Tardis.dev ``options_chain`` CSV: the documented 24-column header, timestamps and
  expiration in microseconds since the epoch, IVs in percent.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd

TARDIS_HEADER = (
    "exchange,symbol,timestamp,local_timestamp,type,strike_price,expiration,open_interest,"
    "last_price,bid_price,bid_amount,bid_iv,ask_price,ask_amount,ask_iv,mark_price,mark_iv,"
    "underlying_index,underlying_price,delta,gamma,vega,theta,rho")

# One hand-written row in the documented layout: a put quoted 2020-06-09 00:00:00.25 UTC
# (arrival), expiring 2020-06-12 08:00 UTC, mark IV 60.7 %.
TARDIS_ROW = (
    "deribit,BTC-12JUN20-9500-P,1591660800120000,1591660800250000,put,9500,1591948800000000,"
    "12.5,0.031,0.029,5.0,58.1,0.033,7.5,63.4,0.0312,60.7,SYN.BTC-12JUN20,9712.4,"
    "-0.3821,0.00041,6.1234,-31.2,-0.95")


def bars_frame(n: int = 48, *, freq: str = "1h", start: str = "2022-01-01T00:00:00Z",
               seed: int = 7) -> pd.DataFrame:
    """Valid canonical bars: a seeded random walk with consistent OHLC."""
    rng = np.random.default_rng(seed)
    close = 40_000.0 * np.exp(np.cumsum(rng.normal(0.0, 0.004, n)))
    open_ = np.concatenate([[40_000.0], close[:-1]])
    high = np.maximum(open_, close) * (1.0 + rng.uniform(0.0, 0.003, n))
    low = np.minimum(open_, close) * (1.0 - rng.uniform(0.0, 0.003, n))
    ts = pd.date_range(pd.Timestamp(start), periods=n, freq=freq).as_unit("us")
    return pd.DataFrame({"ts": ts, "open": open_.round(2), "high": high.round(2),
                         "low": low.round(2), "close": close.round(2),
                         "volume": rng.uniform(1.0, 50.0, n).round(6)})


def _epoch(ts: pd.Series, unit: str) -> np.ndarray:
    us = ts.to_numpy(dtype="datetime64[us]").view(np.int64)
    return {"s": us // 10**6, "ms": us // 10**3, "us": us}[unit]


def _write(path: Path, text: str) -> Path:
    path = Path(path)
    data = text.encode("utf-8")
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(data, mtime=0))
    else:
        path.write_bytes(data)
    return path


def write_binance_klines(path: Path, bars: pd.DataFrame, *, unit: str = "ms",
                         units: list[str] | None = None) -> Path:
    """Headerless Binance kline CSV; ``units`` gives a unit per row (mixed files)."""
    n = len(bars)
    units = units or [unit] * n
    step_us = int((bars["ts"].iloc[1] - bars["ts"].iloc[0]) / pd.Timedelta(1, unit="us"))
    lines = []
    for i in range(n):
        u = units[i]
        open_t = int(_epoch(bars["ts"].iloc[[i]], u)[0])
        close_t = open_t + (step_us // {"s": 10**6, "ms": 10**3, "us": 1}[u]) - 1
        r = bars.iloc[i]
        lines.append(f"{open_t},{r.open:.2f},{r.high:.2f},{r.low:.2f},{r.close:.2f},"
                     f"{r.volume:.6f},{close_t},{r.volume * r.close:.4f},{100 + i},"
                     f"{r.volume / 2:.6f},{r.volume * r.close / 2:.4f},0")
    return _write(path, "\n".join(lines) + "\n")


def write_cdd(path: Path, bars: pd.DataFrame, *, unit: str = "s", newest_first: bool = True,
              swap_volume_rows: int = 0) -> Path:
    """CryptoDataDownload CSV; the oldest ``swap_volume_rows`` rows get the vendor's
    swapped volume columns (USD volume under ``Volume BTC``)."""
    unix = _epoch(bars["ts"], unit)
    vol_btc = bars["volume"].to_numpy().copy()
    vol_usd = vol_btc * bars["close"].to_numpy()
    shown_btc, shown_usd = vol_btc.copy(), vol_usd.copy()
    shown_btc[:swap_volume_rows], shown_usd[:swap_volume_rows] = (
        vol_usd[:swap_volume_rows], vol_btc[:swap_volume_rows])
    rows = [f"{unix[i]},{bars['ts'].iloc[i]:%Y-%m-%d %H:%M:%S},BTC/USD,{bars['open'].iloc[i]},"
            f"{bars['high'].iloc[i]},{bars['low'].iloc[i]},{bars['close'].iloc[i]},"
            f"{shown_btc[i]:.8f},{shown_usd[i]:.8f}" for i in range(len(bars))]
    if newest_first:
        rows = rows[::-1]
    head = ["https://www.CryptoDataDownload.com",
            "unix,date,symbol,open,high,low,close,Volume BTC,Volume USD"]
    return _write(path, "\n".join(head + rows) + "\n")


def write_generic_csv(path: Path, bars: pd.DataFrame, *, time_column: str = "timestamp",
                      time_format: str = "iso", upper: bool = False) -> Path:
    """Generic OHLCV CSV with ISO (with offset), naive ISO or epoch time values."""
    frame = bars.copy()
    if time_format == "iso":
        frame["ts"] = frame["ts"].map(lambda t: t.isoformat())
    elif time_format == "naive":
        frame["ts"] = frame["ts"].dt.tz_localize(None).map(lambda t: t.isoformat())
    else:
        frame["ts"] = _epoch(frame["ts"], time_format)
    frame = frame.rename(columns={"ts": time_column})
    if upper:
        frame.columns = [c.upper() for c in frame.columns]
    return _write(path, frame.to_csv(index=False))


def tardis_frame(*, start: str = "2020-09-01T00:00:00Z", hours: int = 3,
                 updates_per_hour: int = 4, seed: int = 11) -> pd.DataFrame:
    """Rows of a Tardis ``options_chain`` file: several updates per symbol per hour.

    Two expiries x three strikes x call/put of BTC, plus one ETH and one BTC_USDC
    instrument (other currencies, filtered out by default). ``mark_iv`` in percent.
    """
    rng = np.random.default_rng(seed)
    t0 = pd.Timestamp(start)
    t0_us = int(t0.value // 1000)
    expiries = [pd.Timestamp("2020-09-25T08:00:00Z"), pd.Timestamp("2020-12-25T08:00:00Z")]
    names = {pd.Timestamp("2020-09-25T08:00:00Z"): "25SEP20",
             pd.Timestamp("2020-12-25T08:00:00Z"): "25DEC20"}
    specs = []
    for exp in expiries:
        for strike in (10_000, 11_500, 13_000):
            for kind, letter in (("call", "C"), ("put", "P")):
                specs.append((f"BTC-{names[exp]}-{strike}-{letter}", kind, strike, exp,
                              f"BTC-{names[exp]}"))
    specs.append(("ETH-25SEP20-400-C", "call", 400, expiries[0], "ETH-25SEP20"))
    specs.append(("BTC_USDC-25SEP20-12000-C", "call", 12_000, expiries[0], "BTC_USDC-25SEP20"))
    rows = []
    hour_us = 3_600 * 10**6
    for h in range(hours):
        for k in range(updates_per_hour):
            for sym, kind, strike, exp, under in specs:
                # strictly inside (h, h+1] hours so the bucket is unambiguous
                local = t0_us + h * hour_us + (k + 1) * hour_us // (updates_per_hour + 1) \
                    + int(rng.integers(0, 1000))
                exch = local - int(rng.integers(100, 5_000))
                iv = 60.0 + 10 * rng.standard_normal() + (5.0 if kind == "put" else 0.0)
                spot = 11_500.0 * (1 + 0.01 * rng.standard_normal())
                rows.append({
                    "exchange": "deribit", "symbol": sym, "timestamp": exch,
                    "local_timestamp": local, "type": kind, "strike_price": strike,
                    "expiration": int(exp.value // 1000),
                    "open_interest": round(float(rng.uniform(0, 500)), 1),
                    "last_price": "", "bid_price": 0.01, "bid_amount": 1.0,
                    "bid_iv": round(iv - 2, 2), "ask_price": 0.02, "ask_amount": 1.0,
                    "ask_iv": round(iv + 2, 2), "mark_price": 0.015, "mark_iv": round(iv, 2),
                    "underlying_index": under, "underlying_price": round(spot, 2),
                    "delta": 0.5, "gamma": 0.0001, "vega": 10.0, "theta": -5.0, "rho": 1.0,
                })
    frame = pd.DataFrame(rows)
    return frame.sort_values("local_timestamp", kind="stable", ignore_index=True)


def write_tardis(path: Path, frame: pd.DataFrame | None = None, *,
                 with_extra_row: bool = False) -> Path:
    """Write a Tardis ``options_chain`` CSV (header exactly as documented)."""
    frame = tardis_frame() if frame is None else frame
    body = frame[TARDIS_HEADER.split(",")].to_csv(index=False, header=False)
    text = TARDIS_HEADER + "\n" + (TARDIS_ROW + "\n" if with_extra_row else "") + body
    return _write(path, text)


def write_text(path: Path, text: str) -> Path:
    """Write ``text`` (gzip when the name ends in .gz)."""
    return _write(path, text)


OPTIONSDX_COLUMNS = (
    "QUOTE_UNIXTIME", "QUOTE_READTIME", "QUOTE_DATE", "QUOTE_TIME_HOURS", "INSTRUMENT_NAME",
    "BASE_CURRENCY", "CONTRACT_SIZE", "UNDERLYING_INDEX", "UNDERLYING_PRICE", "EXPIRY_DATE",
    "EXPIRY_UNIX", "EXPIRY_TIME", "DTE", "OPTION_RIGHT", "STRIKE", "BID_SIZE", "BID_PRICE",
    "ASK_PRICE", "ASK_SIZE", "OPEN_INTEREST", "VOLUME", "DELTA", "GAMMA", "VEGA", "THETA",
    "RHO", "MARK_IV", "STRIKE_DISTANCE_PCT")


def optionsdx_frame(*, days: int = 2, seed: int = 3) -> pd.DataFrame:
    """An OptionsDX BTC EOD chain: snapshots at 00:00 New York (05:00 UTC in January)."""
    rng = np.random.default_rng(seed)
    rows = []
    for d in range(days):
        quote = pd.Timestamp("2022-01-10T05:00:40Z") + pd.Timedelta(days=d)
        for exp_name, exp in (("28JAN22", pd.Timestamp("2022-01-28T08:00:00Z")),
                              ("25MAR22", pd.Timestamp("2022-03-25T08:00:00Z"))):
            under = f"BTC-{exp_name}" if exp_name == "25MAR22" else f"SYN.BTC-{exp_name}"
            for strike in (40_000, 45_000):
                for right, letter in (("call", "C"), ("put", "P")):
                    rows.append({
                        "QUOTE_UNIXTIME": int(quote.timestamp()),
                        "QUOTE_READTIME": f"{quote.tz_convert('America/New_York'):%Y-%m-%d %H:%M}",
                        "QUOTE_DATE": f"{quote:%Y-%m-%d}", "QUOTE_TIME_HOURS": 0.0,
                        "INSTRUMENT_NAME": f"BTC-{exp_name}-{strike}-{letter}",
                        "BASE_CURRENCY": "BTC", "CONTRACT_SIZE": 1.0,
                        "UNDERLYING_INDEX": under,
                        "UNDERLYING_PRICE": round(42_000 + 500 * rng.standard_normal(), 2),
                        "EXPIRY_DATE": f"{exp:%Y-%m-%d}", "EXPIRY_UNIX": int(exp.timestamp()),
                        "EXPIRY_TIME": 3.0, "DTE": (exp - quote) / pd.Timedelta(days=1),
                        "OPTION_RIGHT": right, "STRIKE": float(strike), "BID_SIZE": 1.0,
                        "BID_PRICE": 0.01, "ASK_PRICE": 0.02, "ASK_SIZE": 1.0,
                        "OPEN_INTEREST": round(float(rng.uniform(1, 900)), 1), "VOLUME": "",
                        "DELTA": 0.5, "GAMMA": 3e-05, "VEGA": 40.0, "THETA": -60.0, "RHO": 5.0,
                        "MARK_IV": round(70 + 8 * rng.standard_normal(), 2),
                        "STRIKE_DISTANCE_PCT": 0.05,
                    })
    return pd.DataFrame(rows, columns=list(OPTIONSDX_COLUMNS))


def write_optionsdx(path: Path, frame: pd.DataFrame | None = None) -> Path:
    """OptionsDX layout: ``[BRACKETED]`` headers, fields separated by comma + space."""
    frame = optionsdx_frame() if frame is None else frame
    header = ", ".join(f"[{c}]" for c in frame.columns)
    lines = [", ".join("" if (isinstance(v, float) and np.isnan(v)) else
                       (f"{v:.6f}" if isinstance(v, float) else str(v)) for v in row)
             for row in frame.itertuples(index=False)]
    return _write(path, "\n".join([header, *lines]) + "\n")


def deribit_hourly_frame(dates: list[str] | None = None, *, seed: int = 5) -> pd.DataFrame:
    """The Deribit hourly chain layout (no underlying column); ``date`` naive ISO UTC."""
    rng = np.random.default_rng(seed)
    dates = dates or ["2026-01-23T01:00:00.000000", "2026-01-23T02:00:00.000000"]
    rows = []
    for date in dates:
        for strike in (85_000.0, 90_000.0, 95_000.0):
            for kind, letter in (("call", "C"), ("put", "P")):
                iv = round(40 + 5 * rng.standard_normal(), 2)
                rows.append({
                    "date": date, "instrument_name": f"BTC-13FEB26-{int(strike)}-{letter}",
                    "expiry_name": "13FEB26", "expiry_date": "2026-02-13", "strike": strike,
                    "type": kind, "volume": 1.0,
                    "open_interest": round(float(rng.uniform(0, 400)), 1), "rho": 1.0,
                    "theta": -30.0, "vega": 40.0, "gamma": 2e-05, "delta": 0.5,
                    "bid_iv": iv - 1, "ask_iv": iv + 1, "mark_iv": iv,
                })
    return pd.DataFrame(rows)


def write_csv(path: Path, frame: pd.DataFrame) -> Path:
    """Plain CSV of ``frame`` without index (gzip when the name ends in .gz)."""
    return _write(path, frame.to_csv(index=False))

"""Tradable legs on one clock: spot, perpetual, dated futures and the front series.

Every instrument a run trades is its own Backtrader feed, and all of them run on the
clock of the spot bars (the same ``ts`` grid), carrying the spot feed's gamma,
liquidation and basis lines. Only the price lines and four leg lines differ:

``fresh``
    1.0 when the leg has a price stamped inside the bar, ``[open, close)``: only then
    may an order fill on it. An order decided at a bar's close fills at the next fresh
    bar's ``open`` (the first price stamped at or after the order, as Backtrader fills
    spot at the next bar's open), never at a stale price.
``settle``
    The settlement price on the bar whose close reaches the expiry (a dated future),
    NaN elsewhere. It is the spot price in force at expiry (the close of the last spot
    bar closing at or before it), since the inputs carry no exchange fixing.
``dte``
    Days from the bar's close to the expiry (NaN for spot and the perpetual).
``funding_rate``
    For the perpetual: the funding settled inside the bar, ``(close_prev, close]``, as a
    fraction of notional per payment (a daily aggregate row pays three 8-hour periods);
    0 elsewhere. The broker charges ``qty * close * funding_rate`` at the bar's close.
    This is the settlement itself, at its stamp whatever the funding input's
    publication delay: the exchange settles then and the account sees the payment;
    the delay applies to the ``funding_ann`` signal line.

Publication lag
---------------
The caller passes futures quotes stamped when they were published (``available_at``,
see :mod:`gammabt.inputs`): a quote marks its leg, and may fill an order, only from
then, so a strategy never trades on a price it could not have seen.

Sparse legs
-----------
A dated future observed once a day (OptionsDX) against hourly spot marks to the last
price in force (``close`` = the latest observation stamped at or before the bar close,
NaN before the first one) and is fresh only on the bars that hold a new observation.
After the expiry bar the leg keeps the settlement price and is never fresh again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from feeds.btfeed import FeedArrays, FloatArray, GammaFeed, IntArray, _timeframe
from feeds.pit import US_PER_DAY
from plumbing.aliases import TableLike
from plumbing.errors import DataError
from plumbing.timeconv import to_epoch_us

LINES_LEG = ("fresh", "settle", "dte", "funding_rate")
PRICE_LINES = ("open", "high", "low", "close")


@dataclass(frozen=True)
class Leg:
    """What a feed trades: its name in Cerebro, its kind and (futures) its expiry.

    Attributes
    ----------
    name
        Feed name (``spot``, ``perp``, ``front`` or the future's instrument name).
    kind
        ``spot``, ``perp``, ``future`` or ``front`` (a signal series, not tradable).
    expiry
        Expiry of a dated future (UTC), else None.
    """

    name: str
    kind: str
    expiry: pd.Timestamp | None = None


class InstrumentFeed(GammaFeed):
    """:class:`feeds.btfeed.GammaFeed` plus the leg lines of this module.

    Build it with :func:`leg_feed`. ``leg`` describes what it trades.
    """

    lines = LINES_LEG

    leg: Leg = Leg("spot", "spot")

    def clone(self, **kwargs):
        data = super().clone(**kwargs)
        data.leg = self.leg
        return data


def leg_feed(arrays: FeedArrays, leg: Leg, **bt_params) -> InstrumentFeed:
    """An :class:`InstrumentFeed` over ``arrays``; spot leg lines are added if absent."""
    if any(name not in arrays.lines for name in LINES_LEG):
        arrays = with_lines(arrays, spot_leg_lines(len(arrays)))
    timeframe, compression = _timeframe(arrays.bar_freq_us)
    params = {"timeframe": timeframe, "compression": compression, **bt_params}
    feed = InstrumentFeed(dataname=arrays, name=leg.name, **params)
    feed.leg = leg
    return feed


def with_lines(arrays: FeedArrays, lines: Mapping[str, np.ndarray]) -> FeedArrays:
    """A copy of ``arrays`` with some lines replaced or added (read-only float64)."""
    merged = dict(arrays.lines)
    for name, values in lines.items():
        arr = np.array(values, dtype=np.float64)  # a copy: the caller's array stays writable
        if arr.shape != (len(arrays),):
            raise DataError(f"line {name!r} has {arr.shape[0]} values", column=name,
                            expected=f"{len(arrays)} values, one per bar",
                            fix="build leg lines on the spot clock")
        arr.setflags(write=False)
        merged[name] = arr
    return dataclasses.replace(arrays, lines=merged)


def spot_leg_lines(n: int) -> dict[str, FloatArray]:
    """Leg lines of an instrument that trades on every bar with no expiry or funding."""
    return {"fresh": np.ones(n), "settle": np.full(n, np.nan), "dte": np.full(n, np.nan),
            "funding_rate": np.zeros(n)}


def bar_leg_lines(clock: FeedArrays, bars: pd.DataFrame, *, source: str = "perp",
                  ) -> dict[str, FloatArray]:
    """Price and leg lines of a leg with its own OHLCV bars (the perpetual).

    Bars are matched to the clock by their open time. A clock bar without a leg bar
    carries the previous close (high = low = open = close) and is not fresh; bars before
    the first leg bar are NaN. Leg bars off the clock are ignored.
    """
    if len(bars) == 0:
        raise DataError("no bars", source=source, expected="the leg's OHLCV bars",
                        fix="check the file, or leave the leg out")
    us = to_epoch_us(bars["ts"], source=source)
    pos = np.minimum(np.searchsorted(us, clock.open_us), len(us) - 1)
    hit = us[pos] == clock.open_us
    out: dict[str, FloatArray] = {}
    for name in PRICE_LINES:
        out[name] = np.where(hit, bars[name].to_numpy(dtype=np.float64)[pos], np.nan)
    close = _ffill(out["close"])
    for name in PRICE_LINES:
        out[name] = np.where(hit, out[name], close)
    out["volume"] = np.where(hit, bars["volume"].to_numpy(dtype=np.float64)[pos], 0.0)
    lines = spot_leg_lines(len(clock))
    lines["fresh"] = (hit & np.isfinite(out["open"])).astype(np.float64)
    out.update(lines)
    return out


def observation_leg_lines(clock: FeedArrays, obs_us: IntArray, price: FloatArray, *,
                          expiry_us: int | None = None,
                          spot_close: FloatArray | None = None) -> dict[str, FloatArray]:
    """Price and leg lines of a leg observed at points in time (a dated future).

    Parameters
    ----------
    clock
        The spot feed's arrays (bar open/close times).
    obs_us, price
        Observation stamps (UTC microseconds, strictly increasing) and prices (USD).
    expiry_us
        Expiry; settlement at the first bar whose close reaches it, at the spot in force
        at the expiry (``spot_close`` of the last bar closing at or before it).
    spot_close
        Spot closes on the clock (needed with ``expiry_us``).

    Returns
    -------
    dict
        ``open, high, low, close, volume, fresh, settle, dte, funding_rate``.

    Formula::

        close[k] = price[last j: obs[j] <= close_us[k]]       (NaN if none)
        fresh[k] = any obs[j] in [open_us[k], close_us[k])
        open[k]  = price[first such j] if fresh[k] else close[k-1]
    """
    n = len(clock)
    open_us, close_us = clock.open_us, clock.close_us
    last = np.searchsorted(obs_us, close_us, side="right") - 1
    close = np.where(last >= 0, price[np.maximum(last, 0)], np.nan)
    first = np.searchsorted(obs_us, open_us, side="left")
    end = np.searchsorted(obs_us, close_us, side="left")
    fresh = end > first
    prev_close = np.r_[np.nan, close[:-1]]
    open_ = np.where(fresh, price[np.minimum(first, len(price) - 1)], prev_close)
    open_ = np.where(np.isnan(open_), close, open_)
    settle = np.full(n, np.nan)
    dte = np.full(n, np.nan)
    if expiry_us is not None:
        dte = (expiry_us - close_us) / US_PER_DAY
        fresh &= open_us < expiry_us
        k = int(np.searchsorted(close_us, expiry_us, side="left"))
        if k < n:
            if spot_close is None:
                raise DataError("no spot closes to settle the future", column="settle",
                                expected="spot_close with expiry_us",
                                fix="pass the spot feed's closes")
            j = int(np.searchsorted(close_us, expiry_us, side="right")) - 1
            settle_price = float(spot_close[j]) if j >= 0 else float(close[k])
            settle[k] = settle_price
            open_[k + 1:] = close[k + 1:] = settle_price
            close[k] = settle_price
            dte = np.where(np.arange(n) > k, np.nan, np.maximum(dte, 0.0))
    high = np.fmax(open_, close)
    low = np.fmin(open_, close)
    return {"open": open_, "high": high, "low": low, "close": close, "volume": np.zeros(n),
            "fresh": fresh.astype(np.float64), "settle": settle, "dte": dte,
            "funding_rate": np.zeros(n)}


def front_leg_lines(clock: FeedArrays, futures: Mapping[Leg, Mapping[str, FloatArray]], *,
                    min_dte_days: float = 7.0) -> dict[str, FloatArray]:
    """The continuous front series: per bar, the nearest listed expiry with at least
    ``min_dte_days`` left and a price in force. For signals only (never fresh).

    ``dte`` tells which expiry is in force; rolls show as jumps in price and ``dte``.
    """
    n = len(clock)
    best_dte = np.full(n, np.inf)
    close = np.full(n, np.nan)
    for lines in futures.values():
        dte = lines["dte"]
        ok = np.isfinite(lines["close"]) & (dte >= min_dte_days) & (dte < best_dte)
        best_dte = np.where(ok, dte, best_dte)
        close = np.where(ok, lines["close"], close)
    dte = np.where(np.isfinite(best_dte), best_dte, np.nan)
    lines = {"open": close, "high": close, "low": close, "close": close,
             "volume": np.zeros(n), **spot_leg_lines(n)}
    lines["fresh"] = np.zeros(n)
    lines["dte"] = dte
    return lines


def future_legs(futures: TableLike, clock: FeedArrays, spot_close: FloatArray,
                ) -> dict[Leg, dict[str, FloatArray]]:
    """One leg per expiry of a canonical FUTURES table that trades inside the clock.

    Expiries that settle before the first bar, or have no observation up to the last
    bar close, are left out. Several rows of one expiry at one stamp: the last wins.
    """
    df = futures.to_pandas() if isinstance(futures, pa.Table) else futures
    if len(df) == 0:
        return {}
    ts = to_epoch_us(df["ts"], source="futures")
    expiry = to_epoch_us(df["expiry"], source="futures", column="expiry")
    price = df["price"].to_numpy(dtype=np.float64)
    names = df["instrument"].astype(object).to_numpy() if "instrument" in df.columns \
        else np.full(len(df), None, dtype=object)
    out: dict[Leg, dict[str, FloatArray]] = {}
    for e in np.unique(expiry):
        rows = np.flatnonzero(expiry == e)
        order = rows[np.argsort(ts[rows], kind="stable")]
        obs, px = ts[order], price[order]
        keep = np.r_[obs[1:] != obs[:-1], True]  # last row of a stamp wins
        obs, px = obs[keep], px[keep]
        if e <= clock.close_us[0] or obs[0] > clock.close_us[-1]:
            continue
        stamp = pd.Timestamp(int(e), unit="us", tz="UTC")
        name = names[order[-1]]
        if not isinstance(name, str) or not name:
            name = f"BTC-{stamp.strftime('%d%b%y').upper()}"
        leg = Leg(name, "future", stamp)
        out[leg] = observation_leg_lines(clock, obs, px, expiry_us=int(e),
                                         spot_close=spot_close)
    return out


def funding_per_bar(clock: FeedArrays, funding: TableLike) -> FloatArray:
    """Funding paid per unit notional inside each bar, ``(close_prev, close]``.

    A FUNDING row stamped ``t`` settles ``rate_8h * interval_h / 8`` at ``t`` (a daily
    mean row stamped at the end of its day pays three 8-hour periods). Stamps before
    the first bar's open or after the last close are ignored.
    """
    df = funding.to_pandas() if isinstance(funding, pa.Table) else funding
    out = np.zeros(len(clock))
    if len(df) == 0:
        return out
    us = to_epoch_us(df["ts"], source="funding")
    rate = df["rate_8h"].to_numpy(dtype=np.float64) * df["interval_h"].to_numpy(
        dtype=np.float64) / 8.0
    bar = np.searchsorted(clock.close_us, us, side="left")
    inside = (bar < len(clock)) & (us > clock.open_us[0]) & np.isfinite(rate)
    np.add.at(out, bar[inside], rate[inside])
    return out


def _ffill(values: FloatArray) -> FloatArray:
    idx = np.where(np.isfinite(values), np.arange(len(values)), -1)
    np.maximum.accumulate(idx, out=idx)
    return np.where(idx >= 0, values[np.maximum(idx, 0)], np.nan)

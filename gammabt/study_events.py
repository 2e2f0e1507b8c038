"""Event study: each motivating sell-off against the calm weeks before it.

For each event date ``at``: the event window ``[at - window, at + window)`` and the calm
baseline ``[at - window - calm, at - window)``, both measured on the same bars: price
path (return, realized vol, max drawdown, fastest 24-bar fall, bars from peak to trough),
perp premium over spot (bps, when both are given), funding APR and open-interest change
(when the files cover the dates), the dealer-gamma regime and flip from the last chain
snapshot available before ``at`` (when a chain covers the date), and the liquidation
lines estimated from volume at the start of the window (``liq_below`` and whether the
window's low reached it). A missing input or uncovered date is said in the row's
``notes``, never filled in.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from feeds.loaders import bar_freq, load_chain
from gammabt.study import _concat_bars
from indicators.events import path_measures
from indicators.gamma import summarize
from indicators.liquidation import estimate_liq_map
from plumbing.errors import ConfigError

WINDOW = pd.Timedelta("7D")
CALM = pd.Timedelta("21D")


def parse_dates(values: Sequence[str]) -> list[pd.Timestamp]:
    """``--at`` values -> UTC timestamps (naive dates are read as UTC days)."""
    out = []
    for v in values:
        try:
            ts = pd.Timestamp(v)
        except ValueError:
            ts = pd.NaT
        if pd.isna(ts):
            raise ConfigError(f"--at {v!r} is not a date", column="at",
                              expected="a UTC date like 2025-11-21", fix="e.g. --at 2025-11-21")
        out.append(ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC"))
    return out


def _segment(bars: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
    return bars[(bars["ts"] >= start) & (bars["ts"] < end)]


def _covers(frame: pd.DataFrame | None, start: pd.Timestamp, end: pd.Timestamp) -> bool:
    return frame is not None and len(frame) > 0 and frame["ts"].iloc[0] <= start \
        and frame["ts"].iloc[-1] >= end - pd.Timedelta("1D")


def _measures(bars: pd.DataFrame, spot: pd.DataFrame | None, funding: pd.DataFrame | None,
              oi: pd.DataFrame | None, liq: pd.DataFrame | None, start: pd.Timestamp,
              end: pd.Timestamp, ppy: float, notes: list[str], label: str) -> dict:
    seg = _segment(bars, start, end)
    expected = int((end - start) / bar_freq(bars))
    row: dict = {"start": start, "end": end, "n_bars": len(seg)}
    if len(seg) < expected:
        notes.append(f"{label}: bars cover {len(seg)} of {expected} bars")
    row.update(path_measures(seg["open"], seg["high"], seg["low"], seg["close"],
                             periods_per_year=ppy))
    row["low"] = float(seg["low"].min()) if len(seg) else np.nan
    if spot is not None and len(seg):
        both = seg[["ts", "close"]].merge(spot[["ts", "close"]], on="ts", suffixes=("", "_s"))
        prem = (both["close"] / both["close_s"] - 1) * 1e4
        row.update({"premium_mean_bps": prem.mean(), "premium_min_bps": prem.min(),
                    "premium_max_bps": prem.max()})
        if len(both) < len(seg):
            notes.append(f"{label}: spot bars cover {len(both)} of {len(seg)} hours for "
                         "the perp premium")
    if funding is not None:
        f = _segment(funding, start, end)
        if len(f):
            row["funding_apr_mean"] = float((f["rate_8h"] * 3 * 365).mean())
        else:
            notes.append(f"{label}: funding file does not cover the window")
    if oi is not None:
        o = _segment(oi, start, end)
        col = "oi_usd" if "oi_usd" in o and o["oi_usd"].notna().any() else "oi_btc"
        if len(o) >= 2:
            row["oi_change_pct"] = float((o[col].iloc[-1] / o[col].iloc[0] - 1) * 100)
            row["oi_min_change_pct"] = float((o[col].min() / o[col].iloc[0] - 1) * 100)
        else:
            notes.append(f"{label}: open-interest file does not cover the window")
    if liq is not None and len(seg):
        before = liq[liq["ts"] < start]
        if len(before):
            line = before.iloc[-1]
            row["liq_below"] = float(line["liq_below"])
            row["liq_below_usd"] = float(line["liq_below_usd"])
            row["liq_above"] = float(line["liq_above"])
            row["reached_liq_below"] = bool(row["low"] <= line["liq_below"])
    return row


def events_study(at: Sequence[pd.Timestamp], bars: Sequence[Path], *,
                 perp: Sequence[Path] = (), spot: Sequence[Path] = (),
                 funding: Path | None = None, oi: Path | None = None,
                 chains: Sequence[Path] = (), window: pd.Timedelta = WINDOW,
                 calm: pd.Timedelta = CALM) -> pd.DataFrame:
    """One row per (event, segment) with segment ``event`` or ``calm``; see the module.

    ``bars`` are the prices measured (spot, or the perp when that is all there is);
    ``perp`` and ``spot`` give the premium ``perp / spot - 1`` (with only ``perp``, the
    ``bars`` are taken as the spot side; with only ``spot``, the ``bars`` as the perp).
    """
    from feeds.derivs import load_funding, load_open_interest

    if not at:
        raise ConfigError("no event date", column="at", expected="--at DATE (repeatable)",
                          fix="e.g. --at 2025-11-21")
    price = _concat_bars(bars)
    ppy = pd.Timedelta(days=365) / bar_freq(price)
    perp_bars = _concat_bars(perp) if perp else None
    spot_bars = _concat_bars(spot) if spot else None
    if perp_bars is not None:
        premium_pair = (perp_bars, spot_bars if spot_bars is not None else price)
    elif spot_bars is not None:
        premium_pair = (price, spot_bars)
    else:
        premium_pair = None
    fund = load_funding(funding).to_pandas() if funding else None
    oit = load_open_interest(oi).to_pandas() if oi else None
    liq = estimate_liq_map(price).lines
    summ = pd.concat([summarize(load_chain(c)) for c in chains], ignore_index=True) \
        if chains else None
    rows = []
    for t in at:
        segments = {"event": (t - window, t + window),
                    "calm": (t - window - calm, t - window)}
        for name, (start, end) in segments.items():
            notes: list[str] = []
            label = f"{t.date()} {name}"
            measured = premium_pair[0] if premium_pair else price
            row = _measures(price if measured is price else measured,
                            premium_pair[1] if premium_pair else None, fund, oit, liq,
                            start, end, ppy, notes, label)
            if measured is not price:       # path measures on the main bars
                row.update(path_measures(*(_segment(price, start, end)[k] for k in
                                           ("open", "high", "low", "close")),
                                         periods_per_year=ppy))
            if premium_pair is None:
                notes.append("no perp/spot pair: premium not measured")
            if funding is None:
                notes.append("no funding file")
            if oi is None:
                notes.append("no open-interest file")
            if summ is not None and len(summ):
                known = summ[summ["ts"] <= t]
                if len(known) and t - known["ts"].iloc[-1] <= pd.Timedelta("2D"):
                    last = known.iloc[-1]
                    row.update({"regime": int(last["regime"]),
                                "gamma_flip": float(last["gamma_flip"]),
                                "chain_ts": last["ts"]})
                else:
                    notes.append(f"no chain snapshot within 2 days before {t.date()}: "
                                 "regime and flip unknown")
            else:
                notes.append(f"no chain covers {t.date()}: regime and flip unknown")
            rows.append({"event": t.date().isoformat(), "segment": name, **row,
                         "notes": "; ".join(dict.fromkeys(notes))})
    return pd.DataFrame(rows)

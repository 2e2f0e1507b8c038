"""Funding-rate files shared by the community (no vendor of their own).

``funding_daily_mean``
    ``date, funding_mean[, funding_abs]``: the mean of a day's 8-hourly rates. A daily
    mean is only known once the day is over, so the row is stamped at the **end** of the
    day (``date + 1 day``, 00:00 UTC) with ``interval_h = 24``.
``funding_8h_sheet``
    ``Date, FundingRate`` with ``Date`` as ``dd/mm/yy H:MM`` (UTC), any order.
"""

from __future__ import annotations

import pandas as pd

from feeds.formats.base import Format, LoadOptions, Mapped
from feeds.formats.sniffing import Sniff, column_lookup, to_float
from feeds.formats.times import to_utc

__all__ = ["FORMATS"]


def _map_daily_mean(df: pd.DataFrame, src: str, _options: LoadOptions) -> Mapped:
    c = column_lookup(df.columns)
    day = to_utc(df[c["date"]], c["date"], src, naive_utc=True, fmt="%Y-%m-%d")
    return Mapped(pd.DataFrame({
        "ts": day + pd.Timedelta(days=1),
        "rate_8h": to_float(df[c["funding_mean"]], c["funding_mean"], src), "interval_h": 24.0}),
        {"ts": c["date"], "rate_8h": c["funding_mean"]})


def _map_8h_sheet(df: pd.DataFrame, src: str, _options: LoadOptions) -> Mapped:
    c = column_lookup(df.columns)
    ts = to_utc(df[c["date"]], c["date"], src, naive_utc=True, fmt="%d/%m/%y %H:%M")
    return Mapped(pd.DataFrame({
        "ts": ts, "rate_8h": to_float(df[c["fundingrate"]], c["fundingrate"], src),
        "interval_h": 8.0}), {"ts": c["date"], "rate_8h": c["fundingrate"]})


def _detect_daily_mean(sniff: Sniff) -> int:
    return 50 if {"date", "funding_mean"} <= sniff.lower_columns else 0


def _detect_8h_sheet(sniff: Sniff) -> int:
    return 40 if {"date", "fundingrate"} <= sniff.lower_columns else 0


FORMATS = (
    Format("funding", "funding_daily_mean", "date,funding_mean[,funding_abs] (daily means)",
           _detect_daily_mean, _map_daily_mean),
    Format("funding", "funding_8h_sheet", "Date,FundingRate with Date as dd/mm/yy H:MM (UTC)",
           _detect_8h_sheet, _map_8h_sheet),
)

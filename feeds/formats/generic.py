"""Generic bars: a CSV with a time column and OHLCV columns, or such a Parquet file."""

from __future__ import annotations

import pandas as pd

from feeds.formats.base import Format, LoadOptions, Mapped
from feeds.formats.sniffing import (
    Sniff,
    column_lookup,
    missing_columns,
    read_table,
)
from feeds.formats.times import time_to_utc

__all__ = ["FORMATS", "OHLCV", "TIME_COLUMNS", "map_bars"]

#: Accepted names of the bar-open time column, in order of preference (any case).
TIME_COLUMNS = ("ts", "timestamp", "open_time", "unix", "datetime", "date", "time")
OHLCV = ("open", "high", "low", "close", "volume")


def map_bars(raw: pd.DataFrame, source: str, _options: LoadOptions | None = None) -> Mapped:
    """Bars from a frame with a time column and open, high, low, close, volume (any case)."""
    lookup = column_lookup(raw.columns)
    tcol = next((lookup[n] for n in TIME_COLUMNS if n in lookup), None)
    if tcol is None:
        raise missing_columns(source, ["ts"], "a time column named one of "
                              f"{', '.join(TIME_COLUMNS)} (any case)",
                              "rename the time column (bar open time, epoch or ISO with offset)")
    absent = [n for n in OHLCV if n not in lookup]
    if absent:
        raise missing_columns(source, absent, "columns open, high, low, close, volume (any case)",
                              "rename the columns (volume in base units; use 0 if unknown)")
    frame = pd.DataFrame({n: raw[lookup[n]] for n in OHLCV})
    frame.insert(0, "ts", time_to_utc(raw[tcol], str(tcol), source))
    return Mapped(frame, {"ts": str(tcol)})


def _detect_csv(sniff: Sniff) -> int:
    return int(not sniff.parquet and bool(sniff.lower_columns & set(TIME_COLUMNS)))


FORMATS = (
    Format("bars", "generic_csv",
           "CSV with a time column (ts, timestamp, open_time, unix, datetime, date or time; "
           "epoch numbers or ISO strings with an offset) and open, high, low, close, volume "
           "(any case)", _detect_csv, map_bars, read_table),
    Format("bars", "parquet", "Parquet with canonical BARS columns or the generic columns above",
           lambda sniff: int(sniff.parquet), map_bars, read_table),
)

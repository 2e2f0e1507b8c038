"""Time columns of data files to UTC, checking every row.

Every loader converts its time columns here (:func:`to_utc`):

- tz-aware datetimes are converted to UTC;
- epoch numbers are read as seconds, milliseconds, microseconds or nanoseconds by
  magnitude, value by value (Binance switched spot klines from ms to us in 2025, so a
  concatenated file may hold both), and must fall between 1990 and 2100;
- text is ISO 8601 and must carry a UTC offset unless the format documents it as UTC;
- text in an explicit ``strptime`` format, every row exactly.

Errors name the file, the 0-based data row and the column.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from plumbing.aliases import TimeLike
from plumbing.errors import ConfigError, DataError
from plumbing.timeconv import from_epoch_us

__all__ = [
    "OFFSET_RE",
    "epoch_to_utc",
    "iso_to_utc",
    "strptime_to_utc",
    "time_text",
    "time_to_utc",
    "to_utc",
    "to_utc_bound",
]

_EPOCH_MIN_US = 631_152_000 * 10**6     # 1990-01-01
_EPOCH_MAX_US = 4_102_444_800 * 10**6   # 2100-01-01
#: A time of day followed by a UTC offset, at the end of a timestamp's text.
OFFSET_RE = (r"\d{1,2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?\s*"
             r"(?:[zZ]|[+-]\d{2}(?::?\d{2})?|UTC|GMT|utc)$")


def to_utc(col: pd.Series, column: str, source: str, *, naive_utc: bool = False,
           fmt: str | None = None) -> pd.Series:
    """Convert a time column of a data file to UTC timestamps, checking every row.

    The conversion every format uses:

    - tz-aware datetimes are converted to UTC;
    - epoch numbers (numeric columns, or text that is all numbers) are read as seconds,
      milliseconds, microseconds or nanoseconds by magnitude, value by value
      (``|v| < 1e11`` s, ``< 1e14`` ms, ``< 1e17`` us, else ns), and must fall between
      1990 and 2100;
    - other text is ISO 8601 (or what ``pandas.to_datetime`` reads) and must carry a UTC
      offset (``+00:00``, ``Z``, ``UTC``), since a naive time is ambiguous;
    - with ``fmt``, text is parsed with that ``strptime`` format instead (e.g.
      ``"%d/%m/%y %H:%M"``), every row exactly.

    Parameters
    ----------
    col
        The column as read from the file.
    column, source
        Column name and file path, used in error messages.
    naive_utc
        Read naive times (text, ``fmt`` without ``%z``, naive datetimes) as UTC: only
        for formats documented as UTC without an offset.
    fmt
        Explicit ``strptime`` format for text times; None to detect.

    Returns
    -------
    pandas.Series
        ``datetime64[us, UTC]`` with the index of ``col``.

    Raises
    ------
    DataError
        Missing or unparsable value, epoch outside 1990..2100, or a naive time without
        ``naive_utc``; the message names the file, the 0-based row and the column.
    """
    if fmt is not None:
        return strptime_to_utc(col, column, source, fmt, naive_utc=naive_utc)
    return time_to_utc(col, column, source, naive_utc=naive_utc)


def epoch_to_utc(col: pd.Series, column: str, source: str) -> pd.Series:
    """Epoch numbers in s, ms, us or ns (chosen by magnitude per value) to UTC."""
    num = pd.to_numeric(col, errors="coerce")
    bad = num.isna().to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"cannot parse {col.iloc[i]!r} as an epoch time", source=source,
                        row=i, column=column, expected="an epoch number (s, ms, us or ns)",
                        fix="repair or remove the row")
    if pd.api.types.is_integer_dtype(num.dtype):
        a = num.to_numpy(dtype=np.int64)
        mag = np.abs(a)
        with np.errstate(over="ignore"):
            us = np.select([mag < 10**11, mag < 10**14, mag < 10**17],
                           [a * 10**6, a * 10**3, a], a // 1000)
    else:
        f = num.to_numpy(dtype=np.float64)
        mag = np.abs(f)
        us_f = np.select([mag < 1e11, mag < 1e14, mag < 1e17], [f * 1e6, f * 1e3, f], f / 1e3)
        us = np.rint(us_f).astype(np.int64)
    out_of_range = (us < _EPOCH_MIN_US) | (us > _EPOCH_MAX_US)
    if out_of_range.any():
        i = int(np.flatnonzero(out_of_range)[0])
        raise DataError(f"epoch value {col.iloc[i]!r} is not a date between 1990 and 2100 "
                        "in seconds, milliseconds, microseconds or nanoseconds",
                        source=source, row=i, column=column,
                        expected="epoch time of the bar open / snapshot",
                        fix="check the column holds epoch times")
    return from_epoch_us(us, col.index)


def iso_to_utc(col: pd.Series, column: str, source: str, *, naive_utc: bool = False
                ) -> pd.Series:
    """ISO-like strings to UTC. Naive strings are an error unless ``naive_utc``."""
    text = time_text(col, column, source)
    if not naive_utc:
        has_offset = text.str.contains(OFFSET_RE, regex=True).to_numpy(dtype=bool)
        if not has_offset.all():
            i = int(np.flatnonzero(~has_offset)[0])
            raise DataError(f"timestamp {text.iloc[i]!r} is timezone-naive", source=source,
                            row=i, column=column,
                            expected="an explicit UTC offset, e.g. '2022-01-01T00:00:00+00:00' "
                                     "or '...Z', or epoch numbers",
                            fix="add the offset to every timestamp (naive times are "
                                "ambiguous), or convert the column to UTC epoch seconds")
    parsed = pd.to_datetime(text, utc=True, errors="coerce", format="ISO8601")
    if parsed.isna().any():
        parsed = pd.to_datetime(text, utc=True, errors="coerce", format="mixed")
    bad = parsed.isna().to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"cannot parse {text.iloc[i]!r} as a timestamp", source=source,
                        row=i, column=column, expected="ISO 8601 with a UTC offset",
                        fix="repair or remove the row")
    return parsed.dt.as_unit("us")


def time_text(col: pd.Series, column: str, source: str) -> pd.Series:
    """Stripped text of a time column; a missing or blank value is an error."""
    text = col.astype("string").str.strip()
    missing = (text.isna() | (text == "")).to_numpy()
    if missing.any():
        i = int(np.flatnonzero(missing)[0])
        raise DataError("missing timestamp", source=source, row=i, column=column,
                        expected="a timestamp in every row", fix="repair or remove the row")
    return text


def strptime_to_utc(col: pd.Series, column: str, source: str, fmt: str, *,
                     naive_utc: bool) -> pd.Series:
    """Text in one explicit ``strptime`` format to UTC (naive only with ``naive_utc``)."""
    if not naive_utc and "%z" not in fmt and "%Z" not in fmt:
        raise DataError(f"format {fmt!r} gives timezone-naive timestamps", source=source,
                        column=column, expected="a format with %z, or times documented as UTC",
                        fix="add %z to the format, or pass naive_utc=True if the times are UTC")
    text = time_text(col, column, source)
    parsed = pd.to_datetime(text, utc=True, errors="coerce", format=fmt)
    bad = parsed.isna().to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"cannot parse {text.iloc[i]!r} as a timestamp", source=source,
                        row=i, column=column, expected=f"a time in the format {fmt!r}",
                        fix="repair or remove the row")
    return parsed.dt.as_unit("us")


def time_to_utc(col: pd.Series, column: str, source: str, *, naive_utc: bool = False
                 ) -> pd.Series:
    """Any time column: tz-aware datetimes, epoch numbers or ISO strings with offsets.

    With ``naive_utc``, naive datetimes and naive strings are read as UTC.
    """
    if isinstance(col.dtype, pd.DatetimeTZDtype):
        return col.dt.tz_convert("UTC").dt.as_unit("us")
    if pd.api.types.is_datetime64_any_dtype(col.dtype):
        if naive_utc:
            return col.dt.tz_localize("UTC").dt.as_unit("us")
        raise DataError("timestamps are timezone-naive", source=source, column=column,
                        expected="timezone-aware UTC timestamps",
                        fix="localize the column before writing it, e.g. "
                            ".dt.tz_localize('UTC')")
    if pd.api.types.is_numeric_dtype(col.dtype) and not pd.api.types.is_bool_dtype(col.dtype):
        return epoch_to_utc(col, column, source)
    text = col.astype("string").str.strip()
    if pd.to_numeric(text, errors="coerce").notna().all():
        return epoch_to_utc(text, column, source)
    return iso_to_utc(col, column, source, naive_utc=naive_utc)


def to_utc_bound(value: TimeLike, name: str) -> pd.Timestamp:
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError):
        raise ConfigError(f"cannot read {value!r} as a time", column=name,
                          expected="an ISO date or datetime, e.g. '2022-01-01'",
                          fix="fix the --from/--to value") from None
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")

"""Time conversion: tz-aware times <-> epoch microseconds, durations, bar spacing.

Every package converts times through these functions, so one convention holds
throughout: instants are ``int64`` microseconds since 1970-01-01 UTC, and a pandas
column of instants is ``datetime64[us, UTC]``.

Functions
---------
to_epoch_us       tz-aware times (Series, Index, Arrow-backed, numpy) -> int64 us
from_epoch_us     int64 us -> ``datetime64[us, UTC]`` Series
timedelta_us      a Timedelta -> whole microseconds
parse_duration    ``"26h"`` / Timedelta -> Timedelta, checked against a lower bound
duration_us       :func:`parse_duration` in whole microseconds
modal_spacing_us  most frequent step of a time axis (the native bar length), in us
bar_spacing       :func:`modal_spacing_us` of a time column, as a Timedelta
"""

from __future__ import annotations

import re
from typing import Literal

import numpy as np
import numpy.typing as npt
import pandas as pd

from plumbing.aliases import DurationLike
from plumbing.errors import ConfigError, DataError

__all__ = [
    "bar_spacing",
    "duration_us",
    "from_epoch_us",
    "modal_spacing_us",
    "parse_duration",
    "timedelta_us",
    "to_epoch_us",
]

Int64Array = npt.NDArray[np.int64]
_NAT = np.iinfo(np.int64).min
_US = pd.Timedelta(1, unit="us")


def to_epoch_us(values: pd.Series | pd.Index | npt.ArrayLike, *, column: str = "ts",
                source: str | None = None) -> Int64Array:
    """Microseconds since the epoch (UTC) of timezone-aware times.

    Parameters
    ----------
    values
        A tz-aware pandas Series or DatetimeIndex (any unit, any time zone, numpy- or
        Arrow-backed); or a numpy array of ``datetime64`` (read as UTC, as numpy has no
        time zones) or of integers (taken as microseconds already).
    column, source
        Named in error messages.

    Returns
    -------
    numpy.ndarray
        ``int64``, one value per input value, never a view of a pandas input.
        Sub-microsecond parts are floored.

    Raises
    ------
    DataError
        Timezone-naive pandas times (ambiguous), a missing time (NaT), or values that are
        not times at all.
    """
    if isinstance(values, pd.Series | pd.Index):
        dtype = values.dtype
        if isinstance(dtype, pd.ArrowDtype) and pd.api.types.is_datetime64_any_dtype(dtype):
            if dtype.pyarrow_dtype.tz is not None:
                values = values.astype(pd.DatetimeTZDtype("us", "UTC"))
                dtype = values.dtype
        if not isinstance(dtype, pd.DatetimeTZDtype):
            naive = pd.api.types.is_datetime64_any_dtype(dtype)
            raise DataError("timestamps are timezone-naive" if naive else
                            f"column has dtype {dtype}, not timestamps", source=source,
                            column=column,
                            expected="timezone-aware UTC timestamps (datetime64[us, UTC])",
                            fix="use the canonical loaders, or localize the times, e.g. "
                                ".dt.tz_localize('UTC')")
        # a copy: the result must not alias (and later change with) the caller's frame
        us = np.array(pd.DatetimeIndex(values).as_unit("us").asi8, dtype=np.int64, copy=True)
    else:
        arr = np.asarray(values)
        if np.issubdtype(arr.dtype, np.datetime64):
            us = arr.astype("datetime64[us]").view(np.int64)
        elif np.issubdtype(arr.dtype, np.integer):
            return arr.astype(np.int64, copy=False)
        else:
            raise DataError(f"unsupported time values of dtype {arr.dtype}", source=source,
                            column=column,
                            expected="tz-aware timestamps or int64 microseconds since the epoch",
                            fix="convert the column to UTC timestamps first")
    missing = us == _NAT
    if missing.any():
        i = int(np.flatnonzero(missing.ravel())[0])
        raise DataError("missing timestamp (NaT)", source=source, row=i, column=column,
                        expected="a timestamp in every row", fix="drop or repair the row")
    return us


def from_epoch_us(us: npt.ArrayLike, index: pd.Index | None = None) -> pd.Series:
    """``datetime64[us, UTC]`` Series of epoch microseconds (inverse of :func:`to_epoch_us`).

    Parameters
    ----------
    us
        Integer microseconds since 1970-01-01 UTC.
    index
        Index of the returned Series (default: a RangeIndex).
    """
    values = np.asarray(us, dtype=np.int64).view("datetime64[us]")
    return pd.Series(values, index=index).dt.tz_localize("UTC")


def timedelta_us(td: pd.Timedelta) -> int:
    """Whole microseconds of a Timedelta (floored; exact for any unit)."""
    return int(pd.Timedelta(td) // _US)


def parse_duration(value: DurationLike, *, name: str,
                   minimum: Literal["positive", "nonnegative", "any"] = "positive",
                   source: str | None = None, example: str = "1h") -> pd.Timedelta:
    """Read a user-given length of time, checking it against a lower bound.

    Parameters
    ----------
    value
        Pandas duration text (``"15min"``, ``"4h"``, ``"1D"``, ``"7D"``), a
        ``datetime.timedelta`` or a ``pandas.Timedelta``. Months and years are not fixed
        lengths and are refused. A lower-case day unit (``"180d"``) is read as days
        (pandas deprecates it).
    name
        The option or column the value came from (``"freq"``, ``"--delay"``), named in
        the error.
    minimum
        ``"positive"`` (> 0), ``"nonnegative"`` (>= 0) or ``"any"``.
    source
        Where the value came from (a file, ``"simulate"``), for the error message.
    example
        A valid value, suggested in the error's fix.

    Returns
    -------
    pandas.Timedelta

    Raises
    ------
    ConfigError
        Unparsable or missing value, or a value below ``minimum``.
    """
    text = re.sub(r"(?<=\d)d$", "D", value.strip()) if isinstance(value, str) else value
    try:
        td = pd.Timedelta(text)
    except (ValueError, TypeError):
        td = pd.NaT
    if pd.isna(td):
        raise ConfigError(f"cannot read {name}={value!r}: it is not a duration", source=source, column=name,
                          expected="a fixed length such as '15min', '4h', '26h', '1D' or '7D'",
                          fix=f"use minutes, hours or days (months are not fixed lengths), "
                              f"e.g. {name}={example!r}")
    if minimum == "positive" and td <= pd.Timedelta(0):
        raise ConfigError(f"{name}={value!r} is not positive", source=source, column=name,
                          expected="a duration > 0", fix=f"e.g. {name}={example!r}")
    if minimum == "nonnegative" and td < pd.Timedelta(0):
        raise ConfigError(f"{name}={value!r} is negative", source=source, column=name,
                          expected="a duration >= 0", fix=f"e.g. {name}={example!r}")
    return td


def duration_us(value: DurationLike, *, name: str,
                minimum: Literal["positive", "nonnegative", "any"] = "positive",
                source: str | None = None, example: str = "1h") -> int:
    """:func:`parse_duration` in whole microseconds."""
    return timedelta_us(parse_duration(value, name=name, minimum=minimum, source=source,
                                       example=example))


def modal_spacing_us(ts_us: npt.ArrayLike, *, default: int | None = None,
                     source: str | None = None) -> int:
    """Most frequent step between distinct times, in microseconds (the native bar length).

    Row order, repeated times and gaps (a missing bar) do not change the result while
    regular steps dominate; ties go to the shorter step.

    Parameters
    ----------
    ts_us
        Epoch microseconds (or anything :func:`to_epoch_us` reads).
    default
        Returned when there are fewer than two distinct times; None (the default)
        raises instead. Pass one only where a caller has a meaningful fallback.
    source
        Named in the error.

    Raises
    ------
    DataError
        Fewer than two distinct times and no ``default``.
    """
    distinct = np.unique(to_epoch_us(ts_us, source=source).ravel())
    if len(distinct) < 2:
        if default is not None:
            return int(default)
        raise DataError("cannot infer the bar spacing from fewer than two distinct bar times",
                        source=source, column="ts",
                        expected="at least two bars with distinct timestamps",
                        fix="load more bars or widen the date range, or pass the bar length "
                            "explicitly (e.g. bar_freq='1h')")
    values, counts = np.unique(np.diff(distinct), return_counts=True)
    return int(values[np.argmax(counts)])


def bar_spacing(ts: pd.Series | pd.Index | npt.ArrayLike, *,
                default: pd.Timedelta | None = None, source: str | None = None
                ) -> pd.Timedelta:
    """:func:`modal_spacing_us` of a time column, as a Timedelta.

    Raises
    ------
    DataError
        Timezone-naive times, or fewer than two distinct times and no ``default``.
    """
    fallback = None if default is None else timedelta_us(default)
    return pd.Timedelta(modal_spacing_us(to_epoch_us(ts, source=source), default=fallback,
                                         source=source), unit="us")

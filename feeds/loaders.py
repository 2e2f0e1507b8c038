"""Loaders: real bar and option-chain files into the canonical BARS and CHAIN tables.

Every loader sniffs the file (gzip is detected from its magic bytes, Parquet from
``PAR1``), picks a format from an explicit registry (:data:`BAR_FORMATS`,
:data:`CHAIN_FORMATS`), maps the vendor columns to canonical ones with vectorized
pandas, runs the format's own checks in *file order* (so an error names the 0-based data
row as it appears in the file, header lines excluded), then hands the frame to
:func:`feeds.schema.conform` for the generic checks. Only a complete, valid table is
cached (:mod:`feeds.cache`).

Conventions kept here (see ``DOMAIN.md``):

- Bars: ``ts`` is the bar *open* time in UTC; a bar closes at ``ts + bar_freq(bars)``.
- Chains: ``mark_iv`` is a fraction; raw vendor IV in percent is divided by 100 and a
  0 (Deribit's "no mark") becomes NaN. Deribit options expire at 08:00 UTC and have
  ``multiplier`` 1.0 (one BTC per contract).
- Snapshot times are chosen so that a snapshot never contains a quote stamped after its
  ``ts`` (point-in-time safe): see :func:`load_chain`.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from feeds.cache import cached_table
from feeds.schema import BARS, CHAIN, UTC_US, conform
from indicators.errors import ConfigError, DataError

__all__ = [
    "BAR_FORMATS",
    "CHAIN_FORMATS",
    "LOADER_VERSION",
    "bar_freq",
    "detect_format",
    "load_bars",
    "load_chain",
    "resample_bars",
    "to_utc",
]

#: Bump whenever a loader's output or its checks (the schema rules of feeds.schema) can
#: change: it is part of every cache key. 2: infinite values and expired contracts refused.
LOADER_VERSION = "2"

PathLike = str | os.PathLike[str]
TimeLike = str | datetime | pd.Timestamp
SpotLike = PathLike | pa.Table | pd.DataFrame

BAR_FORMATS: dict[str, str] = {
    "binance_kline": "Binance kline CSV: headerless, 12 columns, open time in ms or us epochs",
    "cryptodatadownload": "CryptoDataDownload CSV: URL line, then 'unix,date,symbol,open,high,"
                          "low,close,Volume <base>,Volume <quote>'; newest first; unix in s or ms",
    "binance_hourly": "Binance export 'symbol,interval,timestamp,open,high,low,close,volume,...' "
                      "with ISO timestamps carrying an offset",
    "generic_csv": "CSV with a time column (ts, timestamp, open_time, unix, datetime, date or "
                   "time; epoch numbers or ISO strings with an offset) and open, high, low, "
                   "close, volume (any case)",
    "parquet": "Parquet with canonical BARS columns or the generic columns above",
}

CHAIN_FORMATS: dict[str, str] = {
    "optionsdx": "OptionsDX BTC EOD (comma+space separated, [BRACKETED] headers, "
                 "QUOTE_UNIXTIME, EXPIRY_UNIX, MARK_IV in percent)",
    "deribit_hourly": "Deribit hourly chain CSV 'date,instrument_name,expiry_name,expiry_date,"
                      "strike,type,...,mark_iv' (no underlying: needs spot bars)",
    "deribit_api_flat": "Deribit API ticker dump flattened with 'greeks.gamma' style columns",
    "deribit_api_dict": "Deribit API ticker dump with 'greeks'/'stats' as Python-dict strings",
    "tardis": "Tardis.dev options_chain CSV 'exchange,symbol,timestamp,local_timestamp,type,"
              "strike_price,expiration,...' (microsecond epochs, IV in percent)",
    "canonical": "canonical CHAIN columns (Parquet or CSV; mark_iv as a fraction)",
}

_TIME_COLUMNS = ("ts", "timestamp", "open_time", "unix", "datetime", "date", "time")
_OHLCV = ("open", "high", "low", "close", "volume")
_QUOTE_CCY = {"usd", "usdt", "usdc", "busd", "tusd", "dai", "eur", "gbp", "jpy", "krw", "aud"}
_EPOCH_MIN_US = 631_152_000 * 10**6     # 1990-01-01
_EPOCH_MAX_US = 4_102_444_800 * 10**6   # 2100-01-01
_MINUTE_US = 60 * 10**6
_SWEEP_GAP_US = 60 * 10**6
_DERIBIT_EXPIRY_HOUR = 8
_OFFSET_RE = (r"\d{1,2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?\s*"
              r"(?:[zZ]|[+-]\d{2}(?::?\d{2})?|UTC|GMT|utc)$")
_INSTRUMENT_RE = (r"^(?P<cur>[A-Z0-9_]+)-(?P<day>\d{1,2})(?P<mon>[A-Z]{3})(?P<yy>\d{2})-"
                  r"(?P<strike>\d+(?:[dD.]\d+)?)-(?P<right>[CP])$")
_MONTHS = {m: i for i, m in enumerate(
    ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"), 1)}
_GREEKS = ("delta", "gamma", "vega", "theta")


# --------------------------------------------------------------------------------------
# public API


def load_bars(path: PathLike, *, freq: str | pd.Timedelta | None = None,
              start: TimeLike | None = None, end: TimeLike | None = None,
              cache: bool = True) -> pa.Table:
    """Load an OHLCV file of any supported format as a canonical BARS table.

    Supported formats (auto-detected, gzip or not): see :data:`BAR_FORMATS`.

    - Epoch numbers are read as seconds, milliseconds, microseconds or nanoseconds by
      magnitude, value by value (Binance switched spot klines from ms to us in 2025, so
      a concatenated file may hold both).
    - CryptoDataDownload files are newest first (accepted in either order, but must be
      monotonic); every other format must be strictly increasing in time.
    - CryptoDataDownload quirk: rows whose ``Volume <base>`` exceeds ``Volume <quote>``
      have the two columns swapped in the vendor file (Bitstamp 2018-2020); for those
      rows ``volume`` is taken from the quote-named column, so it is always in base
      units (BTC).
    - Naive time strings are rejected (add an offset such as ``+00:00``); the
      ``timestamp`` column of the Binance export carries one.

    Parameters
    ----------
    path
        The file.
    freq
        Optional coarser timeframe ("4h", "1D", a Timedelta); see :func:`resample_bars`.
        Must be a whole multiple of the file's native spacing.
    start, end
        Keep bars with ``start <= ts < end`` (bar open time, UTC). Naive values are read
        as UTC. The filter is applied before resampling, so no bar outside the window
        contributes to a resampled bar (edge bins may be partial).
    cache
        Reuse/write the canonical table in the Parquet cache (:mod:`feeds.cache`).

    Returns
    -------
    pyarrow.Table
        BARS schema, sorted by ``ts``, ``ts`` as ``timestamp[us, UTC]``.

    Raises
    ------
    DataError
        Unknown format, empty file, missing column, unparsable or naive time, NaN or
        non-positive price, ``high < low``, open/close outside ``[low, high]``,
        unsorted or duplicated timestamps, no bars in ``[start, end)``.
    ConfigError
        ``freq`` finer than the native spacing or not a multiple of it; bad start/end.
    """
    sniff = _sniff(path)
    fmt = _detect_bars(sniff)

    def build() -> pa.Table:
        return _build_bars(sniff, fmt)

    if cache and not sniff.parquet:
        table = cached_table(sniff.path, build, kind=f"bars-{fmt}", version=LOADER_VERSION,
                             required=BARS.names)
    else:
        table = build()
    table = _filter_window(table, start, end, sniff.source)
    if freq is not None:
        table = resample_bars(table, freq)
    return table


def bar_freq(bars: pa.Table | pd.DataFrame) -> pd.Timedelta:
    """Modal spacing of the bars' ``ts`` (the native bar length).

    Gaps (a missing hour) and the order of rows do not change the result; ties go to
    the shorter spacing.

    Parameters
    ----------
    bars
        Canonical bars (``pyarrow.Table`` or ``pandas.DataFrame`` with a ``ts`` column).

    Returns
    -------
    pandas.Timedelta

    Raises
    ------
    DataError
        Fewer than two distinct timestamps.
    """
    us = np.unique(_ts_us(_ts_series(bars)))
    if len(us) < 2:
        raise DataError("cannot infer the bar spacing", column="ts",
                        expected="at least two bars with distinct timestamps",
                        fix="load more bars or widen the date range")
    values, counts = np.unique(np.diff(us), return_counts=True)
    return pd.Timedelta(int(values[np.argmax(counts)]), unit="us")


def resample_bars(bars: pa.Table | pd.DataFrame, freq: str | pd.Timedelta) -> pa.Table:
    """Aggregate bars to a coarser timeframe.

    Formula::

        bin    = floor((ts - 1970-01-01 UTC) / freq)      # "1D" bins start at 00:00 UTC
        open   = first open, high = max high, low = min low,
        close  = last close, volume = sum volume         # over the bars in the bin

    Bins with no bar are omitted (no NaN rows, no forward fill); a bin with missing
    bars (edge of the data, exchange outage) is still emitted from the bars it has.

    Parameters
    ----------
    bars
        Canonical bars.
    freq
        Target spacing, a pandas offset string with a fixed length ("15min", "4h",
        "1D", "7D") or a Timedelta; a whole multiple of :func:`bar_freq` of ``bars``.

    Returns
    -------
    pyarrow.Table
        BARS schema, ``ts`` = bin open time.

    Raises
    ------
    ConfigError
        ``freq`` unparsable, not positive, finer than the native spacing or not a
        multiple of it.
    """
    frame = bars.to_pandas() if isinstance(bars, pa.Table) else bars
    target = _parse_freq(freq, "freq")
    native = bar_freq(frame)
    if target < native:
        raise ConfigError(f"freq {freq!s} is finer than the bars' native spacing {native}",
                          column="freq", expected=f"a spacing >= {native} (resampling can only "
                          "aggregate)", fix="choose a coarser freq or load finer bars")
    target_us, native_us = _td_us(target), _td_us(native)
    if target_us % native_us:
        raise ConfigError(f"freq {freq!s} is not a whole multiple of the native spacing "
                          f"{native}", column="freq",
                          expected=f"a multiple of {native}",
                          fix="pick a freq that tiles the native bars exactly")
    us = _ts_us(frame["ts"])
    if target_us == native_us:
        return conform(frame, BARS, "<resample_bars>")
    order = np.argsort(us, kind="stable")
    sorted_frame = frame.iloc[order]
    bucket = us[order] // target_us * target_us
    grouped = sorted_frame[["open", "high", "low", "close", "volume"]].groupby(bucket, sort=True)
    out = grouped.agg({"open": "first", "high": "max", "low": "min", "close": "last",
                       "volume": "sum"})
    starts = out.index.to_numpy(dtype=np.int64)
    out = out.reset_index(drop=True)
    out.insert(0, "ts", _us_to_utc(starts))
    return conform(out, BARS, "<resample_bars>")


def load_chain(path: PathLike, *, spot: SpotLike | None = None, cache: bool = True,
               currency: str | None = "BTC",
               snapshot_freq: str | pd.Timedelta = "1h") -> pa.Table:
    """Load an option-chain file of any supported format as a canonical CHAIN table.

    Supported formats (auto-detected, gzip or not): see :data:`CHAIN_FORMATS`.

    Snapshot time ``ts`` per format:

    - OptionsDX: ``QUOTE_UNIXTIME`` (the true UTC epoch second; 00:00 New York, i.e.
      04:00 or 05:00 UTC). ``UNDERLYING_INDEX``/``UNDERLYING_PRICE`` are kept as
      ``underlying_index``/``underlying_price`` (a listed future or a synthetic forward).
    - Deribit hourly chain: the ``date`` column (documented UTC; naive values are read as
      UTC). The file has no underlying, so ``spot`` is required.
    - Deribit API dumps: rows are grouped into *sweeps* (a pass over all instruments that
      takes a few minutes): a gap of more than 60 s between consecutive quote times, or
      an instrument seen again, starts a new sweep. All rows of a sweep get one ``ts``:
      the sweep's last quote time rounded *up* to the whole minute, so a snapshot never
      contains a quote stamped after its ``ts``.
    - Tardis ``options_chain``: rows are bucketed by ``local_timestamp`` (arrival time;
      ``timestamp`` when empty) into intervals of ``snapshot_freq``, labelled by the
      interval's *end* (``ceil``): the snapshot at ``T`` holds, per symbol, the last row
      with ``T - snapshot_freq < local_timestamp <= T``. Contracts that did not update
      within the interval are absent (Deribit tickers update several times a minute).
      Only ``exchange == 'deribit'`` is accepted (contract sizes differ per venue).

    Parameters
    ----------
    path
        The chain file.
    spot
        Bars (a BARS table/DataFrame or a bars file path) used point-in-time: each
        snapshot takes the close of the last bar that *closed* at or before it (bar
        close = ``ts + bar_freq``), and at most two bar lengths before it. Fills
        ``underlying_price`` when the format has none (the spot stands in for the
        forward: basis is ignored) and ``index_price`` whenever the format has none.
    cache
        Reuse/write the canonical table in the Parquet cache.
    currency
        Keep instruments of this base currency (the part of the instrument name before
        the first ``-``; ``BTC_USDC`` linear options are a different currency). None
        keeps everything.
    snapshot_freq
        Bucket length for Tardis files (ignored by the other formats).

    Returns
    -------
    pyarrow.Table
        CHAIN schema sorted by ``ts, expiry, strike, right``; ``mark_iv`` a fraction
        (NaN = no quote); optional ``index_price``, ``underlying_index`` and vendor greeks
        ``delta, gamma, vega, theta`` where the format has them.

    Raises
    ------
    DataError
        Unknown format, empty file, missing column, unparsable row, bad ``right``,
        negative IV or IV in the wrong unit, a contract twice in one snapshot, no spot
        when the format needs it or spot bars that do not cover a snapshot.
    """
    sniff = _sniff(path)
    fmt = _detect_chain(sniff)
    columns = _header_columns(sniff, fmt)
    needs_spot = fmt == "deribit_hourly" and "underlying_price" not in columns
    if needs_spot and spot is None:
        raise DataError("this chain has no underlying price column", source=sniff.source,
                        column="underlying_price",
                        expected="spot bars to complete it point-in-time",
                        fix="pass spot bars: load_chain(path, spot=BARS_FILE) or --spot FILE")
    freq = _parse_freq(snapshot_freq, "snapshot_freq")
    spot_frame = _spot_frame(spot, cache) if spot is not None else None
    options: dict[str, object] = {"currency": currency}
    if fmt == "tardis":
        options["snapshot_freq_us"] = _td_us(freq)
    if spot_frame is not None:
        options["spot"] = _frame_digest(spot_frame)

    def build() -> pa.Table:
        return _build_chain(sniff, fmt, spot_frame, currency, freq)

    if cache and not sniff.parquet:
        return cached_table(sniff.path, build, kind=f"chain-{fmt}", version=LOADER_VERSION,
                            options=options, required=CHAIN.names[:8])
    return build()


#: Publication delay of a chain format: a snapshot stamped ``ts`` is usable from
#: ``ts + delay``. OptionsDX stamps are the true UTC epoch of the snapshot; the Deribit
#: hourly file is labelled with the hour but was taken a median 27 min (up to 49 min)
#: later, so it is used from its label + 1 h. Other formats: 0.
CHAIN_PUBLICATION_DELAY: dict[str, pd.Timedelta] = {"deribit_hourly": pd.Timedelta("1h")}


def chain_delay(path: PathLike) -> pd.Timedelta:
    """The default publication delay of the chain file at ``path`` (by its format)."""
    return CHAIN_PUBLICATION_DELAY.get(detect_format(path, "chain"), pd.Timedelta(0))


def detect_format(path: PathLike, kind: Literal["bars", "chain"] = "bars") -> str:
    """Name of the format :func:`load_bars` / :func:`load_chain` would use for ``path``.

    Returns
    -------
    str
        A key of :data:`BAR_FORMATS` or :data:`CHAIN_FORMATS`.

    Raises
    ------
    DataError
        Missing or empty file, or no supported format matches.
    """
    sniff = _sniff(path)
    return _detect_bars(sniff) if kind == "bars" else _detect_chain(sniff)


def to_utc(col: pd.Series, column: str, source: str, *, naive_utc: bool = False,
           fmt: str | None = None) -> pd.Series:
    """Convert a time column of a data file to UTC timestamps, checking every row.

    The conversion every loader uses (here and in :mod:`feeds.derivs`):

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
        return _strptime_to_utc(col, column, source, fmt, naive_utc=naive_utc)
    return _time_to_utc(col, column, source, naive_utc=naive_utc)


# --------------------------------------------------------------------------------------
# sniffing and reading


@dataclass(frozen=True)
class _Sniff:
    path: Path
    source: str
    parquet: bool
    gzip: bool
    head: str
    parquet_columns: tuple[str, ...] = ()
    zip: bool = False  # a zip archive holding one CSV (Binance's data downloads)

    @property
    def compression(self) -> str | None:
        return "gzip" if self.gzip else "zip" if self.zip else None

    @property
    def first_line(self) -> str:
        return self.head.splitlines()[0].strip() if self.head else ""


def _sniff(path: PathLike) -> _Sniff:
    p = Path(path)
    source = str(p)
    if not p.is_file():
        raise DataError("file not found" if not p.exists() else "not a file", source=source,
                        expected="an existing data file", fix="check the path")
    with open(p, "rb") as fh:
        magic = fh.read(4)
        if not magic:
            raise _empty(source)
        if magic == b"PAR1":
            try:
                names = tuple(pq.read_schema(p).names)
            except (OSError, pa.ArrowException) as exc:
                raise DataError(f"not a readable Parquet file ({exc})", source=source,
                                expected="a complete Parquet file",
                                fix="re-export the file") from None
            return _Sniff(p, source, True, False, "", names)
        is_gzip = magic[:2] == b"\x1f\x8b"
        is_zip = magic == b"PK\x03\x04"
        if is_zip:
            raw = _zip_head(p, source)
        elif is_gzip:
            try:
                with gzip.open(p, "rb") as gz:
                    raw = gz.read(1 << 16)
            except (OSError, EOFError) as exc:
                raise DataError(f"not a readable gzip file ({exc})", source=source,
                                expected="a complete gzip file",
                                fix="download or compress the file again") from None
        else:
            fh.seek(0)
            raw = fh.read(1 << 16)
    head = raw.decode("utf-8", errors="replace").lstrip("\ufeff")
    if not head.strip():
        raise _empty(source)
    return _Sniff(p, source, False, is_gzip, head, zip=is_zip)


def _zip_head(path: Path, source: str) -> bytes:
    """First 64 KiB of the single member of a zip archive."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = [m for m in archive.infolist() if not m.is_dir()]
            if len(members) != 1:
                raise DataError(f"zip archive holds {len(members)} files", source=source,
                                expected="exactly one CSV file inside the zip",
                                fix="unzip it and pass the CSV file itself")
            with archive.open(members[0]) as member:
                return member.read(1 << 16)
    except zipfile.BadZipFile as exc:
        raise DataError(f"not a readable zip file ({exc})", source=source,
                        expected="a complete zip archive",
                        fix="download the file again") from None


def _empty(source: str) -> DataError:
    return DataError("empty file", source=source, expected="a header and data rows",
                     fix="check the download or export finished")


def _unknown(source: str, kind: str, seen: str) -> DataError:
    formats = BAR_FORMATS if kind == "bars" else CHAIN_FORMATS
    listing = "; ".join(f"{k}: {v}" for k, v in formats.items())
    return DataError(f"unknown {kind} format (first line: {seen[:120]!r})", source=source,
                     expected=f"one of the supported formats: {listing}",
                     fix="convert the file to one of these layouts (e.g. a generic CSV with "
                         "ts,open,high,low,close,volume)" if kind == "bars" else
                         "convert the file to one of these layouts (e.g. canonical Parquet)")


def _read_csv(sniff: _Sniff, *, header_lines: int, **kwargs: object) -> pd.DataFrame:
    """``pd.read_csv`` with vendor parser errors turned into DataError with a data row."""
    try:
        frame = pd.read_csv(sniff.path, compression=sniff.compression,
                            **kwargs)  # type: ignore[call-overload]
    except pd.errors.EmptyDataError:
        raise _empty(sniff.source) from None
    except pd.errors.ParserError as exc:
        text = str(exc).strip()
        match = re.search(r"line (\d+)", text)
        row = int(match.group(1)) - 1 - header_lines if match else None
        raise DataError(f"unparsable row ({text})", source=sniff.source, row=row,
                        expected="the same number of fields on every line",
                        fix="repair or remove the row") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"not UTF-8 text ({exc.reason})", source=sniff.source,
                        expected="a UTF-8 CSV file", fix="re-encode the file as UTF-8") from None
    if len(frame) == 0:
        raise DataError("no data rows", source=sniff.source,
                        expected="at least one data row after the header",
                        fix="check the file is complete")
    return frame


def _read_parquet(sniff: _Sniff) -> pd.DataFrame:
    try:
        frame = pd.read_parquet(sniff.path)
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"not a readable Parquet file ({exc})", source=sniff.source,
                        expected="a complete Parquet file", fix="re-export the file") from None
    if len(frame) == 0:
        raise DataError("no data rows", source=sniff.source, expected="at least one row",
                        fix="check the export is not empty")
    return frame


def _per_unique(col: pd.Series, fn: Callable[[str], object]) -> pd.Series:
    """Apply ``fn`` once per distinct value (symbols repeat across millions of rows).

    Missing values map to None.
    """
    codes, uniques = pd.factorize(col, use_na_sentinel=True)
    table = np.array([fn(str(u)) for u in uniques] + [None], dtype=object)
    return pd.Series(table[codes], index=col.index)


def _split_header(line: str) -> list[str]:
    return [f.strip().strip('"').strip() for f in line.split(",")]


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# --------------------------------------------------------------------------------------
# time parsing


def _us_to_utc(us: np.ndarray, index: pd.Index | None = None) -> pd.Series:
    values = np.asarray(us, dtype=np.int64).view("datetime64[us]")
    return pd.Series(values, index=index).dt.tz_localize("UTC")


def _ts_series(obj: pa.Table | pd.DataFrame) -> pd.Series:
    names = obj.column_names if isinstance(obj, pa.Table) else list(obj.columns)
    if "ts" not in names:
        raise DataError("bars have no 'ts' column", column="ts",
                        expected="canonical bars (ts, open, high, low, close, volume)",
                        fix="load the bars with feeds.loaders.load_bars")
    if isinstance(obj, pa.Table):
        return obj.column("ts").to_pandas()
    return obj["ts"]


def _ts_us(col: pd.Series) -> np.ndarray:
    """int64 microseconds since the epoch of a tz-aware datetime Series."""
    if not isinstance(col.dtype, pd.DatetimeTZDtype):
        raise DataError("timestamps are not timezone-aware", column="ts",
                        expected="a tz-aware UTC datetime column",
                        fix="localize them, e.g. .dt.tz_localize('UTC')")
    return col.to_numpy(dtype="datetime64[us]").view(np.int64)


def _td_us(td: pd.Timedelta) -> int:
    return int(td // pd.Timedelta(1, unit="us"))


def _parse_freq(freq: str | pd.Timedelta, name: str) -> pd.Timedelta:
    try:
        td = pd.Timedelta(freq)
    except (ValueError, TypeError):
        raise ConfigError(f"cannot read {freq!r} as a bar length", column=name,
                          expected="a fixed length such as '15min', '4h', '1D', '7D'",
                          fix="use minutes, hours or days (months are not fixed lengths)"
                          ) from None
    if td <= pd.Timedelta(0):
        raise ConfigError(f"{name} {freq!r} is not positive", column=name,
                          expected="a positive length", fix="e.g. '1h'")
    return td


def _to_utc_bound(value: TimeLike, name: str) -> pd.Timestamp:
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError):
        raise ConfigError(f"cannot read {value!r} as a time", column=name,
                          expected="an ISO date or datetime, e.g. '2022-01-01'",
                          fix="fix the --from/--to value") from None
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _epoch_to_utc(col: pd.Series, column: str, source: str) -> pd.Series:
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
    return _us_to_utc(us, col.index)


def _iso_to_utc(col: pd.Series, column: str, source: str, *, naive_utc: bool = False
                ) -> pd.Series:
    """ISO-like strings to UTC. Naive strings are an error unless ``naive_utc``."""
    text = _time_text(col, column, source)
    if not naive_utc:
        has_offset = text.str.contains(_OFFSET_RE, regex=True).to_numpy(dtype=bool)
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


def _time_text(col: pd.Series, column: str, source: str) -> pd.Series:
    """Stripped text of a time column; a missing or blank value is an error."""
    text = col.astype("string").str.strip()
    missing = (text.isna() | (text == "")).to_numpy()
    if missing.any():
        i = int(np.flatnonzero(missing)[0])
        raise DataError("missing timestamp", source=source, row=i, column=column,
                        expected="a timestamp in every row", fix="repair or remove the row")
    return text


def _strptime_to_utc(col: pd.Series, column: str, source: str, fmt: str, *,
                     naive_utc: bool) -> pd.Series:
    """Text in one explicit ``strptime`` format to UTC (naive only with ``naive_utc``)."""
    if not naive_utc and "%z" not in fmt and "%Z" not in fmt:
        raise DataError(f"format {fmt!r} gives timezone-naive timestamps", source=source,
                        column=column, expected="a format with %z, or times documented as UTC",
                        fix="add %z to the format, or pass naive_utc=True if the times are UTC")
    text = _time_text(col, column, source)
    parsed = pd.to_datetime(text, utc=True, errors="coerce", format=fmt)
    bad = parsed.isna().to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"cannot parse {text.iloc[i]!r} as a timestamp", source=source,
                        row=i, column=column, expected=f"a time in the format {fmt!r}",
                        fix="repair or remove the row")
    return parsed.dt.as_unit("us")


def _time_to_utc(col: pd.Series, column: str, source: str, *, naive_utc: bool = False
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
        return _epoch_to_utc(col, column, source)
    text = col.astype("string").str.strip()
    if pd.to_numeric(text, errors="coerce").notna().all():
        return _epoch_to_utc(text, column, source)
    return _iso_to_utc(col, column, source, naive_utc=naive_utc)


# --------------------------------------------------------------------------------------
# bars


def _detect_bars(sniff: _Sniff) -> str:
    if sniff.parquet:
        return "parquet"
    first = sniff.first_line
    if "cryptodatadownload" in first.lower() or first.lower().startswith("http"):
        return "cryptodatadownload"
    fields = _split_header(first)
    if fields and all(_is_number(f) for f in fields if f):
        if len(fields) == 12:
            return "binance_kline"
        raise DataError(f"headerless CSV with {len(fields)} columns", source=sniff.source,
                        row=0, expected="Binance klines (12 columns) or a CSV with a header "
                        "naming ts/open/high/low/close/volume",
                        fix="add a header line to the file")
    names = {f.lower() for f in fields}
    if {"symbol", "interval", "timestamp"} <= names:
        return "binance_hourly"
    if names & set(_TIME_COLUMNS):
        return "generic_csv"
    raise _unknown(sniff.source, "bars", first)


def _build_bars(sniff: _Sniff, fmt: str) -> pa.Table:
    order: Literal["ascending", "either"] = "ascending"
    if fmt == "binance_kline":
        names = ["open_time", "open", "high", "low", "close", "volume", "close_time",
                 "quote_volume", "count", "taker_buy_volume", "taker_buy_quote_volume",
                 "ignore"]
        raw = _read_csv(sniff, header_lines=0, header=None, names=names, index_col=False)
        frame = raw[list(_OHLCV)].copy()
        frame.insert(0, "ts", _epoch_to_utc(raw["open_time"], "open_time", sniff.source))
        tcol = "open_time"
    elif fmt == "cryptodatadownload":
        raw = _read_csv(sniff, header_lines=2, skiprows=1)
        frame, tcol = _map_cdd(raw, sniff.source)
        order = "either"
    elif fmt == "binance_hourly":
        raw = _read_csv(sniff, header_lines=1)
        interval = raw["interval"].astype("string")
        if interval.nunique(dropna=False) > 1:
            i = int(np.flatnonzero((interval != interval.iloc[0]).to_numpy(dtype=bool))[0])
            raise DataError(f"mixed intervals ({interval.iloc[0]!r} then {interval.iloc[i]!r})",
                            source=sniff.source, row=i, column="interval",
                            expected="one bar interval per file",
                            fix="split the file by interval")
        frame, tcol = _map_generic_bars(raw, sniff.source)
    elif fmt == "generic_csv":
        frame, tcol = _map_generic_bars(_read_csv(sniff, header_lines=1), sniff.source)
    else:
        frame, tcol = _map_generic_bars(_read_parquet(sniff), sniff.source)
    _check_bars(frame, sniff.source, order=order, time_column=tcol)
    return conform(frame, BARS, sniff.source)


def _column_lookup(columns: pd.Index) -> dict[str, str]:
    lookup: dict[str, str] = {}
    for c in columns:
        lookup.setdefault(str(c).strip().lower(), c)
    return lookup


def _missing(source: str, missing: list[str], expected: str, fix: str) -> DataError:
    return DataError(f"missing column(s) {missing}", source=source, column=missing[0],
                     expected=expected, fix=fix)


def _map_generic_bars(raw: pd.DataFrame, source: str) -> tuple[pd.DataFrame, str]:
    lookup = _column_lookup(raw.columns)
    tcol = next((lookup[n] for n in _TIME_COLUMNS if n in lookup), None)
    if tcol is None:
        raise _missing(source, ["ts"], "a time column named one of "
                       f"{', '.join(_TIME_COLUMNS)} (any case)",
                       "rename the time column (bar open time, epoch or ISO with offset)")
    absent = [n for n in _OHLCV if n not in lookup]
    if absent:
        raise _missing(source, absent, "columns open, high, low, close, volume (any case)",
                       "rename the columns (volume in base units; use 0 if unknown)")
    frame = pd.DataFrame({n: raw[lookup[n]] for n in _OHLCV})
    frame.insert(0, "ts", _time_to_utc(raw[tcol], str(tcol), source))
    return frame, str(tcol)


def _map_cdd(raw: pd.DataFrame, source: str) -> tuple[pd.DataFrame, str]:
    lookup = _column_lookup(raw.columns)
    tcol = lookup.get("unix") or lookup.get("unix timestamp")
    if tcol is None:
        raise _missing(source, ["unix"], "CryptoDataDownload header "
                       "'unix,date,symbol,open,high,low,close,Volume <base>,Volume <quote>'",
                       "use the file as downloaded (line 1 URL, line 2 header)")
    absent = [n for n in _OHLCV[:4] if n not in lookup]
    if absent:
        raise _missing(source, absent, "columns open, high, low, close",
                       "use the file as downloaded")
    base_col, quote_col = _cdd_volume_columns(raw, lookup)
    if base_col is None:
        raise _missing(source, ["Volume <base>"], "a base-currency volume column such as "
                       "'Volume BTC'", "use the file as downloaded")
    frame = pd.DataFrame({n: _to_float(raw[lookup[n]], str(lookup[n]), source)
                          for n in _OHLCV[:4]})
    base = _to_float(raw[base_col], base_col, source)
    if quote_col is not None:
        quote = _to_float(raw[quote_col], quote_col, source)
        swapped = (base > quote).to_numpy() & (frame["close"] > 1.0).to_numpy()
        base = base.where(~swapped, quote)
    frame["volume"] = base
    frame.insert(0, "ts", _epoch_to_utc(raw[tcol], str(tcol), source))
    return frame, str(tcol)


def _cdd_volume_columns(raw: pd.DataFrame, lookup: dict[str, str]
                        ) -> tuple[str | None, str | None]:
    vols = {k[len("volume"):].strip(): v for k, v in lookup.items() if k.startswith("volume")}
    if "" in vols:
        return vols[""], None
    base_name = None
    if "symbol" in lookup and len(raw):
        sym = str(raw[lookup["symbol"]].iloc[0]).lower()
        base_name = re.split(r"[/\-_]", sym)[0] if re.search(r"[/\-_]", sym) else None
    base = vols.get(base_name) if base_name else None
    if base is None:
        base = next((v for k, v in vols.items() if k not in _QUOTE_CCY), None)
    quote = next((v for k, v in vols.items() if k in _QUOTE_CCY), None)
    return base, quote


def _to_float(col: pd.Series, column: str, source: str) -> pd.Series:
    num = pd.to_numeric(col, errors="coerce").astype("float64")
    bad = (num.isna() & col.notna()).to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"cannot parse {col.iloc[i]!r} as a number", source=source, row=i,
                        column=column, expected="a decimal number",
                        fix="repair or remove the row")
    return num


def _check_bars(frame: pd.DataFrame, source: str, *, order: Literal["ascending", "either"],
                time_column: str) -> None:
    """Format-level bar checks in file order (conform does NaN and sign checks)."""
    for name in _OHLCV:
        frame[name] = _to_float(frame[name], name, source)
        inf = np.isinf(frame[name].to_numpy())
        if inf.any():  # before the OHLC checks, which would blame the other column
            i = int(np.flatnonzero(inf)[0])
            raise DataError(f"value {float(frame[name].iloc[i])!r} is not finite",
                            source=source, row=i, column=name, expected="a finite number",
                            fix="repair or remove the row")
    o, h, lo, c = (frame[n].to_numpy() for n in ("open", "high", "low", "close"))
    checks = (
        (h < lo, "high", "high < low", "high >= low"),
        ((o > h) | (o < lo), "open", "open outside [low, high]", "low <= open <= high"),
        ((c > h) | (c < lo), "close", "close outside [low, high]", "low <= close <= high"),
    )
    for bad, column, problem, expected in checks:
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError(f"{problem} (open {o[i]}, high {h[i]}, low {lo[i]}, close {c[i]})",
                            source=source, row=i, column=column, expected=expected,
                            fix="repair or remove the row (columns may be swapped)")
    us = _ts_us(frame["ts"])
    if len(us) < 2:
        return
    step = np.diff(us)
    dup = step == 0
    if dup.any():
        i = int(np.flatnonzero(dup)[0]) + 1
        raise DataError(f"duplicated timestamp {frame['ts'].iloc[i]} (same as row {i - 1})",
                        source=source, row=i, column=time_column,
                        expected="one bar per timestamp",
                        fix="drop duplicated rows, e.g. DataFrame.drop_duplicates('ts')")
    descending = order == "either" and step[0] < 0
    bad = step > 0 if descending else step < 0
    if bad.any():
        i = int(np.flatnonzero(bad)[0]) + 1
        direction = "decreasing (newest first)" if descending else "increasing"
        raise DataError(f"timestamps not sorted: {frame['ts'].iloc[i]} after "
                        f"{frame['ts'].iloc[i - 1]}", source=source, row=i, column=time_column,
                        expected=f"strictly {direction} timestamps",
                        fix="sort the file by time (oldest first)")


def _filter_window(table: pa.Table, start: TimeLike | None, end: TimeLike | None,
                   source: str) -> pa.Table:
    if start is None and end is None:
        return table
    lo = _to_utc_bound(start, "start") if start is not None else None
    hi = _to_utc_bound(end, "end") if end is not None else None
    if lo is not None and hi is not None and hi <= lo:
        raise ConfigError(f"end {hi} is not after start {lo}", column="end",
                          expected="start < end", fix="swap or widen the dates")
    ts = table.column("ts")
    mask = None
    if lo is not None:
        mask = pc.greater_equal(ts, pa.scalar(lo.to_pydatetime(), type=UTC_US))
    if hi is not None:
        upper = pc.less(ts, pa.scalar(hi.to_pydatetime(), type=UTC_US))
        mask = upper if mask is None else pc.and_(mask, upper)
    out = table.filter(mask)
    if out.num_rows == 0:
        first, last = pc.min(ts).as_py(), pc.max(ts).as_py()
        raise DataError(f"no bars in [{lo}, {hi})", source=source, column="ts",
                        expected=f"a window overlapping the file's bars {first} .. {last}",
                        fix="change start/end (--from/--to)")
    return out


# --------------------------------------------------------------------------------------
# chains


def _header_columns(sniff: _Sniff, fmt: str) -> list[str]:
    if sniff.parquet:
        return list(sniff.parquet_columns)
    cols = _split_header(sniff.first_line)
    return [c.strip("[]") for c in cols] if fmt == "optionsdx" else cols


def _detect_chain(sniff: _Sniff) -> str:
    if sniff.parquet:
        cols = set(sniff.parquet_columns)
    else:
        cols = {c.strip("[]") for c in _split_header(sniff.first_line)}
    if "QUOTE_UNIXTIME" in cols:
        return "optionsdx"
    if {"exchange", "symbol", "timestamp", "local_timestamp", "type", "strike_price",
            "expiration"} <= cols:
        return "tardis"
    if "greeks.gamma" in cols and "instrument_name" in cols:
        return "deribit_api_flat"
    if "greeks" in cols and "instrument_name" in cols:
        return "deribit_api_dict"
    if {"date", "instrument_name", "expiry_date", "strike", "type", "mark_iv"} <= cols:
        return "deribit_hourly"
    if {"ts", "expiry", "strike", "right", "open_interest", "mark_iv"} <= cols:
        return "canonical"
    first = ", ".join(sorted(cols)) if sniff.parquet else sniff.first_line
    raise _unknown(sniff.source, "chain", first)


@dataclass
class _Mapped:
    """A chain frame in file order with canonical columns (mark_iv still raw)."""

    frame: pd.DataFrame
    iv_unit: Literal["percent", "fraction"]
    names: Mapping[str, str]          # canonical -> file column, for error messages
    symbol: pd.Series | None = None   # instrument names, for the currency filter
    stamp: pd.Series | None = None    # Tardis arrival time (us), for last-per-bucket


def _build_chain(sniff: _Sniff, fmt: str, spot: pd.DataFrame | None, currency: str | None,
                 snapshot_freq: pd.Timedelta) -> pa.Table:
    mapped = _map_chain(sniff, fmt, snapshot_freq)
    frame = mapped.frame
    source = sniff.source
    frame["right"] = _normalize_right(frame["right"], source, mapped.names.get("right", "right"))
    frame["mark_iv"] = _iv_fraction(frame["mark_iv"], mapped.iv_unit, source,
                                    mapped.names.get("mark_iv", "mark_iv"))
    if "multiplier" not in frame:
        frame["multiplier"] = 1.0
    if spot is not None:
        need_under = "underlying_price" not in frame
        need_index = "index_price" not in frame
        if need_under or need_index:
            close = _spot_asof(frame["ts"], spot, source, mapped.names.get("ts", "ts"))
            if need_under:
                frame["underlying_price"] = close
            if need_index:
                frame["index_price"] = close
    if mapped.stamp is None:
        _check_unique_contracts(frame, source)
    table = _conform_named(frame, mapped.names, source)
    keep = np.ones(len(frame), dtype=bool)
    if currency is not None and mapped.symbol is not None:
        prefix = _per_unique(mapped.symbol, lambda name: name.strip().split("-", 1)[0])
        keep = (prefix == currency).to_numpy(dtype=bool)
        if not keep.any():
            found = sorted(prefix.dropna().unique().tolist())[:10]
            raise DataError(f"no {currency} instruments (found {found})", source=source,
                            column=mapped.names.get("symbol", "instrument_name"),
                            expected=f"instrument names starting with '{currency}-'",
                            fix="pass currency=<one of those> (or None to keep all)")
    if mapped.stamp is not None:
        sub = frame.loc[keep].assign(_symbol=mapped.symbol[keep], _stamp=mapped.stamp[keep])
        sub = sub.sort_values("_stamp", kind="stable")
        sub = sub.drop_duplicates(["_symbol", "ts"], keep="last")
        return conform(sub.drop(columns=["_symbol", "_stamp"]), CHAIN, source)
    if not keep.all():
        return conform(frame.loc[keep], CHAIN, source)
    return table


def _conform_named(frame: pd.DataFrame, names: Mapping[str, str], source: str) -> pa.Table:
    """``conform`` whose errors name the file's column rather than the canonical one."""
    try:
        return conform(frame, CHAIN, source)
    except DataError as exc:
        if exc.column is None or names.get(exc.column, exc.column) == exc.column:
            raise
        raise DataError(exc.problem, source=exc.source, row=exc.row,
                        column=names[exc.column],
                        expected=exc.expected, fix=exc.fix) from None


def _map_chain(sniff: _Sniff, fmt: str, snapshot_freq: pd.Timedelta) -> _Mapped:
    if sniff.parquet:
        raw = _read_parquet(sniff)
    elif fmt == "optionsdx":
        raw = _read_csv(sniff, header_lines=1, skipinitialspace=True)
        raw.columns = [str(c).strip().strip("[]").strip() for c in raw.columns]
    elif fmt == "tardis":
        # 24 columns, often millions of rows: parse only what the chain needs
        wanted = {"exchange", "symbol", "timestamp", "local_timestamp", "type",
                  "strike_price", "expiration", "open_interest", "mark_iv",
                  "underlying_index", "underlying_price", *_GREEKS}
        raw = _read_csv(sniff, header_lines=1, usecols=lambda c: c in wanted)
    else:
        raw = _read_csv(sniff, header_lines=1)
    mapper: Callable[[pd.DataFrame, str, pd.Timedelta], _Mapped] = _CHAIN_MAPPERS[fmt]
    return mapper(raw, sniff.source, snapshot_freq)


def _require(raw: pd.DataFrame, needed: Mapping[str, str], source: str, fmt: str,
             display: Callable[[str], str] = str) -> None:
    absent = [display(v) for v in needed.values() if v not in raw.columns]
    if absent:
        raise _missing(source, absent, f"the {fmt} columns {[display(v) for v in needed.values()]}",
                       f"use the file as exported ({CHAIN_FORMATS[fmt]})")


def _optional(raw: pd.DataFrame, frame: pd.DataFrame, names: dict[str, str],
              optional: Mapping[str, str], source: str,
              display: Callable[[str], str] = str) -> None:
    for canon, col in optional.items():
        if col in raw.columns:
            names[canon] = display(col)
            if canon == "underlying_index":
                frame[canon] = _per_unique(raw[col], str.strip).astype("string")
            else:
                frame[canon] = _to_float(raw[col], display(col), source)


def _map_optionsdx(raw: pd.DataFrame, source: str, _freq: pd.Timedelta) -> _Mapped:
    needed = {"ts": "QUOTE_UNIXTIME", "expiry": "EXPIRY_UNIX", "strike": "STRIKE",
              "right": "OPTION_RIGHT", "open_interest": "OPEN_INTEREST", "mark_iv": "MARK_IV",
              "underlying_price": "UNDERLYING_PRICE"}
    _require(raw, needed, source, "optionsdx", lambda c: f"[{c}]")
    names = {k: f"[{v}]" for k, v in needed.items()}
    frame = pd.DataFrame({
        "ts": _epoch_to_utc(raw["QUOTE_UNIXTIME"], "[QUOTE_UNIXTIME]", source),
        "expiry": _epoch_to_utc(raw["EXPIRY_UNIX"], "[EXPIRY_UNIX]", source),
        "strike": raw["STRIKE"], "right": raw["OPTION_RIGHT"],
        "open_interest": raw["OPEN_INTEREST"], "mark_iv": _to_float(raw["MARK_IV"],
                                                                   "[MARK_IV]", source),
        "underlying_price": raw["UNDERLYING_PRICE"],
    })
    optional = {"multiplier": "CONTRACT_SIZE", "underlying_index": "UNDERLYING_INDEX",
                **{g: g.upper() for g in _GREEKS}}
    _optional(raw, frame, names, optional, source, lambda c: f"[{c}]")
    names["symbol"] = "[INSTRUMENT_NAME]"
    symbol = raw["INSTRUMENT_NAME"].astype("string").str.strip() \
        if "INSTRUMENT_NAME" in raw else None
    return _Mapped(frame, "percent", names, symbol)


def _map_deribit_hourly(raw: pd.DataFrame, source: str, _freq: pd.Timedelta) -> _Mapped:
    needed = {"ts": "date", "expiry": "expiry_date", "strike": "strike", "right": "type",
              "open_interest": "open_interest", "mark_iv": "mark_iv"}
    _require(raw, needed, source, "deribit_hourly")
    names = dict(needed)
    ts = _iso_to_utc(raw["date"], "date", source, naive_utc=True)
    expiry_day = _iso_to_utc(raw["expiry_date"], "expiry_date", source, naive_utc=True)
    frame = pd.DataFrame({
        "ts": ts,
        "expiry": expiry_day.dt.floor("D") + pd.Timedelta(hours=_DERIBIT_EXPIRY_HOUR),
        "strike": raw["strike"], "right": raw["type"], "open_interest": raw["open_interest"],
        "mark_iv": _to_float(raw["mark_iv"], "mark_iv", source),
    })
    optional = {"underlying_price": "underlying_price", "index_price": "index_price",
                **{g: g for g in _GREEKS}}
    _optional(raw, frame, names, optional, source)
    return _Mapped(frame, "percent", names, raw["instrument_name"].astype("string"))


def _parse_instruments(names: pd.Series, column: str, source: str) -> pd.DataFrame:
    """Deribit names ``BTC-25SEP20-9000-C`` -> expiry (08:00 UTC), strike, right.

    Each distinct name is parsed once, then broadcast to its rows.
    """
    codes, uniques = pd.factorize(names.astype("string").str.strip(), use_na_sentinel=True)
    parts = pd.Series(uniques, dtype="string").str.extract(_INSTRUMENT_RE)
    month = parts["mon"].map(_MONTHS)
    bad_unique = (parts["cur"].isna() | month.isna()).to_numpy(dtype=bool)
    bad = (codes < 0) | bad_unique[np.maximum(codes, 0)]
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"cannot parse instrument name {names.iloc[i]!r}", source=source,
                        row=i, column=column,
                        expected="Deribit option names like 'BTC-25SEP20-9000-C'",
                        fix="repair or remove the row")
    when = pd.DataFrame({"year": 2000 + parts["yy"].astype(int), "month": month.astype(int),
                         "day": parts["day"].astype(int), "hour": _DERIBIT_EXPIRY_HOUR})
    try:
        expiry = pd.to_datetime(when).dt.tz_localize("UTC").dt.as_unit("us")
    except ValueError:
        raise DataError("instrument name with an impossible date", source=source,
                        column=column, expected="valid expiry dates",
                        fix="repair the instrument names") from None
    strike = pd.to_numeric(parts["strike"].str.replace(r"[dD]", ".", regex=True))
    out = pd.DataFrame({"currency": parts["cur"], "expiry": expiry, "strike": strike,
                        "right": parts["right"]})
    return out.iloc[codes].set_index(names.index)


def _sweep_ts(stamp_us: np.ndarray, names: pd.Series) -> np.ndarray:
    """One snapshot time per sweep: last quote time of the sweep, ceiled to the minute."""
    order = np.argsort(stamp_us, kind="stable")
    s = stamp_us[order]
    gap_group = np.concatenate([[0], np.cumsum(np.diff(s) > _SWEEP_GAP_US)])
    by = pd.DataFrame({"g": gap_group, "n": names.to_numpy()[order]})
    repeat = by.groupby(["g", "n"], sort=False).cumcount().to_numpy()
    sweep = pd.Series(gap_group).astype(str) + ":" + pd.Series(repeat).astype(str)
    last = pd.Series(s).groupby(sweep.to_numpy()).transform("max").to_numpy()
    ceiled = -(-last // _MINUTE_US) * _MINUTE_US
    out = np.empty_like(ceiled)
    out[order] = ceiled
    return out


def _map_deribit_api(raw: pd.DataFrame, source: str, greeks_as_dict: bool) -> _Mapped:
    fmt = "deribit_api_dict" if greeks_as_dict else "deribit_api_flat"
    needed = {"ts": "timestamp", "symbol": "instrument_name", "open_interest": "open_interest",
              "mark_iv": "mark_iv", "underlying_price": "underlying_price"}
    _require(raw, needed, source, fmt)
    names: dict[str, str] = dict(needed)
    stamp = _epoch_to_utc(raw["timestamp"], "timestamp", source)
    inst = _parse_instruments(raw["instrument_name"], "instrument_name", source)
    frame = pd.DataFrame({
        "ts": _us_to_utc(_sweep_ts(_ts_us(stamp), raw["instrument_name"]), raw.index),
        "expiry": inst["expiry"], "strike": inst["strike"], "right": inst["right"],
        "open_interest": raw["open_interest"],
        "mark_iv": _to_float(raw["mark_iv"], "mark_iv", source),
        "underlying_price": raw["underlying_price"],
    })
    for canon, col in (("expiry", "expiration_timestamp"), ("strike", "strike"),
                       ("right", "option_type")):
        if col in raw.columns:
            names[canon] = col
    if "expiration_timestamp" in raw.columns:
        frame["expiry"] = _epoch_to_utc(raw["expiration_timestamp"], "expiration_timestamp",
                                        source)
    if "strike" in raw.columns:
        frame["strike"] = raw["strike"]
    if "option_type" in raw.columns:
        frame["right"] = raw["option_type"]
    _optional(raw, frame, names, {"index_price": "index_price",
                                  "underlying_index": "underlying_index"}, source)
    if greeks_as_dict:
        names.update({g: "greeks" for g in _GREEKS})
        text = raw["greeks"].astype("string")
        for g in _GREEKS:
            value = text.str.extract(rf"'{g}':\s*([^,}}]+)")[0].str.strip()
            frame[g] = _to_float(value.where(value != "None"), "greeks", source)
    else:
        _optional(raw, frame, names, {g: f"greeks.{g}" for g in _GREEKS}, source)
    return _Mapped(frame, "percent", names, raw["instrument_name"].astype("string"))


def _map_deribit_api_flat(raw: pd.DataFrame, source: str, _freq: pd.Timedelta) -> _Mapped:
    return _map_deribit_api(raw, source, greeks_as_dict=False)


def _map_deribit_api_dict(raw: pd.DataFrame, source: str, _freq: pd.Timedelta) -> _Mapped:
    return _map_deribit_api(raw, source, greeks_as_dict=True)


def _map_tardis(raw: pd.DataFrame, source: str, freq: pd.Timedelta) -> _Mapped:
    needed = {"exchange": "exchange", "symbol": "symbol", "ts": "local_timestamp",
              "right": "type", "strike": "strike_price", "expiry": "expiration",
              "open_interest": "open_interest", "mark_iv": "mark_iv",
              "underlying_price": "underlying_price"}
    _require(raw, needed, source, "tardis")
    names = dict(needed)
    exchange = _per_unique(raw["exchange"], lambda name: name.strip().lower())
    other = (exchange != "deribit").to_numpy(dtype=bool)
    if other.any():
        i = int(np.flatnonzero(other)[0])
        raise DataError(f"exchange {raw['exchange'].iloc[i]!r} is not supported", source=source,
                        row=i, column="exchange", expected="'deribit' (contract sizes and "
                        "IV conventions differ per venue)",
                        fix="filter the file to Deribit rows")
    arrival = raw["local_timestamp"]
    if "timestamp" in raw.columns:
        arrival = arrival.where(arrival.notna(), raw["timestamp"])
    stamp_us = _ts_us(_epoch_to_utc(arrival, "local_timestamp", source))
    freq_us = _td_us(freq)
    frame = pd.DataFrame({
        "ts": _us_to_utc(-(-stamp_us // freq_us) * freq_us, raw.index),
        "expiry": _epoch_to_utc(raw["expiration"], "expiration", source),
        "strike": raw["strike_price"], "right": raw["type"],
        "open_interest": raw["open_interest"],
        "mark_iv": _to_float(raw["mark_iv"], "mark_iv", source),
        "underlying_price": raw["underlying_price"],
    })
    _optional(raw, frame, names, {"underlying_index": "underlying_index",
                                  **{g: g for g in _GREEKS}}, source)
    return _Mapped(frame, "percent", names, raw["symbol"].astype("string"),
                   pd.Series(stamp_us, index=raw.index))


def _map_canonical(raw: pd.DataFrame, source: str, _freq: pd.Timedelta) -> _Mapped:
    frame = raw.copy()
    for col in ("ts", "expiry"):
        frame[col] = _time_to_utc(raw[col], col, source)
    frame["mark_iv"] = _to_float(raw["mark_iv"], "mark_iv", source)
    return _Mapped(frame, "fraction", {})


_CHAIN_MAPPERS: dict[str, Callable[[pd.DataFrame, str, pd.Timedelta], _Mapped]] = {
    "optionsdx": _map_optionsdx,
    "deribit_hourly": _map_deribit_hourly,
    "deribit_api_flat": _map_deribit_api_flat,
    "deribit_api_dict": _map_deribit_api_dict,
    "tardis": _map_tardis,
    "canonical": _map_canonical,
}


def _normalize_right(col: pd.Series, source: str, column: str) -> pd.Series:
    rights = {"C": "C", "CALL": "C", "P": "P", "PUT": "P"}
    right = _per_unique(col, lambda text: rights.get(text.strip().upper()))
    bad = right.isna().to_numpy(dtype=bool)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"option right {col.iloc[i]!r} not recognized", source=source, row=i,
                        column=column, expected="call/put or C/P (any case)",
                        fix="repair or remove the row")
    return right.astype("string")


def _iv_fraction(iv: pd.Series, unit: Literal["percent", "fraction"], source: str,
                 column: str) -> pd.Series:
    values = iv.to_numpy(dtype=np.float64, na_value=np.nan)
    negative = values < 0
    if negative.any():
        i = int(np.flatnonzero(negative)[0])
        raise DataError(f"negative implied volatility {values[i]}", source=source, row=i,
                        column=column, expected="IV >= 0 (0 or empty = no quote)",
                        fix="repair or remove the row")
    quoted = values[values > 0]
    median = float(np.median(quoted)) if len(quoted) else float("nan")
    if unit == "percent":
        if median < 2.0:
            raise DataError(f"implied volatility looks like a fraction (median {median:.3g})",
                            source=source, column=column,
                            expected="percent in this format (55 = 55%)",
                            fix="use the vendor's original file; if IV was converted to "
                                "fractions, write the chain as canonical Parquet instead")
        return pd.Series(np.where(values > 0, values / 100.0, np.nan), index=iv.index)
    if median > 5.0:
        raise DataError(f"implied volatility looks like percent (median {median:.3g})",
                        source=source, column=column,
                        expected="a fraction in canonical chains (0.55 = 55%)",
                        fix="divide mark_iv by 100")
    return pd.Series(values, index=iv.index)


def _check_unique_contracts(frame: pd.DataFrame, source: str) -> None:
    keys = ["ts", "expiry", "strike", "right"]
    dup = frame.duplicated(keys, keep="first").to_numpy()
    if dup.any():
        i = int(np.flatnonzero(dup)[0])
        same = (frame[keys] == frame[keys].iloc[i]).all(axis=1).to_numpy()
        j = int(np.flatnonzero(same)[0])
        raise DataError(f"contract listed twice in snapshot {frame['ts'].iloc[i]} "
                        f"(expiry {frame['expiry'].iloc[i]}, strike {frame['strike'].iloc[i]}, "
                        f"{frame['right'].iloc[i]}; first at row {j})", source=source, row=i,
                        column="ts", expected="one row per contract per snapshot",
                        fix="drop the duplicated rows")


# --------------------------------------------------------------------------------------
# spot completion


def _spot_frame(spot: SpotLike, cache: bool) -> pd.DataFrame:
    if isinstance(spot, pa.Table):
        frame = spot.to_pandas()
    elif isinstance(spot, pd.DataFrame):
        frame = spot
    else:
        frame = load_bars(spot, cache=cache).to_pandas()
    if "ts" not in frame or "close" not in frame:
        raise DataError("spot bars lack 'ts'/'close'", source="spot", column="close",
                        expected="canonical bars (load_bars output)",
                        fix="pass a bars file path or a load_bars table")
    _ts_us(frame["ts"])
    return frame


def _frame_digest(frame: pd.DataFrame) -> str:
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(_ts_us(frame["ts"])).tobytes())
    digest.update(np.ascontiguousarray(frame["close"].to_numpy(dtype=np.float64)).tobytes())
    return digest.hexdigest()


def _spot_asof(snap_ts: pd.Series, spot: pd.DataFrame, source: str, column: str = "ts"
               ) -> np.ndarray:
    """Close of the last spot bar closed at or before each snapshot (point-in-time)."""
    freq_us = _td_us(bar_freq(spot))
    us = _ts_us(spot["ts"])
    order = np.argsort(us, kind="stable")
    close_time = us[order] + freq_us
    close = spot["close"].to_numpy(dtype=np.float64)[order]
    q = _ts_us(snap_ts)
    idx = np.searchsorted(close_time, q, side="right") - 1
    stale = (idx < 0) | (q - close_time[np.maximum(idx, 0)] > 2 * freq_us)
    if stale.any():
        i = int(np.flatnonzero(stale)[0])
        first = _us_to_utc(close_time[:1]).iloc[0]
        last = _us_to_utc(close_time[-1:]).iloc[0]
        raise DataError(f"no spot bar closed within two bar lengths before snapshot "
                        f"{snap_ts.iloc[i]}", source=source, row=i, column=column,
                        expected=f"spot bars covering the chain (spot closes span {first} .. "
                                 f"{last})",
                        fix="pass spot bars that cover every snapshot (--spot FILE)")
    return close[idx]


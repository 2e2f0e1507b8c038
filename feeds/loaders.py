"""Loaders: real bar and option-chain files into the canonical BARS and CHAIN tables.

The public face of :mod:`feeds.formats`: every loader sniffs the file, lets the
registered formats (:data:`BAR_FORMATS`, :data:`CHAIN_FORMATS`) score it, maps the
vendor columns of the winner to canonical ones in file order (so an error names the
0-based data row as it appears in the file, header lines excluded) and passes the
frame through the one conform step (:func:`feeds.formats.conform.conform`). Only a
complete, valid table is cached (:mod:`feeds.cache`), keyed by the file's bytes, the
options and the loader's code.

Conventions kept here (see ``DOMAIN.md``):

- Bars: ``ts`` is the bar *open* time in UTC; a bar closes at ``ts + bar_freq(bars)``.
- Chains: ``mark_iv`` is a fraction; raw vendor IV in percent is divided by 100 and a
  0 (Deribit's "no mark") becomes NaN. Deribit options expire at 08:00 UTC and have
  ``multiplier`` 1.0 (one BTC per contract).
- Snapshot times are chosen so that a snapshot never contains a quote stamped after its
  ``ts`` (point-in-time safe): see :func:`load_chain`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from feeds.formats.base import Kind, LoadOptions
from feeds.formats.dispatch import detect, filter_window, formats, load_table
from feeds.formats.sniffing import sniff_file
from feeds.formats.times import to_utc
from feeds.schema import BARS
from feeds.schema import conform as conform_schema
from plumbing.aliases import DurationLike, PathLike, TableLike, TimeLike
from plumbing.errors import ConfigError, DataError
from plumbing.timeconv import (
    bar_spacing,
    from_epoch_us,
    parse_duration,
    timedelta_us,
    to_epoch_us,
)

__all__ = [
    "BAR_FORMATS",
    "CHAIN_FORMATS",
    "CHAIN_PUBLICATION_DELAY",
    "bar_freq",
    "chain_delay",
    "detect_format",
    "load_bars",
    "load_chain",
    "resample_bars",
    "to_utc",
]

SpotLike = PathLike | TableLike

#: Bar formats by name, with the layout each reads (see :mod:`feeds.formats`).
BAR_FORMATS: dict[str, str] = {name: f.doc for name, f in formats("bars").items()}
#: Chain formats by name, with the layout each reads.
CHAIN_FORMATS: dict[str, str] = {name: f.doc for name, f in formats("chain").items()}
#: Publication delay of a chain format: a snapshot stamped ``ts`` is usable from
#: ``ts + delay``. OptionsDX stamps are the true UTC epoch of the snapshot; the Deribit
#: hourly file is labelled with the hour but was taken a median 27 min (up to 49 min)
#: later, so it is used from its label + 1 h. Other formats: 0.
CHAIN_PUBLICATION_DELAY: dict[str, pd.Timedelta] = {
    name: f.publication_delay for name, f in formats("chain").items() if f.publication_delay}


def load_bars(path: PathLike, *, freq: DurationLike | None = None,
              start: TimeLike | None = None, end: TimeLike | None = None,
              cache: bool = True) -> pa.Table:
    """Load an OHLCV file of any supported format as a canonical BARS table.

    Supported formats (auto-detected, gzip, zip or not): see :data:`BAR_FORMATS`.

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
    table = load_table("bars", path, cache=cache)
    table = filter_window(table, start, end, str(Path(path)))
    if freq is not None:
        table = resample_bars(table, freq)
    return table


def bar_freq(bars: TableLike) -> pd.Timedelta:
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
    names = bars.column_names if isinstance(bars, pa.Table) else list(bars.columns)
    if "ts" not in names:
        raise DataError("bars have no 'ts' column", column="ts",
                        expected="canonical bars (ts, open, high, low, close, volume)",
                        fix="load the bars with feeds.loaders.load_bars")
    ts = bars.column("ts").to_pandas() if isinstance(bars, pa.Table) else bars["ts"]
    return bar_spacing(ts)


def resample_bars(bars: TableLike, freq: DurationLike) -> pa.Table:
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
    target = parse_duration(freq, name="freq", example="4h")
    native = bar_freq(frame)
    if target < native:
        raise ConfigError(f"freq {freq!s} is finer than the bars' native spacing {native}",
                          column="freq", expected=f"a spacing >= {native} (resampling can only "
                          "aggregate)", fix="choose a coarser freq or load finer bars")
    target_us, native_us = timedelta_us(target), timedelta_us(native)
    if target_us % native_us:
        raise ConfigError(f"freq {freq!s} is not a whole multiple of the native spacing "
                          f"{native}", column="freq",
                          expected=f"a multiple of {native}",
                          fix="pick a freq that tiles the native bars exactly")
    us = to_epoch_us(frame["ts"])
    if target_us == native_us:
        return conform_schema(frame, BARS, "<resample_bars>")
    order = np.argsort(us, kind="stable")
    sorted_frame = frame.iloc[order]
    bucket = us[order] // target_us * target_us
    grouped = sorted_frame[["open", "high", "low", "close", "volume"]].groupby(bucket, sort=True)
    out = grouped.agg({"open": "first", "high": "max", "low": "min", "close": "last",
                       "volume": "sum"})
    starts = out.index.to_numpy(dtype=np.int64)
    out = out.reset_index(drop=True)
    out.insert(0, "ts", from_epoch_us(starts))
    return conform_schema(out, BARS, "<resample_bars>")


def load_chain(path: PathLike, *, spot: SpotLike | None = None, cache: bool = True,
               currency: str | None = "BTC", snapshot_freq: DurationLike = "1h") -> pa.Table:
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
    freq = parse_duration(snapshot_freq, name="snapshot_freq")
    spot_frame = _spot_frame(spot, cache) if spot is not None else None
    options = LoadOptions(currency=currency, snapshot_freq=freq, spot=spot_frame,
                          spot_digest=None if spot_frame is None else _frame_digest(spot_frame))
    return load_table("chain", path, options=options, cache=cache)


def chain_delay(path: PathLike) -> pd.Timedelta:
    """The default publication delay of the chain file at ``path`` (by its format)."""
    return detect("chain", sniff_file(path)).publication_delay


def detect_format(path: PathLike, kind: Kind = "bars") -> str:
    """Name of the format the loader of ``kind`` would use for ``path``.

    Returns
    -------
    str
        A key of :data:`BAR_FORMATS`, :data:`CHAIN_FORMATS` or, for the other kinds,
        of ``feeds.formats.dispatch.formats(kind)``.

    Raises
    ------
    DataError
        Missing or empty file, or no supported format matches.
    """
    return detect(kind, sniff_file(path)).name


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
    to_epoch_us(frame["ts"], source="spot")
    return frame


def _frame_digest(frame: pd.DataFrame) -> str:
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(to_epoch_us(frame["ts"], source="spot")).tobytes())
    digest.update(np.ascontiguousarray(frame["close"].to_numpy(dtype=np.float64)).tobytes())
    return digest.hexdigest()

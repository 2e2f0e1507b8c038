"""Backtrader feed carrying OHLCV plus dealer-gamma, liquidation and basis lines.

Everything is joined point-in-time **once**, with numpy, when the feed is built
(:func:`build_arrays`); Backtrader then receives whole arrays at preload instead of
reading a DataFrame row by row.

Time
----
A bar's Backtrader datetime is its **close** time, ``ts + bar spacing`` (``ts`` is the
canonical bar *open* time), as a naive-UTC Backtrader date number. A value stamped
``t`` is in force at a bar iff ``t <= bar close`` and ``bar close - t <= max_staleness``
(:func:`feeds.pit.asof_indices`); otherwise the line is NaN. ``t`` is the row's
``available_at`` (its stamp plus the source's publication delay) when the summary,
strikes or extra frame has that column, else its ``ts``. Orders placed on a bar
fill at the next bar (Backtrader's default), so nothing known after a bar's close
can affect that bar's trades.

Lines
-----
``GammaCoreFeed``: OHLCV (``openinterest`` is 0.0), ``gex, gamma_flip,
call_wall, put_wall, regime, flip_dist`` and the internal ``snap_idx``.
``GammaFeed`` adds ``liq_below, liq_below_usd, liq_above, liq_above_usd,
basis_ann, basis_z, funding_ann`` and the internal ``liqmap_idx``; lines whose input
is not given are NaN; it also carries the second-order lines ``vanna_exp, charm_exp,
atm_iv`` (from the summary's ``vanna, charm, atm_iv``) and ``barrier_gex,
dist_to_barrier`` (per-bar barrier-book lines). ``snap_idx`` / ``liqmap_idx`` hold the
index (as a float, -1 = none) of the per-strike snapshot / liquidation map in force;
strategies read those through :meth:`GammaCoreFeed.strike_gex`,
:meth:`GammaCoreFeed.strike_vanna` and :meth:`GammaFeed.liq_map`.

Run modes
---------
Identical per-bar values with ``runonce`` and ``preload`` on or off and with
``exactbars`` 0, -1, -2 and 1. With ``exactbars=1`` Backtrader keeps only the bars
the strategy's indicators need, per line: ``strike_gex``/``liq_map`` then accept only
``ago=0`` (a ConfigError otherwise; Backtrader itself would silently return the
current value for a line read too far back). ``preload`` appends each line's
whole numpy array to its buffer in one call; without preload, or when filters
(``resampledata``/``replaydata``) are attached, ``_load`` delivers bars one at a time
from the same arrays. Bars synthesized by a resample/replay filter get the gamma,
liquidation, basis and index lines *as of their own datetime*: the values of the last
underlying bar that closed at or before it (never a later one). ``fromdate`` /
``todate`` are honoured by slicing (same inclusive bounds as Backtrader's:
``fromdate <= close <= todate``). ``tzinput`` is refused: inputs are UTC already.
Several feeds, ``oldsync``, ``clone``/``resampledata`` of an added feed (the copy keeps
every line) and pickling (``optstrategy`` with several processes) work.

Per-bar cost
------------
After a bulk preload, ``advance`` moves the buffers' indices inline instead of one
method call per line, and only the price lines get Backtrader's ``tick_*`` attributes
(the broker reads ``tick_open/high/low/close``; ``tick_gex`` and the like do not
exist). Both keep results identical (tests compare against Backtrader's own paths).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol, Self

import backtrader as bt
import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa

from feeds.pit import (
    US_PER_DAY,
    asof_indices,
    asof_take,
    exact_indices,
    group_offsets,
)
from plumbing.aliases import DurationLike, TableLike
from plumbing.errors import ConfigError, DataError
from plumbing.timeconv import duration_us, modal_spacing_us, to_epoch_us

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

LINES_OHLCV = ("open", "high", "low", "close", "volume")
LINES_GAMMA = ("gex", "gamma_flip", "call_wall", "put_wall", "regime", "flip_dist")
LINES_LIQ = ("liq_below", "liq_below_usd", "liq_above", "liq_above_usd")
LINES_BASIS = ("basis_ann", "basis_z", "funding_ann")
LINES_SECOND = ("vanna_exp", "charm_exp", "atm_iv", "barrier_gex", "dist_to_barrier")
#: summary column -> line, joined as of like the gamma lines (NaN when the column is absent)
SUMMARY_SECOND = {"vanna": "vanna_exp", "charm": "charm_exp", "atm_iv": "atm_iv"}
LINES_BARRIER = ("barrier_gex", "dist_to_barrier")
SUMMARY_COLUMNS = ("gex", "gamma_flip", "call_wall", "put_wall", "regime")
STALENESS_KEYS = ("summary", "strikes", *LINES_BASIS)
#: Optional column of the summary, strikes and extra frames: when a row became usable
#: (stamp + publication delay). The joins use it instead of ``ts`` when present.
AVAILABLE_AT = "available_at"
DEFAULT_STALENESS = "26h"

#: Backtrader date number of 1970-01-01 00:00 (``datetime.date(1970, 1, 1).toordinal()``).
BT_EPOCH_ORDINAL = 719_163

Staleness = DurationLike | Mapping[str, DurationLike]


# --------------------------------------------------------------------------- time


def bt_datenum(us: npt.ArrayLike) -> FloatArray:
    """Backtrader date numbers of UTC epoch microseconds, vectorized.

    Formula::

        days, rem = divmod(us, 86_400e6)
        num = float(days + 719163) + rem / 86_400e6

    i.e. days since 0001-01-01 plus one, the fraction being the time of day. Splitting
    whole days from the remainder before the float division reproduces
    ``backtrader.date2num`` bit for bit (a plain ``us / 86_400e6 + 719163`` is off by
    one ulp for ~1% of microsecond timestamps).
    """
    arr = np.asarray(us, dtype=np.int64)
    days, rem = np.divmod(arr, US_PER_DAY)
    return (days + BT_EPOCH_ORDINAL).astype(np.float64) + rem / float(US_PER_DAY)


def _staleness(max_staleness: Staleness) -> dict[str, int]:
    if not isinstance(max_staleness, Mapping):
        one = duration_us(max_staleness, name="max_staleness", minimum="nonnegative",
                          example="26h")
        return dict.fromkeys(STALENESS_KEYS, one)
    allowed = (*STALENESS_KEYS, "default")
    for key in max_staleness:
        if key not in allowed:
            hint = difflib.get_close_matches(str(key), allowed, n=1)
            raise ConfigError(f"unknown max_staleness source {key!r}"
                              + (f" (did you mean {hint[0]!r}?)" if hint else ""),
                              column="max_staleness", expected=f"keys among {list(allowed)}",
                              fix="rename the key")
    default = duration_us(max_staleness.get("default", DEFAULT_STALENESS),
                          name="max_staleness['default']", minimum="nonnegative", example="26h")
    return {key: duration_us(max_staleness[key], name=f"max_staleness[{key!r}]",
                             minimum="nonnegative", example="26h")
            if key in max_staleness else default for key in STALENESS_KEYS}


def _timeframe(freq_us: int) -> tuple[int, int]:
    """Backtrader (timeframe, compression) of a bar spacing."""
    if freq_us % US_PER_DAY == 0:
        return bt.TimeFrame.Days, freq_us // US_PER_DAY
    if freq_us % 60_000_000 == 0:
        return bt.TimeFrame.Minutes, freq_us // 60_000_000
    if freq_us % 1_000_000 == 0:
        return bt.TimeFrame.Seconds, freq_us // 1_000_000
    return bt.TimeFrame.MicroSeconds, freq_us


# --------------------------------------------------------------------------- arrays


def _readonly(arr: np.ndarray) -> np.ndarray:
    arr = np.ascontiguousarray(arr)
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True, eq=False)
class Snapshots:
    """Rows of many snapshots stored CSR-style: group ``k`` is ``offsets[k]:offsets[k+1]``.

    Attributes
    ----------
    stamps_us
        Distinct snapshot stamps (``int64`` UTC microseconds), sorted.
    offsets
        ``len(stamps_us) + 1`` row offsets.
    columns
        Column name -> read-only ``float64`` array over all rows.
    """

    stamps_us: IntArray
    offsets: IntArray
    columns: Mapping[str, FloatArray]

    def __len__(self) -> int:
        return len(self.stamps_us)

    def group(self, k: int) -> dict[str, FloatArray]:
        """The rows of snapshot ``k`` (views); empty arrays when ``k < 0``."""
        if k < 0:
            return {name: col[:0] for name, col in self.columns.items()}
        lo, hi = int(self.offsets[k]), int(self.offsets[k + 1])
        return {name: col[lo:hi] for name, col in self.columns.items()}


class LiqMapSource(Protocol):
    """Anything that serves per-bar liquidation maps lazily (e.g. ``indicators.
    liquidation.LiqMap``): ``lines['ts']`` stamps map ``i`` with its bar's ``ts`` and
    ``arrays(i)`` returns ``(price, long_usd, short_usd)`` of the levels alive after it."""

    lines: pd.DataFrame

    def arrays(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...


@dataclass(frozen=True, eq=False)
class LazySnapshots:
    """:class:`Snapshots`-like view over a :class:`LiqMapSource` (maps built on demand)."""

    stamps_us: IntArray
    source: LiqMapSource

    def __len__(self) -> int:
        return len(self.stamps_us)

    def group(self, k: int) -> dict[str, FloatArray]:
        if k < 0:
            empty = _readonly(np.empty(0))
            return {"price": empty, "long_usd": empty, "short_usd": empty}
        price, long_usd, short_usd = self.source.arrays(k)
        return {"price": _readonly(np.asarray(price, dtype=np.float64)),
                "long_usd": _readonly(np.asarray(long_usd, dtype=np.float64)),
                "short_usd": _readonly(np.asarray(short_usd, dtype=np.float64))}


@dataclass(frozen=True, eq=False)
class FeedArrays:
    """Everything a :class:`GammaCoreFeed` delivers, as whole numpy arrays.

    Attributes
    ----------
    open_us, close_us
        Bar open (canonical ``ts``) and close times, ``int64`` UTC microseconds.
    lines
        Line alias -> read-only ``float64`` array, one value per bar, for every line
        of :class:`GammaFeed` (``datetime`` holds Backtrader date numbers of the close).
    bar_freq_us
        Bar spacing used for the close times.
    strikes
        Per-strike GEX snapshots (``strike, gex_call, gex_put, gex_net``) or None.
    liq_map
        Liquidation maps per bar (``price, long_usd, short_usd``), stored or lazy, or None.
    max_staleness_us
        Staleness limit applied per source.
    """

    open_us: IntArray
    close_us: IntArray
    lines: Mapping[str, FloatArray]
    bar_freq_us: int
    strikes: Snapshots | None = None
    liq_map: Snapshots | LazySnapshots | None = None
    max_staleness_us: Mapping[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.close_us)

    def to_frame(self) -> pd.DataFrame:
        """One row per bar: ``ts`` (open), ``close_ts`` and every line (for inspection)."""
        data: dict[str, Any] = {
            "ts": pd.to_datetime(self.open_us, unit="us", utc=True),
            "close_ts": pd.to_datetime(self.close_us, unit="us", utc=True),
        }
        data.update({k: v for k, v in self.lines.items() if k != "datetime"})
        return pd.DataFrame(data)


def _frame(obj: TableLike, source: str) -> pd.DataFrame:
    if isinstance(obj, pa.Table):
        return obj.to_pandas()
    if isinstance(obj, pd.DataFrame):
        return obj
    raise DataError(f"got {type(obj).__name__}", source=source,
                    expected="a pandas DataFrame or pyarrow Table",
                    fix="pass the canonical table or the indicator's DataFrame")


def _require(df: pd.DataFrame, source: str, columns: tuple[str, ...]) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(f"missing column(s) {missing}", source=source,
                        expected=f"columns {list(columns)}",
                        fix="pass the output of the producing function unchanged")


def _floats(df: pd.DataFrame, column: str, source: str) -> FloatArray:
    try:
        return df[column].to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError) as exc:
        raise DataError("values are not numbers", source=source, column=column,
                        expected="numeric values (NaN allowed)",
                        fix="convert the column to float") from exc


def _sorted_unique(us: IntArray, source: str) -> None:
    bad = np.flatnonzero(us[1:] <= us[:-1])
    if bad.size:
        row = int(bad[0]) + 1
        what = "duplicated" if us[row] == us[row - 1] else "unsorted"
        raise DataError(f"{what} timestamp", source=source, row=row, column="ts",
                        expected="strictly increasing ts, one row per bar",
                        fix="sort by ts and drop duplicates")


def _per_bar(df: pd.DataFrame, source: str, open_us: IntArray
             ) -> tuple[np.ndarray, pd.DataFrame]:
    """Match a per-bar frame to the bars by exact ``ts`` (bar open time)."""
    us = to_epoch_us(df["ts"], source=source)
    order = np.argsort(us, kind="stable")
    us = us[order]
    _sorted_unique(us, source)
    pos = exact_indices(open_us, us)
    inside = (us >= open_us[0]) & (us <= open_us[-1])
    matched = np.zeros(len(us), dtype=bool)
    matched[pos[pos >= 0]] = True
    stray = np.flatnonzero(inside & ~matched)
    if stray.size:
        row = int(order[stray[0]])
        raise DataError("ts is not the open time of any bar", source=source, row=row,
                        column="ts", expected="per-bar rows stamped with the bars' ts",
                        fix="compute it from the same bars (or resample it onto them)")
    return pos, df.iloc[order].reset_index(drop=True)


def build_arrays(bars: TableLike, *, summary: TableLike | None = None, strikes: TableLike | None = None,
                 extra: TableLike | None = None, liq_lines: TableLike | None = None,
                 liq_map: TableLike | LiqMapSource | None = None,
                 barrier_lines: TableLike | None = None,
                 max_staleness: Staleness = DEFAULT_STALENESS,
                 bar_freq: DurationLike | None = None) -> FeedArrays:
    """Join all inputs point-in-time onto the bars, as arrays (no Backtrader involved).

    Parameters
    ----------
    bars
        Canonical BARS (``ts`` = bar open, UTC; ``open, high, low, close, volume``),
        strictly increasing ``ts``.
    summary
        ``indicators.gamma.summarize`` output: ``ts`` (snapshot time) and
        ``gex, gamma_flip, call_wall, put_wall, regime``; optional ``vanna``,
        ``charm``, ``atm_iv`` feed the lines ``vanna_exp, charm_exp, atm_iv`` (NaN
        when absent); other columns are ignored. Row-wise as-of join: the latest
        snapshot with ``available_at`` (else ``ts``) ``<= bar close`` and age
        ``<= max_staleness['summary']``; its NaNs (e.g. no flip) stay NaN. Equal stamps:
        the last row wins.
    strikes
        ``indicators.gamma.strike_gex`` output: ``ts, strike, gex_net`` and optionally
        ``gex_call, gex_put``; stored per snapshot (sorted by strike) and joined like
        ``summary`` with ``max_staleness['strikes']``.
    extra
        ``ts`` (optionally ``available_at``) plus any of ``basis_ann, basis_z,
        funding_ann`` (no other columns).
        Each column is joined on its own rows with a value (NaN rows are skipped), so
        sources stamped on different clocks may share one frame; staleness per column.
    liq_lines
        Per-bar ``ts`` (the bars' own ``ts``) with any of ``liq_below, liq_below_usd,
        liq_above, liq_above_usd`` (other columns ignored), already point-in-time:
        the row of bar ``i`` uses bars up to ``i`` only. Bars without a row get NaN.
    liq_map
        Long frame ``ts, price, long_usd, short_usd``: the levels alive after bar
        ``ts`` (the bars' own ``ts``); a bar without rows has an empty map. Or a
        :class:`LiqMapSource` (``indicators.liquidation.LiqMap``), whose maps are built
        only when a strategy asks (a year of hourly full maps is large); its
        ``lines.ts`` must be the bars' ``ts`` (strictly increasing).
    barrier_lines
        Per-bar ``ts`` (the bars' own ``ts``) with any of ``barrier_gex,
        dist_to_barrier`` (``indicators.barrier.barrier_book`` lines), already point in
        time; bars without a row get NaN.
    max_staleness
        A duration (``"26h"``) for every source, or a mapping with keys among
        ``summary, strikes, basis_ann, basis_z, funding_ann, default``.
    bar_freq
        Bar spacing; default: the modal spacing of ``bars.ts``.

    Returns
    -------
    FeedArrays

    Raises
    ------
    DataError
        Missing columns, naive or unsorted timestamps, non-finite prices, per-bar rows
        that match no bar.
    ConfigError
        Bad durations or staleness keys.
    """
    b = _frame(bars, "bars")
    _require(b, "bars", ("ts", *LINES_OHLCV))
    if len(b) == 0:
        raise DataError("no bars", source="bars", expected="at least one bar",
                        fix="check the date filter")
    open_us = to_epoch_us(b["ts"], source="bars")
    _sorted_unique(open_us, "bars")
    freq_us = duration_us(bar_freq, name="bar_freq") if bar_freq is not None \
        else modal_spacing_us(open_us, source="bars")
    close_us = open_us + freq_us
    stale = _staleness(max_staleness)
    n = len(open_us)
    nan = np.full(n, np.nan)
    lines: dict[str, np.ndarray] = {}
    for name in LINES_OHLCV:
        vals = _floats(b, name, "bars")
        bad = np.flatnonzero(~np.isfinite(vals))
        if bad.size:
            raise DataError("missing or infinite value", source="bars", row=int(bad[0]),
                            column=name, expected="finite prices and volumes",
                            fix="drop or repair the row (e.g. DataFrame.dropna())")
        lines[name] = vals
    lines["openinterest"] = np.zeros(n)
    lines["datetime"] = bt_datenum(close_us)

    if summary is not None:
        s = _frame(summary, "summary")
        _require(s, "summary", ("ts", *SUMMARY_COLUMNS))
        idx = asof_indices(close_us, available_us(s, "summary"), stale["summary"])
        for name in SUMMARY_COLUMNS:
            lines[name] = asof_take(_floats(s, name, "summary"), idx)
        for column, name in SUMMARY_SECOND.items():
            lines[name] = (asof_take(_floats(s, column, "summary"), idx)
                           if column in s.columns else nan)
    else:
        lines.update({name: nan for name in (*SUMMARY_COLUMNS, *SUMMARY_SECOND.values())})
    flip = lines["gamma_flip"]
    ok = np.isfinite(flip) & (flip > 0)
    lines["flip_dist"] = np.divide(lines["close"], flip, out=np.full(n, np.nan),
                                   where=ok) - 1.0

    snaps = None
    lines["snap_idx"] = np.full(n, -1.0)
    if strikes is not None:
        snaps = _strike_snapshots(_frame(strikes, "strikes"))
        idx = asof_indices(close_us, snaps.stamps_us, stale["strikes"])
        lines["snap_idx"] = idx.astype(np.float64)

    lines.update({name: nan for name in (*LINES_LIQ, *LINES_BASIS)})
    if extra is not None:
        e = _frame(extra, "extra")
        _require(e, "extra", ("ts",))
        unknown = [c for c in e.columns if c not in ("ts", AVAILABLE_AT)
                   and c not in LINES_BASIS]
        if unknown or not any(c in e.columns for c in LINES_BASIS):
            raise DataError(f"unexpected column(s) {unknown}" if unknown
                            else "none of the basis/funding columns", source="extra",
                            expected=f"ts plus any of {list(LINES_BASIS)}",
                            fix="rename or select the columns")
        us = available_us(e, "extra")
        for name in LINES_BASIS:
            if name in e.columns:
                vals = _floats(e, name, "extra")
                have = ~np.isnan(vals)
                idx = asof_indices(close_us, us[have], stale[name])
                lines[name] = asof_take(vals[have], idx)
    lines.update({name: nan for name in LINES_BARRIER})
    for table, source, names, producer in (
            (liq_lines, "liq_lines", LINES_LIQ, "indicators.liquidation"),
            (barrier_lines, "barrier_lines", LINES_BARRIER, "indicators.barrier.barrier_book")):
        if table is not None:
            lines.update(_per_bar_lines(table, source, names, open_us, producer))
    lmap = None
    lines["liqmap_idx"] = np.full(n, -1.0)
    if liq_map is not None:
        lmap = _lazy_liq(liq_map, open_us) if hasattr(liq_map, "arrays") \
            else _liq_snapshots(_frame(liq_map, "liq_map"), open_us)
        lines["liqmap_idx"] = exact_indices(open_us, lmap.stamps_us).astype(np.float64)

    return FeedArrays(open_us=_readonly(open_us), close_us=_readonly(close_us),
                      lines={k: _readonly(np.asarray(v, dtype=np.float64))
                             for k, v in lines.items()},
                      bar_freq_us=freq_us, strikes=snaps, liq_map=lmap,
                      max_staleness_us=stale)


def available_us(df: pd.DataFrame, source: str) -> IntArray:
    """When each row became usable: its ``available_at`` (``ts`` + publication delay)
    when the frame has one, else its ``ts``; ``int64`` UTC microseconds."""
    column = AVAILABLE_AT if AVAILABLE_AT in df.columns else "ts"
    return to_epoch_us(df[column], source=source, column=column)


def _per_bar_lines(table: TableLike, source: str, names: tuple[str, ...],
                   open_us: IntArray, producer: str) -> dict[str, FloatArray]:
    """Lines of a per-bar table (one row per bar, e.g. the liquidation map's), aligned on
    the bars by their open time."""
    frame = _frame(table, source)
    _require(frame, source, ("ts",))
    if not any(c in frame.columns for c in names):
        raise DataError(f"none of the {source} columns", source=source,
                        expected=f"ts plus any of {list(names)}",
                        fix=f"pass the per-bar output of {producer}")
    pos, frame = _per_bar(frame, source, open_us)
    return {name: asof_take(_floats(frame, name, source), pos)
            for name in names if name in frame.columns}


def _strike_snapshots(df: pd.DataFrame) -> Snapshots:
    _require(df, "strikes", ("ts", "strike", "gex_net"))
    us = available_us(df, "strikes")
    strike = _floats(df, "strike", "strikes")
    order = np.lexsort((strike, us))
    stamps, offsets = group_offsets(us[order])
    cols = {"strike": strike[order]}
    for name in ("gex_call", "gex_put", "gex_net", "vanna"):
        vals = _floats(df, name, "strikes") if name in df.columns else np.full(len(df), np.nan)
        cols[name] = vals[order]
    return Snapshots(_readonly(stamps), _readonly(offsets),
                     {k: _readonly(v) for k, v in cols.items()})


def _check_bar_stamps(stamps: IntArray, open_us: IntArray, source: str,
                      row_of: Callable[[int], int]) -> None:
    pos = exact_indices(stamps, open_us)
    stray = np.flatnonzero((pos < 0) & (stamps >= open_us[0]) & (stamps <= open_us[-1]))
    if stray.size:
        raise DataError("ts is not the open time of any bar", source=source,
                        row=row_of(int(stray[0])), column="ts",
                        expected="map rows stamped with the bars' ts",
                        fix="compute the map from the same bars")


def _lazy_liq(source: LiqMapSource, open_us: IntArray) -> LazySnapshots:
    lines = getattr(source, "lines", None)
    if not isinstance(lines, pd.DataFrame) or "ts" not in lines.columns:
        raise DataError("the map source has no lines['ts']", source="liq_map", column="ts",
                        expected="an object with .lines (DataFrame with ts) and .arrays(i)",
                        fix="pass indicators.liquidation.estimate_liq_map(...) or a long frame")
    stamps = to_epoch_us(lines["ts"], source="liq_map.lines")
    _sorted_unique(stamps, "liq_map.lines")
    _check_bar_stamps(stamps, open_us, "liq_map.lines", lambda k: k)
    return LazySnapshots(_readonly(stamps), source)


def _liq_snapshots(df: pd.DataFrame, open_us: IntArray) -> Snapshots:
    _require(df, "liq_map", ("ts", "price", "long_usd", "short_usd"))
    us = to_epoch_us(df["ts"], source="liq_map")
    price = _floats(df, "price", "liq_map")
    order = np.lexsort((price, us))
    stamps, offsets = group_offsets(us[order])
    _check_bar_stamps(stamps, open_us, "liq_map", lambda k: int(order[offsets[k]]))
    cols = {"price": price[order],
            "long_usd": _floats(df, "long_usd", "liq_map")[order],
            "short_usd": _floats(df, "short_usd", "liq_map")[order]}
    return Snapshots(_readonly(stamps), _readonly(offsets),
                     {k: _readonly(v) for k, v in cols.items()})


# --------------------------------------------------------------------------- feeds


class StrikeProfile(NamedTuple):
    """Per-strike dealer GEX of one snapshot (USD per 1% move), sorted by strike."""

    ts: pd.Timestamp | None
    strike: FloatArray
    gex_call: FloatArray
    gex_put: FloatArray
    gex_net: FloatArray
    vanna: FloatArray  # dealer vanna exposure, USD per +1 vol point (NaN if not given)


class LiqLevels(NamedTuple):
    """Estimated liquidation levels alive after one bar, sorted by price (USD)."""

    ts: pd.Timestamp | None
    price: FloatArray
    long_usd: FloatArray
    short_usd: FloatArray


_DT = 6  # position of 'datetime' among Backtrader's standard lines


class GammaCoreFeed(bt.feed.DataBase):
    """OHLCV plus the dealer-gamma lines, bulk-preloaded from numpy.

    Build it with :meth:`from_frames`; ``dataname`` must be a :class:`FeedArrays`.

    Lines
    -----
    gex
        Net dealer GEX at spot of the snapshot in force, USD per 1% move.
    gamma_flip, call_wall, put_wall
        USD price levels of that snapshot (NaN when none).
    regime
        +1 long gamma, -1 short gamma (NaN when no snapshot in force).
    flip_dist
        ``close / gamma_flip - 1`` (NaN when the flip is NaN).
    snap_idx
        Internal: index of the per-strike snapshot in force, -1 when none.
    """

    lines = (*LINES_GAMMA, "snap_idx")

    _derivs_lines = False

    def __init__(self) -> None:
        super().__init__()
        arrays = self.p.dataname
        if not isinstance(arrays, FeedArrays):
            raise ConfigError(f"dataname is a {type(arrays).__name__}", column="dataname",
                              expected="feeds.btfeed.FeedArrays",
                              fix=f"build the feed with {type(self).__name__}.from_frames(...)")
        if self.p.tzinput is not None:
            raise ConfigError("tzinput is not supported", column="tzinput",
                              expected="None (inputs are UTC already)",
                              fix="drop tzinput; use tz to display times in another zone")
        aliases = self.getlinealiases()
        self._arrays = arrays
        self._cols = [arrays.lines[a] for a in aliases]
        self._dt = arrays.lines["datetime"]
        self._nextra = len(aliases) - _DT - 1
        self._lists: list[list[float]] | None = None
        self._lo, self._hi, self._pos = 0, len(arrays), -1
        self._buffers = list(self.lines)
        self._bulk = False  # True once preload() appended whole arrays

    @classmethod
    def from_frames(cls, bars: TableLike, *, summary: TableLike | None = None,
                    strikes: TableLike | None = None, extra: TableLike | None = None,
                    liq_lines: TableLike | None = None, liq_map: TableLike | LiqMapSource | None = None,
                    barrier_lines: TableLike | None = None,
                    max_staleness: Staleness = DEFAULT_STALENESS, name: str | None = None,
                    bar_freq: DurationLike | None = None, **bt_params: Any) -> Self:
        """Build the feed from canonical bars and analytics frames.

        See :func:`build_arrays` for the inputs and the point-in-time rules.
        ``timeframe``/``compression`` default to the bar spacing; any other Backtrader
        data parameter (``fromdate``, ``todate``, ``tz``, ``sessionend``, ...) passes
        through ``bt_params``.

        Raises
        ------
        ConfigError
            Unknown Backtrader parameter (with a suggestion), or liquidation/basis inputs given
            to :class:`GammaCoreFeed`.
        DataError
            Bad input frames (see :func:`build_arrays`).
        """
        if not cls._derivs_lines:
            given = [k for k, v in (("extra", extra), ("liq_lines", liq_lines),
                                    ("liq_map", liq_map), ("barrier_lines", barrier_lines))
                     if v is not None]
            if given:
                raise ConfigError(f"{cls.__name__} has no lines for {given}",
                                  column=given[0], expected="only bars, summary, strikes",
                                  fix="use GammaFeed.from_frames for liquidation/basis inputs")
        known = list(cls.params._getkeys())
        for key in bt_params:
            if key not in known or key in ("dataname", "name"):
                hint = difflib.get_close_matches(key, known, n=1)
                raise ConfigError(f"unknown feed parameter {key!r}"
                                  + (f" (did you mean {hint[0]!r}?)" if hint else ""),
                                  column=key, expected=f"one of {known}",
                                  fix="check the spelling")
        arrays = build_arrays(bars, summary=summary, strikes=strikes, extra=extra,
                              liq_lines=liq_lines, liq_map=liq_map,
                              barrier_lines=barrier_lines,
                              max_staleness=max_staleness, bar_freq=bar_freq)
        timeframe, compression = _timeframe(arrays.bar_freq_us)
        params: dict[str, Any] = {"timeframe": timeframe, "compression": compression}
        params.update(bt_params)
        return cls(dataname=arrays, name=name or "", **params)

    @property
    def arrays(self) -> FeedArrays:
        """The precomputed arrays (all bars, before ``fromdate``/``todate`` slicing)."""
        return self._arrays

    # -- Backtrader plumbing -------------------------------------------------------

    def start(self) -> None:
        super().start()
        self._pos = -1
        self._bulk = False

    def _start_finish(self) -> None:
        super()._start_finish()
        # Same bounds Backtrader applies in load(): drop dt < fromdate, stop at dt > todate
        self._lo = int(np.searchsorted(self._dt, self.fromdate, side="left"))
        self._hi = max(self._lo, int(np.searchsorted(self._dt, self.todate, side="right")))

    def preload(self) -> None:
        """Append every line's whole array at once, then leave the buffers as
        ``DataBase.preload`` does (``_last()``, ``home()``).

        Falls back to bar-by-bar loading when filters (resample/replay) are attached
        or a buffer is not a plain array (memory-saving mode).
        """
        plain = all(line.mode == line.UnBounded and not line.bindings for line in self.lines)
        if self._filters or not plain:
            super().preload()
            return
        start = self._lo + self._pos + 1
        if start < self._hi:
            for line, col in zip(self.lines, self._cols, strict=True):
                buf, at = line.array, line.idx + 1
                values = memoryview(col[start:self._hi]).cast("B")
                if at == len(buf):
                    buf.frombytes(values)
                else:
                    # Cerebro's lookahead extension sits where load() would write:
                    # load() writes at idx and the extension ends up after the data
                    tail = buf[at:]
                    del buf[at:]
                    buf.frombytes(values)
                    buf.extend(tail)
            self._pos = self._hi - self._lo - 1
        self._last()
        self.home()
        self._bulk = True

    def advance(self, size: int = 1, datamaster: Any = None, ticks: bool = True) -> None:
        """``DataBase.advance`` with the per-line index moves done inline.

        Only after a bulk preload, when every buffer is a plain array (whose index
        setter is a plain assignment); otherwise Backtrader's own method runs.
        """
        if not self._bulk:
            super().advance(size, datamaster=datamaster, ticks=ticks)
            return
        if ticks:
            self._tick_nullify()
        for line in self._buffers:
            line._idx += size
            line.lencount += size
        # the rest is DataBase.advance verbatim
        if datamaster is not None:
            if len(self) > self.buflen():
                self.rewind()
                self.lines.forward()
                return
            if self.lines.datetime[0] > datamaster.lines.datetime[0]:
                self.lines.rewind()
            elif ticks:
                self._tick_fill()
        elif len(self) < self.buflen():
            if ticks:
                self._tick_fill()

    def _load(self) -> bool:
        i = self._lo + self._pos + 1
        if i >= self._hi:
            return False
        self._pos += 1
        if self._lists is None:
            self._lists = [col.tolist() for col in self._cols]
        for line, values in zip(self.lines, self._lists, strict=True):
            line[0] = values[i]
        return True

    def _tick_nullify(self) -> None:
        # Backtrader resets a tick_<alias> attribute for every line on every bar; the
        # broker only reads tick_open/high/low/close, so only price lines are ticked.
        self.tick_close = self.tick_low = self.tick_high = self.tick_open = None
        self.tick_volume = self.tick_openinterest = self.tick_last = None

    def _tick_fill(self, force: bool = False) -> None:
        if force or getattr(self, "tick_close", None) is None:
            lines = self.lines
            self.tick_close = self.tick_last = lines.close[0]
            self.tick_low = lines.low[0]
            self.tick_high = lines.high[0]
            self.tick_open = lines.open[0]
            self.tick_volume = lines.volume[0]
            self.tick_openinterest = lines.openinterest[0]

    def _extras_asof(self, dt: float) -> list[float]:
        # Values of the last underlying bar closed at or before ``dt``.
        k = int(np.searchsorted(self._dt[self._lo:self._hi], dt, side="right")) - 1 + self._lo
        if k < self._lo:
            return [float("nan")] * self._nextra
        return [float(col[k]) for col in self._cols[_DT + 1:]]

    def _add2stack(self, bar: list[float], stash: bool = False) -> None:
        # Resampled bars carry only the 7 standard values: complete them point-in-time
        if len(bar) == _DT + 1 and self._nextra:
            bar = [*bar, *self._extras_asof(bar[_DT])]
        super()._add2stack(bar, stash=stash)

    def _updatebar(self, bar: list[float], forward: bool = False, ago: int = 0) -> None:
        if len(bar) == _DT + 1 and self._nextra:
            bar = [*bar, *self._extras_asof(bar[_DT])]
        super()._updatebar(bar, forward=forward, ago=ago)

    def clone(self, **kwargs: Any) -> Self:
        """A new feed over the same arrays (keeps every line, unlike ``DataClone``)."""
        params = dict(self.p._getkwargs())
        params.update(kwargs)
        params["dataname"] = self._arrays
        return type(self)(**params)

    def copyas(self, _dataname: str, **kwargs: Any) -> Self:
        data = self.clone(**kwargs)
        data._dataname = _dataname
        data._name = _dataname
        return data

    # -- per-bar snapshot access ---------------------------------------------------

    @staticmethod
    def _index(line: Any, ago: int) -> int:
        if ago < 0 and line.mode == line.QBuffer and -ago >= line.maxlen:
            # a memory-saving buffer would silently wrap around to the current bar
            raise ConfigError(f"ago={ago} is not kept with exactbars=1", column="ago",
                              expected="ago=0 when Cerebro saves memory (exactbars=1)",
                              fix="run with exactbars <= 0, or remember past values yourself")
        value = line[ago]
        return int(value) if value == value and value >= 0 else -1

    def input_value(self, name: str, ago: int = 0) -> float:
        """The value of an array line that is not a Backtrader line (an input kind
        registered with ``values`` in :mod:`gammabt.inputs`, e.g. ``"dvol"``), as of the
        bar ``ago`` bars back: the last underlying bar closed at or before its datetime.

        Backtrader lines are declared on the class, so a kind added without editing
        this module reaches strategies through this accessor instead of ``data.NAME``.

        Raises
        ------
        ConfigError
            ``name`` is not a line of this feed's arrays (the names are listed).
        """
        values = self._arrays.lines.get(name)
        if values is None:
            hint = difflib.get_close_matches(name, list(self._arrays.lines), n=1)
            raise ConfigError(f"no input line {name!r}", column=name,
                              expected=f"one of {sorted(self._arrays.lines)}",
                              fix=f"did you mean {hint[0]!r}?" if hint else
                              "register the input kind with values and pass its file")
        self._index(self.lines.datetime, ago)  # refuses ago beyond a memory-saving buffer
        dt = self.lines.datetime[ago]
        k = int(np.searchsorted(self._dt, dt, side="right")) - 1
        return float(values[k]) if k >= 0 else float("nan")

    def strike_gex(self, ago: int = 0) -> tuple[FloatArray, FloatArray]:
        """Strikes and net dealer GEX (USD per 1% move) of the snapshot in force.

        Parameters
        ----------
        ago
            Bars back, Backtrader style (0 = current bar, -1 = previous). With
            ``exactbars=1`` only ``ago=0`` is kept (a ConfigError says so).

        Returns
        -------
        (strikes, gex_net)
            Read-only ``float64`` views sorted by strike; both empty when no snapshot
            is in force (none yet, stale, or no ``strikes`` input).
        """
        prof = self.strike_profile(ago)
        return prof.strike, prof.gex_net

    def strike_profile(self, ago: int = 0) -> StrikeProfile:
        """The whole per-strike snapshot in force (``ts`` None and arrays empty if none)."""
        k = self._index(self.lines.snap_idx, ago)
        snaps = self._arrays.strikes
        if snaps is None:
            empty = np.empty(0)
            empty.setflags(write=False)
            return StrikeProfile(None, empty, empty, empty, empty, empty)
        rows = snaps.group(k)
        ts = pd.Timestamp(int(snaps.stamps_us[k]), unit="us", tz="UTC") if k >= 0 else None
        return StrikeProfile(ts, rows["strike"], rows["gex_call"], rows["gex_put"],
                             rows["gex_net"], rows["vanna"])

    def strike_vanna(self, ago: int = 0) -> tuple[FloatArray, FloatArray]:
        """Strikes and net dealer vanna exposure (USD of delta change per +1 vol point)
        of the snapshot in force; empty when none, NaN when the input had no vanna."""
        prof = self.strike_profile(ago)
        return prof.strike, prof.vanna


class GammaFeed(GammaCoreFeed):
    """:class:`GammaCoreFeed` plus liquidation and basis lines.

    Lines (in addition to the gamma lines)
    --------------------------------------
    liq_below, liq_below_usd
        Nearest estimated long-liquidation cluster below the close (USD price, USD size).
    liq_above, liq_above_usd
        Nearest short-liquidation cluster above the close.
    basis_ann, basis_z, funding_ann
        Annualized futures basis, its rolling z-score, perp funding APR (fractions).
    vanna_exp
        Dealer vanna exposure of the snapshot in force, USD of dealer delta change per
        +1 vol point (positive: dealers sell when IV rises).
    charm_exp
        Dealer charm exposure, BTC of dealer delta change per day of time passing.
    atm_iv
        The chain's ATM implied volatility (fraction) of the snapshot in force.
    barrier_gex
        Dealer gamma of the barrier book at the close, USD per 1% move.
    dist_to_barrier
        ``close / H - 1`` for the nearest live barrier ``H`` below the close.
    liqmap_idx
        Internal: index of the liquidation map in force, -1 when none.

    Each is NaN when its input was not given (or is stale, for basis/funding and the
    snapshot lines).
    """

    lines = (*LINES_LIQ, *LINES_BASIS, *LINES_SECOND, "liqmap_idx")

    _derivs_lines = True

    def liq_map(self, ago: int = 0) -> LiqLevels:
        """Estimated liquidation levels alive after the bar ``ago`` bars back.

        Returns
        -------
        LiqLevels
            ``ts`` (the bar's open time, None when no map) and read-only ``float64``
            arrays ``price, long_usd, short_usd`` sorted by price; empty when that bar
            has no map (no ``liq_map`` input, or no level alive).
        """
        k = self._index(self.lines.liqmap_idx, ago)
        maps = self._arrays.liq_map
        if maps is None:
            empty = np.empty(0)
            empty.setflags(write=False)
            return LiqLevels(None, empty, empty, empty)
        rows = maps.group(k)
        ts = pd.Timestamp(int(maps.stamps_us[k]), unit="us", tz="UTC") if k >= 0 else None
        return LiqLevels(ts, rows["price"], rows["long_usd"], rows["short_usd"])

"""Liquidation prices and an estimated liquidation map (Coinglass / Hyblock style).

Pure numpy / pandas; no backtrader. Conventions: ``../shared/DOMAIN.md`` section 2.

Liquidation price (isolated margin, one maintenance-margin rate MMR, fees ignored)
-------------------------------------------------------------------------------
Formula::

    linear  long : EP * (1 - 1/L) / (1 - MMR)
    linear  short: EP * (1 + 1/L) / (1 + MMR)
    inverse long : EP * (1 + MMR) / (1 + 1/L)
    inverse short: EP * (1 - MMR) / (1 - 1/L)      (L = 1 -> +inf: never liquidated)

Estimated liquidation map
-------------------------
Nobody publishes where leveraged positions sit; the map *estimates* it from what is
observable, bar by bar, in this order (the rules are the documented model, the tests
pin them against a slow loop implementation, :func:`liq_map_reference`):

1. **Consumption.** A long level is liquidated (removed) once the bar trades at or
   below it (``low <= level``), a short level once the bar trades at or above it
   (``high >= level``). Levels are compared by their *bucket price* (step 5). Where
   real liquidation events are given (LIQUIDATIONS table), they extend the bar's range:
   a long liquidated at ``p`` proves price reached ``p`` (effective low =
   ``min(low, p)``), likewise shorts and the high.
2. **Retirement.** With open interest (PERP_OI, as of each bar's close), an OI decrease
   ``D`` BTC closes positions: the part not explained by liquidations (the BTC size
   consumed in step 1, or the *observed* liquidated size when events are given) is
   retired **proportionally** from every alive level: all sizes are multiplied by
   ``1 - min(1, max(0, D - liquidated) / OI_prev)``. Without OI (volume mode) positions
   are closed by an exponential decay with half-life ``volume_half_life`` (None: never).
3. **New exposure.** New positions are opened at the bar's ``entry_price`` (default the
   close: the OI is measured at the close, and new levels can only be consumed from
   the next bar on; ``"typical"`` = (high + low + close) / 3 is the alternative).
   Size: the OI increase in BTC (``max(0, OI_t - OI_{t-1})``); without OI, a
   ``participation`` fraction of the bar's volume (default 10%: the share of traded
   volume assumed to open new leveraged positions, a heuristic to calibrate). With
   ``oi_turnover=True`` (OI mode) the opening is ``max(participation * volume, OI
   increase)`` and ``opened - OI change`` counts as closed in step 2, so the map turns
   over while OI is flat (OI only shows the net of opening and closing).
4. **Long / short split.** Each new contract is counted once and attributed to the
   leveraged side: ``split="even"`` gives half to longs, half to shorts;
   ``split="direction"`` gives longs ``0.5 + direction_tilt * sign(close - open)``
   (aggressive buyers open longs on up bars). The map's total size therefore tracks the
   open interest built while it was observed.
5. **Leverage mix and buckets.** Each side's new size is spread over ``leverage_mix``
   (weights summing to 1, default ``{5: .30, 10: .30, 25: .20, 50: .15, 100: .05}``) at
   :func:`liquidation_price` of the entry. Prices are bucketed on a fixed logarithmic
   grid of width ``bucket_frac`` (default 0.25%): bucket ``k`` has price
   ``(1 + bucket_frac) ** k`` and a level goes to the nearest bucket. Levels at 0 or
   +inf (1x linear long, 1x inverse short) can never be liquidated and are left out.

State is kept as BTC size per bucket; outputs are USD = size * bucket price (the value
of the forced orders at that level). A **cluster** is a bucket that stands out from its
neighbourhood: its USD is at least ``cluster_mult`` (default 2) times the mean USD per
bucket over the ``2h + 1`` buckets centred on it (``h`` buckets = ``cluster_window_frac``,
default +/- 2% of price; empty buckets count as 0), and at least ``min_cluster_usd``.
A local rule, because levels far from the price pile up (low leverage, rarely reached)
while the levels near it are thin but are the ones that get hit; a threshold on the
side's average would only ever flag the far piles (measured on the simulator: it does
worse than random levels, the local rule two to three times better, see
:func:`cluster_hit_rate`).

Per-bar lines (after bar ``t``, relative to its close; one row per bar, same order):
``liq_below`` / ``liq_below_usd`` the nearest long cluster strictly below the close and
its USD; ``liq_above`` / ``liq_above_usd`` the nearest short cluster strictly above;
NaN (both) when there is none. ``liq_usd_within``: USD of both sides within
``+/- within_frac`` of the close (0 when empty). Also ``long_usd``, ``short_usd`` (side
totals), and ``realized_long_usd`` / ``realized_short_usd`` (observed liquidations in
the bar, USD; NaN without events).

Memory: the full map is never materialised per bar (a year of hourly bars on a
~1,500-bucket grid would be ~200 MB). :class:`LiqMap` keeps dense checkpoints every
``checkpoint_every`` bars plus the per-bar step inputs and replays at most
``checkpoint_every - 1`` steps to serve :meth:`LiqMap.frame` (bit-identical to the
forward pass); walking forward bar by bar (a backtest) costs one step per bar.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from plumbing.errors import ConfigError, DataError
from plumbing.timeconv import duration_us, modal_spacing_us, parse_duration, to_epoch_us

Side = Literal["long", "short"]
Contract = Literal["linear", "inverse"]
EntryPrice = Literal["close", "typical"]
Split = Literal["even", "direction"]

DEFAULT_LEVERAGE_MIX: Mapping[float, float] = {5: 0.30, 10: 0.30, 25: 0.20, 50: 0.15, 100: 0.05}
MAX_GRID_BUCKETS = 200_000

__all__ = [
    "DEFAULT_LEVERAGE_MIX",
    "LiqMap",
    "LiqMapParams",
    "estimate_liq_map",
    "cluster_hit_rate",
    "clusters_at",
    "liq_map_reference",
    "liquidation_price",
]


# --------------------------------------------------------------------------------------
# liquidation price
# --------------------------------------------------------------------------------------

def _side_sign(side: Any) -> np.ndarray:
    arr = np.asarray(side)
    if arr.dtype.kind in "iuf":
        ok = np.isin(arr, (1, -1))
        if not ok.all():
            bad = arr.reshape(-1)[int(np.flatnonzero(~ok.reshape(-1))[0])]
            raise ConfigError(f"side {bad!r} not understood", column="side",
                              expected="'long'/'short' (or +1/-1)", fix="pass 'long' or 'short'")
        return arr.astype("float64")
    low = np.char.lower(arr.astype(str))
    is_long = low == "long"
    is_short = low == "short"
    bad = ~(is_long | is_short)
    if bad.any():
        value = arr.reshape(-1)[int(np.flatnonzero(bad.reshape(-1))[0])]
        raise ConfigError(f"side {value!r} not understood", column="side",
                          expected="'long' or 'short'", fix="pass 'long' or 'short'")
    return np.where(is_long, 1.0, -1.0)


def _check_choice(value: str, name: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        hint = difflib.get_close_matches(str(value), choices, n=1)
        fix = f"did you mean {hint[0]!r}?" if hint else f"use one of {choices}"
        raise ConfigError(f"{name}={value!r} not understood", column=name,
                          expected=f"one of {choices}", fix=fix)


def liquidation_price(
    entry: Any,
    leverage: Any,
    side: Any,
    *,
    mmr: Any = 0.005,
    contract: Contract = "linear",
) -> Any:
    """Liquidation price of an isolated-margin position (fees ignored).

    Formula::

        linear  long : EP * (1 - 1/L) / (1 - MMR)
        linear  short: EP * (1 + 1/L) / (1 + MMR)
        inverse long : EP * (1 + MMR) / (1 + 1/L)
        inverse short: EP * (1 - MMR) / (1 - 1/L)   (+inf at L = 1)

    Parameters
    ----------
    entry
        Entry price EP, USD (scalar or array, > 0). NaN propagates to the result.
    leverage
        Leverage L >= 1 (scalar or array). NaN propagates.
    side
        ``'long'`` / ``'short'`` (or +1 / -1), scalar or array; broadcast with the rest.
    mmr
        Maintenance-margin rate, fraction in [0, 1); must be below the initial margin
        ``1/L`` (otherwise the position would be liquidated at entry).
    contract
        ``'linear'`` (USDT-margined) or ``'inverse'`` (coin-margined).

    Returns
    -------
    float or numpy.ndarray
        Liquidation price, USD; a float when every input is a scalar. A 1x linear long
        gives 0 and a 1x inverse short +inf: neither is ever liquidated.

    Raises
    ------
    ConfigError
        Unknown side or contract, entry <= 0, leverage < 1, mmr outside [0, 1) or
        mmr >= 1/L.
    """
    _check_choice(contract, "contract", ("linear", "inverse"))
    ep = np.asarray(entry, dtype="float64")
    lev = np.asarray(leverage, dtype="float64")
    m = np.asarray(mmr, dtype="float64")
    sign = _side_sign(side)
    scalar = ep.ndim == 0 and lev.ndim == 0 and m.ndim == 0 and sign.ndim == 0
    ep, lev, m, sign = np.broadcast_arrays(ep, lev, m, sign)
    for name, arr, bad in (
        ("entry", ep, ~(ep > 0) & ~np.isnan(ep)),
        ("leverage", lev, ~(lev >= 1) & ~np.isnan(lev)),
        ("mmr", m, ~((m >= 0) & (m < 1))),
    ):
        if bad.any():
            i = int(np.flatnonzero(bad.reshape(-1))[0])
            raise ConfigError(f"{name} {arr.reshape(-1)[i]!r} out of range", row=i, column=name,
                              expected={"entry": "a finite price > 0", "leverage": "L >= 1",
                                        "mmr": "a fraction in [0, 1)"}[name],
                              fix=f"repair the {name} value")
    too_high = (m >= 1.0 / lev) & ~np.isnan(lev)
    if too_high.any():
        i = int(np.flatnonzero(too_high.reshape(-1))[0])
        raise ConfigError(
            f"leverage {lev.reshape(-1)[i]!r} with mmr {m.reshape(-1)[i]!r}: the initial "
            "margin 1/L is not above the maintenance margin", row=i, column="leverage",
            expected="mmr < 1/L", fix="lower the leverage or the maintenance-margin rate")
    inv_l = 1.0 / lev
    is_long = sign > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        if contract == "linear":
            out = np.where(is_long, ep * (1 - inv_l) / (1 - m), ep * (1 + inv_l) / (1 + m))
        else:
            out = np.where(is_long, ep * (1 + m) / (1 + inv_l), ep * (1 - m) / (1 - inv_l))
            out = np.where(~is_long & (lev == 1.0) & ~np.isnan(ep), np.inf, out)
    return float(out) if scalar else out


# --------------------------------------------------------------------------------------
# parameters
# --------------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class LiqMapParams:
    """Parameters of the estimated liquidation map (validated on creation).

    Attributes
    ----------
    leverage_mix
        ``{leverage: weight}``; weights > 0 summing to 1, leverages >= 1.
    mmr
        Maintenance-margin rate used for every level.
    contract
        ``'linear'`` or ``'inverse'``.
    entry_price
        ``'close'`` (default) or ``'typical'`` ((high + low + close) / 3).
    split
        ``'even'`` (50/50) or ``'direction'`` (longs get ``0.5 + direction_tilt *
        sign(close - open)``).
    direction_tilt
        In [0, 0.5]; only used with ``split='direction'``.
    participation
        Volume mode only: fraction of bar volume (BTC) opening new leveraged positions.
    oi_turnover
        OI mode only: also use volume for the *gross* opening, ``max(participation *
        volume, OI increase)``, and treat ``opened - OI change`` as closed (retired
        proportionally, net of liquidations), so the map turns over even when OI is flat.
    volume_half_life
        Volume mode only: half-life (pandas Timedelta string) of the exponential decay
        that stands for voluntary closing; None disables it.
    bucket_frac
        Width of the logarithmic price buckets (0.0025 = 0.25%).
    cluster_mult
        A bucket is a cluster when it holds at least this multiple of the mean USD per
        bucket within ``+/- cluster_window_frac`` of it...
    cluster_window_frac
        ...(half-width of that neighbourhood, fraction of price)...
    min_cluster_usd
        ...and at least this many USD.
    within_frac
        Half-width of the ``liq_usd_within`` band, fraction of the close (0.02 = 2%).
    checkpoint_every
        Bars between dense map checkpoints (memory / lazy-access trade-off).
    """

    leverage_mix: Mapping[float, float] = field(
        default_factory=lambda: dict(DEFAULT_LEVERAGE_MIX))
    mmr: float = 0.005
    contract: Contract = "linear"
    entry_price: EntryPrice = "close"
    split: Split = "even"
    direction_tilt: float = 0.2
    participation: float = 0.1
    oi_turnover: bool = False
    volume_half_life: str | None = "7D"
    bucket_frac: float = 0.0025
    cluster_mult: float = 2.0
    cluster_window_frac: float = 0.02
    min_cluster_usd: float = 0.0
    within_frac: float = 0.02
    checkpoint_every: int = 64

    def __post_init__(self) -> None:
        _check_choice(self.contract, "contract", ("linear", "inverse"))
        _check_choice(self.entry_price, "entry_price", ("close", "typical"))
        _check_choice(self.split, "split", ("even", "direction"))
        mix = dict(self.leverage_mix)
        if not mix:
            raise ConfigError("leverage_mix is empty", column="leverage_mix",
                              expected="{leverage: weight, ...}", fix="give at least one leverage")
        levs = np.array([float(k) for k in mix], dtype="float64")
        wts = np.array([float(v) for v in mix.values()], dtype="float64")
        if not (np.isfinite(levs).all() and (levs >= 1).all()):
            raise ConfigError(f"leverages {levs.tolist()} out of range", column="leverage_mix",
                              expected="leverages >= 1", fix="repair the leverage mix")
        if not ((wts > 0).all() and abs(wts.sum() - 1.0) < 1e-9):
            raise ConfigError(f"leverage weights {wts.tolist()} do not sum to 1",
                              column="leverage_mix", expected="weights > 0 summing to 1",
                              fix="normalise the weights")
        if not (0 <= self.mmr < 1 / levs.max()):
            raise ConfigError(f"mmr={self.mmr!r} out of range", column="mmr",
                              expected=f"0 <= mmr < 1/max leverage = {1 / levs.max():.4g}",
                              fix="lower the mmr or the largest leverage")
        checks = (
            ("direction_tilt", 0 <= self.direction_tilt <= 0.5, "in [0, 0.5]"),
            ("participation", 0 < self.participation <= 1, "in (0, 1]"),
            ("bucket_frac", 0 < self.bucket_frac <= 0.1, "in (0, 0.1]"),
            ("cluster_mult", self.cluster_mult >= 0, ">= 0"),
            ("cluster_window_frac", 0 < self.cluster_window_frac < 1, "in (0, 1)"),
            ("min_cluster_usd", self.min_cluster_usd >= 0, ">= 0"),
            ("within_frac", 0 < self.within_frac < 1, "in (0, 1)"),
            ("checkpoint_every", int(self.checkpoint_every) >= 1, ">= 1"),
        )
        for name, ok, expected in checks:
            if not ok:
                raise ConfigError(f"{name}={getattr(self, name)!r} out of range", column=name,
                                  expected=expected, fix=f"change {name}")
        if self.volume_half_life is not None:
            parse_duration(self.volume_half_life, name="volume_half_life", example="7D")

    @property
    def leverages(self) -> np.ndarray:
        return np.array([float(k) for k in self.leverage_mix], dtype="float64")

    @property
    def weights(self) -> np.ndarray:
        return np.array([float(v) for v in self.leverage_mix.values()], dtype="float64")


def _make_params(params: LiqMapParams | None, overrides: dict[str, Any]) -> LiqMapParams:
    base = params if params is not None else LiqMapParams()
    names = [f.name for f in dataclasses.fields(LiqMapParams)]
    for key in overrides:
        if key not in names:
            hint = difflib.get_close_matches(key, names, n=1)
            raise ConfigError(f"unknown liquidation-map parameter {key!r}", column=key,
                              expected=f"one of {names}",
                              fix=f"did you mean {hint[0]!r}?" if hint else "remove it")
    return dataclasses.replace(base, **overrides) if overrides else base


# --------------------------------------------------------------------------------------
# input preparation (shared by the fast and the reference implementation)
# --------------------------------------------------------------------------------------

def _frame(x: Any) -> pd.DataFrame:
    return x.to_pandas() if hasattr(x, "to_pandas") and not isinstance(x, pd.DataFrame) else x


@dataclass(frozen=True)
class _Inputs:
    ts: pd.Series
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    eff_low: np.ndarray
    eff_high: np.ndarray
    new_size: np.ndarray  # BTC opened in the bar
    oi_prev: np.ndarray  # BTC, NaN when unknown / volume mode
    oi_drop: np.ndarray  # BTC closed in the bar (>= 0)
    observed: np.ndarray  # BTC liquidated (observed) in the bar, NaN without events
    realized_long_usd: np.ndarray
    realized_short_usd: np.ndarray
    decay: float  # per-bar multiplier of the volume mode
    has_oi: bool
    has_events: bool


def _prepare(bars: Any, oi: Any, liquidations: Any, p: LiqMapParams,
             bar_freq: Any) -> _Inputs:
    df = _frame(bars)
    src = "bars"
    need = ["ts", "high", "low", "close"] + (["open"] if p.split == "direction" else []) + (
        ["volume"] if oi is None or p.oi_turnover else [])
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise DataError(f"missing column(s) {missing}", source=src,
                        expected="a canonical BARS table", fix="load bars with feeds.loaders")
    ts_us = to_epoch_us(df["ts"], source=src)
    if len(ts_us) > 1 and not (np.diff(ts_us) > 0).all():
        i = int(np.flatnonzero(np.diff(ts_us) <= 0)[0]) + 1
        raise DataError("bar timestamps not strictly increasing", source=src, row=i,
                        column="ts", expected="sorted, unique bar times",
                        fix="sort and de-duplicate the bars")
    arr = {c: df[c].to_numpy(dtype="float64", na_value=np.nan)
           for c in ("open", "high", "low", "close", "volume") if c in df.columns}
    for c in ("high", "low", "close"):
        bad = ~(np.isfinite(arr[c]) & (arr[c] > 0))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError(f"bad price {arr[c][i]!r}", source=src, row=i, column=c,
                            expected="a finite price > 0", fix="repair or drop the bar (dropna())")
    n = len(ts_us)
    freq_us = (duration_us(bar_freq, name="bar_freq") if bar_freq is not None
               else modal_spacing_us(ts_us, source=src))
    close_us = ts_us + freq_us
    open_ = arr.get("open", arr["close"])

    eff_low = arr["low"].copy()
    eff_high = arr["high"].copy()
    observed = np.full(n, np.nan)
    rl = np.full(n, np.nan)
    rs = np.full(n, np.nan)
    has_events = liquidations is not None
    if has_events:
        ev = _frame(liquidations)
        for c in ("ts", "side", "price", "size"):
            if c not in ev.columns:
                raise DataError(f"missing column {c!r}", source="liquidations", column=c,
                                expected="a canonical LIQUIDATIONS table",
                                fix="load events with feeds.derivs.load_liquidations")
        ev_us = to_epoch_us(ev["ts"], source="liquidations")
        side = ev["side"].astype("string").str.lower().to_numpy(dtype=object, na_value="")
        price = ev["price"].to_numpy(dtype="float64", na_value=np.nan)
        size = ev["size"].to_numpy(dtype="float64", na_value=np.nan)
        bad = ~np.isin(side, ["long", "short"]) | ~(price > 0) | ~(size > 0)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError("bad liquidation event", source="liquidations", row=i,
                            expected="side 'long'/'short', price > 0, size > 0",
                            fix="repair or drop the row")
        idx = np.searchsorted(ts_us, ev_us, side="right") - 1
        keep = (idx >= 0) & (ev_us < close_us[np.clip(idx, 0, None)])
        idx, side, price, size = idx[keep], side[keep], price[keep], size[keep]
        is_long = side == "long"
        observed = np.zeros(n)
        np.add.at(observed, idx, size)
        rl = np.zeros(n)
        rs = np.zeros(n)
        np.add.at(rl, idx[is_long], (size * price)[is_long])
        np.add.at(rs, idx[~is_long], (size * price)[~is_long])
        np.minimum.at(eff_low, idx[is_long], price[is_long])
        np.maximum.at(eff_high, idx[~is_long], price[~is_long])

    has_oi = oi is not None
    oi_prev = np.full(n, np.nan)
    oi_drop = np.zeros(n)
    decay = 1.0
    if has_oi:
        o = _frame(oi)
        if "ts" not in o.columns or not ({"oi_btc", "oi_usd"} & set(o.columns)):
            raise DataError("open-interest table needs 'ts' and 'oi_btc' (or 'oi_usd')",
                            source="oi", expected="a canonical PERP_OI table",
                            fix="load it with feeds.derivs.load_open_interest")
        o_us = to_epoch_us(o["ts"], source="oi")
        order = np.argsort(o_us, kind="stable")
        o_us = o_us[order]
        btc = (o["oi_btc"].to_numpy(dtype="float64", na_value=np.nan)[order]
               if "oi_btc" in o.columns else np.full(len(o_us), np.nan))
        usd = (o["oi_usd"].to_numpy(dtype="float64", na_value=np.nan)[order]
               if "oi_usd" in o.columns else np.full(len(o_us), np.nan))
        # point in time: OI measured at or before the bar's close
        j = np.searchsorted(o_us, close_us, side="right") - 1
        valid = j >= 0
        jj = np.clip(j, 0, None)
        level = np.where(valid, btc[jj], np.nan)
        from_usd = np.where(valid, usd[jj] / arr["close"], np.nan)
        level = np.where(np.isnan(level), from_usd, level)
        prev = np.concatenate([[np.nan], level[:-1]])
        same = np.concatenate([[True], j[1:] == j[:-1]])
        delta = np.where(same | np.isnan(level) | np.isnan(prev), 0.0, level - prev)
        new_size = np.maximum(delta, 0.0)
        oi_drop = np.maximum(-delta, 0.0)
        if p.oi_turnover:
            vol = _volume(arr, src)
            # gross opening from volume; whatever exceeds the net OI change was closed
            new_size = np.maximum(p.participation * vol, new_size)
            oi_drop = new_size - delta
        oi_prev = prev
    else:
        new_size = p.participation * _volume(arr, src)
        if p.volume_half_life is not None:
            hl_us = duration_us(p.volume_half_life, name="volume_half_life")
            decay = float(0.5 ** (freq_us / hl_us))
    return _Inputs(ts=df["ts"].reset_index(drop=True), open=open_, high=arr["high"],
                   low=arr["low"], close=arr["close"], eff_low=eff_low, eff_high=eff_high,
                   new_size=new_size, oi_prev=oi_prev, oi_drop=oi_drop, observed=observed,
                   realized_long_usd=rl, realized_short_usd=rs, decay=decay,
                   has_oi=has_oi, has_events=has_events)


def _volume(arr: dict[str, np.ndarray], src: str) -> np.ndarray:
    vol = arr["volume"]
    bad = ~(np.isfinite(vol) & (vol >= 0))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"bad volume {vol[i]!r}", source=src, row=i, column="volume",
                        expected="a finite volume >= 0", fix="repair or drop the bar")
    return vol


def _entries_and_shares(x: _Inputs, p: LiqMapParams) -> tuple[np.ndarray, np.ndarray]:
    entry = x.close if p.entry_price == "close" else (x.high + x.low + x.close) / 3.0
    if p.split == "even":
        share = np.full(len(entry), 0.5)
    else:
        share = 0.5 + p.direction_tilt * np.sign(x.close - x.open)
    return entry, share


def _retire_factor(x: _Inputs, i: int, consumed_btc: float, has_oi: bool, decay: float) -> float:
    if not has_oi:
        return decay
    drop = x.oi_drop[i]
    if drop <= 0:
        return 1.0
    liquidated = x.observed[i] if x.has_events else consumed_btc
    residual = max(0.0, drop - liquidated)
    prev = x.oi_prev[i]
    if not prev > 0:
        return 1.0
    return 1.0 - min(1.0, residual / prev)


# --------------------------------------------------------------------------------------
# fast implementation
# --------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class LiqMap:
    """Result of :func:`estimate_liq_map`: per-bar lines plus lazy per-bar maps.

    Attributes
    ----------
    lines
        One row per bar (same order as the bars, RangeIndex): ``ts, liq_below,
        liq_below_usd, liq_above, liq_above_usd, liq_usd_within, long_usd, short_usd,
        realized_long_usd, realized_short_usd``. USD; prices USD.
    params
        The parameters used.
    grid
        Bucket prices (ascending), USD.
    close
        The bars' closes (the reference price of each row of ``lines``), USD.
    """

    lines: pd.DataFrame
    params: LiqMapParams
    grid: np.ndarray
    close: np.ndarray
    _ckpt_long: np.ndarray = field(repr=False)
    _ckpt_short: np.ndarray = field(repr=False)
    _cut_long: np.ndarray = field(repr=False)
    _cut_short: np.ndarray = field(repr=False)
    _scale: np.ndarray = field(repr=False)
    _add_long_k: np.ndarray = field(repr=False)
    _add_long_sz: np.ndarray = field(repr=False)
    _add_short_k: np.ndarray = field(repr=False)
    _add_short_sz: np.ndarray = field(repr=False)
    _cache: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.lines)

    @property
    def nbytes(self) -> int:
        """Bytes held for lazy map access (checkpoints + per-bar step inputs)."""
        arrays = (self.grid, self._ckpt_long, self._ckpt_short, self._cut_long,
                  self._cut_short, self._scale, self._add_long_k, self._add_long_sz,
                  self._add_short_k, self._add_short_sz)
        return int(sum(a.nbytes for a in arrays))

    def _state(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        # Replays from the nearest checkpoint, or from the last state served when that
        # is closer (a backtest walks forward one bar at a time: one step per call).
        n = len(self.lines)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"bar {i} out of range for {n} bars")
        every = self.params.checkpoint_every
        start = (i // every) * every
        cached = self._cache.get("i", -1)
        if start <= cached <= i:
            long_, short = self._cache["long"].copy(), self._cache["short"].copy()
            first = cached + 1
        else:
            long_ = self._ckpt_long[i // every].copy()
            short = self._ckpt_short[i // every].copy()
            first = start + 1
        for t in range(first, i + 1):
            _step(long_, short, t, self._cut_long[t], self._cut_short[t], self._scale[t],
                  self._add_long_k, self._add_long_sz, self._add_short_k, self._add_short_sz)
        self._cache.update(i=i, long=long_, short=short)
        return long_, short

    def sizes(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Dense BTC size per bucket (long, short) alive after bar ``i`` (copies)."""
        long_, short = self._state(i)
        return long_.copy(), short.copy()

    def arrays(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(price, long_usd, short_usd)`` of the non-empty buckets after bar ``i``."""
        long_, short = self._state(i)
        nz = (long_ > 0) | (short > 0)
        g = self.grid[nz]
        return g, long_[nz] * g, short[nz] * g

    def frame(self, i: int) -> pd.DataFrame:
        """The map alive after bar ``i``: DataFrame ``ts, price, long_usd, short_usd``."""
        price, lu, su = self.arrays(i)
        ts = self.lines["ts"].iloc[i]
        return pd.DataFrame({"ts": pd.Series([ts] * len(price), dtype=self.lines["ts"].dtype),
                             "price": price, "long_usd": lu, "short_usd": su})

    def to_frame(self, start: int = 0, stop: int | None = None) -> pd.DataFrame:
        """Long DataFrame ``ts, price, long_usd, short_usd`` for bars ``start:stop``.

        Size grows with bars x buckets: prefer :meth:`frame` per bar for long series.
        """
        stop = len(self.lines) if stop is None else stop
        parts = [self.frame(i) for i in range(start, stop)]
        if not parts:
            return pd.DataFrame({"ts": self.lines["ts"].iloc[:0], "price": [],
                                 "long_usd": [], "short_usd": []})
        return pd.concat(parts, ignore_index=True)


def _step(long_: np.ndarray, short: np.ndarray, t: int, cut_long: int, cut_short: int,
          scale: float, alk: np.ndarray, als: np.ndarray, ask: np.ndarray,
          ass: np.ndarray) -> None:
    # order: consumption, retirement, new levels (module docstring)
    long_[cut_long:] = 0.0
    short[:cut_short] = 0.0
    if scale != 1.0:
        long_ *= scale
        short *= scale
    np.add.at(long_, alk[t], als[t])
    np.add.at(short, ask[t], ass[t])


def _half_window(p: LiqMapParams) -> int:
    """Buckets on each side of the cluster neighbourhood."""
    return max(1, round(math.log1p(p.cluster_window_frac) / math.log1p(p.bucket_frac)))


def _cluster_mask(usd: np.ndarray, lo: np.ndarray, hi: np.ndarray, width: int,
                  p: LiqMapParams) -> np.ndarray:
    """Buckets of a dense USD array that are clusters (module docstring)."""
    c = np.concatenate(([0.0], np.cumsum(usd)))
    local = (c[hi] - c[lo]) / width
    return (usd > 0) & (usd >= p.cluster_mult * local) & (usd >= p.min_cluster_usd)


def _window_bounds(n: int, half: int) -> tuple[np.ndarray, np.ndarray]:
    idx = np.arange(n)
    return np.maximum(idx - half, 0), np.minimum(idx + half + 1, n)


def _bucket(price: np.ndarray, log_step: float) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.rint(np.log(price) / log_step)


def estimate_liq_map(
    bars: Any,
    *,
    oi: Any = None,
    liquidations: Any = None,
    params: LiqMapParams | None = None,
    bar_freq: Any = None,
    **overrides: Any,
) -> LiqMap:
    """Estimate the liquidation map bar by bar (rules in the module docstring).

    Parameters
    ----------
    bars
        Canonical BARS (DataFrame or Arrow table), sorted, unique ``ts``.
    oi
        Optional PERP_OI table; taken as of each bar's close (``stamp <= ts + bar_freq``).
        Without it the volume mode is used (``participation``, ``volume_half_life``).
    liquidations
        Optional LIQUIDATIONS table of observed events (see module docstring: they extend
        the bar's range, and their size replaces the estimated liquidated size).
    params
        :class:`LiqMapParams`; keyword ``overrides`` replace single fields.
    bar_freq
        Bar length (Timedelta-like); default: the modal spacing of ``ts``.

    Returns
    -------
    LiqMap
        ``.lines`` per bar, ``.frame(i)`` / ``.to_frame()`` the map.

    Raises
    ------
    DataError
        Missing columns, unsorted or naive timestamps, bad prices or volumes.
    ConfigError
        Invalid parameters (unknown names get a did-you-mean hint).
    """
    p = _make_params(params, overrides)
    x = _prepare(bars, oi, liquidations, p, bar_freq)
    n = len(x.close)
    levs, wts = p.leverages, p.weights
    entry, share = _entries_and_shares(x, p)
    log_step = math.log1p(p.bucket_frac)

    liq_l = liquidation_price(entry[:, None], levs[None, :], "long", mmr=p.mmr,
                              contract=p.contract)
    liq_s = liquidation_price(entry[:, None], levs[None, :], "short", mmr=p.mmr,
                              contract=p.contract)
    kl = _bucket(liq_l, log_step)
    ks = _bucket(liq_s, log_step)
    sz_l = x.new_size[:, None] * share[:, None] * wts[None, :]
    sz_s = x.new_size[:, None] * (1.0 - share[:, None]) * wts[None, :]
    ok_l = np.isfinite(kl) & (sz_l > 0)
    ok_s = np.isfinite(ks) & (sz_s > 0)
    finite_k = np.concatenate([kl[ok_l], ks[ok_s]])
    if finite_k.size:
        k0, k1 = int(finite_k.min()), int(finite_k.max())
    else:
        k0 = k1 = int(_bucket(np.array([x.close[0]]), log_step)[0])
    n_grid = k1 - k0 + 1
    if n_grid > MAX_GRID_BUCKETS:
        raise ConfigError(f"price grid of {n_grid} buckets is too large", column="bucket_frac",
                          expected=f"at most {MAX_GRID_BUCKETS} buckets",
                          fix="increase bucket_frac")
    grid = np.exp(np.arange(k0, k1 + 1, dtype="float64") * log_step)
    # dropped levels (never liquidated / no size) go to bucket 0 with size 0
    alk = np.where(ok_l, kl - k0, 0).astype(np.int64)
    als = np.where(ok_l, sz_l, 0.0)
    ask = np.where(ok_s, ks - k0, 0).astype(np.int64)
    ass = np.where(ok_s, sz_s, 0.0)
    cut_long = np.searchsorted(grid, x.eff_low, side="left")  # long buckets >= low die
    cut_short = np.searchsorted(grid, x.eff_high, side="right")  # short buckets <= high die
    k_close = np.searchsorted(grid, x.close, side="left")  # buckets < close
    k_above = np.searchsorted(grid, x.close, side="right")  # buckets > close
    w_lo = np.searchsorted(grid, x.close * (1 - p.within_frac), side="left")
    w_hi = np.searchsorted(grid, x.close * (1 + p.within_frac), side="right")

    every = int(p.checkpoint_every)
    n_ck = (n - 1) // every + 1 if n else 0
    ck_l = np.zeros((n_ck, n_grid))
    ck_s = np.zeros((n_ck, n_grid))
    scale = np.ones(n)
    out = np.full((n, 7), np.nan)
    long_ = np.zeros(n_grid)
    short = np.zeros(n_grid)
    has_oi = x.has_oi
    half = _half_window(p)
    width = 2 * half + 1
    win_lo, win_hi = _window_bounds(n_grid, half)
    for t in range(n):
        cl, cs = cut_long[t], cut_short[t]
        consumed = 0.0
        if has_oi and x.oi_drop[t] > 0 and not x.has_events:
            consumed = float(long_[cl:].sum() + short[:cs].sum())
        s = _retire_factor(x, t, consumed, has_oi, x.decay)
        scale[t] = s
        _step(long_, short, t, cl, cs, s, alk, als, ask, ass)
        if t % every == 0:
            ck_l[t // every] = long_
            ck_s[t // every] = short
        lu = long_ * grid
        su = short * grid
        tot_l = float(lu.sum())
        tot_s = float(su.sum())
        kc = k_close[t]
        if tot_l > 0:
            hit = np.flatnonzero(_cluster_mask(lu, win_lo, win_hi, width, p)[:kc])
            if hit.size:
                k = hit[-1]
                out[t, 0] = grid[k]
                out[t, 1] = lu[k]
        if tot_s > 0:
            ka = k_above[t]
            hit = np.flatnonzero(_cluster_mask(su, win_lo, win_hi, width, p)[ka:])
            if hit.size:
                k = ka + hit[0]
                out[t, 2] = grid[k]
                out[t, 3] = su[k]
        out[t, 4] = float(lu[w_lo[t]:w_hi[t]].sum() + su[w_lo[t]:w_hi[t]].sum())
        out[t, 5] = tot_l
        out[t, 6] = tot_s
    lines = pd.DataFrame({
        "ts": x.ts,
        "liq_below": out[:, 0], "liq_below_usd": out[:, 1],
        "liq_above": out[:, 2], "liq_above_usd": out[:, 3],
        "liq_usd_within": out[:, 4], "long_usd": out[:, 5], "short_usd": out[:, 6],
        "realized_long_usd": x.realized_long_usd, "realized_short_usd": x.realized_short_usd,
    })
    return LiqMap(lines=lines, params=p, grid=grid, close=x.close, _ckpt_long=ck_l, _ckpt_short=ck_s,
                  _cut_long=cut_long, _cut_short=cut_short, _scale=scale,
                  _add_long_k=alk, _add_long_sz=als, _add_short_k=ask, _add_short_sz=ass)


# --------------------------------------------------------------------------------------
# slow reference (plain loops; used by the tests to pin the fast path)
# --------------------------------------------------------------------------------------

def liq_map_reference(
    bars: Any,
    *,
    oi: Any = None,
    liquidations: Any = None,
    params: LiqMapParams | None = None,
    bar_freq: Any = None,
    **overrides: Any,
) -> tuple[pd.DataFrame, list[dict[float, tuple[float, float]]]]:
    """Slow, readable reference of :func:`estimate_liq_map` (dicts and Python loops).

    Returns
    -------
    (lines, maps)
        ``lines`` as :attr:`LiqMap.lines`; ``maps[t]`` is ``{bucket price: (long_usd,
        short_usd)}`` of the non-empty buckets after bar ``t``.
    """
    p = _make_params(params, overrides)
    x = _prepare(bars, oi, liquidations, p, bar_freq)
    log_step = math.log1p(p.bucket_frac)
    entry, share = _entries_and_shares(x, p)
    long_: dict[int, float] = {}
    short: dict[int, float] = {}
    half = _half_window(p)
    rows = []
    maps = []

    def price_of(k: int) -> float:
        return math.exp(k * log_step)

    for t in range(len(x.close)):
        # 1. consumption
        consumed = 0.0
        for k in list(long_):
            if price_of(k) >= x.eff_low[t]:
                consumed += long_.pop(k)
        for k in list(short):
            if price_of(k) <= x.eff_high[t]:
                consumed += short.pop(k)
        # 2. retirement / decay
        s = _retire_factor(x, t, consumed, x.has_oi, x.decay)
        for book in (long_, short):
            for k in book:
                book[k] *= s
        # 3.-5. new levels
        for lev, w in p.leverage_mix.items():
            for side, book, frac in (("long", long_, share[t]), ("short", short, 1 - share[t])):
                size = x.new_size[t] * frac * w
                price = liquidation_price(float(entry[t]), float(lev), side, mmr=p.mmr,
                                          contract=p.contract)
                if size > 0 and 0 < price < math.inf:
                    k = round(math.log(price) / log_step)
                    book[k] = book.get(k, 0.0) + size
        usd_l = {k: v * price_of(k) for k, v in long_.items() if v > 0}
        usd_s = {k: v * price_of(k) for k, v in short.items() if v > 0}
        tot_l, tot_s = sum(usd_l.values()), sum(usd_s.values())
        c = x.close[t]
        below = [k for k in _reference_clusters(usd_l, half, p) if price_of(k) < c]
        above = [k for k in _reference_clusters(usd_s, half, p) if price_of(k) > c]
        kb = max(below) if below and tot_l > 0 else None
        ka = min(above) if above and tot_s > 0 else None
        lo, hi = c * (1 - p.within_frac), c * (1 + p.within_frac)
        within = sum(v for k, v in usd_l.items() if lo <= price_of(k) <= hi) + sum(
            v for k, v in usd_s.items() if lo <= price_of(k) <= hi)
        rows.append({
            "liq_below": price_of(kb) if kb is not None else np.nan,
            "liq_below_usd": usd_l[kb] if kb is not None else np.nan,
            "liq_above": price_of(ka) if ka is not None else np.nan,
            "liq_above_usd": usd_s[ka] if ka is not None else np.nan,
            "liq_usd_within": within, "long_usd": tot_l, "short_usd": tot_s,
        })
        keys = sorted(set(usd_l) | set(usd_s))
        maps.append({price_of(k): (usd_l.get(k, 0.0), usd_s.get(k, 0.0)) for k in keys})
    lines = pd.DataFrame(rows, columns=["liq_below", "liq_below_usd", "liq_above",
                                        "liq_above_usd", "liq_usd_within", "long_usd",
                                        "short_usd"])
    lines.insert(0, "ts", x.ts)
    lines["realized_long_usd"] = x.realized_long_usd
    lines["realized_short_usd"] = x.realized_short_usd
    return lines, maps


def _reference_clusters(usd: dict[int, float], half: int, p: LiqMapParams) -> list[int]:
    out = []
    for k, v in usd.items():
        local = sum(usd.get(j, 0.0) for j in range(k - half, k + half + 1)) / (2 * half + 1)
        if v > 0 and v >= p.cluster_mult * local and v >= p.min_cluster_usd:
            out.append(k)
    return out


# --------------------------------------------------------------------------------------
# validation against known liquidations
# --------------------------------------------------------------------------------------

def clusters_at(m: LiqMap, i: int) -> tuple[np.ndarray, np.ndarray]:
    """Cluster prices (long, short) of the map alive after bar ``i``, ascending, USD."""
    long_, short = m._state(i)
    half = _half_window(m.params)
    lo, hi = _window_bounds(len(m.grid), half)
    out = []
    for size in (long_, short):
        usd = size * m.grid
        out.append(m.grid[_cluster_mask(usd, lo, hi, 2 * half + 1, m.params)])
    return out[0], out[1]


def cluster_hit_rate(
    m: LiqMap,
    events: Any,
    *,
    tol_frac: float = 0.005,
    burn_in: int = 0,
    n_random: int = 20,
    seed: int = 0,
) -> dict[str, float]:
    """Share of liquidated USD that happened near a cluster predicted *before* it.

    For each event (LIQUIDATIONS row) in bar ``b``, the clusters of its side alive after
    bar ``b - 1`` (:func:`clusters_at`) are the prediction; the event is a hit when one
    lies within ``tol_frac`` of its price (``|c / p - 1| <= tol_frac``). The hit rate is
    weighted by the event's USD (price * size).

    Two naive baselines get the *same number* of levels per bar and side, over the same
    price range (from the farthest predicted cluster to the previous close):
    ``uniform`` spreads them evenly in log price, ``random`` draws them uniformly in
    log price (mean over ``n_random`` seeded draws).

    Parameters
    ----------
    m
        An estimated map (:func:`estimate_liq_map`) over the bars the events belong to.
    events
        LIQUIDATIONS table (ground truth); events before bar ``max(1, burn_in)`` or after
        the last bar are ignored.
    tol_frac
        Match tolerance (0.005 = 0.5%).
    burn_in
        Bars skipped at the start (the map starts empty).
    n_random, seed
        Draws of the random baseline and its seed.

    Returns
    -------
    dict
        ``hit_rate, uniform_baseline, random_baseline, n_events, usd, tol_frac,
        mean_clusters`` (clusters per side and bar, over the bars with events).
    """
    ev = _frame(events)
    ts_us = to_epoch_us(m.lines["ts"], source="bars")
    e_us = to_epoch_us(ev["ts"], source="liquidations")
    b = np.searchsorted(ts_us, e_us, side="right") - 1
    freq = modal_spacing_us(ts_us, source="bars")
    keep = (b >= max(1, burn_in)) & (e_us < ts_us[-1] + freq)
    b = b[keep]
    side = ev["side"].astype("string").str.lower().to_numpy(dtype=object)[keep]
    price = ev["price"].to_numpy(dtype="float64")[keep]
    usd = price * ev["size"].to_numpy(dtype="float64")[keep]
    rng = np.random.default_rng(seed)
    hit = np.zeros(len(b))
    uni = np.zeros(len(b))
    rnd = np.zeros(len(b))
    n_clusters = []
    for bar in np.unique(b):
        sel = np.flatnonzero(b == bar)
        ref = float(m.close[bar - 1])
        longs, shorts = clusters_at(m, int(bar) - 1)
        for name, levels in (("long", longs), ("short", shorts)):
            idx = sel[side[sel] == name]
            n_clusters.append(len(levels))
            if not len(idx) or not len(levels):
                continue
            far = levels.min() if name == "long" else levels.max()
            span = math.log(far / ref)  # < 0 for longs
            k = len(levels)
            even = ref * np.exp(span * (np.arange(k) + 0.5) / k)
            draws = ref * np.exp(span * rng.random((n_random, k)))
            p = price[idx]
            hit[idx] = _near(levels, p, tol_frac)
            uni[idx] = _near(even, p, tol_frac)
            rnd[idx] = np.mean([_near(d, p, tol_frac) for d in draws], axis=0)
    total = float(usd.sum())

    def rate(x: np.ndarray) -> float:
        return float((x * usd).sum() / total) if total > 0 else float("nan")

    return {"hit_rate": rate(hit), "uniform_baseline": rate(uni), "random_baseline": rate(rnd),
            "n_events": float(len(b)), "usd": total, "tol_frac": float(tol_frac),
            "mean_clusters": float(np.mean(n_clusters)) if n_clusters else float("nan")}


def _near(levels: np.ndarray, prices: np.ndarray, tol: float) -> np.ndarray:
    lv = np.sort(levels)
    j = np.searchsorted(lv, prices)
    lo = lv[np.clip(j - 1, 0, len(lv) - 1)]
    hi = lv[np.clip(j, 0, len(lv) - 1)]
    d = np.minimum(np.abs(lo / prices - 1), np.abs(hi / prices - 1))
    return (d <= tol).astype("float64")

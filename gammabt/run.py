"""One backtest: load inputs, wire Cerebro, run, and return an immutable result.

Data flows one way: raw files -> canonical tables (``feeds``) -> analytics
(``indicators``) -> feed lines (``feeds.btfeed.GammaFeed``) -> strategy -> ``RunResult``.
Writing the result to disk is a separate, atomic step (``gammabt.results``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import platform
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import backtrader as bt
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from feeds.barriers import load_barriers
from feeds.btfeed import FeedArrays, build_arrays
from feeds.derivs import (
    load_funding,
    load_futures,
    load_liquidations,
    load_open_interest,
    load_perp,
)
from feeds.legs import (
    InstrumentFeed,
    Leg,
    bar_leg_lines,
    front_leg_lines,
    funding_per_bar,
    future_legs,
    leg_feed,
    with_lines,
)
from feeds.loaders import bar_freq, chain_delay, load_bars, load_chain
from feeds.schema import check_overlap
from gammabt.analyzers import EquityCurve, OrderLog, PositionLog, TradeLog
from gammabt.broker import AccountBroker
from gammabt.config import INPUTS, RunConfig, input_sha256
from gammabt.report import account_metrics, compute_metrics
from indicators import barrier, gamma
from indicators.basis import basis_table, constant_maturity, funding_apr, rolling_zscore
from indicators.errors import ConfigError, DataError
from indicators.liquidation import LiqMap, estimate_liq_map
from strategies.registry import STRATEGIES, get_strategy, strategy_source_sha256
from strategies.sizing import PercentOfEquity

PACKAGES = ("gammabt", "backtrader", "pandas", "numpy", "pyarrow", "quantstats",
            "matplotlib")


@dataclass(frozen=True)
class MarketInputs:
    """Everything the feed needs, already in canonical/analytic form."""

    bars: pd.DataFrame
    summary: pd.DataFrame | None = None
    strikes: pd.DataFrame | None = None
    extra: pd.DataFrame | None = None
    liq_lines: pd.DataFrame | None = None
    liq_map: LiqMap | None = None
    barrier_lines: pd.DataFrame | None = None  # per bar: barrier_gex, dist_to_barrier, ...
    perp: pd.DataFrame | None = None  # perpetual OHLCV on (a subset of) the bars' clock
    futures: pa.Table | None = None  # canonical FUTURES: one tradable leg per expiry
    funding: pa.Table | None = None  # canonical FUNDING: paid by perp positions
    input_hashes: dict[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()


class _LeavesInputsBehind:
    """Pickling (to another process) drops ``inputs``: the loaded market only feeds the
    report page's charts, and shipping it would cost more than the result itself."""

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["inputs"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            object.__setattr__(self, key, value)


@dataclass(frozen=True)
class RunResult(_LeavesInputsBehind):
    """An immutable record of one run. ``gammabt.results.write_run`` persists it."""

    config: RunConfig
    run_id: str
    digest: str
    returns: pd.Series  # daily simple returns, UTC dates
    benchmark: pd.Series  # buy and hold on the same bars, daily
    equity: pd.DataFrame  # per bar: ts (close), value, cash, position, close
    trades: pd.DataFrame
    orders: pd.DataFrame
    metrics: dict[str, Any]
    ledger: pd.DataFrame  # every cash movement: ts, instrument, kind, qty, price, amount_usd
    positions: pd.DataFrame  # per bar and open position: qty, mark, notional, PnL, margin
    input_hashes: dict[str, str]
    versions: dict[str, str]
    notes: tuple[str, ...] = ()
    elapsed_s: float = 0.0
    # the market the run saw, for the report page's charts (not written to disk)
    inputs: MarketInputs | None = field(default=None, repr=False, compare=False)

    @property
    def n_rejected(self) -> int:
        return int(self.metrics.get("n_rejected") or 0)



def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def load_inputs(config: RunConfig) -> MarketInputs:
    """Read the config's input files into canonical tables and the feed's analytics.

    Everything is computed over the **full history** of the inputs, whatever
    ``config.start``/``config.end`` say: the window is applied when the feeds are built
    (:func:`build_legs`), so a run that starts later still sees the liquidation map,
    z-scores and snapshots that the earlier bars built up (point in time).
    """
    hashes = {role: input_sha256(path) for role, path in config.inputs().items()}
    # the strategy's code is an input too: a changed file is a different run
    hashes["strategy_source"] = strategy_source_sha256(config.strategy)
    notes: list[str] = []
    tables: dict[str, pa.Table | None] = dict.fromkeys(
        ("chain", "funding", "futures", "perp", "oi", "liquidations", "barriers"))
    if config.market is not None:
        from feeds.synthetic import load_market

        market = load_market(config.market)
        bars_table = market.bars
        tables.update(chain=market.chain, funding=market.funding, futures=market.futures,
                      oi=market.perp_oi, liquidations=market.liquidations, perp=market.perp,
                      barriers=market.barriers)
        notes.append(f"simulated market: scenario {market.scenario!r}, seed {market.seed}")
    else:
        bars_table = load_bars(config.bars, freq=config.freq)
    lag_us: dict[int, int] = {}  # snapshot stamp -> publication delay, both microseconds
    if config.chain:
        parts = []
        for path in config.chain:
            table = load_chain(path, spot=config.spot)
            lag = pd.Timedelta(config.chain_delay) if config.chain_delay is not None \
                else chain_delay(path)
            stamps = pc.unique(table["ts"].cast(pa.int64())).to_pylist()
            twice = next((t for t in stamps if t in lag_us), None)
            if twice is not None:
                raise DataError(f"snapshot {_iso(twice)} is also in another --chain file",
                                source=str(path), column="ts",
                                expected="each snapshot in one file (it would count twice)",
                                fix="drop the duplicate file or the overlapping snapshots")
            lag_us.update(dict.fromkeys(stamps, int(lag / pd.Timedelta("1us"))))
            parts.append(table)
        tables["chain"] = pa.concat_tables(parts, promote_options="default")
        if any(lag_us.values()):
            notes.append("chain snapshots used from their stamp + the publication delay "
                         + ", ".join(sorted({str(pd.Timedelta(v, unit="us"))
                                             for v in lag_us.values()})))
    loaders = {"funding": load_funding, "futures": load_futures, "perp": load_perp,
               "oi": load_open_interest, "liquidations": load_liquidations}
    for role, loader in loaders.items():
        path = getattr(config, role)
        if path:  # None or () when not given; futures takes several files
            tables[role] = loader(list(path) if isinstance(path, tuple) else path)
    bars = bars_table.to_pandas()
    window_bounds(bars["ts"], config)  # refuse an empty window before the analytics
    if config.barriers is not None:
        tables["barriers"] = load_barriers(config.barriers)
    _refuse_disjoint_inputs(tables, bars, config)
    summary = strikes = None
    chain = tables["chain"]
    if chain is not None:
        dealer = resolve_dealer(config.dealer, chain)
        summary = gamma.summarize(chain, dealer=dealer)
        summary = summary.merge(gamma.atm_iv(chain), on="ts", how="left")
        strikes = gamma.strike_gex(chain, dealer=dealer)
        notes.append(f"{len(summary)} chain snapshots, dealer positioning: {dealer}, spot source: "
                     f"{', '.join(sorted(summary['spot_source'].unique()))}")
    else:
        notes.append("no option chain given: gamma lines are NaN")
    barrier_lines = None
    if tables["barriers"] is not None and tables["barriers"].num_rows:
        positions = tables["barriers"]
        iv_bar = _atm_iv_per_bar(bars, summary)
        barrier_lines, events = barrier.barrier_book(positions, bars, iv=iv_bar)
        notes.append(f"barrier book ({'--barriers' if config.barriers else 'simulated'}): "
                     f"{len(positions)} positions, {int(events['knocked'].sum())} "
                     "knocked in/out within the bars (knocks before the first bar are not "
                     "seen); IV: " + ("the chain's ATM IV as of each bar"
                                      if summary is not None else "0.5 where a position has none"))
        if summary is not None and chain is not None:
            summary = barrier.summary_with_book(summary, chain, positions, bars,
                                                dealer=resolve_dealer(config.dealer, chain),
                                                iv=iv_bar, include=config.barrier_flip)
            notes.append("barrier book " + ("included in gex, regime and the gamma flip"
                                            if config.barrier_flip else
                                            "reported beside the options (not in the flip)"))
    extra = basis_funding_lines(bars, futures=tables["futures"], funding=tables["funding"],
                                zscore_window=config.zscore_window)
    liq_map = None
    if any(tables[k] is not None for k in ("oi", "liquidations", "perp")):
        liq_bars = bars if tables["perp"] is None else _with_volume_of(bars, tables["perp"])
        liq_map = estimate_liq_map(liq_bars, oi=tables["oi"], liquidations=tables["liquidations"])
        source = "open interest" if tables["oi"] is not None else "volume"
        notes.append(f"liquidation map estimated from {source}"
                     + (" with observed liquidations" if tables["liquidations"] is not None
                        else ""))
    if any(lag_us.values()):  # usable from stamp + delay: the point-in-time joins use that
        summary, strikes = (_published(f, lag_us) for f in (summary, strikes))
    perp = None if tables["perp"] is None else tables["perp"].to_pandas()
    return MarketInputs(bars=bars, summary=summary, strikes=strikes, extra=extra,
                        liq_lines=None if liq_map is None else liq_map.lines, liq_map=liq_map,
                        barrier_lines=barrier_lines,
                        perp=perp, futures=tables["futures"], funding=tables["funding"],
                        input_hashes=hashes, notes=tuple(notes))


def _published(frame: pd.DataFrame, lag_us: dict[int, int]) -> pd.DataFrame:
    """``frame`` with each snapshot's ``ts`` moved to when it became usable."""
    us = frame["ts"].dt.tz_convert("UTC").astype("datetime64[us, UTC]").astype("int64")
    shift = pd.to_timedelta(us.map(lag_us).fillna(0).astype("int64"), unit="us")
    return frame.assign(ts=frame["ts"] + shift)


def _atm_iv_per_bar(bars: pd.DataFrame, summary: pd.DataFrame | None) -> Any:
    """The chain's ATM IV as of each bar close (NaN before the first snapshot), else NaN."""
    if summary is None or "atm_iv" not in summary.columns:
        return float("nan")
    close = pd.DataFrame({"ts": bars["ts"] + bar_freq(bars)})
    snaps = summary[["ts", "atm_iv"]].dropna().sort_values("ts")
    joined = pd.merge_asof(close, snaps, on="ts", direction="backward")
    return joined["atm_iv"].to_numpy(dtype=float)


def resolve_dealer(dealer: str, chain: pa.Table) -> str:
    """``auto`` -> ``explicit`` when the chain carries signed dealer positions."""
    if dealer != "auto":
        return dealer
    if "dealer_position" in chain.column_names and chain["dealer_position"].null_count < len(chain):
        return "explicit"
    return "long_calls_short_puts"


def basis_funding_lines(bars: pd.DataFrame, *, futures: pa.Table | None,
                        funding: pa.Table | None, zscore_window: int = 30,
                        ) -> pd.DataFrame | None:
    """The feed's ``basis_ann, basis_z, funding_ann`` inputs, each at its own stamps.

    ``basis_ann`` is the 30-day constant-maturity annualized basis; where the listed
    expiries do not bracket 30 days it falls back to the nearest listed expiry with at
    least 7 days left (annualizing a few days' premium mostly amplifies noise).
    ``basis_z`` is its rolling z-score over the previous ``zscore_window`` observations
    (point in time: it never uses later values). ``funding_ann`` is the funding APR.
    """
    frames = []
    if futures is not None:
        table = basis_table(futures, bars)
        cm = constant_maturity(table, tenors=(30,)).set_index("ts")["basis_ann_30d"]
        usable = table[(table["dte_days"] >= 7) & table["basis_ann"].notna()]
        front = usable.sort_values(["ts", "dte_days"]).groupby("ts")["basis_ann"].first()
        basis = cm.combine_first(front).dropna().sort_index()
        frames.append(pd.DataFrame({"ts": basis.index, "basis_ann": basis.to_numpy(),
                                    "basis_z": rolling_zscore(basis, zscore_window).to_numpy()}))
    if funding is not None:
        fund = funding.to_pandas()
        frames.append(pd.DataFrame({"ts": fund["ts"], "funding_ann": funding_apr(fund["rate_8h"])}))
    if not frames:
        return None
    out = frames[0]
    for frame in frames[1:]:
        out = out.merge(frame, on="ts", how="outer")
    return out.sort_values("ts", ignore_index=True)


def _with_volume_of(bars: pd.DataFrame, perp: pa.Table) -> pd.DataFrame:
    """Spot bars carrying the perp's volume (leverage lives on the perp), 0 where missing."""
    volume = perp.to_pandas().set_index("ts")["volume"]
    out = bars.copy()
    out["volume"] = volume.reindex(bars["ts"]).fillna(0.0).to_numpy()
    return out


def _refuse_disjoint_inputs(tables: dict[str, pa.Table | None], bars: pd.DataFrame,
                            config: RunConfig) -> None:
    """Open interest, liquidations and barrier books that lie wholly outside the bars are
    refused here: their coverage lines (the liquidation map, the book's GEX) have values
    even then (the map falls back to volume), so the run's coverage check cannot see it."""
    first = bars["ts"].iloc[0]
    last = bars["ts"].iloc[-1] + bar_freq(bars)
    for role, until, lead in (("oi", None, pd.Timedelta(config.max_staleness)),
                              ("liquidations", None, pd.Timedelta(0)),
                              ("barriers", "expiry", pd.Timedelta(0))):
        path = getattr(config, role)
        if path is not None and tables[role] is not None:
            check_overlap(tables[role], role, str(path), first=first, last=last,
                          until=until, lead=lead)


def window_bounds(ts: pd.Series | pd.DatetimeIndex, config: RunConfig) -> tuple[int, int]:
    """Positions ``lo:hi`` of the bars whose open ``ts`` lies in ``[start, end)``.

    Raises
    ------
    DataError
        Fewer than two bars in the window.
    """
    stamps = pd.DatetimeIndex(ts)

    def utc(value: str) -> pd.Timestamp:
        stamp = pd.Timestamp(value)
        return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")

    lo = 0 if config.start is None else int(stamps.searchsorted(utc(config.start)))
    hi = len(stamps) if config.end is None else int(stamps.searchsorted(utc(config.end)))
    if hi - lo < 2:
        raise DataError("fewer than two bars in the selected range",
                        source=config.bars or config.market, column="ts",
                        expected="at least two bars between --from and --to",
                        fix="widen the date range or check the bars file")
    return lo, hi


@dataclass(frozen=True, eq=False)
class PreparedMarket(_LeavesInputsBehind):
    """Every instrument's feed arrays over the full history, ready to run any window.

    Built once by :func:`prepare` (or loaded memory-mapped by
    ``gammabt.prepared.load_prepared``); a run only slices the arrays to its window, so
    each window sees the analytics the full history built up to its bars (point in
    time) and identical lines on the bars it shares with any other window.

    Attributes
    ----------
    legs
        ``(Leg, FeedArrays)`` pairs in feed order: spot, perp, futures by expiry, front.
    market
        The config fields the arrays depend on (:data:`MARKET_FIELDS`).
    key
        sha256 of ``market`` (paths excluded) and the inputs' content hashes.
    """

    legs: tuple[tuple[Leg, FeedArrays], ...]
    market: dict[str, Any]
    key: str
    input_hashes: dict[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    # the loaded inputs, when prepared in this process: the report page draws from them
    # (never stored or shipped to workers)
    inputs: MarketInputs | None = field(default=None, repr=False, compare=False)

    def bars(self, lo: int = 0, hi: int | None = None) -> pd.DataFrame:
        """Spot ``ts, open, close`` of bars ``lo:hi`` (for buy and hold)."""
        spot = self.legs[0][1]
        return pd.DataFrame({"ts": pd.to_datetime(spot.open_us[lo:hi], unit="us", utc=True),
                             "open": spot.lines["open"][lo:hi],
                             "close": spot.lines["close"][lo:hi]})


#: config fields the prepared arrays depend on (besides the input files' contents)
MARKET_FIELDS = ("freq", "dealer", "zscore_window", "max_staleness", "front_min_dte",
                 "chain_delay")


def market_fields(config: RunConfig) -> dict[str, Any]:
    """The input paths and analytic settings of ``config`` that a prepared market fixes."""
    data = config.to_dict()
    return {key: data[key] for key in (*INPUTS, *MARKET_FIELDS)}


def market_key(config: RunConfig, input_hashes: dict[str, str]) -> str:
    """sha256 of the analytic settings and the inputs' content hashes (not their paths)."""
    settings = {k: v for k, v in market_fields(config).items() if k not in INPUTS}
    hashes = {k: v for k, v in input_hashes.items() if k != "strategy_source"}
    payload = json.dumps({"market": settings, "inputs": hashes}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


def leg_arrays(config: RunConfig, inputs: MarketInputs) -> list[tuple[Leg, FeedArrays]]:
    """Every instrument's :class:`FeedArrays` over all of ``inputs.bars``.

    Spot always; the perpetual when perp bars are given (funding from the funding
    input); one dated future per expiry of the futures input plus the ``front`` signal
    series. Every leg carries the spot feed's gamma, liquidation and basis lines.
    """
    arrays = build_arrays(inputs.bars, summary=inputs.summary, strikes=inputs.strikes,
                          extra=inputs.extra, liq_lines=inputs.liq_lines,
                          liq_map=inputs.liq_map, barrier_lines=inputs.barrier_lines,
                          max_staleness=config.max_staleness)
    out = [(Leg("spot", "spot"), arrays)]
    if inputs.perp is not None:
        lines = bar_leg_lines(arrays, inputs.perp)
        if inputs.funding is not None:
            lines["funding_rate"] = funding_per_bar(arrays, inputs.funding)
        out.append((Leg("perp", "perp"), with_lines(arrays, lines)))
    if inputs.futures is not None:
        legs = future_legs(inputs.futures, arrays, arrays.lines["close"])
        for leg, lines in sorted(legs.items(), key=lambda item: item[0].expiry):
            out.append((leg, with_lines(arrays, lines)))
        if legs:
            front = front_leg_lines(arrays, legs, min_dte_days=config.front_min_dte)
            out.append((Leg("front", "front"), with_lines(arrays, front)))
    return out


def content_sha256(legs: Sequence[tuple[Leg, FeedArrays]]) -> str:
    """sha256 of every leg's stamps and lines and the shared snapshots (the data itself,
    so two in-memory markets built from different frames never share a key)."""
    digest = hashlib.sha256()
    for leg, arrays in legs:
        digest.update(f"{leg.name}|{leg.kind}|{leg.expiry}|{arrays.bar_freq_us}".encode())
        digest.update(np.ascontiguousarray(arrays.open_us).tobytes())
        for name in sorted(arrays.lines):
            digest.update(name.encode())
            digest.update(np.ascontiguousarray(arrays.lines[name]).tobytes())
    first = legs[0][1]
    for snaps in (first.strikes, first.liq_map):
        if snaps is None:
            digest.update(b"none")
            continue
        digest.update(np.ascontiguousarray(snaps.stamps_us).tobytes())
        columns = getattr(snaps, "columns", None)
        if columns is not None:
            digest.update(np.ascontiguousarray(snaps.offsets).tobytes())
            for name in sorted(columns):
                digest.update(np.ascontiguousarray(columns[name]).tobytes())
        else:  # a lazy map: its per-bar summary lines stand for it
            lines = snaps.source.lines
            digest.update(pd.util.hash_pandas_object(lines, index=False).to_numpy().tobytes())
    return digest.hexdigest()


def prepare(config: RunConfig, inputs: MarketInputs | None = None) -> PreparedMarket:
    """Load the inputs (if not given) and build every leg's arrays over the full history.

    The key hashes the analytic settings, the input files' contents and the prepared
    arrays themselves.
    """
    inputs = inputs if inputs is not None else load_inputs(config)
    hashes = dict(inputs.input_hashes)
    legs = tuple(leg_arrays(config, inputs))
    key = hashlib.sha256(f"{market_key(config, hashes)}|{content_sha256(legs)}".encode())
    return PreparedMarket(legs=legs, market=market_fields(config), key=key.hexdigest(),
                          input_hashes=hashes, notes=inputs.notes, inputs=inputs)


def slice_arrays(arrays: FeedArrays, lo: int, hi: int) -> FeedArrays:
    """Bars ``lo:hi`` of ``arrays`` (views). Snapshot and map indices stay valid: they
    point into the full history's snapshots, which are shared."""
    if lo == 0 and hi == len(arrays):
        return arrays
    return dataclasses.replace(arrays, open_us=arrays.open_us[lo:hi],
                               close_us=arrays.close_us[lo:hi],
                               lines={k: v[lo:hi] for k, v in arrays.lines.items()})


def _check_market(config: RunConfig, prepared: PreparedMarket) -> None:
    want = {k: v for k, v in market_fields(config).items() if k not in INPUTS}
    have = {k: v for k, v in prepared.market.items() if k not in INPUTS}
    for key, value in want.items():
        if have.get(key) != value:
            raise ConfigError(f"{key} = {value!r} differs from the prepared market's "
                              f"{have.get(key)!r}", column=key,
                              expected="the settings the market was prepared with",
                              fix=f"drop --{key.replace('_', '-')} or prepare again with it")


def build_legs(config: RunConfig, inputs: MarketInputs | PreparedMarket,
               ) -> list[InstrumentFeed]:
    """One feed per tradable instrument on the spot bars' clock, the traded one first.

    The arrays cover the full history (see :func:`leg_arrays`) and are sliced to the
    config's ``[start, end)`` window, so analytics never restart at the window start.
    """
    prepared = inputs if isinstance(inputs, PreparedMarket) else prepare(config, inputs)
    _check_market(config, prepared)
    lo, hi = window_bounds(pd.to_datetime(prepared.legs[0][1].open_us, unit="us", utc=True),
                           config)
    feeds = {leg.name: leg_feed(slice_arrays(arrays, lo, hi), leg)
             for leg, arrays in prepared.legs}
    if config.instrument not in feeds:
        raise ConfigError(f"instrument {config.instrument!r} has no prices in this run",
                          column="instrument", expected="--perp FILE (or a simulated "
                          "market) to trade the perpetual",
                          fix="pass --perp, or trade spot (--instrument spot)")
    first = feeds.pop(config.instrument)
    return [first, *feeds.values()]


def build_cerebro(config: RunConfig, inputs: MarketInputs | PreparedMarket) -> bt.Cerebro:
    """A Cerebro with one feed per instrument, the account broker, sizer, strategy and
    recording analyzers."""
    cerebro = bt.Cerebro(stdstats=False, runonce=config.runonce, preload=config.preload,
                         maxcpus=1)
    feeds = build_legs(config, inputs)
    for feed in feeds:
        cerebro.adddata(feed, name=feed.leg.name)
    terms = config.resolved_terms()
    broker = AccountBroker()
    broker.setup({f.leg.name: (f.leg, terms[f.leg.kind]) for f in feeds},
                 borrow=config.borrow, bar_seconds=feeds[0].arrays.bar_freq_us / 1e6)
    cerebro.broker = broker
    cerebro.broker.setcash(config.cash)
    if config.slippage_bps > 0:
        cerebro.broker.set_slippage_perc(config.slippage_bps / 1e4)
    cerebro.addsizer(PercentOfEquity, percent=config.percent)
    cerebro.addstrategy(get_strategy(config.strategy), **config.strategy_params)
    cerebro.addanalyzer(EquityCurve, _name="equity")
    cerebro.addanalyzer(PositionLog, _name="positions")
    cerebro.addanalyzer(OrderLog, _name="orders")
    cerebro.addanalyzer(TradeLog, _name="trades")
    return cerebro


def _run_name(spec: str) -> str:
    """A folder-safe name: the registered name, else the user class's name."""
    name = spec if spec in STRATEGIES else get_strategy(spec).__name__
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def daily_returns(equity: pd.DataFrame, initial: float) -> pd.Series:
    """Daily simple returns of the portfolio value (UTC days, first day vs ``initial``)."""
    daily = equity.set_index("ts")["value"].resample("1D").last().dropna()
    previous = daily.shift(1)
    previous.iloc[0] = initial
    returns = (daily / previous - 1.0).where(previous > 0, 0.0)  # nothing left: flat
    returns.name = "strategy"
    return returns


def buy_and_hold_returns(bars: pd.DataFrame) -> pd.Series:
    """Daily returns of holding one unit from the first bar's open, without costs.

    Each close is stamped at its bar's close time (``ts + bar spacing``), as the
    strategy's equity is, so both series fall on the same UTC days.
    """
    close_ts = bars["ts"] + bar_freq(bars)
    closes = pd.Series(bars["close"].to_numpy(), index=pd.DatetimeIndex(close_ts))
    daily = closes.resample("1D").last().dropna()
    previous = daily.shift(1)
    previous.iloc[0] = float(bars["open"].iloc[0])
    returns = daily / previous - 1.0
    returns.name = "buy_and_hold"
    return returns


#: input role -> (leg kind whose feed carries it, line that says a value is in force)
COVERAGE_LINES = {"chain": ("spot", "gex"), "futures": ("spot", "basis_ann"),
                  "funding": ("spot", "funding_ann"), "oi": ("spot", "liqmap_idx"),
                  "liquidations": ("spot", "liqmap_idx"), "perp": ("perp", "fresh"),
                  "barriers": ("spot", "barrier_gex")}


def input_coverage(prepared: PreparedMarket, config: RunConfig, lo: int, hi: int,
                   ) -> dict[str, dict[str, Any]]:
    """Per input, how much of the run's bars ``lo:hi`` it covers.

    Returns
    -------
    dict
        Role -> ``share`` (bars with a value in force, fraction), ``first`` and ``last``
        (close times of the first and last such bar, ISO UTC, None when none) and
        ``longest_gap_bars`` (the longest run of bars without a value).
    """
    roles = [r for r in COVERAGE_LINES if getattr(config, r, None)]
    if config.market is not None:
        roles = [r for r in COVERAGE_LINES if r != "barriers" or config.barriers]
    legs = {leg.kind: arrays for leg, arrays in prepared.legs}
    out: dict[str, dict[str, Any]] = {}
    for role in roles:
        kind, line = COVERAGE_LINES[role]
        arrays = legs.get(kind)
        if arrays is None or line not in arrays.lines:
            have = np.zeros(hi - lo, dtype=bool)
            close_us = legs["spot"].close_us[lo:hi]
        else:
            values = arrays.lines[line][lo:hi]
            # liqmap_idx: -1 = no map in force; fresh: 1 = a price in the bar
            have = values >= 0 if line == "liqmap_idx" else values > 0.5 \
                if line == "fresh" else np.isfinite(values)
            close_us = arrays.close_us[lo:hi]
        idx = np.flatnonzero(have)
        gaps = np.diff(np.r_[-1, idx, len(have)]) - 1
        first, last = (_iso(close_us[idx[0]]), _iso(close_us[idx[-1]])) if idx.size \
            else (None, None)
        out[role] = {"share": float(have.mean()) if len(have) else 0.0,
                     "first": first, "last": last,
                     "longest_gap_bars": int(gaps.max()) if gaps.size else 0}
    return out


def _iso(us: int) -> str:
    return pd.Timestamp(int(us), unit="us", tz="UTC").isoformat()


def coverage_problems(coverage: dict[str, dict[str, Any]], config: RunConfig) -> list[str]:
    """Warnings for inputs the user gave that cover under half of the run's bars.

    Raises
    ------
    DataError
        An input given by the user covers none of the run's bars.
    """
    warnings_: list[str] = []
    for role, cov in coverage.items():
        given = getattr(config, role, None)
        if cov["share"] == 0 and given and config.market is None:
            source = given[0] if isinstance(given, tuple) else given
            raise DataError(f"the {role} input covers none of the run's bars", source=source,
                            column="ts", expected="timestamps that overlap the bars "
                            "(within --max-staleness of a bar close)",
                            fix="check the dates of both files, or widen --from/--to")
        if cov["share"] < 0.5:
            warnings_.append(f"{role} covers only {cov['share']:.0%} of the bars "
                             f"(from {cov['first']} to {cov['last']}; longest gap "
                             f"{cov['longest_gap_bars']} bars)")
    return warnings_


def run(config: RunConfig, inputs: MarketInputs | PreparedMarket | None = None) -> RunResult:
    """Run one backtest and return its immutable result (nothing is written).

    ``inputs`` may be loaded inputs, a :class:`PreparedMarket` (the fast path for many
    runs on one market: nothing is loaded or recomputed), or None (load from the
    config's files).
    """
    started = time.perf_counter()
    prepared = inputs if isinstance(inputs, PreparedMarket) else prepare(config, inputs)
    lo, hi = window_bounds(pd.to_datetime(prepared.legs[0][1].open_us, unit="us", utc=True),
                           config)
    coverage = input_coverage(prepared, config, lo, hi)
    warnings_ = coverage_problems(coverage, config)  # refuses inputs that cover nothing
    cerebro = build_cerebro(config, prepared)
    strategy = cerebro.run()[0]
    equity = strategy.analyzers.equity.get_analysis()
    orders = strategy.analyzers.orders.get_analysis()
    trades = strategy.analyzers.trades.get_analysis()
    returns = daily_returns(equity, config.cash)
    benchmark = buy_and_hold_returns(prepared.bars(lo, hi)).reindex(returns.index)
    metrics = compute_metrics(returns, benchmark, periods_per_year=365, trades=trades,
                              orders=orders)
    metrics["final_value"] = float(equity["value"].iloc[-1]) if len(equity) else config.cash
    metrics["n_bars"] = len(equity)
    broker = strategy.broker
    ledger = broker.ledger_frame()
    positions = strategy.analyzers.positions.get_analysis()
    metrics.update(account_metrics(ledger, positions, equity, spot_instruments=tuple(
        name for name, (leg, _) in broker.legs.items() if leg.kind == "spot")))
    metrics["refusals"] = dict(sorted(broker.refusals.items()))
    metrics["coverage"] = coverage
    if not metrics.get("n_orders"):
        warnings_.append("no order was placed: the strategy never traded (check its "
                         "inputs' coverage and parameters)")
    metrics["warnings"] = warnings_
    # the strategy's code is an input too (the prepared market may have named another)
    hashes = {**prepared.input_hashes,
              "strategy_source": strategy_source_sha256(config.strategy)}
    digest = config.digest(hashes)
    stamp = pd.Timestamp.now(tz="UTC").strftime("%Y%m%dT%H%M%SZ")
    run_id = f"{stamp}-{config.label or _run_name(config.strategy)}-{digest[:8]}"
    return RunResult(config=config, run_id=run_id, digest=digest, returns=returns,
                     benchmark=benchmark, equity=equity, trades=trades, orders=orders,
                     metrics=metrics, ledger=ledger, positions=positions,
                     input_hashes=hashes,
                     versions=package_versions(), notes=prepared.notes,
                     elapsed_s=time.perf_counter() - started, inputs=prepared.inputs)

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

from feeds.btfeed import FeedArrays, build_arrays
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
from feeds.loaders import bar_freq
from feeds.schema import check_overlap
from gammabt.analyzers import EquityCurve, OrderLog, PositionLog, TradeLog
from gammabt.broker import AccountBroker
from gammabt.config import RunConfig, input_names, input_sha256
from gammabt.inputs import AVAILABLE_AT, INPUT_SPECS, load_all, staleness, value_lines
from gammabt.report import account_metrics, compute_metrics
from indicators import barrier, gamma
from indicators.basis import basis_table, constant_maturity, funding_apr, rolling_zscore
from indicators.liquidation import LiqMap, estimate_liq_map
from plumbing.errors import ConfigError, DataError
from plumbing.timeconv import duration_us, parse_duration
from strategies.params import strategy_params
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
    # every loaded input kind's merged table (with available_at), by kind
    tables: dict[str, pa.Table] = field(default_factory=dict)
    # publication delay used per loaded kind ("1h", or per file when they differ)
    delays: dict[str, str] = field(default_factory=dict)


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

    Every kind of :data:`gammabt.inputs.INPUT_SPECS` is loaded the same way (several
    files merged, ``available_at = ts + delay`` per record); the analytics then use
    ``ts`` (time to expiry, spot as of the snapshot) and the point-in-time joins use
    ``available_at``. Everything is computed over the **full history** of the inputs,
    whatever ``config.start``/``config.end`` say: the window is applied when the feeds
    are built (:func:`build_legs`), so a run that starts later still sees the
    liquidation map, z-scores and snapshots that the earlier bars built up.
    """
    hashes = {role: input_sha256(path) for role, path in config.inputs().items()}
    # the strategy's code is an input too: a changed file is a different run
    hashes["strategy_source"] = strategy_source_sha256(config.strategy)
    notes: list[str] = []
    market = None
    if config.market is not None:
        from feeds.synthetic import load_market

        market = load_market(config.market)
        notes.append(f"simulated market: scenario {market.scenario!r}, seed {market.seed}")
    loaded = load_all(dict(config.files), config.delay_overrides(), freq=config.freq,
                      market=market, market_folder=config.market)
    tables: dict[str, pa.Table] = {name: item.table for name, item in loaded.items()}
    delays = {name: item.describe() for name, item in loaded.items()}
    bars = _drop_available(tables["bars"]).to_pandas()
    window_bounds(bars["ts"], config)  # refuse an empty window before the analytics
    _refuse_disjoint_inputs(tables, bars, config)
    summary = strikes = None
    chain = tables.get("chain")
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
    positions = tables.get("barriers")
    if positions is not None and positions.num_rows:
        positions = published(positions)  # a position enters the book once it is known
        iv_bar = _atm_iv_per_bar(bars, with_available_at(summary, chain))
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
    extra = basis_funding_lines(bars, futures=tables.get("futures"),
                                funding=tables.get("funding"),
                                zscore_window=config.zscore_window)
    liq_map = None
    perp_table = tables.get("perp")
    oi, liquidations = tables.get("oi"), tables.get("liquidations")
    if oi is not None or liquidations is not None or perp_table is not None:
        liq_bars = bars if perp_table is None else _with_volume_of(bars, perp_table)
        liq_map = estimate_liq_map(liq_bars, oi=None if oi is None else published(oi),
                                   liquidations=None if liquidations is None
                                   else published(liquidations))
        source = "open interest" if oi is not None else "volume"
        notes.append(f"liquidation map estimated from {source}"
                     + (" with observed liquidations" if liquidations is not None else ""))
    summary, strikes = (with_available_at(f, chain) for f in (summary, strikes))
    lagged = {k: v for k, v in delays.items() if INPUT_SPECS[k].delay is not None}
    if lagged:
        notes.append("inputs used from their stamp + publication delay: "
                     + ", ".join(f"{k} {v}" for k, v in lagged.items()))
    perp = None if perp_table is None else _drop_available(perp_table).to_pandas()
    return MarketInputs(bars=bars, summary=summary, strikes=strikes, extra=extra,
                        liq_lines=None if liq_map is None else liq_map.lines, liq_map=liq_map,
                        barrier_lines=barrier_lines,
                        perp=perp, futures=tables.get("futures"), funding=tables.get("funding"),
                        input_hashes=hashes, notes=tuple(notes), tables=tables, delays=delays)


def _drop_available(table: pa.Table) -> pa.Table:
    if AVAILABLE_AT in table.column_names:
        return table.drop_columns([AVAILABLE_AT])
    return table


def published(table: pa.Table | pd.DataFrame) -> pa.Table | pd.DataFrame:
    """``table`` with ``ts`` replaced by ``available_at`` (when it has one), for
    consumers that join on ``ts``: a record enters them when it became usable."""
    if isinstance(table, pd.DataFrame):
        if AVAILABLE_AT not in table.columns:
            return table
        return table.assign(ts=table[AVAILABLE_AT]).drop(columns=AVAILABLE_AT)
    if AVAILABLE_AT not in table.column_names:
        return table
    out = table.set_column(table.column_names.index("ts"), "ts",
                           table[AVAILABLE_AT].cast(table.schema.field("ts").type))
    return out.drop_columns([AVAILABLE_AT]).sort_by([("ts", "ascending")])


def _availability(table: pa.Table | None) -> pd.Series | None:
    """Stamp -> when every record of that stamp was usable (the latest of them)."""
    if table is None or AVAILABLE_AT not in table.column_names:
        return None
    frame = table.select(["ts", AVAILABLE_AT]).to_pandas()
    return frame.groupby("ts")[AVAILABLE_AT].max()


def with_available_at(frame: pd.DataFrame | None, source: pa.Table | None,
                      ) -> pd.DataFrame | None:
    """``frame`` (rows stamped like ``source``'s records) plus ``available_at``: the
    time its stamp's records became usable (``ts`` where ``source`` says nothing)."""
    avail = _availability(source)
    if frame is None or avail is None:
        return frame
    at = frame["ts"].map(avail)
    return frame.assign(available_at=at.where(at.notna(), frame["ts"]))


def _atm_iv_per_bar(bars: pd.DataFrame, summary: pd.DataFrame | None) -> Any:
    """The chain's ATM IV as of each bar close (NaN before the first snapshot), else NaN."""
    if summary is None or "atm_iv" not in summary.columns:
        return float("nan")
    close = pd.DataFrame({"ts": bars["ts"] + bar_freq(bars)})
    snaps = published(summary[[c for c in ("ts", AVAILABLE_AT, "atm_iv")
                               if c in summary.columns]])
    snaps = snaps.dropna().astype({"ts": close["ts"].dtype}).sort_values("ts")
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
    Each row also carries ``available_at``: when its inputs were published (the tables'
    ``available_at``; their ``ts`` when they have none); the feed joins on it.
    """
    frames = []
    if futures is not None:
        table = basis_table(_drop_available(futures), bars)
        cm = constant_maturity(table, tenors=(30,)).set_index("ts")["basis_ann_30d"]
        usable = table[(table["dte_days"] >= 7) & table["basis_ann"].notna()]
        front = usable.sort_values(["ts", "dte_days"]).groupby("ts")["basis_ann"].first()
        basis = cm.combine_first(front).dropna().sort_index()
        frame = pd.DataFrame({"ts": basis.index, "basis_ann": basis.to_numpy(),
                              "basis_z": rolling_zscore(basis, zscore_window).to_numpy()})
        frames.append(with_available_at(frame, futures))
    if funding is not None:
        fund = funding.to_pandas()
        frames.append(with_available_at(pd.DataFrame({"ts": fund["ts"], "funding_ann":
                                                      funding_apr(fund["rate_8h"])}), funding))
    if not frames:
        return None
    frames = [f if AVAILABLE_AT in f.columns else f.assign(available_at=f["ts"])
              for f in frames]
    out = frames[0]
    for frame in frames[1:]:
        frame = frame.astype({c: out[c].dtype for c in ("ts", AVAILABLE_AT)})
        out = out.merge(frame, on=["ts", AVAILABLE_AT], how="outer")
    return out.sort_values(["ts", AVAILABLE_AT], ignore_index=True)


def _with_volume_of(bars: pd.DataFrame, perp: pa.Table) -> pd.DataFrame:
    """Spot bars carrying the perp's volume (leverage lives on the perp), 0 where missing."""
    volume = _drop_available(perp).to_pandas().set_index("ts")["volume"]
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
    stale = parse_duration(config.max_staleness, name="max_staleness", minimum="nonnegative")
    for role, until, lead in (("oi", None, stale),
                              ("liquidations", None, pd.Timedelta(0)),
                              ("barriers", "expiry", pd.Timedelta(0))):
        paths = getattr(config, role)  # () unless given as files (a market's tables are not)
        if paths and tables.get(role) is not None:
            check_overlap(tables[role], role, ", ".join(paths), first=first, last=last,
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
                        source=(config.bars or (config.market,))[0], column="ts",
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
    delays: dict[str, str] = field(default_factory=dict)  # kind -> publication delay used
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
                 "delays")


def market_fields(config: RunConfig) -> dict[str, Any]:
    """The input paths and analytic settings of ``config`` that a prepared market fixes."""
    data = config.to_dict()
    return {key: data[key] for key in (*input_names(), *MARKET_FIELDS)}


def market_key(config: RunConfig, input_hashes: dict[str, str]) -> str:
    """sha256 of the analytic settings and the inputs' content hashes (not their paths)."""
    settings = {k: v for k, v in market_fields(config).items() if k not in input_names()}
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
                          max_staleness=staleness(config.max_staleness))
    generic = value_lines(inputs.tables, arrays.close_us,
                          duration_us(config.max_staleness, name="max_staleness",
                                      minimum="nonnegative"))
    if generic:  # kinds without analytics of their own, as of each bar close
        arrays = with_lines(arrays, generic)
    out = [(Leg("spot", "spot"), arrays)]
    if inputs.perp is not None:
        lines = bar_leg_lines(arrays, inputs.perp)
        if inputs.funding is not None:
            lines["funding_rate"] = funding_per_bar(arrays, inputs.funding)
        out.append((Leg("perp", "perp"), with_lines(arrays, lines)))
    if inputs.futures is not None:
        # a quote enters its leg when published: no trading on a price not yet seen
        legs = future_legs(published(inputs.futures), arrays, arrays.lines["close"])
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
                          input_hashes=hashes, notes=inputs.notes, delays=dict(inputs.delays),
                          inputs=inputs)


def slice_arrays(arrays: FeedArrays, lo: int, hi: int) -> FeedArrays:
    """Bars ``lo:hi`` of ``arrays`` (views). Snapshot and map indices stay valid: they
    point into the full history's snapshots, which are shared."""
    if lo == 0 and hi == len(arrays):
        return arrays
    return dataclasses.replace(arrays, open_us=arrays.open_us[lo:hi],
                               close_us=arrays.close_us[lo:hi],
                               lines={k: v[lo:hi] for k, v in arrays.lines.items()})


_FLAGS = {"delays": "delay"}  # market field -> its command-line flag, where they differ


def check_market(config: RunConfig, prepared: PreparedMarket) -> None:
    want = {k: v for k, v in market_fields(config).items() if k not in input_names()}
    have = {k: v for k, v in prepared.market.items() if k not in input_names()}
    for key, value in want.items():
        if have.get(key) != value:
            raise ConfigError(f"{key} = {value!r} differs from the prepared market's "
                              f"{have.get(key)!r}", column=key,
                              expected="the settings the market was prepared with",
                              fix=f"drop --{_FLAGS.get(key, key.replace('_', '-'))} or "
                              "prepare again with it")


def build_legs(config: RunConfig, inputs: MarketInputs | PreparedMarket,
               ) -> list[InstrumentFeed]:
    """One feed per tradable instrument on the spot bars' clock, the traded one first.

    The arrays cover the full history (see :func:`leg_arrays`) and are sliced to the
    config's ``[start, end)`` window, so analytics never restart at the window start.
    """
    prepared = inputs if isinstance(inputs, PreparedMarket) else prepare(config, inputs)
    check_market(config, prepared)
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


def input_coverage(prepared: PreparedMarket, config: RunConfig, lo: int, hi: int,
                   ) -> dict[str, dict[str, Any]]:
    """Per loaded input kind with a coverage line (:meth:`InputSpec.coverage_line`), how
    much of the run's bars ``lo:hi`` it covers.

    Returns
    -------
    dict
        Kind -> ``share`` (bars with a value in force, fraction), ``first`` and ``last``
        (close times of the first and last such bar, ISO UTC, None when none),
        ``longest_gap_bars`` (the longest run of bars without a value) and ``delay``
        (the publication delay used).
    """
    loaded = prepared.delays
    legs = {leg.kind: arrays for leg, arrays in prepared.legs}
    out: dict[str, dict[str, Any]] = {}
    for role, spec in INPUT_SPECS.items():
        where = spec.coverage_line()
        if where is None or role not in loaded:
            continue
        kind, line = where
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
                     "longest_gap_bars": int(gaps.max()) if gaps.size else 0,
                     "delay": loaded[role]}
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
            if len(given) > 1 and isinstance(given, tuple):
                source = f"{source} (+{len(given) - 1} files)"
            raise DataError(f"the {role} input covers none of the run's bars", source=source,
                            column="ts", expected="timestamps that overlap the bars "
                            "(within --max-staleness of a bar close, counted "
                            "from each record's publication)",
                            fix="check the dates of both files, or widen --from/--to")
        if cov["share"] < 0.5:
            warnings_.append(f"{role} covers only {cov['share']:.0%} of the bars "
                             f"(from {cov['first']} to {cov['last']}; longest gap "
                             f"{cov['longest_gap_bars']} bars)")
    return warnings_


def effective_params(config: RunConfig) -> dict[str, Any]:
    """Every parameter the strategy runs with: its defaults, then the config's values."""
    return {**strategy_params(get_strategy(config.strategy)), **config.strategy_params}


def check_window_length(config: RunConfig, n_bars: int) -> None:
    """Refuse a window shorter than the strategy's warm-up, when its rules declare one
    (the Backtrader run and the lean engine refuse alike)."""
    cls = get_strategy(config.strategy)
    rules_class = cls.__dict__.get("rules_class")
    if rules_class is None:
        return
    warmup = rules_class.from_params(effective_params(config)).warmup
    if n_bars <= warmup:
        raise ConfigError(f"the window has {n_bars} bars; {config.strategy} with these "
                          f"parameters needs more than {warmup} before its first decision",
                          column="--from/--to", expected=f"more than {warmup} bars",
                          fix="widen --from/--to, or shorten the strategy's look-back")


def _refuse_short_window(config: RunConfig, n_bars: int) -> None:
    """Explain Backtrader's IndexError when a strategy's look-back is longer than the
    window (its indicators need more bars than there are); other causes re-raise."""
    longer = sorted(f"{k}={v}" for k, v in effective_params(config).items()
                    if isinstance(v, int) and not isinstance(v, bool) and v >= n_bars)
    if not longer:
        return
    raise ConfigError(f"the window has {n_bars} bars, and an indicator of the strategy "
                      f"needs more (parameters at least that long: {', '.join(longer)})",
                      column="--from/--to", expected="more bars than the strategy's "
                      "look-back", fix="widen --from/--to, or shorten the look-back")


def assemble_metrics(config: RunConfig, prepared: PreparedMarket, lo: int, hi: int, *,
                     equity: pd.DataFrame, orders: pd.DataFrame, trades: pd.DataFrame,
                     ledger: pd.DataFrame, positions: pd.DataFrame,
                     refusals: dict[str, int], coverage: dict[str, Any],
                     warnings_: list[str]) -> tuple[pd.Series, pd.Series, dict[str, Any]]:
    """A run's daily returns, benchmark and metrics from its recorded tables: the one
    assembly shared by :func:`run` and the lean sweep engine."""
    returns = daily_returns(equity, config.cash)
    benchmark = buy_and_hold_returns(prepared.bars(lo, hi)).reindex(returns.index)
    metrics = compute_metrics(returns, benchmark, periods_per_year=365, trades=trades,
                              orders=orders)
    metrics["final_value"] = float(equity["value"].iloc[-1]) if len(equity) else config.cash
    metrics["n_bars"] = len(equity)
    metrics.update(account_metrics(ledger, positions, equity, spot_instruments=tuple(
        leg.name for leg, _ in prepared.legs if leg.kind == "spot")))
    metrics["refusals"] = dict(sorted(refusals.items()))
    metrics["coverage"] = coverage
    metrics["delays"] = dict(prepared.delays)
    if not metrics.get("n_orders"):
        warnings_.append("no order was placed: the strategy never traded (check its "
                         "inputs' coverage and parameters)")
    metrics["warnings"] = warnings_
    return returns, benchmark, metrics


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
    check_window_length(config, hi - lo)
    coverage = input_coverage(prepared, config, lo, hi)
    warnings_ = coverage_problems(coverage, config)  # refuses inputs that cover nothing
    cerebro = build_cerebro(config, prepared)
    try:
        strategy = cerebro.run()[0]
    except IndexError:  # Backtrader's vectorized indicators read before the first bar
        _refuse_short_window(config, hi - lo)
        raise
    equity = strategy.analyzers.equity.get_analysis()
    orders = strategy.analyzers.orders.get_analysis()
    trades = strategy.analyzers.trades.get_analysis()
    broker = strategy.broker
    ledger = broker.ledger_frame()
    positions = strategy.analyzers.positions.get_analysis()
    returns, benchmark, metrics = assemble_metrics(
        config, prepared, lo, hi, equity=equity, orders=orders, trades=trades,
        ledger=ledger, positions=positions, refusals=broker.refusals, coverage=coverage,
        warnings_=warnings_)
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

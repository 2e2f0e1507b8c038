"""One backtest: load inputs, wire Cerebro, run, and return an immutable result.

Data flows one way: raw files -> canonical tables (``feeds``) -> analytics
(``indicators``) -> feed lines (``feeds.btfeed.GammaFeed``) -> strategy -> ``RunResult``.
Writing the result to disk is a separate, atomic step (``gammabt.results``).
"""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import backtrader as bt
import pandas as pd
import pyarrow as pa

from feeds.btfeed import GammaFeed
from feeds.loaders import bar_freq, load_bars, load_chain
from gammabt.analyzers import EquityCurve, OrderLog, TradeLog
from gammabt.config import RunConfig, file_sha256
from gammabt.report import compute_metrics
from indicators import gamma
from indicators.errors import DataError
from strategies.registry import get_strategy
from strategies.sizing import FractionalCommission, PercentOfEquity

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
    liq_map: pd.DataFrame | None = None
    input_hashes: dict[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class RunResult:
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
    input_hashes: dict[str, str]
    versions: dict[str, str]
    notes: tuple[str, ...] = ()
    elapsed_s: float = 0.0

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
    """Read the config's input files into canonical tables and gamma analytics."""
    hashes = {role: file_sha256(path) for role, path in config.inputs().items()}
    notes: list[str] = []
    chain: pa.Table | None = None
    if config.market is not None:
        from feeds.synthetic import load_market

        market = load_market(config.market)
        bars_table = market.bars
        chain = market.chain
        notes.append(f"simulated market: scenario {market.scenario!r}, seed {market.seed}")
    else:
        bars_table = load_bars(config.bars, freq=config.freq)
    if config.chain:
        tables = [load_chain(path, spot=config.spot) for path in config.chain]
        chain = pa.concat_tables(tables, promote_options="default")
    bars = _clip(bars_table.to_pandas(), config)
    if len(bars) < 2:
        raise DataError("fewer than two bars in the selected range",
                        source=config.bars or config.market, column="ts",
                        expected="at least two bars between --from and --to",
                        fix="widen the date range or check the bars file")
    summary = strikes = None
    if chain is not None:
        summary = gamma.summarize(chain, dealer=config.dealer)
        strikes = gamma.strike_gex(chain, dealer=config.dealer)
        n_snap = len(summary)
        notes.append(f"{n_snap} chain snapshots, spot source: "
                     f"{', '.join(sorted(summary['spot_source'].unique()))}")
    else:
        notes.append("no option chain given: gamma lines are NaN")
    return MarketInputs(bars=bars, summary=summary, strikes=strikes,
                        input_hashes=hashes, notes=tuple(notes))


def _clip(bars: pd.DataFrame, config: RunConfig) -> pd.DataFrame:
    if config.start is not None:
        bars = bars[bars["ts"] >= pd.Timestamp(config.start)]
    if config.end is not None:
        bars = bars[bars["ts"] < pd.Timestamp(config.end)]
    return bars.reset_index(drop=True)


def build_cerebro(config: RunConfig, inputs: MarketInputs) -> bt.Cerebro:
    """A Cerebro with the feed, broker costs, sizer, strategy and recording analyzers."""
    cerebro = bt.Cerebro(stdstats=False, runonce=config.runonce, preload=config.preload,
                         maxcpus=1)
    feed = GammaFeed.from_frames(inputs.bars, summary=inputs.summary, strikes=inputs.strikes,
                                 extra=inputs.extra, liq_lines=inputs.liq_lines,
                                 liq_map=inputs.liq_map, max_staleness=config.max_staleness,
                                 name="BTC")
    cerebro.adddata(feed)
    cerebro.broker.setcash(config.cash)
    cerebro.broker.addcommissioninfo(
        FractionalCommission(commission=config.commission_bps / 1e4))
    if config.slippage_bps > 0:
        cerebro.broker.set_slippage_perc(config.slippage_bps / 1e4)
    cerebro.addsizer(PercentOfEquity, percent=config.percent)
    cerebro.addstrategy(get_strategy(config.strategy), **config.strategy_params)
    cerebro.addanalyzer(EquityCurve, _name="equity")
    cerebro.addanalyzer(OrderLog, _name="orders")
    cerebro.addanalyzer(TradeLog, _name="trades")
    return cerebro


def daily_returns(equity: pd.DataFrame, initial: float) -> pd.Series:
    """Daily simple returns of the portfolio value (UTC days, first day vs ``initial``)."""
    daily = equity.set_index("ts")["value"].resample("1D").last().dropna()
    previous = daily.shift(1)
    previous.iloc[0] = initial
    returns = daily / previous - 1.0
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


def run(config: RunConfig, inputs: MarketInputs | None = None) -> RunResult:
    """Run one backtest and return its immutable result (nothing is written)."""
    started = time.perf_counter()
    inputs = inputs if inputs is not None else load_inputs(config)
    cerebro = build_cerebro(config, inputs)
    strategy = cerebro.run()[0]
    equity = strategy.analyzers.equity.get_analysis()
    orders = strategy.analyzers.orders.get_analysis()
    trades = strategy.analyzers.trades.get_analysis()
    returns = daily_returns(equity, config.cash)
    benchmark = buy_and_hold_returns(inputs.bars).reindex(returns.index)
    metrics = compute_metrics(returns, benchmark, periods_per_year=365, trades=trades,
                              orders=orders)
    metrics["final_value"] = float(equity["value"].iloc[-1]) if len(equity) else config.cash
    metrics["n_bars"] = len(equity)
    digest = config.digest(inputs.input_hashes)
    stamp = pd.Timestamp.now(tz="UTC").strftime("%Y%m%dT%H%M%SZ")
    run_id = f"{stamp}-{config.label or config.strategy}-{digest[:8]}"
    return RunResult(config=config, run_id=run_id, digest=digest, returns=returns,
                     benchmark=benchmark, equity=equity, trades=trades, orders=orders,
                     metrics=metrics, input_hashes=inputs.input_hashes,
                     versions=package_versions(), notes=inputs.notes,
                     elapsed_s=time.perf_counter() - started)

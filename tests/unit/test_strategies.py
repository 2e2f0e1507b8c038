"""Strategies and the run wiring on hand-made bars and gamma lines."""

from __future__ import annotations

import backtrader as bt
import numpy as np
import pandas as pd
import pytest

from gammabt.config import RunConfig
from gammabt.run import MarketInputs, daily_returns, run
from plumbing.errors import ConfigError
from strategies.base import GammaStrategy
from tests.data.hand_made import flat_bars, make_bars, make_summary


def config(**kw) -> RunConfig:
    return RunConfig(bars="unused.csv", **kw)


def test_short_gamma_momentum_trades_open_and_close():
    bars = make_bars()
    inputs = MarketInputs(bars=bars, summary=make_summary(bars, -1.0, 1.05))
    result = run(config(params=(("max_hold", 6),), borrow=True), inputs)
    trades = result.trades
    assert len(trades) >= 5, "positions must be closed, not held forever"
    assert (trades["bars"] <= 6 + 1).all()
    assert result.metrics["n_rejected"] == 0


def test_no_gamma_snapshot_means_no_trades():
    bars = make_bars()
    result = run(config(), MarketInputs(bars=bars))
    assert result.metrics["n_orders"] == 0
    assert result.equity["value"].eq(100_000.0).all()


def test_long_only_never_shorts():
    bars = make_bars(seed=5, drift=-0.002)
    inputs = MarketInputs(bars=bars, summary=make_summary(bars, -1.0, 1.05))
    result = run(config(params=(("allow_short", False),)), inputs)
    assert (result.equity["position"] >= -1e-12).all()
    assert not (result.trades["side"] == "short").any()


def test_short_spot_without_borrowing_is_refused_and_counted():
    bars = make_bars()
    inputs = MarketInputs(bars=bars, summary=make_summary(bars, -1.0, 1.05))
    result = run(config(), inputs)
    refused = result.orders[result.orders["status"] == "rejected"]
    assert len(refused) > 0 and (refused["reason"] == "short_without_borrow").all()
    assert result.metrics["n_rejected"] == len(refused)
    assert result.metrics["refusals"] == {"short_without_borrow": len(refused)}
    assert (result.equity["position"] >= -1e-12).all()


def test_spot_above_100_percent_is_a_config_error():
    with pytest.raises(ConfigError, match="leverage"):
        config(percent=250.0)
    assert config(percent=250.0, instrument="perp").percent == 250.0


def test_buy_and_hold_equity_is_cash_plus_position():
    bars = make_bars()
    result = run(config(strategy="buy_and_hold", commission_bps=0, slippage_bps=0,
                        percent=50.0), MarketInputs(bars=bars))
    orders = result.orders
    assert len(orders) == 1 and orders["status"].iloc[0] == "completed"
    size, price = orders["filled"].iloc[0], orders["price"].iloc[0]
    assert price == pytest.approx(bars["open"].iloc[1])  # fills at the next bar's open
    expected = 100_000 - size * price + size * bars["close"].iloc[-1]
    assert result.equity["value"].iloc[-1] == pytest.approx(expected, rel=1e-12)
    assert size == pytest.approx(100_000 * 0.5 / bars["close"].iloc[0])  # fractional BTC


def test_commission_and_slippage_cost_money():
    bars = make_bars()
    inputs = MarketInputs(bars=bars, summary=make_summary(bars, -1.0, 1.05))
    free = run(config(commission_bps=0, slippage_bps=0), inputs)
    costly = run(config(commission_bps=10, slippage_bps=5), inputs)
    assert costly.metrics["final_value"] < free.metrics["final_value"]
    assert costly.orders["commission"].sum() > 0 == free.orders["commission"].sum()


@pytest.mark.parametrize("runonce,preload", [(False, True), (False, False), (True, False)])
def test_run_modes_give_identical_results(runonce, preload):
    bars = make_bars()
    inputs = MarketInputs(bars=bars, summary=make_summary(bars, -1.0, 1.05))
    base = run(config(), inputs)
    other = run(config(runonce=runonce, preload=preload), inputs)
    pd.testing.assert_frame_equal(base.equity, other.equity)
    pd.testing.assert_frame_equal(base.trades, other.trades)


def test_daily_returns_compound_to_final_value():
    bars = make_bars(n=24 * 7)
    inputs = MarketInputs(bars=bars, summary=make_summary(bars, -1.0, 1.05))
    result = run(config(), inputs)
    assert (1 + result.returns).prod() * 100_000 == pytest.approx(
        result.equity["value"].iloc[-1], rel=1e-12)
    assert len(result.returns) == len(result.benchmark)
    # an independent reference: the last value of each UTC day over the day before's
    last_of_day: dict = {}
    for ts, value in zip(result.equity["ts"], result.equity["value"], strict=True):
        last_of_day[ts.date()] = value
    previous, expected = 100_000.0, []
    for value in last_of_day.values():
        expected.append(value / previous - 1)
        previous = value
    np.testing.assert_allclose(daily_returns(result.equity, 100_000.0).to_numpy(), expected,
                               rtol=0, atol=1e-15)
    assert [d.date() for d in result.returns.index] == list(last_of_day)


def test_long_gamma_is_flat_unless_fading_is_enabled():
    bars = make_bars(seed=9)
    inputs = MarketInputs(bars=bars, summary=make_summary(bars, +1.0, 0.95))
    flat = run(config(), inputs)
    assert flat.metrics["n_orders"] == 0
    fading = run(config(params=(("fade_long_gamma", True), ("revert_min", 0.01))), inputs)
    assert fading.metrics["n_trades"] > 0


@pytest.mark.parametrize("step, side", [(0.004, "long"), (-0.004, "short")])
def test_short_gamma_follows_the_move_in_its_direction(step, side):
    """A steady ramp in short gamma (flip 5% above): every lookback return exceeds
    momentum_min, so each trade follows the ramp, and the position's sign is the ramp's
    from the first fill to the end."""
    bars = flat_bars(40_000 * np.exp(step * np.arange(120)))
    inputs = MarketInputs(bars=bars, summary=make_summary(bars, -1.0, 1.05))
    params = (("lookback", 6), ("momentum_min", 0.01), ("max_hold", 1_000),
              ("stop_loss", 0.5))
    result = run(config(params=params, borrow=True, slippage_bps=0.0), inputs)
    # the first signal: the close of bar 6 (6-bar return 2.4% >= 1%); filled at bar 7's
    # open, recorded at bar 7's close (records are stamped at the bar close)
    filled = result.orders[result.orders["status"] == "completed"]
    assert filled["ts"].iloc[0] == bars["ts"].iloc[7] + pd.Timedelta("1h")
    position = result.equity["position"].to_numpy()
    assert (position[:7] == 0).all()
    held = position[7:]
    assert (np.sign(held) == np.sign(step)).all()
    assert set(result.trades["side"]) <= {side}


def test_long_gamma_fade_sells_at_the_call_wall_and_buys_at_the_put_wall():
    """Long gamma with fading on: close within wall_band below the call wall -> short;
    within wall_band above the put wall -> long (hand-made walls, flat price)."""
    bars = flat_bars(np.full(60, 40_000.0))
    summary = make_summary(bars, 1.0, 0.95)  # flip 5% below: long gamma
    summary["call_wall"] = np.where(np.arange(60) < 30, 40_100.0, 80_000.0)
    summary["put_wall"] = np.where(np.arange(60) < 30, 10_000.0, 39_900.0)
    params = (("fade_long_gamma", True), ("wall_band", 0.01), ("max_hold", 1_000),
              ("lookback", 3))
    result = run(config(params=params, borrow=True, slippage_bps=0.0),
                 MarketInputs(bars=bars, summary=summary))
    position = result.equity["position"].to_numpy()
    assert (position[5:30] < 0).all()  # at the call wall: short
    assert (position[32:] > 0).all()  # at the put wall: long


def test_a_window_shorter_than_the_look_back_is_refused_by_both_engines():
    from gammabt import sweep_engine
    from gammabt.run import prepare

    bars = make_bars(n=8)
    cfg = config(params=(("lookback", 12),))
    market = prepare(cfg, MarketInputs(bars=bars, summary=make_summary(bars, -1.0, 1.05)))
    for engine in (run, sweep_engine.replay):
        with pytest.raises(ConfigError, match="8 bars.*more than 12"):
            engine(cfg, market)
    # one bar more than the look-back is enough
    bars = make_bars(n=13)
    result = run(cfg, MarketInputs(bars=bars, summary=make_summary(bars, -1.0, 1.05)))
    assert len(result.equity) == 13


class _LongLook(GammaStrategy):
    """A strategy without per-bar rules whose indicator reads ``period`` bars back."""

    params = (("period", 20),)
    param_ranges = {"period": (1, 1000)}

    def __init__(self) -> None:
        super().__init__()
        self.move = bt.indicators.PercentChange(self.data.close, period=self.p.period)

    def next(self) -> None:
        self.go(1 if self.move[0] > 0 else 0)


def test_backtraders_index_error_on_a_short_window_is_explained():
    bars = make_bars(n=8)
    cfg = config(strategy=f"{__name__}:_LongLook")
    with pytest.raises(ConfigError, match="8 bars.*period=20"):
        run(cfg, MarketInputs(bars=bars))

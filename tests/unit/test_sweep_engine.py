"""The lean sweep engine against the full Backtrader run: same equity, same metrics."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import math
from dataclasses import dataclass
from typing import Any

import backtrader as bt
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gammabt import optimize as opt
from gammabt import sweep_engine as se
from gammabt.config import RunConfig
from gammabt.run import MarketInputs, PreparedMarket, prepare, run
from strategies.base import GammaStrategy
from strategies.gamma_flip import GammaFlip
from strategies.rules import SingleLegRules, percent_change, simple_moving_average
from tests.data.hand_made import make_bars

SMA = "bench.bench_optimize:SmaCross"


def switching_market(n: int = 900, seed: int = 5, vol: float = 0.01) -> PreparedMarket:
    """Hourly bars whose gamma regime flips every ~100 bars (both branches trade)."""
    bars = make_bars(n=n, seed=seed)
    bars["close"] = bars["close"] * np.exp(np.cumsum(np.random.default_rng(seed + 1)
                                                     .normal(0, vol, n)) * 0.3)
    bars["open"] = np.r_[bars["close"].iloc[0], bars["close"].to_numpy()[:-1]]
    bars["high"] = np.maximum(bars["open"], bars["close"]) * 1.002
    bars["low"] = np.minimum(bars["open"], bars["close"]) * 0.998
    close = bars["close"].to_numpy()
    regime = np.where(np.sin(np.arange(n) / 16) > 0, 1.0, -1.0)
    summary = pd.DataFrame({"ts": bars["ts"], "spot": close, "gex": regime * 1e8,
                            "gamma_flip": close * (1 - 0.02 * regime),
                            "call_wall": close * 1.005, "put_wall": close * 0.995,
                            "regime": regime, "n_contracts": 100})
    summary.loc[100:110, ["gex", "gamma_flip", "regime"]] = np.nan  # a stale stretch
    return prepare(RunConfig(strategy="gamma_flip", bars="unused.csv"),
                   MarketInputs(bars=bars, summary=summary))


@pytest.fixture(scope="module")
def market() -> PreparedMarket:
    return switching_market()


def assert_same(config: RunConfig, market: PreparedMarket) -> tuple[Any, Any]:
    """The lean replay equals the Backtrader run: equity per bar to 1e-9 relative, every
    scalar metric equal (or both NaN), the same returns, trades and order statuses."""
    ref = run(config, market)
    lean = se.replay(config, market)
    assert not isinstance(lean, se.Unsupported), lean.reason
    assert lean.digest == ref.digest
    pd.testing.assert_series_equal(lean.equity["ts"], ref.equity["ts"])
    for col in ("value", "cash", "position", "close"):
        np.testing.assert_allclose(lean.equity[col], ref.equity[col], rtol=1e-9, atol=0)
    for key, want in ref.metrics.items():
        got = lean.metrics[key]
        if isinstance(want, float) and math.isnan(want):
            assert isinstance(got, float) and math.isnan(got), key
        else:
            assert got == want, (key, got, want)
    pd.testing.assert_series_equal(lean.returns, ref.returns)
    np.testing.assert_array_equal(lean.trades["pnl_net"], ref.trades["pnl_net"])
    np.testing.assert_array_equal(lean.trades["bars"], ref.trades["bars"])
    assert lean.orders["status"].tolist() == ref.orders["status"].tolist()
    np.testing.assert_array_equal(lean.ledger["amount_usd"], ref.ledger["amount_usd"])
    assert lean.ledger["kind"].tolist() == ref.ledger["kind"].tolist()
    return ref, lean


FLIP_CASES = {
    "defaults": {},
    "momentum_only_long": {"allow_short": False, "lookback": 6, "momentum_min": 0.004},
    "fade_long_gamma": {"fade_long_gamma": True, "revert_min": 0.005, "wall_band": 0.01},
    "tight_stop": {"stop_loss": 0.003, "momentum_min": 0.002},
    "short_hold": {"max_hold": 3, "momentum_min": 0.002, "fade_long_gamma": True},
}


@pytest.mark.parametrize("name", list(FLIP_CASES))
@pytest.mark.parametrize("borrow", [True, False])
def test_gamma_flip_equals_backtrader(market, name, borrow) -> None:
    config = RunConfig(strategy="gamma_flip", bars="unused.csv", borrow=borrow,
                       params=tuple(FLIP_CASES[name].items()))
    ref, _ = assert_same(config, market)
    assert ref.metrics["n_trades"] > 0
    if not borrow and FLIP_CASES[name].get("allow_short", True):
        assert ref.metrics["n_rejected_broker"] > 0  # short sales refused and counted
    if borrow and name == "defaults":
        assert ref.metrics["borrow_paid_usd"] > 0


@pytest.mark.parametrize("costs", [
    {"commission_bps": 0.0, "slippage_bps": 0.0},
    {"commission_bps": 20.0, "slippage_bps": 50.0},  # slippage capped at high / low
    {"commission_bps": 5.0, "slippage_bps": 2.0, "percent": 40.0, "cash": 1234.5,
     "terms": (("spot", (("borrow_apr", 0.5),)),)},
])
def test_costs_sizes_and_borrow_terms(market, costs) -> None:
    config = RunConfig(strategy="gamma_flip", bars="unused.csv", borrow=True,
                       params=(("momentum_min", 0.002), ("fade_long_gamma", True)), **costs)
    assert_same(config, market)


def test_window_and_step_by_step_mode(market) -> None:
    config = RunConfig(strategy="gamma_flip", bars="unused.csv", borrow=True,
                       start="2024-01-05", end="2024-02-01", runonce=False, preload=False,
                       params=(("fade_long_gamma", True), ("momentum_min", 0.003)))
    assert_same(config, market)


def test_buy_and_hold_equals_backtrader(market) -> None:
    ref, _ = assert_same(RunConfig(strategy="buy_and_hold", bars="unused.csv"), market)
    assert ref.metrics["n_completed"] == 1


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), fast=st.integers(2, 15), slow=st.integers(16, 60),
       slippage=st.sampled_from([0.0, 2.0, 30.0]))
def test_sma_cross_equals_backtrader_on_random_markets(seed, fast, slow, slippage) -> None:
    market = switching_market(n=500, seed=seed, vol=0.02)
    config = RunConfig(strategy=SMA, bars="unused.csv", slippage_bps=slippage,
                       params=(("fast", fast), ("slow", slow)))
    assert_same(config, market)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), lookback=st.integers(1, 30),
       momentum_min=st.floats(0.0, 0.02), fade=st.booleans(), allow_short=st.booleans(),
       stop_loss=st.floats(0.001, 0.05), max_hold=st.integers(1, 60), borrow=st.booleans(),
       commission=st.sampled_from([0.0, 5.0, 25.0]),
       slippage=st.sampled_from([0.0, 2.0, 40.0]))
def test_gamma_flip_equals_backtrader_on_random_markets(seed, lookback, momentum_min, fade,
                                                         allow_short, stop_loss, max_hold,
                                                         borrow, commission, slippage) -> None:
    market = switching_market(n=400, seed=seed, vol=0.015)
    params = (("lookback", lookback), ("momentum_min", momentum_min),
              ("fade_long_gamma", fade), ("allow_short", allow_short),
              ("stop_loss", stop_loss), ("max_hold", max_hold))
    config = RunConfig(strategy="gamma_flip", bars="unused.csv", borrow=borrow,
                       commission_bps=commission, slippage_bps=slippage, params=params)
    assert_same(config, market)


@pytest.fixture(scope="module")
def simulated(tmp_path_factory) -> str:
    """A simulated market: spot, a perpetual with funding, dated futures, front."""
    from feeds.synthetic import simulate

    folder = tmp_path_factory.mktemp("sim") / "m"
    with contextlib.redirect_stdout(io.StringIO()):
        simulate("calm", days=12, seed=3).write(folder)
    return str(folder)


@pytest.mark.parametrize("instrument", ["spot", "perp"])
@pytest.mark.parametrize("params", [
    (("momentum_min", 0.002), ("fade_long_gamma", True)),
    (("momentum_min", 0.001), ("stop_loss", 0.002), ("max_hold", 5)),
])
def test_on_a_simulated_market_with_other_legs(simulated, instrument, params) -> None:
    """Spot beside a perpetual and futures, or the perpetual itself (fills on lifted
    cash, realized PnL on close, funding, margin on longs too)."""
    config = RunConfig(strategy="gamma_flip", market=simulated, borrow=True,
                       instrument=instrument, params=params)
    market = prepare(config)
    assert len(market.legs) > 2
    ref, _ = assert_same(config, market)
    assert ref.metrics["n_trades"] > 0
    if instrument == "perp":
        assert ref.metrics["funding_paid_usd"] > 0 and ref.metrics["funding_received_usd"] > 0
        assert ref.metrics["max_margin_usage"] > 0


def test_perp_liquidation_and_margin_refusals_fall_back(simulated, tmp_path) -> None:
    from feeds.synthetic import simulate

    with contextlib.redirect_stdout(io.StringIO()):
        simulate("basis_unwind", days=6, seed=3).write(tmp_path / "crash")
    # 9x long with a 9% maintenance rate through a crash: liquidated
    levered = (("perp", (("mmr", 0.09),)),)
    config = RunConfig(strategy="buy_and_hold", market=str(tmp_path / "crash"),
                       instrument="perp", percent=900.0, terms=levered)
    market = prepare(config)
    lean = se.replay(config, market)
    assert isinstance(lean, se.Unsupported) and "liquidation" in lean.reason
    assert run(config, market).metrics["n_liquidations"] >= 1
    # 9x in a calm market: no liquidation, replayed exactly
    calm = dataclasses.replace(config, market=simulated, strategy="gamma_flip",
                               params=(("momentum_min", 0.002),))
    calm_market = prepare(calm)
    assert_same(calm, calm_market)
    refused = dataclasses.replace(calm, percent=1000.0)  # margin + fee > equity
    assert isinstance(se.replay(refused, calm_market), se.Unsupported)
    assert run(refused, calm_market).metrics["n_rejected_margin"] > 0


# ----------------------------------------------------------------- the indicators

class Record(bt.Strategy):
    params = (("period", 5),)

    def __init__(self) -> None:
        self.pct = bt.indicators.PercentChange(self.data.close, period=self.p.period)
        self.sma = bt.indicators.SMA(self.data.close, period=self.p.period)
        self.rows: list[tuple[float, float]] = []

    def prenext(self) -> None:  # the lines are NaN while an indicator warms up
        self.rows.append((self.pct[0], self.sma[0]))

    def next(self) -> None:
        self.rows.append((self.pct[0], self.sma[0]))


@pytest.mark.parametrize("runonce", [True, False])
@pytest.mark.parametrize("period", [1, 7, 40])
def test_vectorized_indicators_equal_backtrader_bar_by_bar(runonce, period) -> None:
    bars = make_bars(n=300, seed=period).set_index("ts")
    cerebro = bt.Cerebro(stdstats=False, runonce=runonce)
    cerebro.adddata(bt.feeds.PandasData(dataname=bars.tz_localize(None)))
    cerebro.addstrategy(Record, period=period)
    [strat] = cerebro.run()
    got = np.array(strat.rows)
    close = bars["close"].to_numpy()
    np.testing.assert_array_equal(got[:, 0], percent_change(close, period))
    np.testing.assert_array_equal(got[:, 1], simple_moving_average(close, period))


# ------------------------------------------------- refusals: fall back, never guess

@dataclass(frozen=True)
class ShortRules(SingleLegRules):
    def decide(self, values: tuple[float, ...], direction: int, held: int | None,
               entry_price: float | None) -> int | None:
        return -1


class AlwaysShort(GammaStrategy):
    rules_class = ShortRules

    def next(self) -> None:
        self.go(-1)


def _rally_market() -> PreparedMarket:
    prices = 100.0 * np.exp(np.linspace(0, 1.5, 200))  # x4.5: a 3x short is liquidated
    bars = make_bars(n=200, seed=1)
    bars["close"] = prices
    bars["open"] = np.r_[prices[0], prices[:-1]]
    bars["high"] = np.maximum(bars["open"], bars["close"]) * 1.001
    bars["low"] = np.minimum(bars["open"], bars["close"]) * 0.999
    return prepare(RunConfig(strategy="buy_and_hold", bars="unused.csv"),
                   MarketInputs(bars=bars))


def test_a_liquidation_path_is_refused_and_falls_back() -> None:
    market = _rally_market()
    config = RunConfig(strategy="tests.unit.test_sweep_engine:AlwaysShort",
                       bars="unused.csv", borrow=True)
    lean = se.replay(config, market)
    assert isinstance(lean, se.Unsupported) and "liquidation" in lean.reason
    ref = run(config, market)
    assert ref.metrics["n_liquidations"] >= 1
    task = opt.make_task(config, 0, {}, market.input_hashes)
    out = opt.evaluate(task, market)
    assert out["engine"] == "backtrader" and "liquidation" in out["engine_note"]
    assert out["metrics"]["n_liquidations"] == ref.metrics["n_liquidations"]
    assert out["metrics"]["final_value"] == ref.metrics["final_value"]


def test_a_cash_refusal_falls_back_to_the_backtrader_result(market) -> None:
    config = RunConfig(strategy="gamma_flip", bars="unused.csv", percent=100.0,
                       params=(("momentum_min", 0.002),))
    assert isinstance(se.replay(config, market), se.Unsupported)
    ref = run(config, market)
    assert ref.metrics["n_rejected_margin"] > 0
    out = opt.evaluate(opt.make_task(config, 0, {}, market.input_hashes), market)
    assert out["engine"] == "backtrader"
    for key, want in ref.metrics.items():
        if key in out["metrics"] and not (isinstance(want, float) and math.isnan(want)):
            assert out["metrics"][key] == want, key
    np.testing.assert_array_equal(out["returns"], ref.returns.to_numpy())


def test_unsupported_configs_are_named() -> None:
    market = switching_market(n=200)
    no_rules = RunConfig(strategy="funding_carry", bars="unused.csv")
    why = se.static_check(no_rules, market)
    assert why is not None and "rules" in why.reason
    config = RunConfig(strategy="gamma_flip", bars="unused.csv")
    assert se.static_check(config, market) is None
    subclass = RunConfig(strategy="tests.unit.test_sweep_engine:LongerFlip", bars="unused.csv")
    assert se.static_check(subclass, market) is not None  # overrides are never assumed away
    task = opt.make_task(dataclasses.replace(config, params=(("lookback", 6),)), 0, {},
                         market.input_hashes, engine="backtrader")
    assert opt.evaluate(task, market)["engine"] == "backtrader"


class LongerFlip(GammaFlip):
    def next(self) -> None:
        if len(self) > 50:
            super().next()


def test_refuses_what_run_refuses(market) -> None:
    from plumbing.errors import ConfigError, DataError

    other = RunConfig(strategy="gamma_flip", bars="unused.csv", zscore_window=10)
    with pytest.raises(ConfigError, match="zscore_window"):
        run(other, market)
    with pytest.raises(ConfigError, match="zscore_window"):
        se.replay(other, market)
    empty = RunConfig(strategy="gamma_flip", bars="unused.csv", start="2030-01-01")
    with pytest.raises(DataError, match="fewer than two bars"):
        se.replay(empty, market)

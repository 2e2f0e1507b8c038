"""The liquidation-cascade strategy on hand-made perp markets with hand-computed PnL.

Markets are hourly bars whose open is the previous close (``flat_bars``), the perp
trading at the spot price, one gamma snapshot and one liquidation-line row per bar.
Orders decided at bar ``k``'s close fill at bar ``k + 1``'s open (= close ``k``), at
the perp's taker fee (5 bps), no slippage. Sizing: 95% of equity at the close.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from feeds.synthetic import simulate
from gammabt.config import RunConfig
from gammabt.run import MarketInputs, run
from plumbing.errors import ConfigError
from tests.data.hand_made import flat_bars
from tests.unit.test_account import assert_identity

CASH = 100_000.0
FEE = 5e-4  # taker, 5 bps
NAN = float("nan")


def config(**kw) -> RunConfig:
    params = kw.pop("params", {})
    kw.setdefault("slippage_bps", 0.0)
    kw.setdefault("commission_bps", 5.0)
    kw.setdefault("instrument", "perp")
    return RunConfig(strategy="liquidation_cascade", bars="unused.csv",
                     params=tuple(params.items()), **kw)


def market(prices, *, regime=-1.0, below=NAN, below_usd=NAN, above=NAN, above_usd=NAN,
           put_wall=30_000.0, call_wall=50_000.0, lines_from: int = 0,
           lines_to: int | None = None) -> MarketInputs:
    """Bars at ``prices`` for spot and perp; gamma lines from a snapshot at every bar's
    open; liquidation lines (constant values) on bars ``lines_from .. lines_to - 1``,
    NaN elsewhere."""
    bars = flat_bars(prices)
    n = len(bars)
    summary = pd.DataFrame({"ts": bars["ts"], "gex": regime * 1e8, "gamma_flip": 45_000.0,
                            "call_wall": call_wall, "put_wall": put_wall, "regime": regime})
    on = np.zeros(n, dtype=bool)
    on[lines_from:lines_to] = True
    liq = pd.DataFrame({"ts": bars["ts"]})
    for name, value in (("liq_below", below), ("liq_below_usd", below_usd),
                        ("liq_above", above), ("liq_above_usd", above_usd)):
        liq[name] = np.where(on, value, np.nan)
    return MarketInputs(bars=bars, perp=bars.copy(), summary=summary, liq_lines=liq)


def fills(result) -> pd.DataFrame:
    return result.ledger[result.ledger["kind"] == "fill"].reset_index(drop=True)


def bar_close(bars_index: int) -> pd.Timestamp:
    """Close time of bar ``bars_index`` of a market starting 2024-01-01 00:00."""
    return pd.Timestamp("2024-01-01", tz="UTC") + pd.Timedelta(hours=bars_index + 1)


# bars 0-4 at 40,000, then a fall through the 39,000 cluster (low 38,900 at bar 8)
FALL = [40_000.0] * 5 + [39_800.0, 39_500.0, 39_200.0, 38_900.0, 38_900.0, 38_900.0,
                         38_900.0]
# the mirror: a squeeze up through the 41,000 cluster (high 41,100 at bar 8)
RISE = [40_000.0] * 5 + [40_200.0, 40_500.0, 40_800.0, 41_100.0, 41_100.0, 41_100.0,
                         41_100.0]


def test_short_ahead_of_the_long_cluster_takes_profit_through_it():
    inputs = market(FALL, below=39_000.0, below_usd=5e6, lines_from=3, lines_to=9)
    result = run(config(), inputs)
    rows = fills(result)
    # decided at bar 3's close (first bar with lines: 1 - 39,000/40,000 = 2.5% <= 3%),
    # filled at bar 4's open; bar 8's low (38,900) trades through 39,000: out at bar 9
    qty = CASH * 0.95 / 40_000.0
    assert list(rows["ts"]) == [bar_close(4), bar_close(9)]
    np.testing.assert_allclose(rows["qty"], [-qty, qty], rtol=1e-12)
    np.testing.assert_allclose(rows["price"], [40_000.0, 38_900.0], rtol=0)
    fees = FEE * qty * (40_000.0 + 38_900.0)
    expected = CASH + qty * (40_000.0 - 38_900.0) - fees
    assert result.metrics["final_value"] == pytest.approx(expected, abs=1e-6)
    assert result.metrics["fees_paid_usd"] == pytest.approx(fees, abs=1e-9)
    assert result.metrics["pnl_by_instrument"]["perp"] == pytest.approx(expected - CASH,
                                                                        abs=1e-6)
    assert_identity(result, CASH)


def test_a_nearer_put_wall_takes_profit_first():
    # lines on bars 3-4 only: no new short after the exit at bar 7
    inputs = market(FALL, below=39_000.0, below_usd=5e6, put_wall=39_500.0,
                    lines_from=3, lines_to=5)
    result = run(config(), inputs)
    rows = fills(result)
    # the wall (39,500) lies between price and the cluster: bar 6 trades at it
    assert list(rows["ts"]) == [bar_close(4), bar_close(7)]
    np.testing.assert_allclose(rows["price"], [40_000.0, 39_500.0], rtol=0)
    qty = CASH * 0.95 / 40_000.0
    expected = CASH + qty * 500.0 - FEE * qty * (40_000.0 + 39_500.0)
    assert result.metrics["final_value"] == pytest.approx(expected, abs=1e-6)
    # with walls disabled the cluster is the target again
    no_walls = run(config(params={"use_walls": False}), inputs)
    assert list(fills(no_walls)["ts"]) == [bar_close(4), bar_close(9)]
    assert_identity(result, CASH)


@pytest.mark.parametrize("call_wall,exit_bar,exit_price", [(50_000.0, 9, 41_100.0),
                                                           (40_500.0, 7, 40_500.0)])
def test_mirror_goes_long_ahead_of_a_short_squeeze(call_wall, exit_bar, exit_price):
    inputs = market(RISE, above=41_000.0, above_usd=5e6, call_wall=call_wall,
                    lines_from=3, lines_to=5)
    result = run(config(), inputs)
    rows = fills(result)
    qty = CASH * 0.95 / 40_000.0
    assert list(rows["ts"]) == [bar_close(4), bar_close(exit_bar)]
    np.testing.assert_allclose(rows["qty"], [qty, -qty], rtol=1e-12)
    np.testing.assert_allclose(rows["price"], [40_000.0, exit_price], rtol=0)
    expected = (CASH + qty * (exit_price - 40_000.0)
                - FEE * qty * (40_000.0 + exit_price))
    assert result.metrics["final_value"] == pytest.approx(expected, abs=1e-6)
    assert_identity(result, CASH)
    off = run(config(params={"mirror": False}), inputs)
    assert off.ledger.empty and off.metrics["n_orders"] == 0


def test_short_is_stopped_when_price_rises_stop_above_entry():
    prices = [40_000.0] * 5 + [40_300.0, 40_700.0, 40_900.0, 41_000.0, 41_000.0]
    inputs = market(prices, below=39_000.0, below_usd=5e6, lines_from=3, lines_to=5)
    result = run(config(params={"stop": 0.02}), inputs)
    rows = fills(result)
    # entry 40,000; bar 7 closes at 40,900 >= 40,000 * 1.02: out at bar 8's open
    assert list(rows["ts"]) == [bar_close(4), bar_close(8)]
    np.testing.assert_allclose(rows["price"], [40_000.0, 40_900.0], rtol=0)
    qty = CASH * 0.95 / 40_000.0
    expected = CASH - qty * 900.0 - FEE * qty * (40_000.0 + 40_900.0)
    assert result.metrics["final_value"] == pytest.approx(expected, abs=1e-6)
    assert_identity(result, CASH)


def test_long_is_stopped_below_entry():
    prices = [40_000.0] * 5 + [39_700.0, 39_300.0, 39_000.0, 39_000.0]
    inputs = market(prices, above=41_000.0, above_usd=5e6, lines_from=3, lines_to=5)
    result = run(config(params={"stop": 0.02}), inputs)
    rows = fills(result)
    # 39,000 <= 40,000 * (1 - 0.02) at bar 7: out at bar 8's open
    assert list(rows["ts"]) == [bar_close(4), bar_close(8)]
    np.testing.assert_allclose(rows["price"], [40_000.0, 39_000.0], rtol=0)
    qty = CASH * 0.95 / 40_000.0
    expected = CASH - qty * 1_000.0 - FEE * qty * (40_000.0 + 39_000.0)
    assert result.metrics["final_value"] == pytest.approx(expected, abs=1e-6)


def test_time_stop_after_max_hold_bars_then_a_new_entry():
    inputs = market([40_000.0] * 12, below=39_000.0, below_usd=5e6, lines_from=3)
    result = run(config(params={"max_hold": 5}), inputs)
    rows = fills(result)
    # decided at bar 3, out 5 bars later (decided at bar 8, filled at bar 9); the
    # cluster is still there, so a new short is decided at bar 9 and filled at bar 10
    assert list(rows["ts"]) == [bar_close(4), bar_close(9), bar_close(10)]
    q1 = CASH * 0.95 / 40_000.0
    value_at_9 = CASH - 2 * FEE * q1 * 40_000.0  # flat prices: only the fees
    q2 = value_at_9 * 0.95 / 40_000.0
    np.testing.assert_allclose(rows["qty"], [-q1, q1, -q2], rtol=1e-12)
    expected = value_at_9 - FEE * q2 * 40_000.0
    assert result.metrics["final_value"] == pytest.approx(expected, abs=1e-6)
    assert_identity(result, CASH)


def test_larger_cluster_wins_when_both_sides_qualify():
    inputs = market(FALL, below=39_000.0, below_usd=5e6, above=41_000.0, above_usd=3e6,
                    lines_from=3, lines_to=4)
    rows = fills(run(config(), inputs))
    assert rows["qty"].iloc[0] < 0  # the long-liquidation cluster is larger: short
    tie = market(FALL, below=39_000.0, below_usd=5e6, above=41_000.0, above_usd=5e6,
                 lines_from=3, lines_to=4)
    assert run(config(), tie).ledger.empty


@pytest.mark.parametrize("case", ["no_gamma", "long_gamma", "no_liq_lines", "nan_usd",
                                  "small_cluster", "far_cluster"])
def test_stays_flat_without_a_qualifying_setup(case):
    kw = {"below": 39_000.0, "below_usd": 5e6, "lines_from": 3}
    if case == "no_gamma":
        inputs = market(FALL, **kw)
        inputs = MarketInputs(bars=inputs.bars, perp=inputs.perp, liq_lines=inputs.liq_lines)
    elif case == "long_gamma":
        inputs = market(FALL, regime=1.0, **kw)
    elif case == "no_liq_lines":
        inputs = market(FALL, below=39_000.0, below_usd=5e6, lines_from=0, lines_to=0)
    elif case == "nan_usd":
        inputs = market(FALL, below=39_000.0, below_usd=NAN, lines_from=3)
    elif case == "small_cluster":
        inputs = market(FALL, below=39_000.0, below_usd=1e6, lines_from=3)
    else:  # 5% below: outside the 3% band
        inputs = market(FALL, below=38_000.0, below_usd=5e6, lines_from=3, lines_to=5)
    result = run(config(), inputs)
    assert result.metrics["n_orders"] == 0
    assert result.equity["value"].eq(CASH).all()


def test_open_trade_is_managed_by_price_when_the_lines_turn_nan():
    # lines only on bar 3: the trade is still taken out through the cluster at bar 8
    inputs = market(FALL, below=39_000.0, below_usd=5e6, lines_from=3, lines_to=4)
    rows = fills(run(config(), inputs))
    assert list(rows["ts"]) == [bar_close(4), bar_close(9)]


def test_trades_the_perp_whatever_the_instrument():
    inputs = market(FALL, below=39_000.0, below_usd=5e6, lines_from=3, lines_to=9)
    result = run(config(instrument="spot"), inputs)
    assert set(fills(result)["instrument"]) == {"perp"}
    assert result.metrics["final_value"] == pytest.approx(
        run(config(), inputs).metrics["final_value"], abs=1e-9)


def test_a_run_without_perp_prices_is_refused():
    inputs = market(FALL, below=39_000.0, below_usd=5e6, lines_from=3)
    with pytest.raises(ConfigError, match="perpetual"):
        run(config(instrument="spot"), MarketInputs(bars=inputs.bars, summary=inputs.summary,
                                                    liq_lines=inputs.liq_lines))


@pytest.mark.parametrize("name,value", [("band", 0.0), ("band", 1.5), ("stop", 0.0),
                                        ("stop", 2.0), ("max_hold", 0),
                                        ("min_cluster_usd", -1.0), ("max_hold", 2.5)])
def test_out_of_range_params_are_refused(name, value):
    with pytest.raises(ConfigError, match=name):
        config(params={name: value})


@pytest.mark.parametrize("runonce,preload", [(True, True), (False, True), (False, False)])
def test_same_result_in_every_run_mode(runonce, preload):
    inputs = market(FALL + RISE, below=39_000.0, below_usd=5e6, lines_from=3, lines_to=9)
    reference = run(config(params={"max_hold": 6}), inputs)
    again = run(config(params={"max_hold": 6}, runonce=runonce, preload=preload), inputs)
    assert len(fills(reference)) >= 2
    pd.testing.assert_frame_equal(reference.ledger, again.ledger)
    pd.testing.assert_frame_equal(reference.equity, again.equity)


def test_simulated_squeeze_runs_with_the_ledger_identity(tmp_path: Path):
    path = tmp_path / "squeeze"
    simulate("gamma_squeeze_down", days=10, seed=1, n_options=200).write(path)
    result = run(RunConfig(strategy="liquidation_cascade", market=str(path),
                           instrument="perp"))
    rows = fills(result)
    assert len(rows) >= 2 and set(rows["instrument"]) == {"perp"}
    assert result.metrics["n_rejected"] == 0
    assert_identity(result, CASH)

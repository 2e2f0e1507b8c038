"""The vol_shock strategy on hand-made perp markets with hand-computed PnL.

Hourly bars whose open is the previous close (``flat_bars``), the perp at the spot
price, one chain summary per bar (stamped 30 minutes into it, so bar ``k`` sees
value ``k``) carrying ``atm_iv`` and
``vanna``. Orders decided at bar ``k``'s close fill at bar ``k + 1``'s open (= close
``k``) at the perp's taker fee (5 bps), no slippage; size 95% of equity at the close.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gammabt.config import RunConfig
from gammabt.run import MarketInputs, run
from plumbing.errors import ConfigError
from strategies.registry import STRATEGIES
from tests.data.hand_made import flat_bars
from tests.unit.test_account import assert_identity

CASH = 100_000.0
FEE = 5e-4
FALL = [40_000.0] * 7 + [39_800.0, 39_500.0, 39_200.0, 38_900.0, 38_900.0, 38_900.0]
JUMP = [0.5] * 5 + [0.6] * 8  # +10 vol points at bar 5, no retracement
QTY = CASH * 0.95 / 40_000.0


def config(**params) -> RunConfig:
    params.setdefault("lookback", 4)
    return RunConfig(strategy="vol_shock", bars="unused.csv", instrument="perp",
                     slippage_bps=0.0, commission_bps=5.0, params=tuple(params.items()))


def market(prices, iv, *, vanna=5e7, put_wall=30_000.0, dist=None) -> MarketInputs:
    bars = flat_bars(prices)
    summary = pd.DataFrame({"ts": bars["ts"] + pd.Timedelta("30min"), "gex": -1e8, "gamma_flip": 45_000.0,
                            "call_wall": 50_000.0, "put_wall": put_wall, "regime": -1.0,
                            "vanna": vanna, "atm_iv": iv})
    barrier_lines = None
    if dist is not None:
        barrier_lines = pd.DataFrame({"ts": bars["ts"], "dist_to_barrier": dist})
    return MarketInputs(bars=bars, perp=bars.copy(), summary=summary,
                        barrier_lines=barrier_lines)


def fills(result) -> pd.DataFrame:
    return result.ledger[result.ledger["kind"] == "fill"].reset_index(drop=True)


def bar_close(i: int) -> pd.Timestamp:
    return pd.Timestamp("2024-01-01", tz="UTC") + pd.Timedelta(hours=i + 1)


def check(result, exit_bar: int, exit_price: float) -> None:
    rows = fills(result)
    assert list(rows["ts"]) == [bar_close(6), bar_close(exit_bar)]
    np.testing.assert_allclose(rows["qty"], [-QTY, QTY], rtol=1e-12)
    np.testing.assert_allclose(rows["price"], [40_000.0, exit_price], rtol=0)
    expected = CASH + QTY * (40_000.0 - exit_price) - FEE * QTY * (40_000.0 + exit_price)
    assert result.metrics["final_value"] == pytest.approx(expected, abs=1e-6)
    assert_identity(result, CASH)


def test_short_on_the_jump_out_when_iv_retraces_half() -> None:
    # decided at bar 5 (0.6 - mean(0.5 x 4) = 0.1 >= 0.05), filled at bar 6's open;
    # bar 8's IV 0.54 <= 0.5 + 0.5 * 0.1: out at bar 9's open (bar 8's close, 39,500)
    iv = [0.5] * 5 + [0.6, 0.6, 0.58, 0.54, 0.54, 0.54, 0.54, 0.54]
    check(run(config(), market(FALL, iv)), 9, 39_500.0)


def test_take_profit_at_the_put_wall() -> None:
    # IV stays up; bar 10 trades down to 38,900 through the 39,000 wall
    check(run(config(), market(FALL, JUMP, put_wall=39_000.0)), 11, 38_900.0)


def test_a_nearer_barrier_takes_profit_first() -> None:
    # nearest live barrier 39,600 (dist = 40,000 / 39,600 - 1): bar 8's low 39,500
    dist = np.full(len(FALL), 40_000.0 / 39_600.0 - 1.0)
    check(run(config(), market(FALL, JUMP, put_wall=39_000.0, dist=dist)), 9, 39_500.0)


def test_stop_above_entry() -> None:
    prices = [40_000.0] * 7 + [40_500.0, 41_000.0, 41_300.0, 41_300.0, 41_300.0]
    # bar 9 closes at 41,300 >= 40,000 * 1.03: out at bar 10's open
    check(run(config(stop=0.03), market(prices, JUMP[:12])), 10, 41_300.0)


def test_no_trade_without_dealer_vanna_selling_or_a_jump() -> None:
    long_puts = run(config(), market(FALL, JUMP, vanna=-5e7))
    assert long_puts.ledger.empty and long_puts.metrics["n_orders"] == 0
    small = run(config(iv_jump=0.15), market(FALL, JUMP))
    assert small.ledger.empty
    no_iv = run(config(), market(FALL, [np.nan] * len(FALL)))
    assert no_iv.ledger.empty


def test_registered_with_ranges_and_refuses_a_run_without_perp() -> None:
    assert STRATEGIES["vol_shock"].__name__ == "VolShock"
    inputs = market(FALL, JUMP)
    no_perp = MarketInputs(bars=inputs.bars, summary=inputs.summary)
    with pytest.raises(ConfigError):
        run(config().replace(instrument="spot"), no_perp)

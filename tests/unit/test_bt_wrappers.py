"""The Backtrader wrappers give the pure functions' numbers in every run mode."""

from __future__ import annotations

import backtrader as bt
import numpy as np
import pandas as pd
import pytest

from indicators.basis import funding_apr, rolling_zscore
from indicators.bt import FundingAPR, LiquidationPrice, ZScore
from indicators.liquidation import liquidation_price
from plumbing.errors import ConfigError


def _frame(n: int = 120, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = 30_000 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    idx = pd.date_range("2024-01-01", periods=n, freq="1h")
    return pd.DataFrame({"open": close, "high": close * 1.001, "low": close * 0.999,
                         "close": close, "volume": 1.0}, index=idx)


class Record(bt.Strategy):
    def __init__(self) -> None:
        self.z = ZScore(self.data.close, period=10)
        self.apr = FundingAPR(self.data.close)
        self.liq = LiquidationPrice(self.data.close, leverage=10, side="short")
        self.rows: list[tuple[float, float, float]] = []

    def prenext(self) -> None:
        self.rows.append((np.nan, self.apr[0], self.liq[0]))

    def next(self) -> None:
        self.rows.append((self.z[0], self.apr[0], self.liq[0]))


def _run(frame: pd.DataFrame, runonce: bool, preload: bool) -> np.ndarray:
    cerebro = bt.Cerebro(stdstats=False, runonce=runonce, preload=preload)
    cerebro.adddata(bt.feeds.PandasData(dataname=frame))
    cerebro.addstrategy(Record)
    return np.array(cerebro.run()[0].rows)


@pytest.mark.parametrize("runonce,preload", [(True, True), (False, True), (False, False)])
def test_wrappers_match_pure_functions(runonce, preload):
    frame = _frame()
    rows = _run(frame, runonce, preload)
    close = frame["close"].to_numpy()
    np.testing.assert_allclose(rows[:, 0], rolling_zscore(close, 10), rtol=1e-12,
                               equal_nan=True)
    np.testing.assert_allclose(rows[:, 1], funding_apr(close), rtol=1e-12)
    np.testing.assert_allclose(rows[:, 2], liquidation_price(close, 10, "short"), rtol=1e-12)


def test_bad_wrapper_parameters_fail_before_the_run():
    class Bad(bt.Strategy):
        def __init__(self) -> None:
            LiquidationPrice(self.data.close, leverage=0.5)

    cerebro = bt.Cerebro()
    cerebro.adddata(bt.feeds.PandasData(dataname=_frame()))
    cerebro.addstrategy(Bad)
    with pytest.raises(ConfigError):
        cerebro.run()

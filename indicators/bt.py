"""Thin Backtrader wrappers over the pure analytics (the only backtrader import here).

Each wrapper computes with the same pure function the feed's precomputation and the
tests use, so a strategy building its own indicator gets identical numbers.
"""

from __future__ import annotations

import backtrader as bt
import numpy as np

from indicators.basis import funding_apr, rolling_zscore
from indicators.liquidation import liquidation_price


class ZScore(bt.Indicator):
    """Point-in-time z-score of a line against its previous ``period`` values.

    Formula::

        z_t = (x_t - mean(x_{t-period} .. x_{t-1})) / std(x_{t-period} .. x_{t-1})  (ddof=1)

    Wraps :func:`indicators.basis.rolling_zscore`; NaN while warming up or when the
    past window is flat. Use it on ``basis_ann`` to react to a basis dislocation.
    """

    lines = ("z",)
    params = (("period", 30),)

    def __init__(self) -> None:
        self.addminperiod(self.p.period + 1)

    def next(self) -> None:
        window = np.asarray(self.data.get(size=self.p.period + 1), dtype="float64")
        self.lines.z[0] = float(rolling_zscore(window, self.p.period)[-1])

    def once(self, start: int, end: int) -> None:
        values = np.asarray(self.data.array[:end], dtype="float64")
        z = rolling_zscore(values, self.p.period)
        out = self.lines.z.array
        for i in range(start, end):
            out[i] = z[i]


class FundingAPR(bt.Indicator):
    """Annualized funding from a per-8h funding-rate line.

    Formula::

        apr = rate_8h * 3 * 365
    """

    lines = ("apr",)

    def next(self) -> None:
        self.lines.apr[0] = float(funding_apr(self.data[0]))

    def once(self, start: int, end: int) -> None:
        src, out = self.data.array, self.lines.apr.array
        for i in range(start, end):
            out[i] = float(funding_apr(src[i]))


class LiquidationPrice(bt.Indicator):
    """Liquidation price of a position opened at the data's close with ``leverage``.

    Formula (linear, isolated margin, maintenance rate ``mmr``)::

        long  = EP * (1 - 1/L) / (1 - mmr)
        short = EP * (1 + 1/L) / (1 + mmr)

    Wraps :func:`indicators.liquidation.liquidation_price` (``contract`` may be
    ``"inverse"``), e.g. to place a stop just beyond where 25x longs opened now die.
    """

    lines = ("price",)
    params = (("leverage", 25.0), ("side", "long"), ("mmr", 0.005), ("contract", "linear"))

    def __init__(self) -> None:
        # validate once, with the user's parameters, before the run starts
        liquidation_price(1.0, self.p.leverage, self.p.side, mmr=self.p.mmr,
                          contract=self.p.contract)

    def next(self) -> None:
        self.lines.price[0] = float(liquidation_price(
            self.data[0], self.p.leverage, self.p.side, mmr=self.p.mmr,
            contract=self.p.contract))

    def once(self, start: int, end: int) -> None:
        src = np.asarray(self.data.array[start:end], dtype="float64")
        prices = liquidation_price(src, self.p.leverage, self.p.side, mmr=self.p.mmr,
                                   contract=self.p.contract)
        out = self.lines.price.array
        for offset, value in enumerate(np.atleast_1d(prices)):
            out[start + offset] = float(value)

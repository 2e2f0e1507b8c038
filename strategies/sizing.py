"""Sizing and costs for crypto: fractional BTC sizes, percent-of-equity positions."""

from __future__ import annotations

import backtrader as bt


class PercentOfEquity(bt.Sizer):
    """Size a new position at ``percent`` of current portfolio value, in fractional units.

    Formula::

        size = broker_value * percent / 100 / close

    Backtrader's stock sizers round to whole units; a 0.37 BTC position must stay 0.37.
    """

    params = (("percent", 95.0),)

    def _getsizing(self, comminfo, cash, data, isbuy):
        value = self.broker.getvalue()
        price = data.close[0]
        if price <= 0 or value <= 0:
            return 0.0
        return value * self.p.percent / 100.0 / price


class FractionalCommission(bt.CommInfoBase):
    """Percentage commission on notional (``commission`` is a fraction: 5 bps = 0.0005),
    stock-like (cash settles the notional), fractional sizes allowed."""

    params = (
        ("stocklike", True),
        ("commtype", bt.CommInfoBase.COMM_PERC),
        ("percabs", True),
    )

    def getsize(self, price: float, cash: float) -> float:
        return self.p.leverage * (cash / price)

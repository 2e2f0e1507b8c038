"""Sizing for crypto: fractional BTC sizes, percent-of-equity positions (fees and
margin live in ``gammabt.broker``)."""

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
        if not (price > 0 and value > 0):  # also a leg with no price yet (NaN)
            return 0.0
        return value * self.p.percent / 100.0 / price

"""What every gammabt strategy shares: order bookkeeping and a flat/long/short helper.

Strategies only say *which direction* they want; the sizer wired by the run (percent
of equity, fractional BTC) decides *how much*. Orders rejected by the broker
(margin, cash) are counted and never silently dropped: the run reports them.
"""

from __future__ import annotations

import math
from typing import ClassVar

import backtrader as bt

from strategies.params import ParamRange


class GammaStrategy(bt.Strategy):
    """Base class: target a direction (-1, 0, +1) and let the sizer size it.

    Subclasses declare Backtrader ``params`` and, as plain class data, the allowed
    range of each numeric or string parameter in ``param_ranges`` (inclusive bounds
    ``(low, high)`` or a tuple of string choices; see :mod:`strategies.params`).
    """

    param_ranges: ClassVar[dict[str, ParamRange]] = {}

    def __init__(self) -> None:
        self.pending: bt.Order | None = None
        self.rejected: dict[str, int] = {"margin": 0, "rejected": 0}
        self.entry_bar: int | None = None

    def notify_order(self, order: bt.Order) -> None:
        if order.status in (order.Submitted, order.Accepted):
            return
        if order.status == order.Margin:
            self.rejected["margin"] += 1
        elif order.status == order.Rejected:
            self.rejected["rejected"] += 1
        # the broker notifies with clones of the order: compare references, not identity
        if self.pending is not None and order.ref == self.pending.ref:
            self.pending = None

    def direction(self) -> int:
        """Sign of the current position of the first data: -1, 0 or +1."""
        size = self.position.size
        return 0 if abs(size) < 1e-12 else (1 if size > 0 else -1)

    def go(self, target: int) -> None:
        """Move the position of the first data toward ``target`` (-1, 0, +1)."""
        if self.pending is not None:
            return
        current = self.direction()
        if target == current:
            return
        if current != 0:
            self.pending = self.close()
            self.entry_bar = None
            if target != 0:
                return  # reverse on a later bar, once the close has filled
        if target > 0:
            self.pending = self.buy()
        elif target < 0:
            self.pending = self.sell()
        self.entry_bar = len(self)


def finite(*values: float) -> bool:
    """True when every value is a finite number (gamma lines are NaN when stale)."""
    return all(not math.isnan(v) and not math.isinf(v) for v in values)

"""What every gammabt strategy shares: order bookkeeping, a flat/long/short helper for
the traded instrument, and per-leg targets for strategies that trade several.

Single-leg strategies only say *which direction* they want (:meth:`GammaStrategy.go`
on the first feed, the run's ``instrument``); the sizer wired by the run (percent of
equity, fractional BTC) decides *how much*. Multi-leg strategies find their legs by
name (:meth:`GammaStrategy.leg`: ``spot``, ``perp``, ``front`` or a future's instrument
name such as ``BTC-27MAR26``; each feed's ``leg`` says its kind and expiry), size
them with :meth:`GammaStrategy.leg_size` and move each with
:meth:`GammaStrategy.target`. Orders refused by the broker (margin, cash, short spot
without borrowing, expired) are counted and never silently dropped: the run reports
them.
"""

from __future__ import annotations

from typing import ClassVar

import backtrader as bt

from plumbing.errors import ConfigError
from strategies.params import ParamRange
from strategies.rules import finite, go_order

__all__ = ["GammaStrategy", "finite"]


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
        self.leg_orders: dict[str, int] = {}  # feed name -> ref of its open order

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
        name = order.data._name
        if self.leg_orders.get(name) == order.ref:
            del self.leg_orders[name]

    # -- several legs ----------------------------------------------------------------

    def leg(self, name: str) -> bt.feed.DataBase | None:
        """The feed named ``name`` (``spot``, ``perp``, ``front``, a future), or None."""
        for data in self.datas:
            if data._name == name:
                return data
        return None

    def need_leg(self, name: str, why: str, fix: str) -> bt.feed.DataBase:
        """The feed named ``name``; a ConfigError saying ``why`` when the run has none.

        ``why`` completes "strategy <name> ..." (e.g. "trades the perpetual"); ``fix``
        says which input provides the leg.
        """
        data = self.leg(name)
        if data is None:
            label = type(self).__name__
            raise ConfigError(f"strategy {label} {why}, and this run has no {name} prices",
                              column=name, expected=f"{name} prices in the run's inputs",
                              fix=fix)
        return data

    def futures(self) -> list[bt.feed.DataBase]:
        """The dated-future feeds, nearest expiry first."""
        legs = [d for d in self.datas if getattr(d, "leg", None) is not None
                and d.leg.kind == "future"]
        return sorted(legs, key=lambda d: d.leg.expiry)

    def leg_size(self, data: bt.feed.DataBase) -> float:
        """BTC the run's sizer gives a position in ``data`` (percent of equity at its
        last close); 0 when the leg has no price yet."""
        size = self.getsizing(data=data)
        return size if finite(size) else 0.0

    def qty(self, data: bt.feed.DataBase) -> float:
        """Current position in ``data`` (BTC, signed)."""
        return self.getposition(data).size

    def busy(self, data: bt.feed.DataBase) -> bool:
        """True while an order on ``data`` waits to fill (or be refused)."""
        return data._name in self.leg_orders

    def target(self, data: bt.feed.DataBase, qty: float) -> None:
        """Move the position in ``data`` to ``qty`` BTC with a market order, unless an
        order on it is still open or the position is already there."""
        if self.busy(data) or abs(self.qty(data) - qty) < 1e-12:
            return
        order = self.order_target_size(data=data, target=qty)
        if order is not None:
            self.leg_orders[data._name] = order.ref

    def direction(self) -> int:
        """Sign of the current position of the first data: -1, 0 or +1."""
        size = self.position.size
        return 0 if abs(size) < 1e-12 else (1 if size > 0 else -1)

    def go(self, target: int) -> None:
        """Move the position of the first data toward ``target`` (-1, 0, +1); see
        :func:`strategies.rules.go_order` (a reversal closes first, opens later)."""
        if self.pending is not None:
            return
        step = go_order(target, self.direction())
        if step is None:
            return
        order, restart = step
        self.pending = self.close() if order == "close" else \
            self.buy() if order == "buy" else self.sell()
        self.entry_bar = len(self) if restart else None

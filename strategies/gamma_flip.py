"""Trade the gamma flip: momentum in short gamma, mean reversion in long gamma.

Below the flip dealers are short gamma: their hedges trade with the move, so moves
extend. Above it they are long gamma: hedges lean against moves and price tends to
pin between the walls. The strategy reads the feed's lines (``regime``,
``flip_dist``, ``call_wall``, ``put_wall``) and never anything stamped after the bar.

Rules (per bar, on the first data)
----------------------------------
- No gamma snapshot in force (NaN lines): flat.
- Short gamma (``regime < 0`` and ``flip_dist <= -flip_buffer``): follow the
  ``lookback``-bar return if its absolute value exceeds ``momentum_min``
  (long if up; short if down and ``allow_short``).
- Long gamma (``regime > 0`` and ``flip_dist >= flip_buffer``): flat by default, since
  dealers damp moves there and a fade mostly pays costs. With ``fade_long_gamma`` it
  fades stretches: within ``wall_band`` below the call wall, or after a ``lookback``
  rise of more than ``revert_min``: short (or flat); within ``wall_band`` above the put
  wall, or after a fall of more than ``revert_min``: long.
- Exit after ``max_hold`` bars, on a ``stop_loss`` move against the entry, or when the
  regime that justified the trade is gone.
"""

from __future__ import annotations

import backtrader as bt

from strategies.base import GammaStrategy, finite


class GammaFlip(GammaStrategy):
    params = (
        ("lookback", 12),  # bars for the momentum / stretch measure
        ("momentum_min", 0.01),  # |return| over lookback to follow a move (fraction)
        ("fade_long_gamma", False),  # trade mean reversion above the flip
        ("revert_min", 0.02),  # |return| over lookback to fade a move (fraction)
        ("flip_buffer", 0.002),  # distance from the flip (fraction) before acting
        ("wall_band", 0.01),  # how close to a wall counts as "at the wall" (fraction)
        ("max_hold", 48),  # bars
        ("stop_loss", 0.03),  # adverse move from entry price (fraction)
        ("allow_short", True),
    )
    param_ranges = {
        "lookback": (1, 10_000),  # >= 1: PercentChange with a negative period reads ahead
        "momentum_min": (0.0, 1.0),
        "revert_min": (0.0, 1.0),
        "flip_buffer": (0.0, 1.0),
        "wall_band": (0.0, 1.0),
        "max_hold": (1, 1_000_000),
        "stop_loss": (0.0001, 1.0),  # 0 would exit on every bar not in profit
    }

    def __init__(self) -> None:
        super().__init__()
        d = self.datas[0]
        self.move = bt.indicators.PercentChange(d.close, period=self.p.lookback)
        self.entry_price: float | None = None

    def notify_order(self, order: bt.Order) -> None:
        super().notify_order(order)
        if order.status == order.Completed and self.direction() != 0:
            self.entry_price = order.executed.price

    def next(self) -> None:
        d = self.datas[0]
        regime, flip_dist = d.regime[0], d.flip_dist[0]
        if not finite(regime, flip_dist):
            self.go(0)
            return
        if self.direction() != 0 and self._should_exit(regime):
            self.go(0)
            return
        target = self._signal(regime, flip_dist)
        if target is not None:
            self.go(target)

    def _signal(self, regime: float, flip_dist: float) -> int | None:
        d, p = self.datas[0], self.p
        move = self.move[0]
        short_ok = -1 if p.allow_short else 0
        if regime < 0 and flip_dist <= -p.flip_buffer:
            if move >= p.momentum_min:
                return +1
            if move <= -p.momentum_min:
                return short_ok
            return None
        if regime > 0 and flip_dist >= p.flip_buffer:
            if not p.fade_long_gamma:
                return 0
            close, call_wall, put_wall = d.close[0], d.call_wall[0], d.put_wall[0]
            near_call = finite(call_wall) and 0 <= call_wall / close - 1 <= p.wall_band
            near_put = finite(put_wall) and 0 <= 1 - put_wall / close <= p.wall_band
            if near_call or move >= p.revert_min:
                return short_ok
            if near_put or move <= -p.revert_min:
                return +1
        return None

    def _should_exit(self, regime: float) -> bool:
        p = self.p
        if self.entry_bar is not None and len(self) - self.entry_bar >= p.max_hold:
            return True
        if self.entry_price:
            adverse = (self.datas[0].close[0] / self.entry_price - 1) * -self.direction()
            if adverse >= p.stop_loss:
                return True
        return False

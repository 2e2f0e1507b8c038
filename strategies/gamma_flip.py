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

from collections.abc import Mapping
from dataclasses import dataclass

import backtrader as bt
import numpy as np

from strategies.base import GammaStrategy
from strategies.rules import SingleLegRules, finite, percent_change


@dataclass(frozen=True)
class FlipRules(SingleLegRules):
    """The rules above as a pure per-bar decision (see :class:`SingleLegRules`)."""

    lookback: int
    momentum_min: float
    fade_long_gamma: bool
    revert_min: float
    flip_buffer: float
    wall_band: float
    max_hold: int
    stop_loss: float
    allow_short: bool

    inputs = ("regime", "flip_dist", "move", "close", "call_wall", "put_wall")

    @property
    def warmup(self) -> int:
        return self.lookback  # PercentChange needs lookback + 1 bars

    def indicators(self, lines: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"move": percent_change(lines["close"], self.lookback)}

    def decide(self, values: tuple[float, ...], direction: int, held: int | None,
               entry_price: float | None) -> int | None:
        regime, flip_dist, move, close, call_wall, put_wall = values
        if not finite(regime, flip_dist):
            return 0
        if direction != 0 and self._should_exit(close, direction, held, entry_price):
            return 0
        return self._signal(regime, flip_dist, move, close, call_wall, put_wall)

    def _signal(self, regime: float, flip_dist: float, move: float, close: float,
                call_wall: float, put_wall: float) -> int | None:
        short_ok = -1 if self.allow_short else 0
        if regime < 0 and flip_dist <= -self.flip_buffer:
            if move >= self.momentum_min:
                return +1
            if move <= -self.momentum_min:
                return short_ok
            return None
        if regime > 0 and flip_dist >= self.flip_buffer:
            if not self.fade_long_gamma:
                return 0
            near_call = finite(call_wall) and 0 <= call_wall / close - 1 <= self.wall_band
            near_put = finite(put_wall) and 0 <= 1 - put_wall / close <= self.wall_band
            if near_call or move >= self.revert_min:
                return short_ok
            if near_put or move <= -self.revert_min:
                return +1
        return None

    def _should_exit(self, close: float, direction: int, held: int | None,
                     entry_price: float | None) -> bool:
        if held is not None and held >= self.max_hold:
            return True
        if entry_price:
            adverse = (close / entry_price - 1) * -direction
            if adverse >= self.stop_loss:
                return True
        return False


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
    rules_class = FlipRules

    def __init__(self) -> None:
        super().__init__()
        d = self.datas[0]
        self.rules = FlipRules.from_params(self.p)
        self.move = bt.indicators.PercentChange(d.close, period=self.p.lookback)
        self.entry_price: float | None = None

    def notify_order(self, order: bt.Order) -> None:
        super().notify_order(order)
        if order.status == order.Completed and self.direction() != 0:
            self.entry_price = order.executed.price

    def next(self) -> None:
        d = self.datas[0]
        values = (d.regime[0], d.flip_dist[0], self.move[0], d.close[0], d.call_wall[0],
                  d.put_wall[0])
        held = None if self.entry_bar is None else len(self) - self.entry_bar
        target = self.rules.decide(values, self.direction(), held, self.entry_price)
        if target is not None:
            self.go(target)

"""Trade liquidation cascades on the perpetual when dealers are short gamma.

Why it can work (``../shared/DOMAIN.md`` section 1): leveraged perpetual positions are
force-closed near computable prices, and where many of them sit, crossing the level
turns them into market orders that push price into the next level (a cascade). When
option dealers are short gamma their delta hedges trade *with* the move, so the
push is amplified rather than absorbed. A large cluster of long liquidations a
short way below price, in short gamma, is fuel for a fall: short ahead of it and take
profit once price has traded through it. The mirror: a cluster of short liquidations
above price (a short squeeze) in short gamma: go long and take profit through it.

The strategy trades the feed named ``perp`` (whatever the run's ``instrument``; a run
without perpetual prices is refused at start) and reads that feed's lines: the perp's
own prices and the liquidation and gamma lines every leg carries. Decisions are taken
at a bar's close and fill at the next bar's open.

Rules (per bar)
---------------
- Entry, flat only, every line finite (NaN lines: no new trade):
  short gamma (``regime < 0``), and a long-liquidation cluster
  ``liq_below_usd >= min_cluster_usd`` at ``1 - liq_below / close <= band``: short.
  With ``mirror``: a short-liquidation cluster ``liq_above_usd >= min_cluster_usd`` at
  ``liq_above / close - 1 <= band``: long. When both qualify, the larger cluster (USD)
  wins; an exact tie trades nothing.
- Target, recorded at the entry decision: the cluster level, or with ``use_walls`` the
  put wall (short) / call wall (long) when it lies between price and the cluster
  (nearer); a NaN wall is ignored.
- Take profit: the bar trades at or through the target (``low <= target`` for a short,
  ``high >= target`` for a long).
- Stop: the close is ``stop`` (fraction) beyond the entry fill price against the
  position (closes, not wicks: a wick into the stop does not exit).
- Time stop: ``max_hold`` bars after the entry decision.
- Exits do not need the gamma or liquidation lines: an open trade is managed by price
  even when the lines turn NaN.

Sizing: ``leg_size(perp)``, the run's percent of equity at the perp's close.
"""

from __future__ import annotations

import math

import backtrader as bt

from strategies.base import GammaStrategy, finite


class LiquidationCascade(GammaStrategy):
    """Short ahead of long-liquidation clusters (long ahead of short ones) in short
    gamma, out through the cluster, on a stop or after ``max_hold`` bars."""

    params = (
        ("min_cluster_usd", 2e6),  # USD of liquidations at the nearest level to act on
        ("band", 0.03),  # how far the cluster may lie from the close (fraction)
        ("stop", 0.02),  # adverse close-to-entry move that exits (fraction)
        ("max_hold", 24),  # bars from the entry decision
        ("use_walls", True),  # take profit at the put / call wall when it is nearer
        ("mirror", True),  # also trade short squeezes (clusters above, long)
    )
    param_ranges = {
        "min_cluster_usd": (0.0, 1e13),
        "band": (0.0001, 1.0),
        "stop": (0.0001, 1.0),  # 0 would exit on every bar not in profit
        "max_hold": (1, 1_000_000),
    }

    def __init__(self) -> None:
        super().__init__()
        self.perp = self.need_leg("perp", "trades the perpetual",
                                  "pass --perp FILE, or run on a simulated market")
        self.side = 0  # side of the current or pending trade: -1, 0, +1
        self.take_at = math.nan  # take-profit level recorded at the entry decision
        self.entry_price = math.nan  # fill price of the entry

    def notify_order(self, order: bt.Order) -> None:
        super().notify_order(order)
        if (order.status == order.Completed and order.data._name == "perp"
                and abs(self.qty(self.perp)) > 1e-12):
            self.entry_price = order.executed.price

    def next(self) -> None:
        d = self.perp
        if self.busy(d):
            return
        if abs(self.qty(d)) > 1e-12:
            if self._should_exit():
                self.target(d, 0.0)
            return
        # flat with nothing open: a previous trade was closed, refused or liquidated
        self.side, self.take_at, self.entry_price, self.entry_bar = 0, math.nan, math.nan, None
        self._enter()

    def _enter(self) -> None:
        d, p = self.perp, self.p
        close, regime = d.close[0], d.regime[0]
        below, below_usd = d.liq_below[0], d.liq_below_usd[0]
        above, above_usd = d.liq_above[0], d.liq_above_usd[0]
        if not finite(close, regime) or close <= 0 or regime >= 0:
            return
        down = (finite(below, below_usd) and below_usd >= p.min_cluster_usd
                and 0 <= 1 - below / close <= p.band)
        up = (p.mirror and finite(above, above_usd) and above_usd >= p.min_cluster_usd
              and 0 <= above / close - 1 <= p.band)
        if down and up:
            if below_usd == above_usd:
                return
            down, up = below_usd > above_usd, above_usd > below_usd
        if down:
            side, level, wall = -1, below, d.put_wall[0]
            nearer = p.use_walls and finite(wall) and level < wall < close
        elif up:
            side, level, wall = +1, above, d.call_wall[0]
            nearer = p.use_walls and finite(wall) and close < wall < level
        else:
            return
        size = self.leg_size(d)
        if size <= 0:
            return
        self.side = side
        self.take_at = wall if nearer else level
        self.entry_bar = len(self)
        self.target(d, side * size)

    def _should_exit(self) -> bool:
        d, p = self.perp, self.p
        side = 1 if self.qty(d) > 0 else -1
        if side < 0 and d.low[0] <= self.take_at:
            return True
        if side > 0 and d.high[0] >= self.take_at:
            return True
        if self.entry_price > 0 and (d.close[0] / self.entry_price - 1) * -side >= p.stop:
            return True
        return self.entry_bar is not None and len(self) - self.entry_bar >= p.max_hold

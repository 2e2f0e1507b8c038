"""Short the perpetual into an implied-volatility shock when dealer vanna forces selling.

Why it can work (``../shared/DOMAIN.md`` sections 1 and 2): dealers who are short
out-of-the-money puts carry positive vanna exposure: when implied volatility rises,
those puts gain (negative) delta, the dealers' delta grows and they sell the underlying
to re-hedge, whatever spot did. On 2026-02-05 volatility spiked while dealers were short
puts between 64k and 71k; their vanna selling came on top of their short-gamma selling.
A sudden IV jump with a large positive dealer vanna exposure is therefore forced selling
still to come: short ahead of it, take profit at the put wall or the nearest knock-in
barrier (where hedging flows change), and leave once volatility has retraced.

The strategy trades the feed named ``perp`` (a run without perpetual prices is refused
at start) and reads its lines: ``atm_iv`` (the chain's ATM implied volatility),
``vanna_exp`` (dealer vanna exposure, USD of dealer delta change per +1 vol point),
``put_wall`` and ``dist_to_barrier``. Decisions are taken at a bar's close and fill at
the next bar's open.

Rules (per bar)
---------------
- Baseline: the mean ATM IV of the last ``lookback`` bars *before* this one that had a
  finite ``atm_iv`` (at least ``lookback // 2`` of them, else no baseline).
- Entry, flat only: ``atm_iv - baseline >= iv_jump`` (vol points as a fraction, 0.05 =
  5 points) and ``vanna_exp >= min_vanna_usd``: short.
- Target, recorded at the entry decision: the nearer (higher) below the close of the put
  wall and the nearest live barrier ``close / (1 + dist_to_barrier)``; NaN when neither.
- Exits: the bar trades at or through the target (``low <= target``); or volatility has
  mean-reverted, ``atm_iv <= baseline + revert * (iv_entry - baseline)`` (``revert``
  = 0.5: half the jump is gone); or the close is ``stop`` above the entry fill price;
  or ``max_hold`` bars after the entry decision. A NaN ``atm_iv`` does not exit.

Sizing: ``leg_size(perp)``, the run's percent of equity at the perp's close.
"""

from __future__ import annotations

import math
from collections import deque

import backtrader as bt

from strategies.base import GammaStrategy, finite


class VolShock(GammaStrategy):
    """Short the perp on an ATM IV jump with positive dealer vanna; out at the put wall
    or a barrier, when IV retraces, on a stop or after ``max_hold`` bars."""

    params = (
        ("lookback", 24),  # bars of ATM IV in the baseline
        ("iv_jump", 0.05),  # rise of ATM IV over the baseline that counts as a shock
        ("min_vanna_usd", 0.0),  # dealer vanna exposure needed (USD per vol point)
        ("revert", 0.5),  # share of the jump still left when IV counts as reverted
        ("stop", 0.03),  # adverse close-to-entry move that exits (fraction)
        ("max_hold", 48),  # bars from the entry decision
    )
    param_ranges = {
        "lookback": (2, 100_000),
        "iv_jump": (0.001, 5.0),
        "min_vanna_usd": (-1e15, 1e15),
        "revert": (0.0, 1.0),
        "stop": (0.0001, 1.0),
        "max_hold": (1, 1_000_000),
    }

    def __init__(self) -> None:
        super().__init__()
        self.perp = self.need_leg("perp", "trades the perpetual",
                                  "pass --perp FILE, or run on a simulated market")
        self.history: deque[float] = deque(maxlen=int(self.p.lookback))
        self._reset()

    def _reset(self) -> None:
        self.take_at = math.nan
        self.entry_price = math.nan
        self.iv_entry = math.nan
        self.base_entry = math.nan
        self.entry_bar: int | None = None

    def notify_order(self, order: bt.Order) -> None:
        super().notify_order(order)
        if (order.status == order.Completed and order.data._name == "perp"
                and abs(self.qty(self.perp)) > 1e-12):
            self.entry_price = order.executed.price

    def _baseline(self) -> float:
        if len(self.history) < max(1, self.p.lookback // 2):
            return math.nan
        return sum(self.history) / len(self.history)

    def next(self) -> None:
        d = self.perp
        iv = d.atm_iv[0]
        base = self._baseline()
        if finite(iv):
            self.history.append(iv)
        if self.busy(d):
            return
        if abs(self.qty(d)) > 1e-12:
            if self._should_exit(iv):
                self.target(d, 0.0)
            return
        self._reset()
        self._enter(iv, base)

    def _enter(self, iv: float, base: float) -> None:
        d, p = self.perp, self.p
        close, vanna = d.close[0], d.vanna_exp[0]
        if not finite(close, iv, base, vanna) or close <= 0:
            return
        if iv - base < p.iv_jump or vanna < p.min_vanna_usd:
            return
        size = self.leg_size(d)
        if size <= 0:
            return
        levels = [d.put_wall[0]]
        dist = d.dist_to_barrier[0]
        if finite(dist) and dist > -1:
            levels.append(close / (1.0 + dist))
        below = [x for x in levels if finite(x) and 0 < x < close]
        self.take_at = max(below) if below else math.nan
        self.iv_entry, self.base_entry = iv, base
        self.entry_bar = len(self)
        self.target(d, -size)

    def _should_exit(self, iv: float) -> bool:
        d, p = self.perp, self.p
        if finite(self.take_at) and d.low[0] <= self.take_at:
            return True
        if finite(iv) and iv <= self.base_entry + p.revert * (self.iv_entry - self.base_entry):
            return True
        if self.entry_price > 0 and d.close[0] / self.entry_price - 1 >= p.stop:
            return True
        return self.entry_bar is not None and len(self) - self.entry_bar >= p.max_hold

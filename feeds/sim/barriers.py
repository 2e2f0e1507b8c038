"""Dealers' book of single-barrier options (structured notes) inside the simulator.

Each scenario ``[[options.barriers]]`` item adds one position when its ``day`` comes:
strike ``moneyness * S`` and barrier ``barrier_moneyness * S`` at the spot ``S`` then,
expiry ``days`` later, ``notional_btc`` of underlying, dealers long (``dealer_side``
+1) or short (-1). Positions are priced with the closed forms of
:mod:`indicators.barrier` on spot (r = q = 0, no basis) at the short-dated ATM
implied volatility level of the step. The barrier is monitored on the intra-step price
path: the first step whose low (high for up barriers) reaches it knocks the option:
a knock-in is a vanilla from then on, a knock-out leaves the book. Expired positions
leave the book at the daily 08:00 roll.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.special import ndtr

from feeds.sim.calendar import US_PER_YEAR
from indicators.barrier import BARRIER_TYPES, barrier_greeks

_IN = np.array(["_in_" in t for t in BARRIER_TYPES])
_DOWN = np.array([t.startswith("down") for t in BARRIER_TYPES])
_CALL = np.array([t.endswith("call") for t in BARRIER_TYPES])
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


class BarrierBook:
    """Live barrier positions (vectorized) and the record of every position added."""

    def __init__(self) -> None:
        self.code = np.zeros(0, np.intp)
        self.K = np.zeros(0)
        self.H = np.zeros(0)
        self.lnH = np.zeros(0)
        self.exp_us = np.zeros(0, np.int64)
        self.N = np.zeros(0)  # dealer_side * notional, BTC
        self.knocked_in = np.zeros(0, bool)
        self.records: list[tuple[int, str, float, float, int, float, float]] = []

    @property
    def n(self) -> int:
        return int(self.K.size)

    def add(self, now_us: int, spot: float, item: dict[str, Any]) -> None:
        code = BARRIER_TYPES.index(item["type"])
        K = item["moneyness"] * spot
        H = item["barrier_moneyness"] * spot
        exp_us = now_us + round(item["days"] * 86_400e6)
        side, size = float(item["dealer_side"]), float(item["notional_btc"])
        self.records.append((now_us, item["type"], K, H, exp_us, size, side))
        down = _DOWN[code]
        if (spot <= H) if down else (spot >= H):  # already through: knocked at once
            if not _IN[code]:
                return
            knocked = True
        else:
            knocked = False
        self.code = np.r_[self.code, code]
        self.K = np.r_[self.K, K]
        self.H = np.r_[self.H, H]
        self.lnH = np.r_[self.lnH, math.log(H)]
        self.exp_us = np.r_[self.exp_us, exp_us]
        self.N = np.r_[self.N, side * size]
        self.knocked_in = np.r_[self.knocked_in, knocked]

    def _keep(self, keep: np.ndarray) -> None:
        for name in ("code", "K", "H", "lnH", "exp_us", "N", "knocked_in"):
            setattr(self, name, getattr(self, name)[keep])

    def expire(self, now_us: int) -> None:
        if self.n:
            self._keep(self.exp_us > now_us)

    def knock(self, ln_lo: float, ln_hi: float) -> bool:
        """Apply the step's range [ln_lo, ln_hi]; True when any position was knocked."""
        if not self.n:
            return False
        live = ~self.knocked_in
        hit = live & np.where(_DOWN[self.code], ln_lo <= self.lnH, ln_hi >= self.lnH)
        if not hit.any():
            return False
        is_in = _IN[self.code]
        self.knocked_in |= hit & is_in
        self._keep(~(hit & ~is_in))
        return True

    def greeks(self, spot: float, now_us: int, iv: float) -> tuple[float, float]:
        """Dealer delta (BTC) and gamma (BTC per USD) of the book at ``spot``."""
        if not self.n:
            return 0.0, 0.0
        T = np.maximum((self.exp_us - now_us) / US_PER_YEAR, 1.0 / (365.0 * 24.0 * 60.0))
        delta = np.empty(self.n)
        gamma = np.empty(self.n)
        v = self.knocked_in
        if v.any():  # vanillas: Black-76 on spot
            s = iv * np.sqrt(T[v])
            d1 = np.log(spot / self.K[v]) / s + 0.5 * s
            delta[v] = ndtr(d1) - np.where(_CALL[self.code[v]], 0.0, 1.0)
            gamma[v] = _INV_SQRT_2PI * np.exp(-0.5 * d1 * d1) / (spot * s)
        b = ~v
        if b.any():
            g = barrier_greeks(self.code[b], spot, self.K[b], self.H[b], T[b], iv)
            delta[b], gamma[b] = g.delta, g.gamma
        return float(self.N @ delta), float(self.N @ gamma)

"""Trade basis dislocations: cash-and-carry when the futures basis jumps, the mirror
when it collapses.

Rationale
---------
Leveraged basis traders hold long spot / short futures books. When they are forced
to de-lever (2026-02-05: CME near-month basis from 3.3% to 9% annualized as
multi-strategy funds unwound, DOMAIN.md section 1), they sell spot and buy back
futures at any price, and the annualized basis jumps far above its usual range. A
fresh cash-and-carry bought then (buy spot, sell the dated future in equal BTC) locks
in the wider premium, which converges to zero at expiry whatever the price does, and
usually reverts much sooner once the forced flow is over. The mirror trade (buy the
future, sell spot short) harvests a basis that collapses below its range; shorting
spot needs borrowing (``--borrow``), and without it the broker refuses the spot leg and
the strategy unwinds the other one.

Rules (per bar)
---------------
- Signal: ``signal="cm30"`` reads the feeds' ``basis_ann`` (30-day constant maturity)
  and ``basis_z`` (its rolling z-score) lines; ``signal="front"`` uses the ``front``
  series' own annualized basis ``(F / S - 1) * 365 / dte`` and its z-score over the
  previous ``window`` bars (the current value is compared with the bars before it).
- Enter the carry when the z-score is at least ``z_entry`` (or, with ``basis_entry >
  0``, the annualized basis is at least ``basis_entry``): buy ``q`` BTC of spot (the
  run's percent of equity) and sell ``q`` of the nearest expiry with at least
  ``entry_min_dte`` days left. With ``mirror``, at ``z <= -z_entry`` do the opposite.
- Unwind both legs when the z-score is back within ``z_exit`` of zero, when the
  combined PnL of the two legs falls below ``-stop_loss`` times the spot leg's entry
  notional, after ``max_hold`` bars (0 = no limit), or when the traded expiry has less
  than ``min_dte`` days left; with ``roll`` the future is instead rolled into the next
  expiry (spot kept) while the signal still holds.
- A leg that filled while its partner was refused (margin, short spot without
  borrowing) is unwound at once: the strategy never holds a naked leg on purpose, and
  does not try that side again until the basis has reverted.
- Orders on a sparse future (daily quotes) wait for its next quote.

The PnL of each leg is in the run's ``pnl_by_instrument`` metric and its ledger.
"""

from __future__ import annotations

import math
from collections import deque
from typing import ClassVar

import backtrader as bt

from plumbing.errors import ConfigError
from strategies.base import GammaStrategy, finite
from strategies.params import ParamRange


class BasisDislocation(GammaStrategy):
    params = (
        ("signal", "cm30"),  # cm30: basis_ann / basis_z lines; front: the front series
        ("window", 48),  # bars of front-basis history for its z-score (signal=front)
        ("z_entry", 2.0),  # z-score that counts as a dislocation
        ("basis_entry", 0.0),  # annualized basis that triggers the carry (0 = off)
        ("z_exit", 0.5),  # |z| at which the basis has reverted
        ("entry_min_dte", 7.0),  # days left on an expiry to open it
        ("min_dte", 2.0),  # days left at which the trade is unwound or rolled
        ("roll", False),  # roll the future into the next expiry instead of unwinding
        ("stop_loss", 0.02),  # combined leg loss, fraction of spot notional at entry
        ("max_hold", 0),  # bars (0 = no limit)
        ("mirror", False),  # also trade collapses: long future, short spot (needs borrow)
    )

    param_ranges: ClassVar[dict[str, ParamRange]] = {
        "signal": ("cm30", "front"),
        "window": (5, 100_000),
        "z_entry": (0.0, 100.0),
        "basis_entry": (0.0, 10.0),
        "z_exit": (0.0, 100.0),
        "entry_min_dte": (0.0, 3650.0),
        "min_dte": (0.0, 3650.0),
        "stop_loss": (0.0001, 1.0),
        "max_hold": (0, 10_000_000),
    }

    def __init__(self) -> None:
        super().__init__()
        if self.p.z_exit > self.p.z_entry:
            raise ConfigError(f"z_exit={self.p.z_exit} is above z_entry={self.p.z_entry}",
                              column="params", expected="z_exit <= z_entry",
                              fix="lower z_exit (the basis must revert to exit)")
        self.spot = self.leg("spot")
        self.front = self.leg("front")
        self.history: deque[float] = deque(maxlen=self.p.window)
        self.side = 0  # +1 carry (long spot, short future), -1 mirror, 0 flat
        self.blocked = 0  # a side whose entry failed: not retried until the basis reverts
        self.future: bt.feed.DataBase | None = None
        self.entry_notional = 0.0
        self.entry_bar = None

    # -- signal ----------------------------------------------------------------------

    def signal(self) -> tuple[float, float]:
        """(annualized basis, z-score) known at this bar's close (NaN when unknown)."""
        if self.p.signal == "cm30":
            return self.spot.basis_ann[0], self.spot.basis_z[0]
        nan = float("nan")
        if self.front is None:
            return nan, nan
        spot, price, dte = self.spot.close[0], self.front.close[0], self.front.dte[0]
        if not (finite(spot, price, dte) and dte > 0):
            return nan, nan
        basis = (price / spot - 1.0) * 365.0 / dte
        z = nan
        if len(self.history) == self.history.maxlen:
            n = len(self.history)
            mean = sum(self.history) / n
            sd = math.sqrt(sum((x - mean) ** 2 for x in self.history) / (n - 1))
            z = (basis - mean) / sd if sd > 0 else nan
        self.history.append(basis)
        return basis, z

    # -- the bar ---------------------------------------------------------------------

    def next(self) -> None:
        if self.spot is None:
            return
        basis, z = self.signal()
        futures = self.futures()
        if not futures or any(self.busy(d) for d in (self.spot, *futures)):
            return
        if self.side and self._naked():
            self.blocked = self.side
            self._flatten()
            return
        if self.side:
            self._manage(z)
            return
        if self.blocked and not (finite(z) and z * self.blocked > self.p.z_exit):
            self.blocked = 0
        side = self._entry_side(basis, z)
        if side and side != self.blocked:
            self._enter(side, futures)

    def _entry_side(self, basis: float, z: float) -> int:
        p = self.p
        if finite(z) and z >= p.z_entry or p.basis_entry > 0 and finite(basis) \
                and basis >= p.basis_entry:
            return +1
        if p.mirror and (finite(z) and z <= -p.z_entry or p.basis_entry > 0
                         and finite(basis) and basis <= -p.basis_entry):
            return -1
        return 0

    def _tradable(self, futures: list[bt.feed.DataBase], min_dte: float,
                  after: bt.feed.DataBase | None = None) -> bt.feed.DataBase | None:
        for data in futures:
            if after is not None and data.leg.expiry <= after.leg.expiry:
                continue
            if finite(data.close[0], data.dte[0]) and data.dte[0] >= min_dte:
                return data
        return None

    def _enter(self, side: int, futures: list[bt.feed.DataBase]) -> None:
        future = self._tradable(futures, self.p.entry_min_dte)
        qty = self.leg_size(self.spot)
        if future is None or qty <= 0:
            return
        self.side, self.future = side, future
        self.entry_notional = qty * self.spot.close[0]
        self.entry_bar = len(self)
        self.target(self.spot, side * qty)
        self.target(future, -side * qty)

    def _manage(self, z: float) -> None:
        p, future = self.p, self.future
        reverted = finite(z) and z * self.side <= p.z_exit
        pnl = sum(self.qty(d) * (d.close[0] - self.getposition(d).price)
                  for d in (self.spot, future) if self.qty(d))
        stopped = pnl <= -p.stop_loss * self.entry_notional
        expired = not (future.dte[0] >= p.min_dte)  # NaN once settled
        timed_out = p.max_hold > 0 and len(self) - self.entry_bar >= p.max_hold
        if reverted or stopped or timed_out:
            self._flatten()
        elif expired:
            following = self._tradable(self.futures(), p.entry_min_dte, after=future) \
                if p.roll else None
            if following is None:
                self._flatten()
                return
            qty = self.qty(future)
            self.target(future, 0.0)
            self.target(following, qty)
            self.future = following

    def _naked(self) -> bool:
        """True when exactly one of the two legs is open (its partner was refused)."""
        return (abs(self.qty(self.spot)) > 1e-12) != (abs(self.qty(self.future)) > 1e-12)

    def _flatten(self) -> None:
        for data in (self.spot, self.future):
            if data is not None:
                self.target(data, 0.0)
        self.side, self.future, self.entry_bar = 0, None, None

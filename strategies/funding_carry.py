"""Funding carry: long spot, short the perpetual in equal BTC while funding pays.

Why it can work (``../shared/DOMAIN.md`` sections 1 and 4): at each funding stamp a
perpetual position pays ``qty * mark * rate``; when the rate is positive, longs pay
and shorts receive. Holding spot against the short perp removes the price exposure
(the two legs' PnL cancel as long as perp and spot move together), so what is left is
the funding received. The costs: taker fees on both legs at entry and exit, and basis
moves between perp and spot (a perp premium that widens while the book is on is a
loss on the short; one that narrows, a gain). Funding rates are persistent but not
stable: the book is switched on and off with hysteresis so it does not churn fees
around a single threshold.

The strategy trades the feeds named ``spot`` and ``perp`` (whatever the run's
``instrument``; a run without both is refused at start) and reads ``funding_ann``, the
funding APR (``rate_per_8h * 3 * 365``) in force at the bar's close, from the perp.

Rules (per bar, decided at the close, filled at the next bar's open)
--------------------------------------------------------------------
- Flat and ``funding_ann > entry_apr``: buy ``q = leg_size(spot)`` BTC spot and sell
  ``q`` BTC perp.
- Hedged and ``funding_ann < exit_apr``: close both legs. ``exit_apr <= entry_apr``
  (checked at start).
- ``funding_ann`` NaN (no funding value in force): no new book; an open book is kept
  (it carries no price risk, and the funding paid is booked by the account whether or
  not the line is known).
- Never a naked leg: whenever no order is open and the two legs do not cancel (one
  leg was refused, e.g. for cash or margin, or the account liquidated the perp), both
  legs are closed, and no new book is tried for ``retry_bars`` bars.
- An order waiting for a fresh price on its leg (a perp bar missing) is waited for.
"""

from __future__ import annotations

import math

from plumbing.errors import ConfigError
from strategies.base import GammaStrategy, finite

TOLERANCE_BTC = 1e-9


class FundingCarry(GammaStrategy):
    """Long spot, short perp in equal BTC while the funding APR pays, with hysteresis,
    never left with one leg."""

    params = (
        ("entry_apr", 0.10),  # funding APR above which the book is put on (fraction)
        ("exit_apr", 0.03),  # funding APR below which it is taken off (fraction)
        ("retry_bars", 24),  # bars to wait after a one-legged fill was unwound
    )
    param_ranges = {
        "entry_apr": (-10.0, 10.0),
        "exit_apr": (-10.0, 10.0),
        "retry_bars": (0, 1_000_000),
    }

    def __init__(self) -> None:
        super().__init__()
        p = self.p
        if p.exit_apr > p.entry_apr:
            raise ConfigError(f"strategy funding_carry has exit_apr={p.exit_apr:g} above "
                              f"entry_apr={p.entry_apr:g}", column="params",
                              expected="exit_apr <= entry_apr (the book comes off at or "
                                       "below the rate that put it on)",
                              fix=f"lower exit_apr to at most {p.entry_apr:g}, or raise "
                                  "entry_apr")
        self.spot = self.need_leg("spot", "trades spot against the perpetual",
                                  "pass --bars FILE")
        self.perp = self.need_leg("perp", "trades spot against the perpetual",
                                  "pass --perp FILE and --funding FILE, or run on a "
                                  "simulated market")
        self.unwound_bar: int | None = None  # bar of the last naked-leg unwind
        self.n_unwinds = 0

    def next(self) -> None:
        spot, perp = self.spot, self.perp
        if self.busy(spot) or self.busy(perp):
            return
        s, f = self.qty(spot), self.qty(perp)
        if abs(s + f) > TOLERANCE_BTC:
            self._unwind()
            return
        apr = perp.funding_ann[0]
        hedged = abs(s) > TOLERANCE_BTC
        if hedged:
            if finite(apr) and apr < self.p.exit_apr:
                self.target(spot, 0.0)
                self.target(perp, 0.0)
            return
        if not finite(apr) or apr <= self.p.entry_apr or self._cooling_down():
            return
        q = self.leg_size(spot)
        if q > 0 and math.isfinite(q):
            self.target(spot, q)
            self.target(perp, -q)

    def _unwind(self) -> None:
        """Close both legs: one filled and the other did not (or was liquidated)."""
        self.n_unwinds += 1
        self.unwound_bar = len(self)
        self.target(self.spot, 0.0)
        self.target(self.perp, 0.0)

    def _cooling_down(self) -> bool:
        return self.unwound_bar is not None and len(self) - self.unwound_bar < self.p.retry_bars

"""Leveraged perpetual traders: positions kept as sizes at their liquidation levels.

Each position is summarised by the level where it is force-closed. Levels live on a
log-price grid of resolution ``level_step`` (0.1% by default), one array for longs and
one for shorts, so opening, voluntary closing and the liquidation check are a few
vector operations per step whatever the number of traders.

Liquidation price, linear (USDT-margined) perp, isolated margin, fees ignored
(``../shared/DOMAIN.md`` section 2)::

    long:  EP * (1 - 1/L) / (1 - MMR)        short: EP * (1 + 1/L) / (1 + MMR)

A long level is liquidated when the intra-step low reaches it (``low <= level``), a short
level when the high reaches it. Levels are bucket centres; a recorded liquidation
``price`` is that level, so every long liquidation price is >= the bar's low and every
short one <= the bar's high.
"""

from __future__ import annotations

import math

import numpy as np


def liquidation_price(entry: np.ndarray | float, leverage: np.ndarray | float, side: str,
                      mmr: float = 0.005) -> np.ndarray:
    """Liquidation price of a linear perp position (DOMAIN.md formula).

    Parameters
    ----------
    entry
        Entry price(s), USD.
    leverage
        Leverage(s) L >= 1.
    side
        ``"long"`` or ``"short"``.
    mmr
        Maintenance margin rate.

    Returns
    -------
    numpy.ndarray
        USD; a 1x long gives 0 (never liquidated).
    """
    e = np.asarray(entry, np.float64)
    lev = np.asarray(leverage, np.float64)
    if side == "long":
        return e * (1.0 - 1.0 / lev) / (1.0 - mmr)
    return e * (1.0 + 1.0 / lev) / (1.0 + mmr)


class LeverageBook:
    """Open leveraged positions by liquidation level (BTC per level).

    Parameters
    ----------
    spot0
        Initial price: the grid spans ``spot0 / 20`` to ``spot0 * 20``.
    level_step
        Grid resolution in log price.
    mmr
        Maintenance margin rate.
    """

    SPAN = math.log(20.0)

    def __init__(self, spot0: float, level_step: float = 0.001, mmr: float = 0.005):
        self.step = float(level_step)
        self.mmr = float(mmr)
        self.lo = math.log(spot0) - self.SPAN
        self.n = int(math.ceil(2 * self.SPAN / self.step)) + 1
        self.longs = np.zeros(self.n)
        self.shorts = np.zeros(self.n)
        self.levels = np.exp(self.lo + (np.arange(self.n) + 0.5) * self.step)
        self.total_long = 0.0
        self.total_short = 0.0

    def index(self, price: np.ndarray | float) -> np.ndarray:
        """Grid index of a price (clipped to the grid)."""
        j = np.floor((np.log(price) - self.lo) / self.step).astype(np.int64)
        return np.clip(j, 0, self.n - 1)

    def open(self, price: float, size: float, side: str, leverage: np.ndarray,
             weights: np.ndarray) -> None:
        """Open ``size`` BTC at ``price`` split over a leverage mix."""
        if size <= 0:
            return
        liq = liquidation_price(price, leverage, side, self.mmr)
        amounts = size * weights
        if side == "long":
            ok = liq > 0  # a 1x long is never liquidated: not on the map
            np.add.at(self.longs, self.index(liq[ok]), amounts[ok])
            self.total_long += float(amounts[ok].sum())
        else:
            np.add.at(self.shorts, self.index(liq), amounts)
            self.total_short += float(amounts.sum())

    def set_mix(self, leverage: np.ndarray, weights: np.ndarray) -> None:
        """Pre-compute the level offsets of the usual leverage mix (see :meth:`open_mix`)."""
        lev = np.asarray(leverage, np.float64)
        w = np.asarray(weights, np.float64) / np.sum(weights)
        ok = lev > 1  # 1x longs never liquidate
        self._off_long = np.log((1.0 - 1.0 / lev[ok]) / (1.0 - self.mmr)) / self.step
        self._w_long = w[ok] / w[ok].sum() if ok.any() else w[ok]
        self._off_short = np.log((1.0 + 1.0 / lev) / (1.0 + self.mmr)) / self.step
        self._w_short = w
        #: share of new long size that is leveraged (> 1x) and so tracked here
        self.long_share = float(w[ok].sum())

    def open_mix(self, ln_price: float, n_long: float, n_short: float) -> None:
        """Open leveraged longs and shorts at ``exp(ln_price)`` with the mix of
        :meth:`set_mix` (``n_long`` counts leveraged longs only: scale by ``long_share``).
        """
        x = (ln_price - self.lo) / self.step
        jl = np.clip((x + self._off_long).astype(np.int64), 0, self.n - 1)
        js = np.clip((x + self._off_short).astype(np.int64), 0, self.n - 1)
        np.add.at(self.longs, jl, n_long * self._w_long)
        np.add.at(self.shorts, js, n_short * self._w_short)
        self.total_long += n_long
        self.total_short += n_short

    def close_fraction(self, frac: float) -> tuple[float, float]:
        """Close ``frac`` of every position; return (long BTC closed, short BTC closed)."""
        if frac <= 0:
            return 0.0, 0.0
        keep = 1.0 - frac
        self.longs *= keep
        self.shorts *= keep
        closed = self.total_long * frac, self.total_short * frac
        self.total_long *= keep
        self.total_short *= keep
        return closed

    def trigger(self, ln_low: float, ln_high: float, ln_lo_bound: float,
                ln_hi_bound: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Liquidate every long level >= low and every short level <= high.

        ``ln_lo_bound``/``ln_hi_bound`` bound the search: all live long levels are below
        the price at which they were opened and above every earlier low (they would be
        gone otherwise), so only levels between the step's low and the highest price
        since the last check can trigger (symmetrically for shorts).

        Returns
        -------
        (long_idx, long_size, short_idx, short_size)
            Grid indices and BTC sizes liquidated (the levels are ``self.levels[idx]``).
        """
        n, lo, st = self.n, self.lo, self.step
        # long level j (centre lo + (j + .5) st) triggers iff ln_low <= centre
        j0 = max(0, math.ceil((ln_low - lo) / st - 0.5))
        j1 = min(n, int((ln_hi_bound - lo) / st) + 2)
        long_idx, long_size = _take(self.longs, j0, j1)
        self.total_long = max(self.total_long - float(long_size.sum()), 0.0)
        # short level j triggers iff centre <= ln_high
        k1 = min(n, math.floor((ln_high - lo) / st - 0.5) + 1)
        k0 = max(0, int((ln_lo_bound - lo) / st) - 1)
        short_idx, short_size = _take(self.shorts, k0, k1)
        self.total_short = max(self.total_short - float(short_size.sum()), 0.0)
        return long_idx, long_size, short_idx, short_size

    def resync(self) -> None:
        """Recompute the running totals exactly (guards against float drift)."""
        self.total_long = float(self.longs.sum())
        self.total_short = float(self.shorts.sum())


def _take(book: np.ndarray, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
    """Remove and return the non-empty levels of ``book[start:stop]`` (index, size)."""
    if stop <= start:
        return np.zeros(0, np.int64), np.zeros(0)
    seg = book[start:stop]
    nz = np.flatnonzero(seg)
    size = seg[nz].copy()
    seg[nz] = 0.0
    return nz + start, size

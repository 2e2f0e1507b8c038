"""Deribit-like listing calendar: option and future expiries (08:00 UTC) and strike grids.

All times are integer microseconds since the Unix epoch (UTC), the unit of the
canonical tables.
"""

from __future__ import annotations

import calendar as _cal
import math
from datetime import UTC, datetime, timedelta

import numpy as np

US_PER_SECOND = 1_000_000
US_PER_DAY = 86_400 * US_PER_SECOND
US_PER_YEAR = 365 * US_PER_DAY
EXPIRY_HOUR = 8
_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")


def to_us(dt: datetime) -> int:
    """UTC datetime -> integer microseconds since the epoch."""
    delta = dt - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * US_PER_SECOND + delta.microseconds


def from_us(us: int) -> datetime:
    """Integer microseconds since the epoch -> UTC datetime."""
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=int(us))


def expiry_name(us: int, prefix: str = "BTC") -> str:
    """Deribit-style instrument name of an expiry, e.g. ``BTC-27MAR26``."""
    d = from_us(us)
    return f"{prefix}-{d.day}{_MONTHS[d.month - 1]}{d.year % 100:02d}"


def _at8(year: int, month: int, day: int) -> datetime:
    return datetime(year, month, day, EXPIRY_HOUR, tzinfo=UTC)


def _last_friday(year: int, month: int) -> datetime:
    last = _cal.monthrange(year, month)[1]
    d = datetime(year, month, last, EXPIRY_HOUR, tzinfo=UTC)
    return d - timedelta(days=(d.weekday() - 4) % 7)


def _next_months(now: datetime, count: int, quarterly: bool) -> list[datetime]:
    out: list[datetime] = []
    year, month = now.year, now.month
    while len(out) < count:
        if not quarterly or month % 3 == 0:
            d = _last_friday(year, month)
            if d > now:
                out.append(d)
        month += 1
        if month > 12:
            year, month = year + 1, 1
    return out


def listed_expiries(now_us: int, *, daily: int = 4, weekly: int = 3, monthly: int = 3,
                    quarterly: int = 4) -> list[int]:
    """Expiries (08:00 UTC, in us) listed at ``now_us``, strictly after it, sorted.

    The union of the next ``daily`` days, the next ``weekly`` Fridays, the last Fridays
    of the next ``monthly`` months and of the next ``quarterly`` quarter months
    (March, June, September, December): Deribit's BTC listing pattern.
    """
    now = from_us(now_us)
    today8 = _at8(now.year, now.month, now.day)
    first = today8 if today8 > now else today8 + timedelta(days=1)
    out = {first + timedelta(days=i) for i in range(daily)}
    friday = first + timedelta(days=(4 - first.weekday()) % 7)
    out |= {friday + timedelta(days=7 * i) for i in range(weekly)}
    out |= set(_next_months(now, monthly, quarterly=False))
    out |= set(_next_months(now, quarterly, quarterly=True))
    return sorted(to_us(d) for d in out)


def nice_steps(raw: float) -> list[float]:
    """'Round' strike spacings (1, 2, 2.5, 5 x 10^k) bracketing ``raw``."""
    power = 10.0 ** math.floor(math.log10(max(raw, 1e-9)))
    return [m * p for p in (power / 10, power, power * 10) for m in (1.0, 2.0, 2.5, 5.0)]


def strike_grid(spot: float, tenor_years: float, n_strikes: int, vol: float) -> np.ndarray:
    """Round strikes around ``spot`` for one expiry, like an exchange's listing.

    The grid covers about +-3 standard deviations in log price (``vol * sqrt(T)``, at
    least +-5%), at the round spacing whose strike count is closest to ``n_strikes``.
    """
    n = max(int(n_strikes), 3)
    half = max(0.05, 3.0 * vol * math.sqrt(max(tenor_years, 1.0 / 365.0)))
    lo, hi = spot * math.exp(-half), spot * math.exp(half)
    best = None
    for step in nice_steps((hi - lo) / (n - 1)):
        k = np.arange(math.ceil(lo / step), math.floor(hi / step) + 1) * step
        k = k[k > 0]
        if best is None or abs(len(k) - n) < abs(len(best) - n):
            best = k
    assert best is not None
    return best.astype(np.float64)


def strikes_per_expiry(tenor_days: np.ndarray) -> np.ndarray:
    """Relative number of strikes by tenor (longer expiries list a wider range)."""
    return 4.0 + 2.0 * np.sqrt(np.maximum(tenor_days, 0.0))

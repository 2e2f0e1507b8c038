"""The per-bar decision of a single-leg strategy, written once for two drivers.

A single-leg strategy's rules live in a :class:`SingleLegRules` object: Backtrader's
``next()`` calls :meth:`SingleLegRules.decide` with values read from its lines, and
the lean sweep engine (``gammabt.sweep_engine``) calls the same method in a plain loop
over numpy arrays. The indicators a decision needs are computed by
:meth:`SingleLegRules.indicators` over whole arrays, with the same floating-point
operations as the Backtrader indicators (tests compare them bar by bar).

:func:`go_order` is the order bookkeeping of :meth:`strategies.base.GammaStrategy.go`
as a pure function, so both drivers move between flat, long and short the same way.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, ClassVar, Literal, Self

import numpy as np

GoOrder = Literal["close", "buy", "sell"]


def go_order(target: int, current: int) -> tuple[GoOrder, bool] | None:
    """The order that moves a position of sign ``current`` toward ``target``.

    Returns None when nothing is to be done (``target == current``), else the order
    (``close`` the whole position, or open with a ``buy``/``sell`` sized by the run's
    sizer) and whether the entry bar restarts at this bar. A reversal closes first and
    opens on a later bar, once the close has filled; closing to flat restarts the
    entry bar (it is only read while a position is held).
    """
    if target == current:
        return None
    if current != 0:
        return "close", target == 0
    return ("buy" if target > 0 else "sell"), True


def finite(*values: float) -> bool:
    """True when every value is a finite number (gamma lines are NaN when stale)."""
    isfinite = math.isfinite
    for v in values:  # a loop, not all(...): this runs on every bar of a sweep
        if not isfinite(v):
            return False
    return True


class SingleLegRules:
    """Base class of a single-leg strategy's per-bar decision.

    Subclasses set ``inputs`` (names of the values :meth:`decide` takes, in order:
    feed lines such as ``close`` or ``regime``, or names returned by
    :meth:`indicators`) and implement :meth:`decide`; :attr:`warmup` is the number
    of bars before the first decision (Backtrader's minimum period minus one).
    """

    inputs: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def from_params(cls, params: Any) -> Self:
        """Rules from the strategy's parameters: Backtrader's ``self.p`` or a mapping
        of every parameter (a dataclass subclass: one field per parameter it reads)."""
        if isinstance(params, Mapping):
            return cls(**{f.name: params[f.name] for f in dataclasses.fields(cls)})
        return cls(**{f.name: getattr(params, f.name) for f in dataclasses.fields(cls)})

    @property
    def warmup(self) -> int:
        return 0

    def indicators(self, lines: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Indicator arrays over the run's bars (float64, one value per bar)."""
        return {}

    def decide(self, values: tuple[float, ...], direction: int, held: int | None,
               entry_price: float | None) -> int | None:
        """Target direction (-1, 0, +1) at this bar's close, or None to do nothing.

        Parameters
        ----------
        values
            This bar's values of :attr:`inputs`.
        direction
            Sign of the current position.
        held
            Bars since the entry order was placed (None when no entry bar is set).
        entry_price
            Fill price of the order that opened the current position (None before
            the first fill; stale while flat).
        """
        raise NotImplementedError


# ------------------------------------------------------------- vectorized indicators

def percent_change(close: np.ndarray, period: int) -> np.ndarray:
    """``close[t] / close[t - period] - 1`` (NaN for the first ``period`` bars).

    Formula::

        pct_t = close_t / close_{t-period} - 1.0

    The same operations, in the same order, as ``bt.indicators.PercentChange``.
    """
    close = np.asarray(close, dtype=np.float64)
    out = np.full(len(close), np.nan)
    if period < len(close):
        out[period:] = close[period:] / close[:-period] - 1.0
    return out


_SMA_CACHE: OrderedDict[tuple[bytes, int], np.ndarray] = OrderedDict()
_SMA_CACHE_SIZE = 64


def simple_moving_average(values: np.ndarray, period: int) -> np.ndarray:
    """Mean of the last ``period`` values (NaN for the first ``period - 1`` bars).

    Formula::

        sma_t = fsum(x_{t-period+1} .. x_t) / period

    ``math.fsum`` is exactly rounded, as in ``bt.indicators.SMA``, so the values equal
    Backtrader's bit for bit. Results are cached by the values' content and the period
    (a sweep asks for the same few averages again and again).
    """
    values = np.asarray(values, dtype=np.float64)
    key = (hashlib.blake2b(np.ascontiguousarray(values).tobytes(), digest_size=16).digest(),
           int(period))
    hit = _SMA_CACHE.get(key)
    if hit is not None:
        _SMA_CACHE.move_to_end(key)
        return hit
    out = np.full(len(values), np.nan)
    data = values.tolist()
    fsum = math.fsum
    out[period - 1:] = [fsum(data[i - period + 1:i + 1]) / period
                        for i in range(period - 1, len(data))]
    out.setflags(write=False)
    _SMA_CACHE[key] = out
    if len(_SMA_CACHE) > _SMA_CACHE_SIZE:
        _SMA_CACHE.popitem(last=False)
    return out

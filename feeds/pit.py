"""Point-in-time (as-of) joins on integer microsecond timestamps, numpy only.

The one rule (``DOMAIN.md`` section 2): a value stamped ``t`` may be used by a bar
only if ``t <= bar close``; a value older than a configurable limit is *stale* and
becomes NaN instead of being carried forward for ever.

Publication lag: a record is usable from ``available_at = ts + delay``
(:func:`available_at_us`), the delay belonging to its source. Joins pass
``available_at`` as the stamp: a record enters a bar only if ``available_at <= bar
close``, and its age is counted from ``available_at``.

All times here are ``int64`` microseconds since the Unix epoch, UTC (the canonical
``timestamp[us, UTC]`` unit); :func:`plumbing.timeconv.to_epoch_us` converts times of
any unit explicitly, because pandas 3 stores microseconds and a bare ``astype("int64")``
would silently change meaning with the unit.

Functions
---------
available_at_us when each record became usable: stamp + publication delay
asof_indices   index of the value in force at each bar close (``-1`` = none or stale)
asof_take      gather values by those indices, NaN where the index is ``-1``
exact_indices  index of the stamp equal to each key (``-1`` = absent)
group_offsets  CSR offsets of a table sorted by stamp (one group per stamp)
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from plumbing.errors import ConfigError, InputError
from plumbing.timeconv import to_epoch_us

IntArray = npt.NDArray[np.int64]
IndexArray = npt.NDArray[np.intp]
FloatArray = npt.NDArray[np.float64]

US_PER_SECOND = 1_000_000
US_PER_DAY = 86_400 * US_PER_SECOND


def available_at_us(stamp_us: npt.ArrayLike, delay_us: int) -> IntArray:
    """When each record became usable: ``stamp + delay``, ``int64`` microseconds.

    Parameters
    ----------
    stamp_us
        Record stamps (``int64`` microseconds or ``datetime64``).
    delay_us
        The source's publication delay in microseconds (``>= 0``).

    Raises
    ------
    ConfigError
        If ``delay_us`` is negative (a record cannot be known before its stamp).

    Examples
    --------
    >>> available_at_us([0, 10], 5)
    array([ 5, 15])
    """
    if delay_us < 0:
        raise ConfigError(f"publication delay {delay_us!r} us is negative", column="delays",
                          expected="a duration >= 0", fix="pass e.g. '1h'")
    return to_epoch_us(stamp_us, column="stamp") + np.int64(delay_us)


def asof_indices(bar_close_us: npt.ArrayLike, stamp_us: npt.ArrayLike,
                 max_staleness_us: int) -> IndexArray:
    """Index of the latest stamp at or before each bar close, ``-1`` if none or stale.

    Formula::

        j(i) = max{ k : stamp[k] <= close[i] }            (searchsorted side='right' - 1)
        idx(i) = j(i)   if j(i) exists and close[i] - stamp[j(i)] <= max_staleness
               = -1     otherwise

    Parameters
    ----------
    bar_close_us
        Bar close times, ``int64`` microseconds (or ``datetime64``). Need not be sorted.
    stamp_us
        Times at which each value became known, same unit. Need not be sorted: the
        returned indices point into ``stamp_us`` as given. Among equal stamps the
        *last* in input order wins (a later revision of the same snapshot).
    max_staleness_us
        Largest allowed age ``close - stamp`` in microseconds (``>= 0``). A value is
        usable while its age is ``<= max_staleness_us``; older means NaN, never a
        forward fill for ever.

    Returns
    -------
    numpy.ndarray
        ``intp`` array shaped like ``bar_close_us``; ``-1`` where no value is in force.

    Raises
    ------
    ConfigError
        If ``max_staleness_us`` is negative.

    Examples
    --------
    >>> asof_indices([10, 20, 30], [10, 21], max_staleness_us=15)
    array([ 0,  0, 1])
    """
    if max_staleness_us < 0:
        raise ConfigError(f"max_staleness {max_staleness_us!r} us is negative",
                          column="max_staleness", expected="a duration >= 0",
                          fix="pass e.g. '26h'")
    closes = to_epoch_us(bar_close_us, column="bar close")
    stamps = to_epoch_us(stamp_us, column="stamp").ravel()
    if stamps.size == 0:
        return np.full(closes.shape, -1, dtype=np.intp)
    order: IndexArray | None = None
    if stamps.size > 1 and bool(np.any(stamps[1:] < stamps[:-1])):
        order = np.argsort(stamps, kind="stable")
        stamps = stamps[order]
    pos = np.searchsorted(stamps, closes, side="right") - 1
    found = pos >= 0
    age = closes - stamps[np.where(found, pos, 0)]
    ok = found & (age <= max_staleness_us)
    idx = pos if order is None else order[np.where(found, pos, 0)]
    return np.where(ok, idx, -1).astype(np.intp, copy=False)


def exact_indices(key_us: npt.ArrayLike, stamp_us: npt.ArrayLike) -> IndexArray:
    """Index of the stamp equal to each key, ``-1`` where there is none.

    For per-bar inputs that are already point-in-time and carry the bar's own
    ``ts`` (e.g. liquidation lines): no as-of carry-over, a missing row stays missing.

    Parameters
    ----------
    key_us
        Keys to look up (e.g. bar open times), ``int64`` microseconds.
    stamp_us
        Sorted, unique stamps of the table, ``int64`` microseconds.

    Returns
    -------
    numpy.ndarray
        ``intp`` array shaped like ``key_us``.
    """
    keys = to_epoch_us(key_us, column="key")
    stamps = to_epoch_us(stamp_us, column="stamp").ravel()
    if stamps.size == 0:
        return np.full(keys.shape, -1, dtype=np.intp)
    pos = np.searchsorted(stamps, keys, side="left")
    hit = pos < stamps.size
    hit[hit] = stamps[pos[hit]] == keys[hit]
    return np.where(hit, pos, -1).astype(np.intp, copy=False)


def asof_take(values: npt.ArrayLike, idx: IndexArray) -> FloatArray:
    """Gather ``values[idx]`` as ``float64``, NaN where ``idx == -1``.

    Parameters
    ----------
    values
        Numeric array; gathered along its first axis.
    idx
        Indices from :func:`asof_indices` (``-1`` = no value in force).

    Returns
    -------
    numpy.ndarray
        Shape ``idx.shape + values.shape[1:]``, ``float64``. NaN in ``values`` stays NaN.
    """
    vals = np.asarray(values, dtype=np.float64)
    idx = np.asarray(idx)
    out = np.full(idx.shape + vals.shape[1:], np.nan, dtype=np.float64)
    have = idx >= 0
    if have.any():
        out[have] = vals[idx[have]]
    return out


def group_offsets(stamp_us: npt.ArrayLike) -> tuple[IntArray, IntArray]:
    """CSR layout of rows sorted by stamp: one group per distinct stamp.

    Parameters
    ----------
    stamp_us
        Non-decreasing ``int64`` microseconds, one per row.

    Returns
    -------
    (stamps, offsets)
        ``stamps`` the distinct stamps (sorted); rows of group ``k`` are
        ``offsets[k]:offsets[k + 1]``; ``len(offsets) == len(stamps) + 1``.

    Raises
    ------
    InputError
        If the stamps decrease somewhere (sort the table by stamp first).
    """
    stamps = to_epoch_us(stamp_us, column="stamp").ravel()
    if stamps.size > 1 and bool(np.any(stamps[1:] < stamps[:-1])):
        i = int(np.flatnonzero(stamps[1:] < stamps[:-1])[0]) + 1
        raise InputError("timestamps not sorted", row=i, column="ts",
                         expected="rows sorted by ts", fix="sort by ts (stable) first")
    if stamps.size == 0:
        return stamps.copy(), np.zeros(1, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, stamps[1:] != stamps[:-1]])
    offsets = np.r_[starts, stamps.size].astype(np.int64)
    return stamps[starts], offsets

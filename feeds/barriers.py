"""Load barrier-option positions (structured-note books) into the BARRIERS schema.

A barrier file is CSV (optionally ``.gz``) or Parquet with the columns ``ts, type,
strike, barrier, expiry, notional, dealer_side`` and an optional ``iv``:

- ``ts``, ``expiry``: ISO 8601 timestamps with a UTC offset (``2026-02-03T00:00:00Z``);
  a position is used only from ``ts`` on (point in time).
- ``type``: one of ``indicators.barrier.BARRIER_TYPES`` (``down_in_put``,
  ``down_out_put``, ``up_out_call``, ...).
- ``strike``, ``barrier``: USD; ``notional``: BTC of underlying (> 0).
- ``dealer_side``: +1 when dealers are long the option, -1 when short.
- ``iv``: implied volatility as a fraction; empty = the chain's ATM IV as of each bar.
"""

from __future__ import annotations

import pyarrow as pa

from feeds.formats.dispatch import load_table
from plumbing.aliases import PathLike

__all__ = ["load_barriers"]


def load_barriers(path: PathLike) -> pa.Table:
    """Read a barrier book file into the BARRIERS schema.

    Returns
    -------
    pyarrow.Table
        Sorted by ``ts, expiry, strike``.

    Raises
    ------
    DataError
        Missing columns, unknown ``type`` (with a suggestion), ``dealer_side`` not +1 /
        -1, expiry not after ``ts``, a knock-in/out barrier on the wrong side of its
        strike for the type (``up_out_call`` with barrier <= strike is worthless),
        implied volatility in percent, unparsable or naive timestamps; each naming the
        file, row and column.
    """
    return load_table("barriers", path)

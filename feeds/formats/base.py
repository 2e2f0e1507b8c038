"""What a format is: the three parts every vendor module provides, and their results.

A :class:`Format` is registered by one module of :mod:`feeds.formats` for one input
*kind* (``bars``, ``chain``, ``funding``, ``oi``, ``liquidations``, ``futures``,
``barriers``):

- ``detect(sniff) -> int``: 0 when the file is not this format, else a score (more
  specific layouts score higher; the dispatch takes the highest). It may raise a
  DataError for a file it recognises as a broken variant of its own layout;
- ``read(sniff) -> DataFrame``: the raw vendor frame, in file order;
- ``map(raw, source, options) -> Mapped``: the canonical columns, still in file order.

Everything after ``map`` (format-independent checks, the canonical schema, the cache)
is done once by :mod:`feeds.formats.dispatch` and :mod:`feeds.formats.conform`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

import pandas as pd

from feeds.formats.sniffing import Sniff, read_frame

__all__ = ["KINDS", "Format", "Kind", "LoadOptions", "Mapped", "Order"]

Kind = Literal["bars", "chain", "funding", "oi", "liquidations", "futures", "barriers"]
KINDS: tuple[Kind, ...] = ("bars", "chain", "funding", "oi", "liquidations", "futures",
                           "barriers")
Order = Literal["ascending", "either"]


@dataclass(frozen=True)
class LoadOptions:
    """Loader options that change a table (all of them are part of its cache key).

    Attributes
    ----------
    currency
        Chains: keep instruments of this base currency (None keeps all).
    snapshot_freq
        Chains (Tardis): bucket length of the snapshots.
    spot
        Chains: canonical spot bars that complete a chain point in time, or None.
    spot_digest
        A hash of ``spot`` (the frame itself is not hashable).
    """

    currency: str | None = "BTC"
    snapshot_freq: pd.Timedelta = pd.Timedelta("1h")
    spot: pd.DataFrame | None = field(default=None, compare=False, hash=False, repr=False)
    spot_digest: str | None = None


@dataclass
class Mapped:
    """A format's canonical frame, in file order (so errors name the file's rows).

    Attributes
    ----------
    frame
        Canonical column names; values may still need the generic checks.
    names
        Canonical column -> the file's column, so generic errors name the file's column.
    order
        Bars: ``"either"`` accepts files sorted newest first.
    symbol
        Chains: instrument names, for the currency filter.
    stamp
        Chains (Tardis): arrival time in us; several quotes per contract and snapshot
        remain, the last one is kept after the checks.
    """

    frame: pd.DataFrame
    names: Mapping[str, str] = field(default_factory=dict)
    order: Order = "ascending"
    symbol: pd.Series | None = None
    stamp: pd.Series | None = None


@dataclass(frozen=True)
class Format:
    """One vendor layout of one input kind (see the module docstring)."""

    kind: Kind
    name: str
    doc: str
    detect: Callable[[Sniff], int]
    map: Callable[[pd.DataFrame, str, LoadOptions], Mapped]
    read: Callable[[Sniff], pd.DataFrame] = read_frame
    #: Chains: a snapshot stamped ``ts`` is usable from ``ts + publication_delay``.
    publication_delay: pd.Timedelta = pd.Timedelta(0)
    #: Chains: the layout has no underlying price and needs spot bars to complete it.
    needs_spot: bool = False

    @property
    def module(self) -> str:
        """The module implementing the format (its source is part of the cache key)."""
        return self.map.__module__

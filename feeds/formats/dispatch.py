"""Dispatch: from a file to a canonical table, through the one format that reads it.

:func:`load_table` is the one path every loader takes, for every input kind:

1. :func:`~feeds.formats.sniffing.sniff_file` (container and header);
2. :func:`detect`: every format of the kind scores the file, the highest wins;
3. the format's ``read`` and ``map`` (vendor columns to canonical ones, file order);
4. chains only: spot completion, point in time (:func:`spot_asof`);
5. :func:`feeds.formats.conform.conform` (generic checks and the canonical schema);
6. chains only: the currency filter and, for Tardis, the last quote per bucket.

Bars and chains are cached (:mod:`feeds.cache`) under a key made of the file's bytes,
the options and :func:`code_digest` of the loader code, so a changed loader never
serves a stale table.

Formats are found by module: every module of :mod:`feeds.formats` that defines a
``FORMATS`` tuple registers those formats (:func:`registry`). Adding a vendor layout
is one new module.
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import importlib.util
import pkgutil
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from feeds.cache import cached_table
from feeds.formats.base import KINDS, Format, Kind, LoadOptions, Mapped
from feeds.formats.conform import SCHEMAS, conform
from feeds.formats.sniffing import Sniff, per_unique, sniff_file
from feeds.formats.times import to_utc_bound
from feeds.schema import UTC_US
from plumbing.aliases import PathLike, TimeLike
from plumbing.errors import ConfigError, DataError
from plumbing.timeconv import from_epoch_us, modal_spacing_us, timedelta_us, to_epoch_us

__all__ = [
    "CACHED_KINDS",
    "code_digest",
    "detect",
    "detect_score",
    "filter_window",
    "formats",
    "load_table",
    "read_mapped",
    "registry",
    "spot_asof",
]

#: Kinds whose tables are cached (large vendor files read again and again).
CACHED_KINDS: frozenset[Kind] = frozenset({"bars", "chain"})
#: First-party packages whose source counts as loader code.
_OURS = ("feeds", "indicators", "plumbing")
_LABELS = {"oi": "open-interest"}


# ------------------------------------------------------------------------- registry

@cache
def registry() -> dict[Kind, dict[str, Format]]:
    """Every registered format, by kind and name (modules in alphabetical order)."""
    out: dict[Kind, dict[str, Format]] = {kind: {} for kind in KINDS}
    folder = Path(__file__).resolve().parent
    for info in sorted(pkgutil.iter_modules([str(folder)]), key=lambda m: m.name):
        module = importlib.import_module(f"{__package__}.{info.name}")
        for fmt in getattr(module, "FORMATS", ()):
            if fmt.name in out[fmt.kind]:
                raise RuntimeError(f"{module.__name__}: {fmt.kind} format {fmt.name!r} is "
                                   f"already registered by {out[fmt.kind][fmt.name].module}")
            out[fmt.kind][fmt.name] = fmt
    return out


def formats(kind: Kind) -> dict[str, Format]:
    """The formats of one kind, by name."""
    return registry()[kind]


def detect_score(kind: Kind, sniff: Sniff) -> int:
    """The best score any format of ``kind`` gives the file (0: none reads it)."""
    return max((fmt.detect(sniff) for fmt in formats(kind).values()), default=0)


def detect(kind: Kind, sniff: Sniff) -> Format:
    """The format of ``kind`` that scores the file highest.

    Raises
    ------
    DataError
        No format reads the file; the message lists the supported layouts.
    """
    best: Format | None = None
    score = 0
    for fmt in formats(kind).values():
        s = fmt.detect(sniff)
        if s > score:
            best, score = fmt, s
    if best is None:
        raise _unknown_format(kind, sniff)
    return best


def _unknown_format(kind: Kind, sniff: Sniff) -> DataError:
    seen = ", ".join(sorted(sniff.columns)) if sniff.parquet else sniff.first_line
    listing = "; ".join(f"{f.name}: {f.doc}" for f in formats(kind).values())
    example = ("a generic CSV with ts,open,high,low,close,volume" if kind == "bars"
               else "the canonical columns, as CSV or Parquet")
    return DataError(f"unknown {_LABELS.get(kind, kind)} format (first line: {seen[:120]!r})",
                     source=sniff.source, expected=f"one of the supported formats: {listing}",
                     fix=f"convert the file to one of these layouts (e.g. {example})")


# ---------------------------------------------------------------------- loader code

@cache
def _imports(module: str) -> tuple[str, ...]:
    """First-party modules ``module`` imports (parsed from its source, not executed)."""
    tree = ast.parse(_module_path(module).read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return tuple(sorted(name for name in found if name.split(".")[0] in _OURS
                        and _is_module(name)))


def _is_module(name: str) -> bool:
    """Whether ``name`` is a module (``from a.b import c`` may name a function ``c``)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a parent is a module, not a package
        return False


def _module_path(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(module)
    return Path(spec.origin)


@cache
def _closure(module: str) -> tuple[str, ...]:
    """``module`` and every first-party module it imports, directly or not."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(_imports(name))
    return tuple(sorted(seen))


def module_source(module: str) -> bytes:
    """The source of a module, as hashed by :func:`code_digest`."""
    return _module_path(module).read_bytes()


def code_digest(fmt: Format) -> str:
    """sha256 of the code that builds ``fmt``'s tables.

    Covers the module implementing the format, this dispatch and the conform step, and
    every first-party module they import (readers, time parsing, the canonical schema),
    but not the other formats' modules: editing one vendor's loader invalidates only
    that vendor's cached tables.
    """
    digest = hashlib.sha256()
    for name in sorted(set(_closure(fmt.module)) | set(_closure(__name__))):
        digest.update(name.encode() + b"\0" + module_source(name) + b"\0")
    return digest.hexdigest()


# ------------------------------------------------------------------------- loading

def read_mapped(kind: Kind, path: PathLike, options: LoadOptions | None = None
                ) -> tuple[Format, Mapped, str]:
    """Sniff, detect, read and map one file: the format, its mapped frame and source."""
    sniff = sniff_file(path)
    fmt = detect(kind, sniff)
    return fmt, fmt.map(fmt.read(sniff), sniff.source, options or LoadOptions()), sniff.source


def load_table(kind: Kind, path: PathLike, *, options: LoadOptions | None = None,
               cache: bool = True) -> pa.Table:
    """Load ``path`` as a canonical table of ``kind`` (steps in the module docstring).

    Parameters
    ----------
    kind
        ``bars``, ``chain``, ``funding``, ``oi``, ``liquidations``, ``futures`` or
        ``barriers``.
    path
        The file (CSV, gzip, zip or Parquet).
    options
        Chain options (currency, Tardis bucket length, spot bars).
    cache
        Reuse/write the table in the cache (only for :data:`CACHED_KINDS` and files
        that are not already Parquet).

    Raises
    ------
    DataError
        Unreadable or unknown file, or any check of the format or of ``conform``.
    """
    options = options or LoadOptions()
    sniff = sniff_file(path)
    fmt = detect(kind, sniff)
    if fmt.needs_spot and options.spot is None and "underlying_price" not in sniff.columns:
        raise DataError("this chain has no underlying price column", source=sniff.source,
                        column="underlying_price",
                        expected="spot bars to complete it point-in-time",
                        fix="pass spot bars: load_chain(path, spot=BARS_FILE) or --spot FILE")

    def build() -> pa.Table:
        return _finish(kind, fmt.map(fmt.read(sniff), sniff.source, options), sniff.source,
                       options)

    if cache and kind in CACHED_KINDS and not sniff.parquet:
        key_options: dict[str, object] = {}
        if kind == "chain":
            key_options = {"currency": options.currency, "spot": options.spot_digest,
                           "snapshot_freq_us": timedelta_us(options.snapshot_freq)}
        required = [f.name for f in SCHEMAS[kind].fields if f.required]
        return cached_table(sniff.path, build, kind=f"{kind}-{fmt.name}",
                            code=code_digest(fmt), options=key_options, required=required)
    return build()


def _finish(kind: Kind, mapped: Mapped, source: str, options: LoadOptions) -> pa.Table:
    if kind != "chain":
        return conform(kind, mapped.frame, source, names=mapped.names, order=mapped.order)
    frame = mapped.frame
    if options.spot is not None:
        need = [c for c in ("underlying_price", "index_price") if c not in frame]
        if need:
            close = spot_asof(frame["ts"], options.spot, source, mapped.names.get("ts", "ts"))
            frame = frame.assign(**dict.fromkeys(need, close))
    table = conform(kind, frame, source, names=mapped.names, unique=mapped.stamp is None)
    keep = np.ones(len(frame), dtype=bool)
    if options.currency is not None and mapped.symbol is not None:
        prefix = per_unique(mapped.symbol, lambda name: name.strip().split("-", 1)[0])
        keep = (prefix == options.currency).to_numpy(dtype=bool)
        if not keep.any():
            found = sorted(prefix.dropna().unique().tolist())[:10]
            raise DataError(f"no {options.currency} instruments (found {found})", source=source,
                            column=mapped.names.get("symbol", "instrument_name"),
                            expected=f"instrument names starting with '{options.currency}-'",
                            fix="pass currency=<one of those> (or None to keep all)")
    if mapped.stamp is not None:  # the last quote per contract and snapshot
        assert mapped.symbol is not None
        sub = frame.loc[keep].assign(_symbol=mapped.symbol[keep], _stamp=mapped.stamp[keep])
        sub = sub.sort_values("_stamp", kind="stable")
        sub = sub.drop_duplicates(["_symbol", "ts"], keep="last")
        return conform(kind, sub.drop(columns=["_symbol", "_stamp"]), source, unique=False)
    if not keep.all():
        return conform(kind, frame.loc[keep], source, unique=False)
    return table


def filter_window(table: pa.Table, start: TimeLike | None, end: TimeLike | None,
                  source: str) -> pa.Table:
    """Rows with ``start <= ts < end`` (naive bounds read as UTC); none is an error."""
    if start is None and end is None:
        return table
    lo = to_utc_bound(start, "start") if start is not None else None
    hi = to_utc_bound(end, "end") if end is not None else None
    if lo is not None and hi is not None and hi <= lo:
        raise ConfigError(f"end {hi} is not after start {lo}", column="end",
                          expected="start < end", fix="swap or widen the dates")
    ts = table.column("ts")
    mask = None
    if lo is not None:
        mask = pc.greater_equal(ts, pa.scalar(lo.to_pydatetime(), type=UTC_US))
    if hi is not None:
        upper = pc.less(ts, pa.scalar(hi.to_pydatetime(), type=UTC_US))
        mask = upper if mask is None else pc.and_(mask, upper)
    out = table.filter(mask)
    if out.num_rows == 0:
        first, last = pc.min(ts).as_py(), pc.max(ts).as_py()
        raise DataError(f"no bars in [{lo}, {hi})", source=source, column="ts",
                        expected=f"a window overlapping the file's bars {first} .. {last}",
                        fix="change start/end (--from/--to)")
    return out


def spot_asof(snap_ts: pd.Series, spot: pd.DataFrame, source: str, column: str = "ts"
              ) -> np.ndarray:
    """Close of the last spot bar closed at or before each snapshot (point-in-time).

    A bar closes at ``ts + bar spacing``; a snapshot more than two bar lengths after the
    last close before it is an error (the spot does not cover the chain).
    """
    us = to_epoch_us(spot["ts"], source="spot")
    freq_us = modal_spacing_us(us, source="spot")
    order = np.argsort(us, kind="stable")
    close_time = us[order] + freq_us
    close = spot["close"].to_numpy(dtype=np.float64)[order]
    q = to_epoch_us(snap_ts, source=source, column=column)
    idx = np.searchsorted(close_time, q, side="right") - 1
    stale = (idx < 0) | (q - close_time[np.maximum(idx, 0)] > 2 * freq_us)
    if stale.any():
        i = int(np.flatnonzero(stale)[0])
        first = from_epoch_us(close_time[:1]).iloc[0]
        last = from_epoch_us(close_time[-1:]).iloc[0]
        raise DataError(f"no spot bar closed within two bar lengths before snapshot "
                        f"{snap_ts.iloc[i]}", source=source, row=i, column=column,
                        expected=f"spot bars covering the chain (spot closes span {first} .. "
                                 f"{last})",
                        fix="pass spot bars that cover every snapshot (--spot FILE)")
    return close[idx]


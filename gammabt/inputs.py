"""The run's inputs, declared once: one :class:`InputSpec` per input kind.

Everything that used to list the inputs by hand derives from :data:`INPUT_SPECS`: the
input fields of :class:`gammabt.config.RunConfig` (and their TOML keys), the command
line's input options and the ``--prepared`` conflict check (``gammabt.cli``),
:func:`gammabt.run.load_inputs`, the coverage report and the prepared-market manifest.
Adding an input kind means adding one spec here: it becomes a config field and TOML
key, a CLI option, is loaded, merged, delayed and reported in the coverage. A kind that
declares ``values`` is joined point in time onto the bars as array lines, which
strategies read with ``data.input_value(name)``; a Backtrader line (``data.name``)
needs a declaration in :mod:`feeds.btfeed` (Backtrader lines are class attributes and
this project generates no classes at run time), and a kind with analytics of its own
(GEX from a chain, a liquidation map) needs that code in :func:`gammabt.run.load_inputs`.

Publication lag (``DOMAIN.md`` section 2): every record of a delayed kind gets
``available_at = ts + delay``, the delay being the user's override (``--delay
KIND=DURATION``, TOML ``[delays]``) or the kind's per-format default; every
point-in-time join uses ``available_at``, never ``ts``. Price clocks (bars, spot,
perp) have no delay: a bar is used at its close.

Several files per kind (repeated flags, TOML lists) are merged: a row present in two
files is kept once; two different rows for one key (a bar, a funding stamp, a
future's quote, a chain snapshot) are refused, naming both files, so no snapshot
counts twice.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import pandas as pd
import pyarrow as pa

from feeds.barriers import load_barriers
from feeds.derivs import (
    load_funding,
    load_futures,
    load_liquidations,
    load_open_interest,
    load_perp,
)
from feeds.loaders import chain_delay, load_bars, load_chain
from feeds.pit import asof_indices, asof_take, available_at_us
from indicators.gamma import DEALERS as GAMMA_DEALERS
from indicators.gamma import Dealer as GammaDealer
from plumbing.errors import ConfigError, DataError
from plumbing.timeconv import duration_us, parse_duration, timedelta_us, to_epoch_us

#: Dealer positioning for GEX: ``auto`` (explicit positions when the chain has them,
#: else the default) plus every convention of :mod:`indicators.gamma`.
DEALERS: tuple[str, ...] = ("auto", *GAMMA_DEALERS)
Dealer = Literal["auto"] | GammaDealer
#: What single-leg strategies trade.
Instrument = Literal["spot", "perp"]
INSTRUMENTS: tuple[str, ...] = get_args(Instrument)

#: Name of the column every loaded table carries: when each row became usable (UTC).
AVAILABLE_AT = "available_at"


@dataclass(frozen=True)
class LoadContext:
    """What a loader may need besides its path: the run's bar frequency and the spot
    bars already loaded (to complete a chain without an underlying column)."""

    freq: str | None = None
    spot: pa.Table | None = None


Loader = Callable[[Path, LoadContext], pa.Table]
DelayRule = Callable[[Path], pd.Timedelta]


def no_delay(path: Path) -> pd.Timedelta:
    """Known at its stamp."""
    return pd.Timedelta(0)


@dataclass(frozen=True)
class InputSpec:
    """One input kind of a run.

    Attributes
    ----------
    name
        Config field, TOML key and CLI flag (``--name``); also the role in input hashes.
    help
        The CLI option's help text.
    load
        ``(path, LoadContext) -> pyarrow.Table`` in the canonical ``schema``; None for
        the simulated-market folder (its tables are read by ``feeds.synthetic``).
    schema
        Name of the canonical schema in :mod:`feeds.schema` (documentation).
    repeats
        Whether several files may be given (merged; see the module docstring).
    folder
        The input is a folder, not a file (the simulated market).
    key
        Columns identifying one record across files: two files with different rows
        for one key are refused. ``("ts",)`` for a chain means one snapshot. Empty:
        no key (events), only rows present in both files are dropped.
    delay
        Default publication delay per file (from its format); None for price clocks
        (bars, spot, perp), which take no delay.
    delay_doc
        The default delay in words (the ``--delay`` help).
    staleness
        Default age after which the kind's values turn NaN; None: the run's
        ``max_staleness``.
    staleness_keys
        The :func:`feeds.btfeed.build_arrays` staleness keys of its lines.
    market_table
        The table of a simulated-market folder this kind comes from, if any.
    lines
        Feed lines this kind feeds (documentation; the joins are in ``gammabt.run``).
    coverage
        ``(leg kind, line)`` whose finite values (``liqmap_idx`` >= 0, ``fresh`` > 0)
        say a value is in force, for the coverage report; None: not reported.
    values
        Numeric columns joined point in time (by ``available_at``) onto the spot bars
        as lines named ``name`` (one column) or ``name_column``, for kinds without
        analytics of their own; the first of them is the coverage line.
    """

    name: str
    help: str
    load: Loader | None
    schema: str | None = None
    repeats: bool = True
    folder: bool = False
    key: tuple[str, ...] = ("ts",)
    delay: DelayRule | None = no_delay
    delay_doc: str = "0"
    staleness: str | None = None
    staleness_keys: tuple[str, ...] = ()
    market_table: str | None = None
    lines: tuple[str, ...] = ()
    coverage: tuple[str, str] | None = None
    values: tuple[str, ...] = ()

    def value_lines(self) -> dict[str, str]:
        """Column -> line name of :attr:`values`."""
        if len(self.values) == 1:
            return {self.values[0]: self.name}
        return {col: f"{self.name}_{col}" for col in self.values}

    def coverage_line(self) -> tuple[str, str] | None:
        if self.coverage is not None:
            return self.coverage
        if self.values:
            return ("spot", next(iter(self.value_lines().values())))
        return None


def futures_delay(path: Path) -> pd.Timedelta:
    """A futures file read from an option chain takes that chain format's delay; a
    ``ts, expiry, price`` file is known at its stamps."""
    try:
        return chain_delay(path)
    except DataError:  # not a chain layout
        return pd.Timedelta(0)


def _bars(path: Path, ctx: LoadContext) -> pa.Table:
    return load_bars(path, freq=ctx.freq)


def _chain(path: Path, ctx: LoadContext) -> pa.Table:
    return load_chain(path, spot=ctx.spot)


def _path_only(load: Callable[[Path], pa.Table]) -> Loader:
    """A loader that needs nothing but the path (the context is not used)."""
    return lambda path, _ctx: load(path)


INPUT_SPECS: dict[str, InputSpec] = {spec.name: spec for spec in (
    InputSpec("bars", "OHLCV bars file (CSV, gz, Parquet; format auto-detected); repeat "
              "for several files (merged).", _bars, schema="BARS", delay=None,
              delay_doc="none: a bar is used at its close", market_table="bars",
              lines=("open", "high", "low", "close", "volume")),
    InputSpec("spot", "Bars used to complete a chain without an underlying column; "
              "repeatable.", _path_only(load_bars), schema="BARS", delay=None,
              delay_doc="none: a bar is used at its close"),
    InputSpec("chain", "Option chain file (OptionsDX, Deribit, Tardis; auto-detected); "
              "repeat for several files.", _chain, schema="CHAIN", delay=chain_delay,
              # the Deribit hourly file is labelled with the hour, taken up to 49 min later
              delay_doc="1h for the Deribit hourly file, else 0", market_table="chain",
              lines=("gex", "gamma_flip", "call_wall", "put_wall", "regime", "flip_dist",
                     "vanna_exp", "charm_exp", "atm_iv", "snap_idx"),
              coverage=("spot", "gex"), staleness_keys=("summary", "strikes")),
    InputSpec("market", "A folder written by `gammabt simulate` (bars, chain and the "
              "rest).", None, repeats=False, folder=True, key=(), delay=None,
              delay_doc="per table: the delay of its kind"),
    InputSpec("funding", "Perp funding rates (8-hourly or daily) -> funding_ann line; "
              "repeatable.", _path_only(load_funding), schema="FUNDING",
              # daily means are stamped at the end of their day by the loader
              delay_doc="0", market_table="funding",
              lines=("funding_ann", "funding_rate"), coverage=("spot", "funding_ann"),
              staleness_keys=("funding_ann",)),
    InputSpec("futures", "Dated futures prices (ts, expiry, price; or OptionsDX chain "
              "files); repeat for several files (merged; exact duplicates dropped).",
              _path_only(load_futures), schema="FUTURES", key=("ts", "expiry"),
              delay=futures_delay,
              delay_doc="0, or the chain format's for a chain file",
              market_table="futures", staleness_keys=("basis_ann", "basis_z"),
              lines=("basis_ann", "basis_z", "future legs"),
              coverage=("spot", "basis_ann")),
    InputSpec("perp", "Perp bars: their volume drives the liquidation map when no OI is "
              "given; repeatable.", _path_only(load_perp), schema="BARS", delay=None,
              delay_doc="none: a bar is used at its close", market_table="perp",
              lines=("perp leg",), coverage=("perp", "fresh")),
    InputSpec("oi", "Perp open-interest history -> liquidation map; repeatable.",
              _path_only(load_open_interest),
              schema="PERP_OI", market_table="perp_oi",
              lines=("liq_below", "liq_below_usd", "liq_above", "liq_above_usd",
                     "liqmap_idx"), coverage=("spot", "liqmap_idx")),
    InputSpec("liquidations", "Observed liquidation events (Binance forceOrder layout); "
              "repeatable.", _path_only(load_liquidations), schema="LIQUIDATIONS", key=(),
              market_table="liquidations", lines=("liq_*", "liqmap_idx"),
              coverage=("spot", "liqmap_idx")),
    InputSpec("barriers", "Barrier-option book: ts, type, strike, barrier, expiry, "
              "notional, dealer_side[, iv] (CSV or Parquet); repeatable.",
              _path_only(load_barriers),
              schema="BARRIERS", key=(), market_table="barriers",
              lines=("barrier_gex", "dist_to_barrier"), coverage=("spot", "barrier_gex")),
)}


def register(spec: InputSpec) -> InputSpec:
    """Add an input kind to :data:`INPUT_SPECS` (before building configs or the CLI).

    Raises
    ------
    ConfigError
        The name is taken (by another kind or a config setting) or not an identifier.
    """
    from gammabt.config import RunConfig

    taken = {f for f in RunConfig.__dataclass_fields__} | set(INPUT_SPECS)
    if not spec.name.isidentifier() or spec.name in taken:
        raise ConfigError(f"input kind {spec.name!r} cannot be registered", column="name",
                          expected="a new identifier, not a config setting",
                          fix="choose another name")
    INPUT_SPECS[spec.name] = spec
    return spec


def delayable() -> list[str]:
    """Kinds that take a publication delay."""
    return [name for name, spec in INPUT_SPECS.items() if spec.delay is not None]


def parse_delay(kind: str, value: Any, source: str | None = None, *,
                key: str | None = None) -> pd.Timedelta:
    """A ``--delay`` / ``[delays]`` entry as a non-negative Timedelta (ConfigError else).

    ``key`` is how the user wrote it (``chain_delay`` for the alias; default
    ``delays.<kind>``); ``source`` the file or "command line", when known here."""
    spec = INPUT_SPECS.get(kind)
    if spec is None or spec.delay is None:
        import difflib

        hint = difflib.get_close_matches(str(kind), delayable(), n=1)
        if spec is not None:
            why, fix = "takes no delay (a bar is used at its close)", f"drop the {kind} delay"
        else:
            why = "is not an input kind"
            fix = f"did you mean {hint[0]!r}?" if hint else "e.g. chain=1h"
        raise ConfigError(f"delay of {kind!r}: it {why}", source=source, column="delays",
                          expected=f"one of {delayable()}", fix=fix)
    return parse_duration(value, name=key or f"delays.{kind}", minimum="nonnegative",
                          source=source)


def format_duration(delay: pd.Timedelta) -> str:
    """``1h``, ``1h30min``, ``2d``, ``45s``, ``0s``: compact and readable by pandas."""
    total = timedelta_us(delay)
    if total == 0:
        return "0s"
    parts = []
    for unit, us in (("d", 86_400_000_000), ("h", 3_600_000_000), ("min", 60_000_000),
                     ("s", 1_000_000), ("us", 1)):
        count, total = divmod(total, us)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


# ----------------------------------------------------------------------------- loading
@dataclass(frozen=True)
class LoadedInput:
    """One kind's merged table (with ``available_at``) and the delay used per file."""

    name: str
    table: pa.Table
    delays: dict[str, str]  # file (or market table) -> delay used

    def describe(self) -> str:
        used = sorted(set(self.delays.values()))
        return used[0] if len(used) == 1 else ", ".join(
            f"{d} ({Path(f).name})" for f, d in self.delays.items())


def with_available_at(table: pa.Table, delay: pd.Timedelta) -> pa.Table:
    """``table`` plus ``available_at = ts + delay`` (replacing any existing column)."""
    if AVAILABLE_AT in table.column_names:
        table = table.drop_columns([AVAILABLE_AT])
    ts = table["ts"].cast(pa.timestamp("us", tz="UTC")).to_numpy().astype("datetime64[us]")
    shifted = pa.array(available_at_us(ts, timedelta_us(delay)), type=pa.int64())
    return table.append_column(AVAILABLE_AT, shifted.cast(pa.timestamp("us", tz="UTC")))


def load_kind(spec: InputSpec, paths: Sequence[str], ctx: LoadContext,
              delay: pd.Timedelta | None = None) -> LoadedInput:
    """Load and merge every file of one kind; stamp ``available_at`` per file.

    Parameters
    ----------
    delay
        The user's override for this kind; None: each file's per-format default.
    """
    if spec.load is None:
        raise ConfigError(f"{spec.name} has no file loader", column=spec.name,
                          expected="a file input", fix=f"pass --{spec.name} DIR")
    parts, used = [], {}
    for path in paths:
        table = spec.load(Path(path), ctx)
        lag = pd.Timedelta(0) if spec.delay is None else \
            delay if delay is not None else spec.delay(Path(path))
        used[str(path)] = format_duration(lag)
        parts.append((str(path), with_available_at(table, lag)))
    return LoadedInput(spec.name, merge_files(spec, parts), used)


def market_input(spec: InputSpec, table: pa.Table, folder: str,
                 delay: pd.Timedelta | None = None) -> LoadedInput:
    """A simulated market's table as one kind's input (its stamps are exact: 0 delay
    unless overridden)."""
    lag = pd.Timedelta(0) if spec.delay is None or delay is None else delay
    source = f"{folder}/{spec.market_table}.parquet"
    return LoadedInput(spec.name, with_available_at(table, lag), {source: format_duration(lag)})


def merge_files(spec: InputSpec, parts: Sequence[tuple[str, pa.Table]]) -> pa.Table:
    """Concatenate one kind's files, keep a row present in several files once, and
    refuse two files that disagree about one key (see :attr:`InputSpec.key`).

    Rows repeated inside one file are kept as the loader returned them (several
    liquidation events may share every field); across files a row counts as many
    times as the file holding it most often.
    """
    if len(parts) == 1:
        return parts[0][1]
    table = pa.concat_tables([t for _, t in parts], promote_options="default")
    files = np.repeat(np.arange(len(parts)), [t.num_rows for _, t in parts])
    data = table.drop_columns([AVAILABLE_AT]).to_pandas()
    row_hash = pd.util.hash_pandas_object(data, index=False).to_numpy()
    frame = pd.DataFrame({"file": files, "row": row_hash})
    frame["occurrence"] = frame.groupby(["file", "row"]).cumcount()
    keep = ~frame.duplicated(["row", "occurrence"], keep="first").to_numpy()
    table, data, files = table.filter(pa.array(keep)), data[keep], files[keep]
    if spec.key:
        keyed = data[list(spec.key)].assign(_file=files)
        owners = keyed.groupby(list(spec.key), dropna=False)["_file"].nunique()
        clash = owners[owners > 1]
        if len(clash):
            key = clash.index[0] if len(spec.key) > 1 else (clash.index[0],)
            mask = np.ones(len(keyed), dtype=bool)
            for col, value in zip(spec.key, key, strict=True):
                mask &= (keyed[col] == value).to_numpy()
            a, b = sorted(set(files[mask]))[:2]
            what = ", ".join(f"{col}={value}" for col, value in zip(spec.key, key, strict=True))
            raise DataError(f"the {spec.name} files disagree at {what} (the same "
                            f"{'snapshot' if spec.name == 'chain' else 'record'} with "
                            "different values)", source=f"{parts[a][0]} and {parts[b][0]}",
                            column=",".join(spec.key),
                            expected="overlapping files that agree row for row",
                            fix="drop one of the files or the overlapping rows")
    order = [(c, "ascending") for c in (spec.key or ("ts",))]
    return table.sort_by(order)


def load_all(files: Mapping[str, Sequence[str]], delays: Mapping[str, str], *,
             freq: str | None = None, market: Any = None, market_folder: str | None = None,
             ) -> dict[str, LoadedInput]:
    """Every kind of the run, in registry order: a simulated market's tables first (an
    input file of the same kind replaces the market's table), then the files.

    ``files`` maps kind -> paths (empty or absent: not given); ``delays`` the user's
    overrides by kind.
    """
    override = {k: parse_delay(k, v) for k, v in delays.items()}
    out: dict[str, LoadedInput] = {}
    ctx = LoadContext(freq=freq)
    for name, spec in INPUT_SPECS.items():
        paths = tuple(files.get(name) or ())
        if spec.folder:
            continue
        if paths:
            if name == "spot":  # the chain loader reads the merged spot bars
                loaded = load_kind(spec, paths, ctx, override.get(name))
                ctx = LoadContext(freq=freq, spot=loaded.table.drop_columns([AVAILABLE_AT]))
            else:
                loaded = load_kind(spec, paths, ctx, override.get(name))
            out[name] = loaded
        elif market is not None and spec.market_table is not None:
            table = getattr(market, spec.market_table, None)
            if table is not None:
                out[name] = market_input(spec, table, str(market_folder), override.get(name))
    return out


def staleness(max_staleness: str) -> dict[str, str]:
    """The feed's staleness limits: the run's ``max_staleness`` by default, a kind's own
    :attr:`InputSpec.staleness` for its lines where it declares one."""
    out = {"default": max_staleness}
    for spec in INPUT_SPECS.values():
        if spec.staleness is not None:
            out.update(dict.fromkeys(spec.staleness_keys, spec.staleness))
    return out


def value_lines(tables: Mapping[str, pa.Table], close_us: np.ndarray,
                max_staleness_us: int) -> dict[str, np.ndarray]:
    """Lines of the kinds with :attr:`InputSpec.values`, joined as of each bar close by
    ``available_at`` (NaN before it and once older than the kind's staleness)."""
    out: dict[str, np.ndarray] = {}
    for name, table in tables.items():
        spec = INPUT_SPECS.get(name)
        if spec is None or not spec.values:
            continue
        stale = max_staleness_us if spec.staleness is None else \
            duration_us(spec.staleness, name=f"{name} staleness")
        stamps = table[AVAILABLE_AT if AVAILABLE_AT in table.column_names else "ts"]
        avail = stamps.cast(pa.timestamp("us", tz="UTC")).to_numpy()
        idx = asof_indices(close_us, to_epoch_us(avail, column=AVAILABLE_AT), stale)
        for col, line in spec.value_lines().items():
            values = table[col].to_numpy().astype(np.float64)
            out[line] = asof_take(values, idx)
    return out

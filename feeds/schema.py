"""Canonical Arrow schemas: the one shape every loader produces and every consumer reads.

All timestamps are ``timestamp[us, tz=UTC]``. Prices are USD (or USDT, treated alike),
sizes are in BTC unless a field name says otherwise, rates are fractions (0.55, not 55).

Schemas
-------
BARS        OHLCV bars. ``ts`` is the bar *open* time; the bar closes at ``ts + freq``.
CHAIN       Option chain snapshots, one row per contract per snapshot ``ts``.
FUNDING     Perpetual funding rates, fraction per 8 hours, stamped when paid/known.
PERP_OI     Perpetual open interest (BTC and/or USD) stamped at measurement time.
LIQUIDATIONS  Forced orders: ``side`` is the side of the *liquidated position*
            (``long`` is closed by a sell), ``price`` USD, ``size`` BTC.
FUTURES     Dated futures prices: ``ts, expiry, price`` (one row per snapshot and expiry).
BARRIERS    Barrier-option positions (structured notes): ``ts`` (when known), ``type``,
            ``strike``, ``barrier``, ``expiry``, ``notional`` (BTC), ``dealer_side``
            (+1 dealers long, -1 short), optional ``iv``.

``conform`` turns a pandas DataFrame into a validated table of one of these schemas;
it is the only place where column presence, types, time zones and NaN rules are
checked generically. Loaders add their format-specific checks before calling it.
Cached tables were checked when they were built: after changing a rule here, bump
``feeds.loaders.LOADER_VERSION`` so no cache built under the old rules is reused.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from plumbing.errors import DataError

UTC_US = pa.timestamp("us", tz="UTC")


@dataclass(frozen=True)
class Field:
    name: str
    type: pa.DataType
    required: bool = True
    nullable: bool = False
    positive: bool = False  # strictly > 0 where not null
    nonnegative: bool = False
    finite: bool = True  # numbers: no +-inf (NaN is governed by ``nullable``)
    doc: str = ""


@dataclass(frozen=True)
class Order:
    """A rule between two fields of one row: ``later`` must be ``>`` (``strict``) or ``>=``
    ``earlier`` wherever both are present; ``fix`` tells the user what to do."""

    later: str
    earlier: str
    strict: bool = True
    fix: str = "repair or drop the row"


@dataclass(frozen=True)
class Schema:
    name: str
    fields: tuple[Field, ...]
    sort_keys: tuple[str, ...] = ("ts",)
    order: tuple[Order, ...] = ()  # row rules between fields, e.g. expiry > ts
    unique: tuple[str, ...] = ()  # fields that identify a row (no two rows share them)
    any_of: tuple[str, ...] = ()  # every row needs a value in at least one of these

    @property
    def arrow(self) -> pa.Schema:
        return pa.schema([pa.field(f.name, f.type, nullable=f.nullable or not f.required)
                          for f in self.fields])

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.fields]

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)


BARS = Schema("bars", (
    Field("ts", UTC_US, doc="bar open time, UTC"),
    Field("open", pa.float64(), positive=True, doc="USD"),
    Field("high", pa.float64(), positive=True, doc="USD"),
    Field("low", pa.float64(), positive=True, doc="USD"),
    Field("close", pa.float64(), positive=True, doc="USD"),
    Field("volume", pa.float64(), nonnegative=True, doc="base units (BTC)"),
), order=(Order("high", "low", strict=False,
                fix="repair or remove the row (columns may be swapped)"),),
   unique=("ts",))

CHAIN = Schema("chain", (
    Field("ts", UTC_US, doc="snapshot time, UTC"),
    Field("expiry", UTC_US, doc="expiry time, UTC (Deribit: 08:00)"),
    Field("strike", pa.float64(), positive=True, doc="USD"),
    Field("right", pa.string(), doc="'C' or 'P'"),
    Field("open_interest", pa.float64(), nonnegative=True, doc="contracts"),
    Field("mark_iv", pa.float64(), nullable=True, positive=True,
          doc="fraction (0.55), NaN = no quote"),
    Field("underlying_price", pa.float64(), positive=True,
          doc="the row's forward: listed future or synthetic, USD"),
    Field("multiplier", pa.float64(), positive=True, doc="underlying units per contract"),
    Field("index_price", pa.float64(), required=False, nullable=True, positive=True,
          doc="spot/index at snapshot, USD, when the data has it"),
    Field("underlying_index", pa.string(), required=False, nullable=True,
          doc="name of the forward, e.g. 'BTC-25MAR22' or 'SYN.BTC-1MAR22'"),
    Field("dealer_position", pa.float64(), required=False, nullable=True,
          doc="signed dealer contracts (+ long), when the data has it"),
    Field("delta", pa.float64(), required=False, nullable=True, doc="vendor delta"),
    Field("gamma", pa.float64(), required=False, nullable=True, doc="vendor gamma per 1 USD"),
    Field("vega", pa.float64(), required=False, nullable=True, doc="vendor vega"),
    Field("theta", pa.float64(), required=False, nullable=True, doc="vendor theta"),
), sort_keys=("ts", "expiry", "strike", "right"),
   # one row per contract and snapshot is checked by the chain loader: Tardis quote
   # streams repeat a contract within a snapshot before the last quote is picked
   order=(Order("expiry", "ts", fix="drop the rows of contracts expired at the snapshot"),))

FUNDING = Schema("funding", (
    Field("ts", UTC_US, doc="funding time (or day start for daily aggregates), UTC"),
    Field("rate_8h", pa.float64(), doc="fraction per 8 hours (1e-4 = 0.01%)"),
    Field("interval_h", pa.float64(), positive=True,
          doc="hours covered by the row: 8 for per-payment rows, 24 for daily means"),
), unique=("ts",))

PERP_OI = Schema("perp_oi", (
    Field("ts", UTC_US),
    Field("oi_btc", pa.float64(), nullable=True, nonnegative=True, doc="open interest, BTC"),
    Field("oi_usd", pa.float64(), required=False, nullable=True, nonnegative=True,
          doc="open interest, USD"),
), unique=("ts",), any_of=("oi_btc", "oi_usd"))

LIQUIDATIONS = Schema("liquidations", (
    Field("ts", UTC_US),
    Field("side", pa.string(), doc="'long' or 'short': the liquidated position"),
    Field("price", pa.float64(), positive=True, doc="USD"),
    Field("size", pa.float64(), positive=True, doc="BTC"),
), sort_keys=("ts",))

FUTURES = Schema("futures", (
    Field("ts", UTC_US, doc="observation time, UTC"),
    Field("expiry", UTC_US, doc="future expiry, UTC"),
    Field("price", pa.float64(), positive=True, doc="USD"),
    Field("instrument", pa.string(), required=False, nullable=True, doc="e.g. 'BTC-25MAR22'"),
), sort_keys=("ts", "expiry"),
   order=(Order("expiry", "ts", fix="drop the quotes taken at or after the future's expiry"),),
   unique=("ts", "expiry"))

BARRIERS = Schema("barriers", (
    Field("ts", UTC_US, doc="when the position is known (usable from then on), UTC"),
    Field("type", pa.string(), doc="e.g. 'down_in_put' (indicators.barrier.BARRIER_TYPES)"),
    Field("strike", pa.float64(), positive=True, doc="USD"),
    Field("barrier", pa.float64(), positive=True, doc="USD, continuously monitored"),
    Field("expiry", UTC_US, doc="expiry time, UTC"),
    Field("notional", pa.float64(), positive=True, doc="BTC of underlying"),
    Field("dealer_side", pa.float64(), doc="+1 dealers long the option, -1 short"),
    Field("iv", pa.float64(), required=False, nullable=True, positive=True,
          doc="implied volatility as a fraction; NaN = the chain's ATM IV"),
), sort_keys=("ts", "expiry", "strike"),
   order=(Order("expiry", "ts", fix="repair or drop the row"),))


def conform(df: pd.DataFrame, schema: Schema, source: str = "<DataFrame>", *,
            names: Mapping[str, str] | None = None) -> pa.Table:
    """Validate ``df`` against ``schema`` and return a canonical Arrow table.

    Checks: required columns present; timestamps tz-aware (converted to UTC);
    numeric columns castable; no NaN in non-nullable fields; no infinity in ``finite``
    fields (all numbers by default); ``positive`` / ``nonnegative`` bounds; the
    schema's row rules: ``order`` between fields (``expiry > ts``), ``any_of`` (a
    value in at least one of the fields) and ``unique`` keys. Extra columns are dropped (loaders map vendor columns to
    canonical names before calling). Optional columns that are absent are not added.
    Rows are sorted by ``schema.sort_keys`` (stable).

    ``names`` maps canonical columns to the file's own column names, which the errors
    then name instead (``fundingRate`` rather than ``rate_8h``).

    Raises
    ------
    DataError
        Naming ``source``, the first offending row (0-based, in ``df`` order) and column.
    """
    if names:
        try:
            return conform(df, schema, source)
        except DataError as exc:
            if exc.column not in names:
                raise
            raise DataError(exc.problem, source=exc.source, row=exc.row,
                            column=names[exc.column], expected=exc.expected,
                            fix=exc.fix) from None
    if len(df) == 0:
        raise DataError("no data rows", source=source,
                        expected=f"at least one {schema.name} row",
                        fix="check the file is complete and the date filter is not empty")
    missing = [f.name for f in schema.fields if f.required and f.name not in df.columns]
    if missing:
        raise DataError(f"missing column(s) {missing}", source=source,
                        expected=f"columns {[f.name for f in schema.fields if f.required]}",
                        fix="rename the columns or pick the loader for this format")
    out: dict[str, pd.Series] = {}
    for f in schema.fields:
        if f.name not in df.columns:
            continue
        col = df[f.name]
        if pa.types.is_timestamp(f.type):
            out[f.name] = _to_utc(col, f.name, source)
        elif pa.types.is_floating(f.type):
            num = pd.to_numeric(col, errors="coerce").astype("float64")
            bad = num.isna() & col.notna()
            if bad.any():
                i = int(np.flatnonzero(bad.to_numpy())[0])
                raise DataError(f"cannot parse {col.iloc[i]!r} as a number", source=source,
                                row=i, column=f.name, expected="a decimal number",
                                fix="remove or repair the row")
            out[f.name] = num
        else:
            out[f.name] = col.astype("string")
        _check_values(out[f.name], f, source)
    frame = pd.DataFrame(out)
    _check_rows(out, schema, source)
    frame = frame.sort_values(list(schema.sort_keys), kind="stable", ignore_index=True)
    fields = [schema.arrow.field(n) for n in frame.columns]
    return pa.Table.from_pandas(frame, schema=pa.schema(fields), preserve_index=False)


def _to_utc(col: pd.Series, name: str, source: str) -> pd.Series:
    if not isinstance(col.dtype, pd.DatetimeTZDtype):
        if pd.api.types.is_datetime64_any_dtype(col.dtype):
            raise DataError("timestamps are timezone-naive", source=source, column=name,
                            expected="timezone-aware UTC timestamps",
                            fix="localize them first, e.g. .dt.tz_localize('UTC')")
        parsed = pd.to_datetime(col, errors="coerce", utc=False, format="mixed")
        unparsed = (parsed.isna() & col.notna()).to_numpy()
        if unparsed.any():
            i = int(np.flatnonzero(unparsed)[0])
            raise DataError(f"cannot parse {col.iloc[i]!r} as a timestamp", source=source,
                            row=i, column=name, expected="ISO 8601 with a UTC offset",
                            fix="repair the row")
        if not isinstance(parsed.dtype, pd.DatetimeTZDtype):
            raise DataError("timestamps are timezone-naive", source=source, column=name,
                            expected="timezone-aware UTC timestamps (e.g. '+00:00' suffix)",
                            fix="add the UTC offset or use a loader that knows the format")
        col = parsed
    return col.dt.tz_convert("UTC").astype("datetime64[us, UTC]")


def _check_values(col: pd.Series, f: Field, source: str) -> None:
    isna = col.isna().to_numpy()
    if not f.nullable and isna.any():
        i = int(np.flatnonzero(isna)[0])
        raise DataError("missing value", source=source, row=i, column=f.name,
                        expected=f"a value in every row ({f.doc or f.name})",
                        fix="drop or repair the row (e.g. DataFrame.dropna())")
    if f.finite and pa.types.is_floating(f.type):
        vals = col.to_numpy(dtype="float64", na_value=np.nan)
        inf = np.isinf(vals)
        if inf.any():
            i = int(np.flatnonzero(inf)[0])
            raise DataError(f"value {float(vals[i])!r} is not finite", source=source, row=i,
                            column=f.name, expected=f"a finite number ({f.doc or f.name})",
                            fix="repair or drop the row (leave the cell empty only where "
                                "a missing value is allowed)")
    if f.positive or f.nonnegative:
        vals = col.to_numpy(dtype="float64", na_value=np.nan)
        bad = (vals <= 0) if f.positive else (vals < 0)
        bad &= ~np.isnan(vals)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            bound = "> 0" if f.positive else ">= 0"
            raise DataError(f"value {float(vals[i])!r} out of range", source=source, row=i,
                            column=f.name, expected=f"{bound} ({f.doc or f.name})",
                            fix="repair or drop the row")


def _check_rows(columns: Mapping[str, pd.Series], schema: Schema, source: str) -> None:
    """The schema's row rules (``order``, ``any_of``, ``unique``), rows in column order."""
    for rule in schema.order:
        if rule.later not in columns or rule.earlier not in columns:
            continue
        later, earlier = columns[rule.later], columns[rule.earlier]
        ok = later > earlier if rule.strict else later >= earlier
        bad = (~ok.fillna(True) & later.notna() & earlier.notna()).to_numpy(dtype=bool)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            op = ">" if rule.strict else ">="
            word = "after" if rule.strict else "at or above"
            raise DataError(f"{rule.later} {later.iloc[i]} is not {word} {rule.earlier} "
                            f"{earlier.iloc[i]}", source=source, row=i, column=rule.later,
                            expected=f"{rule.later} {op} {rule.earlier} in every row",
                            fix=rule.fix)
    present = [name for name in schema.any_of if name in columns]
    if present:
        empty = pd.DataFrame({n: columns[n] for n in present}).isna().all(axis=1)
        if empty.any():
            i = int(np.flatnonzero(empty.to_numpy(dtype=bool))[0])
            raise DataError(f"no value in any of {present}", source=source, row=i,
                            column=present[0], expected=f"a value in at least one of {present}",
                            fix="drop or repair the row")
    keys = [name for name in schema.unique if name in columns]
    if keys and len(keys) == len(schema.unique):
        frame = pd.DataFrame({k: columns[k] for k in keys})
        dup = frame.duplicated(keys, keep="first").to_numpy()
        if dup.any():
            i = int(np.flatnonzero(dup)[0])
            same = (frame == frame.iloc[i]).all(axis=1).to_numpy()
            first = int(np.flatnonzero(same)[0])
            what = ", ".join(f"{k} {frame[k].iloc[i]}" for k in keys)
            raise DataError(f"duplicated row ({what}; first at row {first})", source=source,
                            row=i, column=keys[0],
                            expected=f"one row per {'/'.join(keys)}",
                            fix="drop the duplicated rows (DataFrame.drop_duplicates)")


def check_overlap(table: pa.Table, role: str, source: str, *, first: pd.Timestamp,
                  last: pd.Timestamp, until: str | None = None,
                  lead: pd.Timedelta | None = None) -> None:
    """Refuse an input none of whose rows falls in the bars' time span.

    A row is in force from its ``ts`` (``lead`` earlier counts too: a value stays usable
    for a while after its stamp) to its ``until`` column (e.g. ``expiry``) or its ``ts``.

    Parameters
    ----------
    table
        A canonical table with a ``ts`` column (and ``until`` when given).
    role, source
        How the input is named in the message (``oi``) and its file.
    first, last
        The first bar's open and the last bar's close, UTC.

    Raises
    ------
    DataError
        When no row is in force at any time in ``[first, last]``.
    """
    if table.num_rows == 0:
        return
    ts = pd.to_datetime(table.column("ts").to_numpy(), utc=True)
    ends = ts if until is None else pd.to_datetime(table.column(until).to_numpy(), utc=True)
    inside = (ts <= last) & (ends + (lead or pd.Timedelta(0)) >= first)
    if not inside.any():
        raise DataError(f"the {role} input covers none of the bars (its rows: {ts.min()} .. "
                        f"{ends.max()}; the bars: {first} .. {last})", source=source,
                        column="ts", expected="rows within the time span of the bars",
                        fix="check the dates of both files")


def check_table(table: pa.Table, schema: Schema, source: str) -> None:
    """The value rules of :func:`conform` on a table already in canonical shape (one read
    back from Parquet, e.g. a simulated market), without converting or sorting it.

    Raises
    ------
    DataError
        As :func:`conform`: NaN in a non-nullable field, infinity, a value out of its
        bounds, a broken row rule; rows are 0-based in the table's order.
    """
    if table.num_rows == 0:
        return
    columns: dict[str, pd.Series] = {}
    for f in schema.fields:
        if f.name not in table.column_names:
            continue
        column = table.column(f.name)
        if pa.types.is_floating(f.type) or pa.types.is_timestamp(f.type):
            values = pd.Series(column.to_numpy())  # nulls become NaN / NaT
            if pa.types.is_timestamp(f.type):
                values = values.dt.tz_localize("UTC")
            _check_values(values, f, source)
            columns[f.name] = values
        elif not f.nullable and column.null_count:
            _check_values(column.to_pandas(), f, source)
    _check_rows(columns, schema, source)

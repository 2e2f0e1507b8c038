"""Deribit option chains: the hourly chain file and API ticker dumps; instrument names.

Deribit options expire at 08:00 UTC and have ``multiplier`` 1.0 (one BTC per contract).

``deribit_hourly``
    ``date,instrument_name,expiry_name,expiry_date,strike,type,...,mark_iv``; ``date`` is
    documented UTC (naive values are read as UTC). The file has no underlying, so spot
    bars complete it. It is labelled with the hour but was taken a median 27 min (up to
    49 min) later, so a snapshot is used from its label + 1 h (``publication_delay``).
``deribit_api_flat`` / ``deribit_api_dict``
    API ticker dumps with ``greeks.gamma`` style columns, or ``greeks`` / ``stats`` as
    Python-dict strings. Rows are grouped into *sweeps* (a pass over all instruments
    that takes a few minutes): a gap of more than 60 s between consecutive quote times,
    or an instrument seen again, starts a new sweep. All rows of a sweep get one ``ts``:
    the sweep's last quote time rounded *up* to the whole minute, so a snapshot never
    contains a quote stamped after its ``ts``.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from feeds.formats.base import Format, LoadOptions, Mapped
from feeds.formats.chain_columns import GREEKS, iv_fraction, optional_columns, require_columns
from feeds.formats.sniffing import Sniff, read_table, to_float
from feeds.formats.times import epoch_to_utc, iso_to_utc
from plumbing.errors import DataError
from plumbing.timeconv import from_epoch_us, to_epoch_us

__all__ = ["EXPIRY_HOUR", "FORMATS", "MONTHS", "future_expiry", "parse_instruments"]

#: Deribit options and futures expire at 08:00 UTC.
EXPIRY_HOUR = 8
MONTHS = {m: i for i, m in enumerate(
    ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"), 1)}
_INSTRUMENT_RE = (r"^(?P<cur>[A-Z0-9_]+)-(?P<day>\d{1,2})(?P<mon>[A-Z]{3})(?P<yy>\d{2})-"
                  r"(?P<strike>\d+(?:[dD.]\d+)?)-(?P<right>[CP])$")
_FUTURE_NAME = re.compile(r"^([A-Z]+)-(\d{1,2})([A-Z]{3})(\d{2})$")
_MINUTE_US = 60 * 10**6
_SWEEP_GAP_US = 60 * 10**6
_HOURLY_DOC = ("Deribit hourly chain CSV 'date,instrument_name,expiry_name,expiry_date,"
               "strike,type,...,mark_iv' (no underlying: needs spot bars)")
_FLAT_DOC = "Deribit API ticker dump flattened with 'greeks.gamma' style columns"
_DICT_DOC = "Deribit API ticker dump with 'greeks'/'stats' as Python-dict strings"


def future_expiry(name: str) -> pd.Timestamp | None:
    """Expiry (08:00 UTC) of a listed Deribit future name like ``BTC-25MAR22``; else None."""
    m = _FUTURE_NAME.match(str(name))
    if not m or m.group(3) not in MONTHS:
        return None
    day, mon, yy = int(m.group(2)), MONTHS[m.group(3)], int(m.group(4))
    try:
        return pd.Timestamp(year=2000 + yy, month=mon, day=day, hour=EXPIRY_HOUR, tz="UTC")
    except ValueError:
        return None


def parse_instruments(names: pd.Series, column: str, source: str) -> pd.DataFrame:
    """Deribit names ``BTC-25SEP20-9000-C`` -> expiry (08:00 UTC), strike, right.

    Each distinct name is parsed once, then broadcast to its rows.
    """
    codes, uniques = pd.factorize(names.astype("string").str.strip(), use_na_sentinel=True)
    parts = pd.Series(uniques, dtype="string").str.extract(_INSTRUMENT_RE)
    month = parts["mon"].map(MONTHS)
    bad_unique = (parts["cur"].isna() | month.isna()).to_numpy(dtype=bool)
    bad = (codes < 0) | bad_unique[np.maximum(codes, 0)]
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"cannot parse instrument name {names.iloc[i]!r}", source=source,
                        row=i, column=column,
                        expected="Deribit option names like 'BTC-25SEP20-9000-C'",
                        fix="repair or remove the row")
    when = pd.DataFrame({"year": 2000 + parts["yy"].astype(int), "month": month.astype(int),
                         "day": parts["day"].astype(int), "hour": EXPIRY_HOUR})
    try:
        expiry = pd.to_datetime(when).dt.tz_localize("UTC").dt.as_unit("us")
    except ValueError:
        raise DataError("instrument name with an impossible date", source=source,
                        column=column, expected="valid expiry dates",
                        fix="repair the instrument names") from None
    strike = pd.to_numeric(parts["strike"].str.replace(r"[dD]", ".", regex=True))
    out = pd.DataFrame({"currency": parts["cur"], "expiry": expiry, "strike": strike,
                        "right": parts["right"]})
    return out.iloc[codes].set_index(names.index)


def _sweep_ts(stamp_us: np.ndarray, names: pd.Series) -> np.ndarray:
    """One snapshot time per sweep: last quote time of the sweep, ceiled to the minute."""
    order = np.argsort(stamp_us, kind="stable")
    s = stamp_us[order]
    gap_group = np.concatenate([[0], np.cumsum(np.diff(s) > _SWEEP_GAP_US)])
    by = pd.DataFrame({"g": gap_group, "n": names.to_numpy()[order]})
    repeat = by.groupby(["g", "n"], sort=False).cumcount().to_numpy()
    sweep = pd.Series(gap_group).astype(str) + ":" + pd.Series(repeat).astype(str)
    last = pd.Series(s).groupby(sweep.to_numpy()).transform("max").to_numpy()
    ceiled = -(-last // _MINUTE_US) * _MINUTE_US
    out = np.empty_like(ceiled)
    out[order] = ceiled
    return out


# --------------------------------------------------------------------------- hourly

def _detect_hourly(sniff: Sniff) -> int:
    need = {"date", "instrument_name", "expiry_date", "strike", "type", "mark_iv"}
    return 10 if need <= set(sniff.columns) else 0


def _map_hourly(raw: pd.DataFrame, source: str, _options: LoadOptions) -> Mapped:
    needed = {"ts": "date", "expiry": "expiry_date", "strike": "strike", "right": "type",
              "open_interest": "open_interest", "mark_iv": "mark_iv"}
    require_columns(raw, needed, source, "deribit_hourly", _HOURLY_DOC)
    names = dict(needed)
    ts = iso_to_utc(raw["date"], "date", source, naive_utc=True)
    expiry_day = iso_to_utc(raw["expiry_date"], "expiry_date", source, naive_utc=True)
    frame = pd.DataFrame({
        "ts": ts,
        "expiry": expiry_day.dt.floor("D") + pd.Timedelta(hours=EXPIRY_HOUR),
        "strike": raw["strike"], "right": raw["type"], "open_interest": raw["open_interest"],
        "mark_iv": iv_fraction(to_float(raw["mark_iv"], "mark_iv", source), "percent",
                               source, "mark_iv"),
    })
    optional = {"underlying_price": "underlying_price", "index_price": "index_price",
                **{g: g for g in GREEKS}}
    optional_columns(raw, frame, names, optional, source)
    return Mapped(frame, names, symbol=raw["instrument_name"].astype("string"))


# ------------------------------------------------------------------------ API dumps

def _map_api(raw: pd.DataFrame, source: str, greeks_as_dict: bool) -> Mapped:
    fmt, doc = ("deribit_api_dict", _DICT_DOC) if greeks_as_dict else ("deribit_api_flat",
                                                                       _FLAT_DOC)
    needed = {"ts": "timestamp", "symbol": "instrument_name", "open_interest": "open_interest",
              "mark_iv": "mark_iv", "underlying_price": "underlying_price"}
    require_columns(raw, needed, source, fmt, doc)
    names: dict[str, str] = dict(needed)
    stamp = epoch_to_utc(raw["timestamp"], "timestamp", source)
    inst = parse_instruments(raw["instrument_name"], "instrument_name", source)
    frame = pd.DataFrame({
        "ts": from_epoch_us(_sweep_ts(to_epoch_us(stamp), raw["instrument_name"]), raw.index),
        "expiry": inst["expiry"], "strike": inst["strike"], "right": inst["right"],
        "open_interest": raw["open_interest"],
        "mark_iv": iv_fraction(to_float(raw["mark_iv"], "mark_iv", source), "percent",
                               source, "mark_iv"),
        "underlying_price": raw["underlying_price"],
    })
    for canon, col in (("expiry", "expiration_timestamp"), ("strike", "strike"),
                       ("right", "option_type")):
        if col in raw.columns:
            names[canon] = col
    if "expiration_timestamp" in raw.columns:
        frame["expiry"] = epoch_to_utc(raw["expiration_timestamp"], "expiration_timestamp",
                                       source)
    if "strike" in raw.columns:
        frame["strike"] = raw["strike"]
    if "option_type" in raw.columns:
        frame["right"] = raw["option_type"]
    optional_columns(raw, frame, names, {"index_price": "index_price",
                                         "underlying_index": "underlying_index"}, source)
    if greeks_as_dict:
        names.update({g: "greeks" for g in GREEKS})
        text = raw["greeks"].astype("string")
        for g in GREEKS:
            value = text.str.extract(rf"'{g}':\s*([^,}}]+)")[0].str.strip()
            frame[g] = to_float(value.where(value != "None"), "greeks", source)
    else:
        optional_columns(raw, frame, names, {g: f"greeks.{g}" for g in GREEKS}, source)
    return Mapped(frame, names, symbol=raw["instrument_name"].astype("string"))


def _map_api_flat(raw: pd.DataFrame, source: str, _options: LoadOptions) -> Mapped:
    return _map_api(raw, source, greeks_as_dict=False)


def _map_api_dict(raw: pd.DataFrame, source: str, _options: LoadOptions) -> Mapped:
    return _map_api(raw, source, greeks_as_dict=True)


def _detect_api_flat(sniff: Sniff) -> int:
    return 30 if {"greeks.gamma", "instrument_name"} <= set(sniff.columns) else 0


def _detect_api_dict(sniff: Sniff) -> int:
    return 20 if {"greeks", "instrument_name"} <= set(sniff.columns) else 0


FORMATS = (
    Format("chain", "deribit_hourly", _HOURLY_DOC, _detect_hourly, _map_hourly, read_table,
           publication_delay=pd.Timedelta("1h"), needs_spot=True),
    Format("chain", "deribit_api_flat", _FLAT_DOC, _detect_api_flat, _map_api_flat, read_table),
    Format("chain", "deribit_api_dict", _DICT_DOC, _detect_api_dict, _map_api_dict, read_table),
)

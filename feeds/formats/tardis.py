"""Tardis.dev ``options_chain`` CSV (microsecond epochs, IV in percent).

Rows are bucketed by ``local_timestamp`` (arrival time; ``timestamp`` when empty) into
intervals of ``snapshot_freq``, labelled by the interval's *end* (``ceil``): the
snapshot at ``T`` holds, per symbol, the last row with
``T - snapshot_freq < local_timestamp <= T``. Contracts that did not update within the
interval are absent. Only ``exchange == 'deribit'`` is accepted (contract sizes differ
per venue).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from feeds.formats.base import Format, LoadOptions, Mapped
from feeds.formats.chain_columns import GREEKS, iv_fraction, optional_columns, require_columns
from feeds.formats.sniffing import Sniff, per_unique, read_csv, read_parquet, to_float
from feeds.formats.times import epoch_to_utc
from plumbing.errors import DataError
from plumbing.timeconv import from_epoch_us, timedelta_us, to_epoch_us

__all__ = ["FORMATS"]

_DOC = ("Tardis.dev options_chain CSV 'exchange,symbol,timestamp,local_timestamp,type,"
        "strike_price,expiration,...' (microsecond epochs, IV in percent)")
_HEADER = {"exchange", "symbol", "timestamp", "local_timestamp", "type", "strike_price",
           "expiration"}
# 24 columns, often millions of rows: parse only what the chain needs
_WANTED = {*_HEADER, "open_interest", "mark_iv", "underlying_index", "underlying_price",
           *GREEKS}


def _read(sniff: Sniff) -> pd.DataFrame:
    if sniff.parquet:
        return read_parquet(sniff)
    return read_csv(sniff, header_lines=1, usecols=lambda c: c in _WANTED)


def _map(raw: pd.DataFrame, source: str, options: LoadOptions) -> Mapped:
    needed = {"exchange": "exchange", "symbol": "symbol", "ts": "local_timestamp",
              "right": "type", "strike": "strike_price", "expiry": "expiration",
              "open_interest": "open_interest", "mark_iv": "mark_iv",
              "underlying_price": "underlying_price"}
    require_columns(raw, needed, source, "tardis", _DOC)
    names = dict(needed)
    exchange = per_unique(raw["exchange"], lambda name: name.strip().lower())
    other = (exchange != "deribit").to_numpy(dtype=bool)
    if other.any():
        i = int(np.flatnonzero(other)[0])
        raise DataError(f"exchange {raw['exchange'].iloc[i]!r} is not supported", source=source,
                        row=i, column="exchange", expected="'deribit' (contract sizes and "
                        "IV conventions differ per venue)",
                        fix="filter the file to Deribit rows")
    arrival = raw["local_timestamp"]
    if "timestamp" in raw.columns:
        arrival = arrival.where(arrival.notna(), raw["timestamp"])
    stamp_us = to_epoch_us(epoch_to_utc(arrival, "local_timestamp", source))
    freq_us = timedelta_us(options.snapshot_freq)
    frame = pd.DataFrame({
        "ts": from_epoch_us(-(-stamp_us // freq_us) * freq_us, raw.index),
        "expiry": epoch_to_utc(raw["expiration"], "expiration", source),
        "strike": raw["strike_price"], "right": raw["type"],
        "open_interest": raw["open_interest"],
        "mark_iv": iv_fraction(to_float(raw["mark_iv"], "mark_iv", source), "percent",
                               source, "mark_iv"),
        "underlying_price": raw["underlying_price"],
    })
    optional_columns(raw, frame, names, {"underlying_index": "underlying_index",
                                         **{g: g for g in GREEKS}}, source)
    return Mapped(frame, names, symbol=raw["symbol"].astype("string"),
                  stamp=pd.Series(stamp_us, index=raw.index))


FORMATS = (
    Format("chain", "tardis", _DOC, lambda sniff: 40 * (_HEADER <= set(sniff.columns)), _map,
           _read),
)

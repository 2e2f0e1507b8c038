"""OptionsDX BTC end-of-day chains (comma+space separated, ``[BRACKETED]`` headers).

``ts`` is ``QUOTE_UNIXTIME``, the true UTC epoch second of the snapshot (00:00 New York,
i.e. 04:00 or 05:00 UTC); ``EXPIRY_UNIX`` the expiry; ``MARK_IV`` is in percent.
``UNDERLYING_INDEX`` / ``UNDERLYING_PRICE`` are kept as ``underlying_index`` /
``underlying_price`` (a listed future or a synthetic forward).
"""

from __future__ import annotations

import pandas as pd

from feeds.formats.base import Format, LoadOptions, Mapped
from feeds.formats.chain_columns import (
    GREEKS,
    iv_fraction,
    optional_columns,
    require_columns,
)
from feeds.formats.sniffing import Sniff, read_csv, read_parquet, to_float
from feeds.formats.times import epoch_to_utc

__all__ = ["FORMATS"]

_DOC = ("OptionsDX BTC EOD (comma+space separated, [BRACKETED] headers, QUOTE_UNIXTIME, "
        "EXPIRY_UNIX, MARK_IV in percent)")


def _bracket(column: str) -> str:
    return f"[{column}]"


def _read(sniff: Sniff) -> pd.DataFrame:
    if sniff.parquet:
        return read_parquet(sniff)
    raw = read_csv(sniff, header_lines=1, skipinitialspace=True)
    raw.columns = [str(c).strip().strip("[]").strip() for c in raw.columns]
    return raw


def _map(raw: pd.DataFrame, source: str, _options: LoadOptions) -> Mapped:
    needed = {"ts": "QUOTE_UNIXTIME", "expiry": "EXPIRY_UNIX", "strike": "STRIKE",
              "right": "OPTION_RIGHT", "open_interest": "OPEN_INTEREST", "mark_iv": "MARK_IV",
              "underlying_price": "UNDERLYING_PRICE"}
    require_columns(raw, needed, source, "optionsdx", _DOC, _bracket)
    names = {k: _bracket(v) for k, v in needed.items()}
    frame = pd.DataFrame({
        "ts": epoch_to_utc(raw["QUOTE_UNIXTIME"], "[QUOTE_UNIXTIME]", source),
        "expiry": epoch_to_utc(raw["EXPIRY_UNIX"], "[EXPIRY_UNIX]", source),
        "strike": raw["STRIKE"], "right": raw["OPTION_RIGHT"],
        "open_interest": raw["OPEN_INTEREST"],
        "mark_iv": iv_fraction(to_float(raw["MARK_IV"], "[MARK_IV]", source), "percent",
                               source, "[MARK_IV]"),
        "underlying_price": raw["UNDERLYING_PRICE"],
    })
    optional = {"multiplier": "CONTRACT_SIZE", "underlying_index": "UNDERLYING_INDEX",
                **{g: g.upper() for g in GREEKS}}
    optional_columns(raw, frame, names, optional, source, _bracket)
    names["symbol"] = "[INSTRUMENT_NAME]"
    symbol = raw["INSTRUMENT_NAME"].astype("string").str.strip() \
        if "INSTRUMENT_NAME" in raw else None
    return Mapped(frame, names, symbol=symbol)


FORMATS = (
    Format("chain", "optionsdx", _DOC, lambda sniff: 50 * ("QUOTE_UNIXTIME" in sniff.columns),
           _map, _read),
)

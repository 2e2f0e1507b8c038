"""CryptoDataDownload bars: a URL line, then 'unix,date,symbol,open,high,low,close,...'.

Rows are newest first (either order is accepted, but must be monotonic); ``unix`` is in
seconds or milliseconds. Vendor quirk: rows whose ``Volume <base>`` exceeds
``Volume <quote>`` have the two columns swapped (Bitstamp 2018-2020); for those rows
``volume`` is taken from the quote-named column, so it is always in base units (BTC).
"""

from __future__ import annotations

import re

import pandas as pd

from feeds.formats.base import Format, LoadOptions, Mapped
from feeds.formats.generic import OHLCV
from feeds.formats.sniffing import Sniff, column_lookup, missing_columns, read_csv, to_float
from feeds.formats.times import epoch_to_utc

__all__ = ["FORMATS"]

_QUOTE_CCY = {"usd", "usdt", "usdc", "busd", "tusd", "dai", "eur", "gbp", "jpy", "krw", "aud"}


def _detect(sniff: Sniff) -> int:
    first = sniff.first_line.lower()
    return 30 if not sniff.parquet and ("cryptodatadownload" in first
                                        or first.startswith("http")) else 0


def _read(sniff: Sniff) -> pd.DataFrame:
    return read_csv(sniff, header_lines=2, skiprows=1)


def _map(raw: pd.DataFrame, source: str, _options: LoadOptions) -> Mapped:
    lookup = column_lookup(raw.columns)
    tcol = lookup.get("unix") or lookup.get("unix timestamp")
    if tcol is None:
        raise missing_columns(source, ["unix"], "CryptoDataDownload header "
                              "'unix,date,symbol,open,high,low,close,Volume <base>,"
                              "Volume <quote>'",
                              "use the file as downloaded (line 1 URL, line 2 header)")
    absent = [n for n in OHLCV[:4] if n not in lookup]
    if absent:
        raise missing_columns(source, absent, "columns open, high, low, close",
                              "use the file as downloaded")
    base_col, quote_col = _volume_columns(raw, lookup)
    if base_col is None:
        raise missing_columns(source, ["Volume <base>"], "a base-currency volume column such "
                              "as 'Volume BTC'", "use the file as downloaded")
    frame = pd.DataFrame({n: to_float(raw[lookup[n]], str(lookup[n]), source)
                          for n in OHLCV[:4]})
    base = to_float(raw[base_col], base_col, source)
    if quote_col is not None:
        quote = to_float(raw[quote_col], quote_col, source)
        swapped = (base > quote).to_numpy() & (frame["close"] > 1.0).to_numpy()
        base = base.where(~swapped, quote)
    frame["volume"] = base
    frame.insert(0, "ts", epoch_to_utc(raw[tcol], str(tcol), source))
    return Mapped(frame, {"ts": str(tcol)}, order="either")


def _volume_columns(raw: pd.DataFrame, lookup: dict[str, str]
                    ) -> tuple[str | None, str | None]:
    vols = {k[len("volume"):].strip(): v for k, v in lookup.items() if k.startswith("volume")}
    if "" in vols:
        return vols[""], None
    base_name = None
    if "symbol" in lookup and len(raw):
        sym = str(raw[lookup["symbol"]].iloc[0]).lower()
        base_name = re.split(r"[/\-_]", sym)[0] if re.search(r"[/\-_]", sym) else None
    base = vols.get(base_name) if base_name else None
    if base is None:
        base = next((v for k, v in vols.items() if k not in _QUOTE_CCY), None)
    quote = next((v for k, v in vols.items() if k in _QUOTE_CCY), None)
    return base, quote


FORMATS = (
    Format("bars", "cryptodatadownload",
           "CryptoDataDownload CSV: URL line, then 'unix,date,symbol,open,high,low,close,"
           "Volume <base>,Volume <quote>'; newest first; unix in s or ms",
           _detect, _map, _read),
)

"""Dated-futures prices read off an option chain's forwards (``underlying_index``).

Any chain the chain formats read (OptionsDX EOD, Deribit API dumps) whose
``underlying_index`` names a listed future (``BTC-25MAR22``; the synthetic ``SYN.*``
forwards are skipped) gives one row per (snapshot, future) with the **median**
``underlying_price`` of its rows (rows of one snapshot quote slightly different
prices); the expiry comes from the name, at 08:00 UTC.
"""

from __future__ import annotations

import pandas as pd

from feeds.formats import dispatch
from feeds.formats.base import Format, LoadOptions, Mapped
from feeds.formats.deribit import future_expiry
from feeds.formats.sniffing import Sniff
from plumbing.errors import DataError

__all__ = ["FORMATS"]


def _detect(sniff: Sniff) -> int:
    """Any file a chain format reads (scored below a canonical futures file)."""
    return int(dispatch.detect_score("chain", sniff) > 0)


def _read(sniff: Sniff) -> pd.DataFrame:
    return dispatch.load_table("chain", sniff.path).to_pandas()


def _map(chain: pd.DataFrame, src: str, _options: LoadOptions) -> Mapped:
    if "underlying_index" not in chain.columns:
        raise DataError("the chain has no 'underlying_index' column", source=src,
                        column="underlying_index",
                        expected="rows naming their forward (e.g. 'BTC-25MAR22')",
                        fix="use an OptionsDX or Deribit API file, or a ts,expiry,price file")
    names = chain["underlying_index"].astype("string")
    expiries = {n: future_expiry(n) for n in names.dropna().unique()}
    listed = names.isin([n for n, e in expiries.items() if e is not None])
    rows = chain.loc[listed.fillna(False).to_numpy(dtype=bool)]
    if rows.empty:
        raise DataError("no listed-future rows (only synthetic SYN.* forwards)", source=src,
                        column="underlying_index", expected="names like 'BTC-25MAR22'",
                        fix="pick a file whose expiries include listed futures")
    med = (rows.groupby(["ts", "underlying_index"], sort=True)["underlying_price"].median()
           .reset_index())
    med["expiry"] = pd.to_datetime(
        med["underlying_index"].map(lambda n: expiries[n]), utc=True).astype(
        "datetime64[us, UTC]")
    return Mapped(pd.DataFrame({"ts": med["ts"], "expiry": med["expiry"],
                                "price": med["underlying_price"],
                                "instrument": med["underlying_index"].astype("string")}))


FORMATS = (
    Format("futures", "chain_forwards", "any option chain whose underlying_index names listed "
           "futures (OptionsDX EOD, Deribit API dumps)", _detect, _map, _read),
)

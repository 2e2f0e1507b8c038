"""The format registry: one module per vendor family behind one dispatch."""

from __future__ import annotations

import ast
from pathlib import Path

import pandas as pd
import pytest

from feeds.formats import dispatch
from feeds.formats.base import KINDS
from feeds.formats.conform import conform
from plumbing.errors import DataError

ROOT = Path(__file__).resolve().parents[2]
LOADER_FILES = sorted([*(ROOT / "feeds" / "formats").glob("*.py"),
                       *(ROOT / "feeds" / n for n in ("loaders.py", "derivs.py",
                                                      "barriers.py", "cache.py"))])


def test_every_kind_has_its_formats():
    names = {kind: sorted(dispatch.formats(kind)) for kind in KINDS}
    assert names == {
        "bars": ["binance_hourly", "binance_kline", "cryptodatadownload", "generic_csv",
                 "parquet"],
        "chain": ["canonical", "deribit_api_dict", "deribit_api_flat", "deribit_hourly",
                  "optionsdx", "tardis"],
        "funding": ["binance_funding_api", "binance_funding_download", "canonical",
                    "funding_8h_sheet", "funding_daily_mean"],
        "oi": ["binance_oi_api", "binance_oi_download", "canonical"],
        "liquidations": ["binance_force_order", "canonical"],
        "futures": ["canonical", "chain_forwards"],
        "barriers": ["canonical"],
    }


@pytest.mark.parametrize("path", LOADER_FILES, ids=lambda p: p.name)
def test_no_private_name_crosses_a_module(path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in {
                "feeds", "indicators", "plumbing", "gammabt", "strategies"}:
            private = [a.name for a in node.names if a.name.startswith("_")]
            assert not private, f"{path.name} imports {private} from {node.module}"


def test_code_digest_follows_the_module_of_the_format():
    bars = dispatch.formats("bars")
    chain = dispatch.formats("chain")
    assert dispatch.code_digest(bars["binance_kline"]) == dispatch.code_digest(
        bars["binance_hourly"])  # one module
    assert dispatch.code_digest(bars["binance_kline"]) != dispatch.code_digest(
        chain["optionsdx"])


def test_conform_names_the_files_column():
    frame = pd.DataFrame({"ts": pd.to_datetime(["2024-01-01", "2024-01-02"], utc=True),
                          "rate_8h": [1e-4, None], "interval_h": 8.0})
    with pytest.raises(DataError) as err:
        conform("funding", frame, "f.csv", names={"rate_8h": "FundingRate"})
    assert (err.value.row, err.value.column) == (1, "FundingRate")


def test_conform_refuses_a_repeated_key():
    ts = pd.to_datetime(["2024-01-01", "2024-01-01"], utc=True)
    frame = pd.DataFrame({"ts": ts, "expiry": ts + pd.Timedelta("30D"), "price": 1.0})
    with pytest.raises(DataError, match="duplicate timestamp"):
        conform("futures", frame, "f.csv")
    assert conform("liquidations", pd.DataFrame({"ts": ts, "side": "long", "price": 1.0,
                                                 "size": 1.0}), "l.csv").num_rows == 2

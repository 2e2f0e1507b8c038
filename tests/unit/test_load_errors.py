"""Bad input: one DataError naming file, row, column, expectation and fix; nothing cached."""

from __future__ import annotations

import gzip
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from feeds.loaders import load_bars, load_chain
from plumbing.errors import DataError
from tests.data.loader_fixtures import (
    deribit_hourly_frame,
    optionsdx_frame,
    tardis_frame,
    write_cdd,
    write_csv,
    write_optionsdx,
    write_tardis,
    write_text,
)

GOOD_BARS = [
    "timestamp,open,high,low,close,volume",
    "2022-01-01T00:00:00Z,100,110,90,105,1",
    "2022-01-01T01:00:00Z,105,112,101,108,2",
    "2022-01-01T02:00:00Z,108,115,100,101,3",
    "2022-01-01T03:00:00Z,101,104,95,99,4",
]


@pytest.fixture(autouse=True)
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "cache"
    monkeypatch.setenv("GAMMABT_CACHE", str(path))
    return path


def raises(load: Callable[[], object], path: Path, cache_dir: Path, *, row: int | None,
           column: str | None, match: str) -> DataError:
    """Assert one DataError naming the file, row and column, with expectation and fix."""
    with pytest.raises(DataError, match=match) as info:
        load()
    text = str(info.value)
    assert str(path) in text
    if row is not None:
        assert f"row {row}," in text or f"row {row}:" in text
    if column is not None:
        assert f"column '{column}'" in text
    assert "expected" in text and "Fix:" in text
    assert not list(cache_dir.glob("*.parquet")) if cache_dir.exists() else True
    return info.value


def bars_file(tmp_path: Path, edit: Callable[[list[str]], list[str]],
              name: str = "bars.csv") -> Path:
    return write_text(tmp_path / name, "\n".join(edit(list(GOOD_BARS))) + "\n")


def replace(row: int, old: str, new: str) -> Callable[[list[str]], list[str]]:
    def edit(lines: list[str]) -> list[str]:
        fields = lines[row + 1].split(",")
        fields[fields.index(old)] = new
        lines[row + 1] = ",".join(fields)
        return lines
    return edit


# ---------------------------------------------------------------------- bars


def test_good_bars_fixture_loads(tmp_path: Path) -> None:
    assert load_bars(bars_file(tmp_path, lambda lines: lines)).num_rows == 4


BAR_CASES = {
    "missing column": (lambda lines: [",".join(x.split(",")[:5]) for x in lines],
                       None, "volume", r"missing column\(s\) \['volume'\]"),
    "unparsable number": (replace(2, "115", "1l5"), 2, "high", "cannot parse '1l5'"),
    "extra field": (lambda lines: lines[:2] + [lines[2] + ",7"] + lines[3:], 1, None,
                    "unparsable row"),
    "NaN price": (replace(1, "108", ""), 1, "close", "missing value"),
    "negative price": (replace(3, "95", "-95"), 3, "low", "out of range"),
    "zero price": (replace(0, "90", "0"), 0, "low", "out of range"),
    "high < low": (replace(2, "115", "99"), 2, "high", "high < low"),
    "open above high": (replace(1, "105", "113"), 1, "open", r"open outside \[low, high\]"),
    "close below low": (replace(3, "99", "94"), 3, "close", r"close outside \[low, high\]"),
    "unsorted": (lambda lines: lines[:3] + [lines[4], lines[3]], 3, "timestamp",
                 "not sorted"),
    "duplicated": (lambda lines: lines[:3] + [lines[2].replace(",105,", ",106,")] + lines[4:],
                   2, "timestamp", r"duplicated timestamp .* \(same as row 1\)"),
    "naive timestamps": (lambda lines: [x.replace("Z,", ",") for x in lines], 0, "timestamp",
                         "timezone-naive.*offset"),
    "bad timestamp": (replace(2, "2022-01-01T02:00:00Z", "2022-13-01T02:00:00Z"), 2,
                      "timestamp", "cannot parse"),
    "epoch of no known unit": (lambda lines: [lines[0]] + [f"{12345 + i}," + x.split(",", 1)[1]
                                                           for i, x in enumerate(lines[1:])],
                               0, "timestamp", "not a date between 1990 and 2100"),
    "missing timestamp": (replace(1, "2022-01-01T01:00:00Z", ""), 1, "timestamp",
                          "missing timestamp"),
    "no time column": (lambda lines: [lines[0].replace("timestamp", "when")] + lines[1:],
                       None, None, "unknown bars format"),
    "header only": (lambda lines: lines[:1], None, None, "no data rows"),
}


@pytest.mark.parametrize("case", list(BAR_CASES))
def test_bad_bars(tmp_path: Path, cache_dir: Path, case: str) -> None:
    edit, row, column, match = BAR_CASES[case]
    path = bars_file(tmp_path, edit)
    raises(lambda: load_bars(path), path, cache_dir, row=row, column=column, match=match)


def test_unknown_format_lists_supported_ones(tmp_path: Path, cache_dir: Path) -> None:
    path = write_text(tmp_path / "notes.txt", "hello world\nnothing to see\n")
    err = raises(lambda: load_bars(path), path, cache_dir, row=None, column=None,
                 match="unknown bars format")
    for name in ("binance_kline", "cryptodatadownload", "binance_hourly", "generic_csv",
                 "parquet"):
        assert name in str(err)
    err = raises(lambda: load_chain(path), path, cache_dir, row=None, column=None,
                 match="unknown chain format")
    for name in ("optionsdx", "deribit_hourly", "deribit_api_flat", "deribit_api_dict",
                 "tardis", "canonical"):
        assert name in str(err)


@pytest.mark.parametrize("content", [b"", gzip.compress(b"", mtime=0), b"\n\n  \n"])
def test_empty_files(tmp_path: Path, cache_dir: Path, content: bytes) -> None:
    path = tmp_path / "empty.csv.gz"
    path.write_bytes(content)
    raises(lambda: load_bars(path), path, cache_dir, row=None, column=None,
           match="empty file")
    raises(lambda: load_chain(path), path, cache_dir, row=None, column=None,
           match="empty file")


def test_missing_file(tmp_path: Path, cache_dir: Path) -> None:
    path = tmp_path / "nope.csv"
    raises(lambda: load_bars(path), path, cache_dir, row=None, column=None,
           match="file not found")


def test_truncated_gzip(tmp_path: Path, cache_dir: Path) -> None:
    path = tmp_path / "cut.csv.gz"
    path.write_bytes(gzip.compress(("\n".join(GOOD_BARS) * 50).encode())[:40])
    raises(lambda: load_bars(path), path, cache_dir, row=None, column=None,
           match="not a readable gzip file")


def test_headerless_csv_with_wrong_column_count(tmp_path: Path, cache_dir: Path) -> None:
    path = write_text(tmp_path / "klines.csv", "1640995200000,1,2,0.5,1.5,10\n")
    raises(lambda: load_bars(path), path, cache_dir, row=0, column=None,
           match="headerless CSV with 6 columns")


def test_binance_kline_row_with_extra_field(tmp_path: Path, cache_dir: Path) -> None:
    good = "1640995200000,1,2,0.5,1.5,10,1640998799999,15,3,5,7,0"
    bad = "1640998800000,1,2,0.5,1.5,10,1641002399999,15,3,5,7,0,9"
    path = write_text(tmp_path / "klines.csv", f"{good}\n{bad}\n")
    raises(lambda: load_bars(path), path, cache_dir, row=1, column=None,
           match="Expected 12 fields")


def test_cryptodatadownload_must_be_monotonic(tmp_path: Path, cache_dir: Path) -> None:
    from tests.data.loader_fixtures import bars_frame

    bars = bars_frame(10)
    path = write_cdd(tmp_path / "cdd.csv", bars)
    lines = path.read_text().splitlines()
    lines[5], lines[6] = lines[6], lines[5]  # data rows 3 and 4 swapped
    path.write_text("\n".join(lines) + "\n")
    raises(lambda: load_bars(path), path, cache_dir, row=4, column="unix",
           match=r"not sorted.*expected strictly decreasing \(newest first\)")


def test_naive_datetimes_in_parquet(tmp_path: Path, cache_dir: Path) -> None:
    frame = pd.DataFrame({"ts": pd.date_range("2022-01-01", periods=3, freq="1h"),
                          "open": 1.0, "high": 1.0, "low": 1.0, "close": 1.0, "volume": 0.0})
    path = tmp_path / "naive.parquet"
    frame.to_parquet(path)
    raises(lambda: load_bars(path), path, cache_dir, row=None, column="ts",
           match="timezone-naive")


# ---------------------------------------------------------------------- chains


def dx_file(tmp_path: Path, edit: Callable[[pd.DataFrame], pd.DataFrame]) -> Path:
    return write_optionsdx(tmp_path / "btc_eod.txt", edit(optionsdx_frame()))


def setv(row: int, column: str, value: object) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def edit(frame: pd.DataFrame) -> pd.DataFrame:
        frame[column] = frame[column].astype(object)
        frame.loc[row, column] = value
        return frame
    return edit


CHAIN_CASES = {
    "missing column": (lambda f: f.drop(columns=["MARK_IV"]), None, "[MARK_IV]",
                       r"missing column\(s\) \['\[MARK_IV\]'\]"),
    "bad right": (setv(2, "OPTION_RIGHT", "straddle"), 2, "[OPTION_RIGHT]",
                  "option right 'straddle' not recognized"),
    "negative IV": (setv(1, "MARK_IV", -5.0), 1, "[MARK_IV]", "negative implied volatility"),
    "IV as fraction": (lambda f: f.assign(MARK_IV=f["MARK_IV"] / 100), None, "[MARK_IV]",
                       r"looks like a fraction.*expected percent"),
    "unparsable strike": (setv(4, "STRIKE", "4OOOO"), 4, "[STRIKE]", "cannot parse '4OOOO'"),
    "no underlying": (setv(3, "UNDERLYING_PRICE", float("nan")), 3, "[UNDERLYING_PRICE]",
                      "missing value"),
    "negative strike": (setv(5, "STRIKE", -40000.0), 5, "[STRIKE]", "out of range"),
    "negative OI": (setv(6, "OPEN_INTEREST", -1.0), 6, "[OPEN_INTEREST]", "out of range"),
    "duplicated contract": (lambda f: pd.concat([f, f.iloc[[2]]], ignore_index=True),
                            16, None, r"contract listed twice .*first at row 2"),
    "bad epoch": (setv(7, "QUOTE_UNIXTIME", "yesterday"), 7, "[QUOTE_UNIXTIME]",
                  "cannot parse 'yesterday' as an epoch time"),
}


@pytest.mark.parametrize("case", list(CHAIN_CASES))
def test_bad_optionsdx(tmp_path: Path, cache_dir: Path, case: str) -> None:
    edit, row, column, match = CHAIN_CASES[case]
    path = dx_file(tmp_path, edit)
    raises(lambda: load_chain(path), path, cache_dir, row=row, column=column, match=match)


def test_canonical_chain_with_percent_iv(tmp_path: Path, cache_dir: Path) -> None:
    table = load_chain(write_optionsdx(tmp_path / "x.txt"), cache=False)
    frame = table.to_pandas()
    frame["mark_iv"] *= 100
    path = tmp_path / "chain.parquet"
    frame.to_parquet(path)
    raises(lambda: load_chain(path), path, cache_dir, row=None, column="mark_iv",
           match=r"looks like percent.*divide mark_iv by 100")


def test_hourly_chain_without_spot(tmp_path: Path, cache_dir: Path) -> None:
    path = write_csv(tmp_path / "hourly.csv", deribit_hourly_frame())
    raises(lambda: load_chain(path), path, cache_dir, row=None, column="underlying_price",
           match=r"no underlying price column.*--spot")


def test_tardis_other_exchange(tmp_path: Path, cache_dir: Path) -> None:
    frame = tardis_frame(hours=1, updates_per_hour=1)
    frame.loc[4, "exchange"] = "okex-options"
    path = write_tardis(tmp_path / "tardis.csv", frame)
    raises(lambda: load_chain(path), path, cache_dir, row=4, column="exchange",
           match="'okex-options' is not supported")


def test_tardis_bad_epoch(tmp_path: Path, cache_dir: Path) -> None:
    frame = tardis_frame(hours=1, updates_per_hour=1)
    frame["expiration"] = frame["expiration"].astype(object)
    frame.loc[3, "expiration"] = "soon"
    path = write_tardis(tmp_path / "tardis.csv", frame)
    raises(lambda: load_chain(path), path, cache_dir, row=3, column="expiration",
           match="cannot parse 'soon'")


def test_deribit_api_bad_instrument_name(tmp_path: Path, cache_dir: Path) -> None:
    text = ("underlying_price,underlying_index,timestamp,open_interest,mark_iv,"
            "instrument_name,index_price,greeks.gamma,greeks.delta,greeks.vega,greeks.theta\n"
            "9000,SYN.BTC-22MAY20,1589434896486,1.0,80,BTC-22MAY20-9250-P,9001,1e-4,-0.4,5,-2\n"
            "9000,SYN.BTC-22MAY20,1589434896490,1.0,80,BTC-22MAY20-9250,9001,1e-4,-0.4,5,-2\n")
    path = write_text(tmp_path / "api.csv", text)
    raises(lambda: load_chain(path), path, cache_dir, row=1, column="instrument_name",
           match="cannot parse instrument name 'BTC-22MAY20-9250'")


def test_errors_leave_no_cache_or_temp_files(tmp_path: Path, cache_dir: Path) -> None:
    path = dx_file(tmp_path, setv(1, "MARK_IV", -5.0))
    with pytest.raises(DataError):
        load_chain(path)
    assert not cache_dir.exists() or not any(cache_dir.iterdir())
    good = write_optionsdx(tmp_path / "good.txt")
    load_chain(good)
    assert [p.suffix for p in cache_dir.iterdir()] == [".parquet"]
    assert pq.read_table(next(cache_dir.iterdir())).num_rows == 16

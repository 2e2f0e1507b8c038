"""Every numeric column of every input format refuses NaN, infinity, zero or negative
values where they mean nothing: exit 2, one line naming the file, row and column, what
was expected and how to fix it, and nothing written.

Each case is one small file built here with one bad cell (row 1), loaded by the command
that reads that kind of input.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gammabt.cli import main
from tests.data.loader_fixtures import (
    bars_frame,
    optionsdx_frame,
    write_binance_klines,
    write_cdd,
    write_csv,
    write_generic_csv,
    write_optionsdx,
)

BAD = {"nan": np.nan, "inf": np.inf, "-inf": -np.inf, "0": 0.0, "-1": -1.0}
PRICE_BAD = ("nan", "inf", "0", "-1")      # a price must be a finite number > 0
SIZE_BAD = ("nan", "inf", "-1")            # a size may be 0, never negative or unknown
RATE_BAD = ("nan", "inf", "-inf")          # a rate may be negative or 0


def assert_refused(capsys, code: int, *needles: str) -> str:
    """Exit 2 (a user error, not 1 = internal or 130 = abort), one line, no traceback,
    the standard prefix, the expected value and a fix, and every needle."""
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("gammabt: error:"), err
    assert "expected" in err and "Fix:" in err, err
    for needle in needles:
        assert needle in err, err
    return err


def nothing_written(root: Path, *keep: Path) -> None:
    """Only the files the test made itself are left under ``root``."""
    left = sorted(p for p in root.rglob("*") if p not in keep)
    assert not left, left


# --------------------------------------------------------------------------------------
# bars: OHLCV in four layouts


def _bars(column: str, bad: str) -> pd.DataFrame:
    frame = bars_frame(6)
    frame[column] = frame[column].astype("float64")
    frame.loc[1, column] = BAD[bad]
    return frame


def _write_bars(fmt: str, path: Path, frame: pd.DataFrame) -> Path:
    if fmt == "generic_csv":
        return write_generic_csv(path.with_suffix(".csv"), frame)
    if fmt == "binance_kline":
        return write_binance_klines(path.with_suffix(".csv"), frame)
    if fmt == "cryptodatadownload":  # written oldest first (the layout allows both)
        return write_cdd(path.with_suffix(".csv"), frame, newest_first=False)
    if fmt == "binance_hourly":  # the Binance export with symbol and interval columns
        out = frame.assign(ts=frame["ts"].map(lambda t: t.isoformat()))
        out.insert(0, "interval", "1h")
        out.insert(0, "symbol", "BTCUSDT")
        return write_csv(path.with_suffix(".csv"), out.rename(columns={"ts": "timestamp"}))
    out = path.with_suffix(".parquet")
    frame.to_parquet(out, index=False)
    return out


BAR_CASES = [(fmt, col, bad) for fmt in ("generic_csv", "parquet")
             for col in ("open", "high", "low", "close") for bad in PRICE_BAD] + \
            [(fmt, "volume", bad) for fmt in ("generic_csv", "parquet") for bad in SIZE_BAD] + \
            [("binance_kline", "close", "inf"), ("binance_kline", "low", "0"),
             ("binance_kline", "volume", "-1"), ("cryptodatadownload", "open", "-1"),
             ("cryptodatadownload", "high", "inf"), ("cryptodatadownload", "close", "nan"),
             ("binance_hourly", "open", "nan"), ("binance_hourly", "low", "inf"),
             ("binance_hourly", "volume", "-1")]


@pytest.mark.parametrize("fmt,column,bad", BAR_CASES)
def test_bad_bar_value(fmt, column, bad, tmp_path, capsys):
    path = _write_bars(fmt, tmp_path / "bars", _bars(column, bad))
    results = tmp_path / "results"
    code = main(["run", "--bars", str(path), "--results", str(results)])
    assert_refused(capsys, code, path.name, "row 1", f"column '{column}'")
    nothing_written(tmp_path, path)


@pytest.mark.parametrize("fmt", ["generic_csv", "parquet", "binance_kline"])
def test_high_below_low(fmt, tmp_path, capsys):
    frame = bars_frame(6)
    frame.loc[1, ["high", "low"]] = frame.loc[1, ["low", "high"]].to_numpy()
    path = _write_bars(fmt, tmp_path / "bars", frame)
    code = main(["run", "--bars", str(path), "--results", str(tmp_path / "r")])
    assert_refused(capsys, code, path.name, "row 1", "high")
    nothing_written(tmp_path, path)


# --------------------------------------------------------------------------------------
# option chains: canonical (IV a fraction) and OptionsDX (IV in percent)


def _canonical_chain() -> pd.DataFrame:
    ts = pd.Timestamp("2024-01-01T00:00:00Z")
    rows = [{"ts": ts, "expiry": pd.Timestamp("2024-01-26T08:00:00Z"), "strike": k,
             "right": r, "open_interest": 100.0, "mark_iv": 0.6,
             "underlying_price": 42_000.0}
            for k in (40_000.0, 45_000.0) for r in ("C", "P")]
    return pd.DataFrame(rows)


def _chain_file(tmp_path: Path, frame: pd.DataFrame) -> Path:
    out = frame.copy()
    for col in ("ts", "expiry"):
        out[col] = out[col].map(lambda t: t.isoformat())
    return write_csv(tmp_path / "chain.csv", out)


CHAIN_CASES = [(col, bad) for col in ("strike", "underlying_price") for bad in PRICE_BAD] + \
              [("open_interest", bad) for bad in SIZE_BAD] + \
              [("mark_iv", bad) for bad in ("0", "inf", "-1")] + \
              [("multiplier", bad) for bad in ("nan", "0", "-1")] + \
              [("index_price", "-1"), ("index_price", "inf"), ("gamma", "inf")]


@pytest.mark.parametrize("column,bad", CHAIN_CASES)
def test_bad_chain_value(column, bad, tmp_path, capsys):
    frame = _canonical_chain()
    frame[column] = frame.get(column, pd.Series(1.0, index=frame.index)).astype("float64")
    frame.loc[1, column] = BAD[bad]
    path = _chain_file(tmp_path, frame)
    code = main(["gex", "--chain", str(path), "--out", str(tmp_path / "gex.csv")])
    assert_refused(capsys, code, "chain.csv", "row 1", f"column '{column}'")
    nothing_written(tmp_path, path)


OPTIONSDX_CASES = [("STRIKE", "0"), ("STRIKE", "nan"), ("OPEN_INTEREST", "-1"),
                   ("OPEN_INTEREST", "inf"), ("MARK_IV", "inf"), ("MARK_IV", "-1"),
                   ("UNDERLYING_PRICE", "-1"), ("UNDERLYING_PRICE", "inf"),
                   ("CONTRACT_SIZE", "0")]


@pytest.mark.parametrize("column,bad", OPTIONSDX_CASES)
def test_bad_optionsdx_value(column, bad, tmp_path, capsys):
    frame = optionsdx_frame(days=1)
    frame[column] = frame[column].astype("float64")
    frame.loc[1, column] = BAD[bad]
    path = write_optionsdx(tmp_path / "btc_eod.txt", frame)
    code = main(["gex", "--chain", str(path)])
    assert_refused(capsys, code, path.name, "row 1", f"[{column}]")


DERIBIT_HOURLY_CASES = [("strike", "0"), ("strike", "inf"), ("open_interest", "-1"),
                        ("open_interest", "nan"), ("mark_iv", "inf"), ("mark_iv", "-1")]


@pytest.mark.parametrize("column,bad", DERIBIT_HOURLY_CASES)
def test_bad_deribit_hourly_value(column, bad, tmp_path, capsys):
    from tests.data.loader_fixtures import deribit_hourly_frame

    frame = deribit_hourly_frame()
    frame[column] = frame[column].astype("float64")
    frame.loc[1, column] = BAD[bad]
    path = write_csv(tmp_path / "deribit_hourly.csv", frame)
    spot = write_generic_csv(tmp_path / "spot.csv",
                             bars_frame(12, start="2026-01-22T20:00:00Z"))
    code = main(["gex", "--chain", str(path), "--spot", str(spot)])
    assert_refused(capsys, code, path.name, "row 1", f"column '{column}'")


TARDIS_CASES = [("strike_price", "-1"), ("open_interest", "inf"), ("mark_iv", "inf"),
                ("underlying_price", "0"), ("underlying_price", "nan")]


@pytest.mark.parametrize("column,bad", TARDIS_CASES)
def test_bad_tardis_value(column, bad, tmp_path, capsys):
    from tests.data.loader_fixtures import tardis_frame, write_tardis

    frame = tardis_frame(hours=1, updates_per_hour=2)
    frame[column] = frame[column].astype("float64")
    frame.loc[1, column] = BAD[bad]
    path = write_tardis(tmp_path / "tardis.csv", frame)
    code = main(["gex", "--chain", str(path)])
    assert_refused(capsys, code, path.name, "row 1", f"column '{column}'")


@pytest.mark.parametrize("when", ["at the snapshot", "before the snapshot"])
def test_expired_contract_in_a_snapshot(when, tmp_path, capsys):
    frame = _canonical_chain()
    shift = pd.Timedelta(0) if when == "at the snapshot" else pd.Timedelta(days=-1)
    frame.loc[1, "expiry"] = frame.loc[1, "ts"] + shift
    path = _chain_file(tmp_path, frame)
    code = main(["gex", "--chain", str(path)])
    assert_refused(capsys, code, "chain.csv", "row 1", "expiry", "ts")


def test_expired_contract_in_an_optionsdx_file(tmp_path, capsys):
    frame = optionsdx_frame(days=1)
    frame.loc[1, "EXPIRY_UNIX"] = frame.loc[1, "QUOTE_UNIXTIME"] - 3600
    path = write_optionsdx(tmp_path / "btc_eod.txt", frame)
    code = main(["gex", "--chain", str(path)])
    assert_refused(capsys, code, path.name, "row 1", "EXPIRY_UNIX")


@pytest.mark.parametrize("right", ["X", "calls?", "1", ""])
def test_mislabelled_option_right(right, tmp_path, capsys):
    frame = _canonical_chain()
    frame.loc[1, "right"] = right
    path = _chain_file(tmp_path, frame)
    code = main(["gex", "--chain", str(path)])
    assert_refused(capsys, code, "chain.csv", "row 1", "right")


def test_duplicated_contract(tmp_path, capsys):
    frame = _canonical_chain()
    frame = pd.concat([frame, frame.iloc[[2]]], ignore_index=True)
    frame.loc[4, "open_interest"] = 7.0  # the same contract quoted twice, differently
    path = _chain_file(tmp_path, frame)
    code = main(["gex", "--chain", str(path)])
    assert_refused(capsys, code, "chain.csv", "row 4", "twice")


# --------------------------------------------------------------------------------------
# funding, open interest, liquidations, futures, barrier books


@pytest.fixture
def good_bars(tmp_path) -> Path:
    frame = bars_frame(72, start="2024-01-01T00:00:00Z")
    return write_generic_csv(tmp_path / "good_bars.csv", frame)


def _stamps(n: int, freq: str) -> pd.Series:
    return pd.Series(pd.date_range("2024-01-01", periods=n, freq=freq, tz="UTC")
                     .map(lambda t: t.isoformat()))


def _funding_file(tmp_path: Path, layout: str, column: str, bad: str) -> Path:
    if layout == "canonical":
        frame = pd.DataFrame({"ts": _stamps(6, "8h"), "rate_8h": 1e-4, "interval_h": 8.0})
    elif layout == "binance_api":
        ms = pd.date_range("2024-01-01", periods=6, freq="8h", tz="UTC").asi8 // 1000
        frame = pd.DataFrame({"symbol": "BTCUSDT", "fundingTime": ms // 1000,
                              "fundingRate": 1e-4, "markPrice": 42_000.0})
    elif layout == "binance_download":
        ms = pd.date_range("2024-01-01", periods=6, freq="8h", tz="UTC").asi8 // 1000
        frame = pd.DataFrame({"calc_time": ms // 1000, "funding_interval_hours": 8.0,
                              "last_funding_rate": 1e-4})
    elif layout == "eight_hourly":
        frame = pd.DataFrame({"Date": [f"01/01/24 {h}:00" for h in (0, 8, 16)],
                              "FundingRate": 1e-4})
    else:  # daily means
        frame = pd.DataFrame({"date": [f"2024-01-0{d}" for d in range(1, 4)],
                              "funding_mean": 1e-4})
    frame[column] = frame[column].astype("float64")
    frame.loc[1, column] = BAD[bad]
    return write_csv(tmp_path / "funding.csv", frame)


FUNDING_CASES = [("canonical", "rate_8h", bad) for bad in RATE_BAD] + \
                [("canonical", "interval_h", bad) for bad in ("0", "-1", "nan", "inf")] + \
                [("binance_api", "fundingRate", "nan"), ("binance_api", "fundingRate", "inf"),
                 ("binance_download", "last_funding_rate", "inf"),
                 ("binance_download", "funding_interval_hours", "0"),
                 ("daily", "funding_mean", "nan"), ("daily", "funding_mean", "inf"),
                 ("eight_hourly", "FundingRate", "nan"), ("eight_hourly", "FundingRate", "inf")]


@pytest.mark.parametrize("layout,column,bad", FUNDING_CASES)
def test_bad_funding_value(layout, column, bad, good_bars, tmp_path, capsys):
    path = _funding_file(tmp_path, layout, column, bad)
    code = main(["run", "--bars", str(good_bars), "--funding", str(path),
                 "--results", str(tmp_path / "results")])
    assert_refused(capsys, code, "funding.csv", "row 1", f"column '{column}'")
    nothing_written(tmp_path, path, good_bars)


@pytest.mark.parametrize("rate", [-3e-4, 0.0])
def test_negative_or_zero_funding_is_a_real_rate(rate, tmp_path):
    from feeds.derivs import load_funding

    path = write_csv(tmp_path / "funding.csv", pd.DataFrame(
        {"ts": _stamps(3, "8h"), "rate_8h": [1e-4, rate, 1e-4]}))
    assert load_funding(path).column("rate_8h").to_pylist()[1] == rate


def _oi_file(tmp_path: Path, layout: str, column: str, bad: str) -> Path:
    if layout == "canonical":
        frame = pd.DataFrame({"ts": _stamps(6, "1h"), "oi_btc": 1_000.0, "oi_usd": 4.2e7})
    elif layout == "binance_download":
        frame = pd.DataFrame({"create_time": [f"2024-01-01 0{h}:00:00" for h in range(6)],
                              "symbol": "BTCUSDT", "sum_open_interest": 1_000.0,
                              "sum_open_interest_value": 4.2e7})
    else:
        ms = pd.date_range("2024-01-01", periods=6, freq="1h", tz="UTC").asi8 // 1000
        frame = pd.DataFrame({"symbol": "BTCUSDT", "sumOpenInterest": 1_000.0,
                              "sumOpenInterestValue": 4.2e7, "timestamp": ms})
    for col in column.split("+"):
        frame[col] = frame[col].astype("float64")
        frame.loc[1, col] = BAD[bad]
    return write_csv(tmp_path / "oi.csv", frame)


OI_CASES = [("canonical", "oi_btc", "-1"), ("canonical", "oi_btc", "inf"),
            ("canonical", "oi_usd", "-1"), ("canonical", "oi_usd", "inf"),
            ("canonical", "oi_btc+oi_usd", "nan"),
            ("binance_api", "sumOpenInterest", "-1"), ("binance_api", "sumOpenInterest", "inf"),
            ("binance_api", "sumOpenInterestValue", "-inf"),
            ("binance_api", "sumOpenInterest+sumOpenInterestValue", "nan"),
            ("binance_download", "sum_open_interest", "-1"),
            ("binance_download", "sum_open_interest_value", "inf")]


@pytest.mark.parametrize("layout,column,bad", OI_CASES)
def test_bad_open_interest_value(layout, column, bad, good_bars, tmp_path, capsys):
    path = _oi_file(tmp_path, layout, column, bad)
    out = tmp_path / "lines.csv"
    code = main(["liq", "--bars", str(good_bars), "--oi", str(path), "--out", str(out)])
    assert_refused(capsys, code, "oi.csv", "row 1", f"column '{column.split('+')[0]}'")
    nothing_written(tmp_path, path, good_bars)


def _liq_file(tmp_path: Path, layout: str, column: str, bad: str) -> Path:
    if layout == "canonical":
        frame = pd.DataFrame({"ts": _stamps(4, "1h"), "side": "long", "price": 42_000.0,
                              "size": 0.5})
    else:
        ms = pd.date_range("2024-01-01", periods=4, freq="1h", tz="UTC").asi8 // 1000
        frame = pd.DataFrame({"symbol": "BTCUSDT", "side": "SELL", "price": 42_000.0,
                              "quantity": 0.5, "time": ms})
    frame[column] = frame[column].astype("float64")
    frame.loc[1, column] = BAD[bad]
    return write_csv(tmp_path / "liquidations.csv", frame)


LIQ_CASES = [("canonical", col, bad) for col in ("price", "size") for bad in PRICE_BAD] + \
            [("binance_force_order", "price", "inf"), ("binance_force_order", "quantity", "0"),
             ("binance_force_order", "quantity", "nan")]


@pytest.mark.parametrize("layout,column,bad", LIQ_CASES)
def test_bad_liquidation_value(layout, column, bad, good_bars, tmp_path, capsys):
    path = _liq_file(tmp_path, layout, column, bad)
    code = main(["liq", "--bars", str(good_bars), "--liquidations", str(path)])
    assert_refused(capsys, code, "liquidations.csv", "row 1", f"column '{column}'")


def _futures_frame() -> pd.DataFrame:
    return pd.DataFrame({"ts": _stamps(4, "1h"),
                         "expiry": pd.Timestamp("2024-03-29T08:00:00Z").isoformat(),
                         "price": 43_000.0})


@pytest.mark.parametrize("bad", PRICE_BAD)
def test_bad_futures_price(bad, good_bars, tmp_path, capsys):
    frame = _futures_frame()
    frame.loc[1, "price"] = BAD[bad]
    path = write_csv(tmp_path / "futures.csv", frame)
    out = tmp_path / "basis.csv"
    code = main(["basis", "--futures", str(path), "--spot", str(good_bars), "--out", str(out)])
    assert_refused(capsys, code, "futures.csv", "row 1", "price")
    nothing_written(tmp_path, path, good_bars)


def test_futures_quoted_after_expiry(good_bars, tmp_path, capsys):
    frame = _futures_frame()
    frame.loc[1, "expiry"] = "2024-01-01T00:30:00+00:00"
    path = write_csv(tmp_path / "futures.csv", frame)
    code = main(["basis", "--futures", str(path), "--spot", str(good_bars)])
    assert_refused(capsys, code, "futures.csv", "row 1", "expiry")


def _barrier_frame() -> pd.DataFrame:
    return pd.DataFrame({"ts": _stamps(2, "1h"), "type": "down_in_put",
                         "strike": 40_000.0, "barrier": 35_000.0,
                         "expiry": "2024-03-29T08:00:00+00:00", "notional": 100.0,
                         "dealer_side": -1.0, "iv": 0.6})


BARRIER_CASES = [(col, bad) for col in ("strike", "barrier", "notional") for bad in PRICE_BAD] + \
                [("iv", "0"), ("iv", "inf"), ("iv", "-1"), ("dealer_side", "nan"),
                 ("dealer_side", "inf"), ("dealer_side", "0")]


@pytest.mark.parametrize("column,bad", BARRIER_CASES)
def test_bad_barrier_value(column, bad, good_bars, tmp_path, capsys):
    frame = _barrier_frame()
    frame.loc[1, column] = BAD[bad]
    path = write_csv(tmp_path / "barriers.csv", frame)
    code = main(["run", "--bars", str(good_bars), "--barriers", str(path),
                 "--results", str(tmp_path / "results")])
    assert_refused(capsys, code, "barriers.csv", "row 1", column)
    nothing_written(tmp_path, path, good_bars)

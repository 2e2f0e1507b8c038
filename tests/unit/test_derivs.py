"""Derivatives loaders on small files written by the tests (every supported layout)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from feeds.derivs import (
    future_expiry,
    load_funding,
    load_futures,
    load_liquidations,
    load_open_interest,
)
from plumbing.errors import DataError

MS_2024 = 1_704_067_200_000  # 2024-01-01 00:00 UTC in ms
H_MS = 3_600_000


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _ts(table: pa.Table) -> list[str]:
    return [t.isoformat() for t in table.column("ts").to_pandas()]


# ------------------------------------------------------------------------------ funding

def test_daily_funding_is_stamped_at_day_end(tmp_path: Path) -> None:
    f = _write(tmp_path / "d.csv", "date,funding_mean,funding_abs\n"
               "2021-07-01,1e-04,1e-04\n2021-07-02,-2.5e-05,3e-05\n")
    t = load_funding(f)
    assert t.schema.field("ts").type == pa.timestamp("us", tz="UTC")
    assert _ts(t) == ["2021-07-02T00:00:00+00:00", "2021-07-03T00:00:00+00:00"]
    assert t.column("rate_8h").to_pylist() == [1e-4, -2.5e-5]
    assert t.column("interval_h").to_pylist() == [24.0, 24.0]


def test_8h_funding_day_first_newest_first(tmp_path: Path) -> None:
    f = _write(tmp_path / "h.csv", "Date,FundingRate\n15/03/23 8:00,0.0001\n"
               "15/03/23 0:00,-0.0002\n14/03/23 16:00,0.0003\n")
    t = load_funding(f)
    assert _ts(t) == ["2023-03-14T16:00:00+00:00", "2023-03-15T00:00:00+00:00",
                      "2023-03-15T08:00:00+00:00"]
    assert t.column("rate_8h").to_pylist() == [0.0003, -0.0002, 0.0001]
    assert set(t.column("interval_h").to_pylist()) == {8.0}


def test_binance_funding_layouts(tmp_path: Path) -> None:
    api = _write(tmp_path / "api.csv", "symbol,fundingTime,fundingRate,markPrice\n"
                 f"BTCUSDT,{MS_2024},0.0001,42000.1\nBTCUSDT,{MS_2024 + 8 * H_MS},0.0002,42100\n")
    t = load_funding(api)
    assert _ts(t)[1] == "2024-01-01T08:00:00+00:00" and t.column("rate_8h")[1].as_py() == 2e-4
    dl = _write(tmp_path / "dl.csv", "calc_time,funding_interval_hours,last_funding_rate\n"
                f"{MS_2024},8,0.0001\n{MS_2024 + 4 * H_MS},4,0.0001\n")
    t = load_funding(dl)
    assert t.column("rate_8h").to_pylist() == pytest.approx([1e-4, 2e-4])  # 4h rate x 2
    assert t.column("interval_h").to_pylist() == [8.0, 4.0]


def test_canonical_funding_parquet(tmp_path: Path) -> None:
    df = pd.DataFrame({"ts": pd.date_range("2024-01-01", periods=3, freq="8h", tz="UTC"),
                       "rate_8h": [1e-4, 2e-4, 3e-4], "interval_h": 8.0})
    df.to_parquet(tmp_path / "f.parquet")
    assert load_funding(tmp_path / "f.parquet").num_rows == 3


@pytest.mark.parametrize(("text", "match"), [
    ("date,funding_mean\n", "no data rows|empty"),
    ("date,funding_mean\n2021-07-01,1e-4\n2021-07-01,2e-4\n", "duplicate timestamp"),
    ("date,funding_mean\n2021-07-01,abc\n", "cannot parse 'abc'"),
    ("Date,FundingRate\n2023-03-15 08:00,1e-4\n", "cannot parse"),
    ("when,rate\n1,2\n", "unknown funding format"),
    ("ts,rate_8h\n2024-01-01 00:00,1e-4\n", "timezone-naive"),
])
def test_funding_errors_name_file_row_column(tmp_path: Path, text: str, match: str) -> None:
    f = _write(tmp_path / "bad.csv", text)
    with pytest.raises(DataError, match=match) as info:
        load_funding(f)
    assert "bad.csv" in str(info.value)


def test_funding_error_points_at_the_row(tmp_path: Path) -> None:
    f = _write(tmp_path / "bad.csv", "date,funding_mean\n2021-07-01,1e-4\n2021-07-02,x\n")
    with pytest.raises(DataError, match=r"row 1, column 'funding_mean'.*Fix"):
        load_funding(f)


# ------------------------------------------------------------------------------ OI

def test_open_interest_layouts(tmp_path: Path) -> None:
    api = _write(tmp_path / "oi.csv", "symbol,sumOpenInterest,sumOpenInterestValue,timestamp\n"
                 f"BTCUSDT,80000.5,3.4e9,{MS_2024 + H_MS}\nBTCUSDT,80100,3.41e9,{MS_2024}\n")
    t = load_open_interest(api)
    assert _ts(t) == ["2024-01-01T00:00:00+00:00", "2024-01-01T01:00:00+00:00"]
    assert t.column("oi_btc").to_pylist() == [80100.0, 80000.5]
    assert t.column("oi_usd").to_pylist() == [3.41e9, 3.4e9]
    vision = _write(tmp_path / "v.csv",
                    "create_time,symbol,sum_open_interest,sum_open_interest_value,"
                    "count_toptrader_long_short_ratio\n"
                    "2023-01-01 00:05:00,BTCUSDT,100.0,1.6e6,1.1\n"
                    "2023-01-01 00:10:00,BTCUSDT,101.0,1.61e6,1.2\n")
    t = load_open_interest(vision)
    assert _ts(t)[0] == "2023-01-01T00:05:00+00:00" and t.num_rows == 2
    with pytest.raises(DataError, match="duplicate"):
        load_open_interest(_write(tmp_path / "d.csv", "ts,oi_btc\n2024-01-01T00:00Z,1\n"
                                  "2024-01-01T00:00Z,2\n"))
    with pytest.raises(DataError, match="out of range"):
        load_open_interest(_write(tmp_path / "n.csv", "ts,oi_btc\n2024-01-01T00:00Z,-1\n"))


def test_zipped_download_reads_like_the_csv(tmp_path: Path) -> None:
    """Binance's data downloads are zips holding one CSV: read in place, same table."""
    import zipfile

    text = ("create_time,symbol,sum_open_interest,sum_open_interest_value\n"
            "2023-01-01 00:05:00,BTCUSDT,100.0,1.6e6\n2023-01-01 00:10:00,BTCUSDT,101.0,1.61e6\n")
    plain = _write(tmp_path / "oi.csv", text)
    zipped = tmp_path / "BTCUSDT-metrics-2023-01-01.zip"
    with zipfile.ZipFile(zipped, "w") as archive:
        archive.writestr("BTCUSDT-metrics-2023-01-01.csv", text)
    assert load_open_interest(zipped).equals(load_open_interest(plain))
    two = tmp_path / "two.zip"
    with zipfile.ZipFile(two, "w") as archive:
        archive.writestr("a.csv", text)
        archive.writestr("b.csv", text)
    with pytest.raises(DataError, match="holds 2 files"):
        load_open_interest(two)


# ------------------------------------------------------------------------------ liquidations

def test_force_orders_sell_liquidates_a_long(tmp_path: Path) -> None:
    f = _write(tmp_path / "fo.csv",
               "symbol,price,origQty,executedQty,averagePrice,status,timeInForce,type,side,time\n"
               f"BTCUSDT,41000,0.5,0.5,40990.5,FILLED,IOC,LIMIT,SELL,{MS_2024 + 60_000}\n"
               f"BTCUSDT,43000,1.0,0,0,NEW,IOC,LIMIT,BUY,{MS_2024}\n")
    t = load_liquidations(f).to_pandas()
    assert t["side"].tolist() == ["short", "long"]  # sorted by time
    assert t["price"].tolist() == [43000.0, 40990.5]  # averagePrice when > 0
    assert t["size"].tolist() == [1.0, 0.5]  # executedQty when > 0, else origQty
    ws = _write(tmp_path / "ws.csv", "o.s,o.S,o.p,o.q,o.ap,o.z,o.T\n"
                f"BTCUSDT,BUY,50000,2,50010,2,{MS_2024}\n")
    t = load_liquidations(ws).to_pandas()
    assert t.loc[0, "side"] == "short" and t.loc[0, "price"] == 50010.0
    simple = _write(tmp_path / "s.csv", f"symbol,side,price,quantity,time\nBTCUSDT,SELL,1,2,"
                    f"{MS_2024}\nBTCUSDT,SELL,1,2,{MS_2024}\n")
    assert load_liquidations(simple).num_rows == 2  # equal stamps are fine for events
    with pytest.raises(DataError, match="side 'HOLD'"):
        load_liquidations(_write(tmp_path / "b.csv", "symbol,side,price,quantity,time\n"
                                 f"BTCUSDT,HOLD,1,2,{MS_2024}\n"))


def test_canonical_liquidations_parquet(tmp_path: Path) -> None:
    df = pd.DataFrame({"ts": pd.date_range("2024-01-01", periods=2, freq="h", tz="UTC"),
                       "side": ["long", "short"], "price": [1.0, 2.0], "size": [0.1, 0.2]})
    df.to_parquet(tmp_path / "liq.parquet")
    assert load_liquidations(tmp_path / "liq.parquet").column("side").to_pylist() == [
        "long", "short"]
    df.assign(ts=df["ts"].dt.tz_localize(None)).to_parquet(tmp_path / "naive.parquet")
    with pytest.raises(DataError, match="naive"):
        load_liquidations(tmp_path / "naive.parquet")


# ------------------------------------------------------------------------------ futures

def test_future_expiry_names() -> None:
    assert future_expiry("BTC-25MAR22") == pd.Timestamp("2022-03-25 08:00", tz="UTC")
    assert future_expiry("BTC-4JUN21") == pd.Timestamp("2021-06-04 08:00", tz="UTC")
    assert future_expiry("SYN.BTC-1MAR22") is None
    assert future_expiry("BTC-PERPETUAL") is None
    assert future_expiry("BTC-31FEB22") is None


def test_canonical_futures_csv(tmp_path: Path) -> None:
    f = _write(tmp_path / "fut.csv", "ts,expiry,price\n"
               "2022-01-01T05:00:00Z,2022-03-25T08:00:00Z,47000\n"
               "2022-01-01T05:00:00Z,2022-01-28T08:00:00Z,46800\n")
    t = load_futures(f).to_pandas()
    assert t["expiry"].is_monotonic_increasing and t["price"].tolist() == [46800.0, 47000.0]
    dup = _write(tmp_path / "dup.csv", "ts,expiry,price\n2022-01-01T05:00Z,2022-03-25T08:00Z,1\n"
                 "2022-01-01T05:00Z,2022-03-25T08:00Z,2\n")
    with pytest.raises(DataError, match="duplicate"):
        load_futures(dup)


OPTIONSDX_HEADER = (
    "[QUOTE_UNIXTIME], [QUOTE_READTIME], [QUOTE_DATE], [QUOTE_TIME_HOURS], [INSTRUMENT_NAME], "
    "[BASE_CURRENCY], [CONTRACT_SIZE], [UNDERLYING_INDEX], [UNDERLYING_PRICE], [EXPIRY_DATE], "
    "[EXPIRY_UNIX], [EXPIRY_TIME], [DTE], [OPTION_RIGHT], [STRIKE], [BID_SIZE], [BID_PRICE], "
    "[ASK_PRICE], [ASK_SIZE], [OPEN_INTEREST], [VOLUME], [DELTA], [GAMMA], [VEGA], [THETA], "
    "[RHO], [MARK_IV], [STRIKE_DISTANCE_PCT]")


def _optionsdx_row(unix: int, index: str, under: float, expiry: str, expiry_unix: int,
                   strike: float, right: str) -> str:
    name = f"BTC-{expiry}-{int(strike)}-{right[0].upper()}"
    return (f"{unix}, 2022-01-01 00:00, 2022-01-01, 0.000000, {name}, BTC, 1.000000, {index}, "
            f"{under:.6f}, 2022-03-25, {expiry_unix}, 3.000000, 83.1, {right}, {strike:.6f}, "
            "1.0, 0.05, 0.06, 1.0, 10.0, , 0.5, 0.00002, 50.0, -20.0, 10.0, 80.0, 0.1")


def test_futures_from_optionsdx_rows_median_per_snapshot(tmp_path: Path) -> None:
    snap = 1_641_013_246  # 2022-01-01 05:00:46 UTC
    exp = 1_648_195_200  # 2022-03-25 08:00 UTC
    rows = [
        _optionsdx_row(snap, "BTC-25MAR22", 47_000.0, "25MAR22", exp, 40_000, "call"),
        _optionsdx_row(snap, "BTC-25MAR22", 47_010.0, "25MAR22", exp, 40_000, "put"),
        _optionsdx_row(snap, "BTC-25MAR22", 47_100.0, "25MAR22", exp, 50_000, "call"),
        _optionsdx_row(snap, "SYN.BTC-2JAN22", 46_500.0, "2JAN22", 1_641_110_400, 46_000, "call"),
        _optionsdx_row(snap + 86_400, "BTC-25MAR22", 48_000.0, "25MAR22", exp, 40_000, "call"),
    ]
    f = _write(tmp_path / "btc_eod_202201.txt", OPTIONSDX_HEADER + "\n" + "\n".join(rows) + "\n")
    t = load_futures(f).to_pandas()
    assert len(t) == 2  # SYN row skipped; one row per (snapshot, future)
    assert t["price"].tolist() == [47_010.0, 48_000.0]  # median of 47000, 47010, 47100
    assert (t["expiry"] == pd.Timestamp("2022-03-25 08:00", tz="UTC")).all()
    assert t["instrument"].tolist() == ["BTC-25MAR22"] * 2
    assert t["ts"][0] == pd.Timestamp(snap, unit="s", tz="UTC")
    only_syn = _write(tmp_path / "syn.txt", OPTIONSDX_HEADER + "\n" + rows[3] + "\n")
    with pytest.raises(DataError, match="no listed-future rows"):
        load_futures(only_syn)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        load_funding(tmp_path / "nope.csv")


def test_several_futures_files_merge_drop_exact_duplicates_and_refuse_conflicts(tmp_path):
    from feeds.derivs import load_futures
    from plumbing.errors import DataError

    header = "ts,expiry,price\n"
    a = tmp_path / "a.csv"
    b = tmp_path / "b.csv"
    c = tmp_path / "c.csv"
    a.write_text(header + "2024-01-01T00:00Z,2024-03-29T08:00Z,42000\n"
                 "2024-01-02T00:00Z,2024-03-29T08:00Z,42100\n")
    b.write_text(header + "2024-01-02T00:00Z,2024-03-29T08:00Z,42100\n"  # the same quote
                 "2024-01-03T00:00Z,2024-03-29T08:00Z,42200\n")
    c.write_text(header + "2024-01-02T00:00Z,2024-03-29T08:00Z,43000\n")  # disagrees
    merged = load_futures([a, b]).to_pandas()
    assert merged["price"].tolist() == [42000, 42100, 42200]
    with pytest.raises(DataError, match="two prices") as err:
        load_futures([a, c])
    assert "a.csv" in str(err.value) and "c.csv" in str(err.value)

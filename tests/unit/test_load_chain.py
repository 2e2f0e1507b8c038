"""load_chain: OptionsDX, Deribit hourly (+ point-in-time spot), Deribit API dumps, Tardis."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from feeds.loaders import detect_format, load_bars, load_chain
from feeds.schema import CHAIN, UTC_US
from plumbing.errors import DataError
from tests.data.loader_fixtures import (
    TARDIS_ROW,
    bars_frame,
    deribit_hourly_frame,
    optionsdx_frame,
    tardis_frame,
    write_csv,
    write_optionsdx,
    write_tardis,
)

OPTIONSDX = "options/optionsdx_btc_eod/btc_eod_{}.txt.gz"
HOURLY = "options/deribit_hourly_chain_2026/full_data_sample.csv.gz"
BINANCE_1H = "ohlcv/binance_BTCUSDT_1h_2023-2026.csv.gz"
API = "options/deribit_api_ticker_snapshots/"
BOTTAMA = API + "bottama_btc_option_data_2021-02-11.csv.gz"
SCHEPAL_14 = API + "schepal_btc_options_data_2020-05-14.csv.gz"
SCHEPAL_21 = API + "schepal_options_data_2020-05-21.csv.gz"


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GAMMABT_CACHE", str(tmp_path / "cache"))


def utc(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


def assert_canonical(table: pa.Table) -> pd.DataFrame:
    for name in ("ts", "expiry"):
        assert table.schema.field(name).type == UTC_US
    assert table.column_names[:8] == CHAIN.names[:8]
    df = table.to_pandas()
    assert set(df["right"]) <= {"C", "P"}
    keys = ["ts", "expiry", "strike", "right"]
    assert not df.duplicated(keys).any()
    assert df.equals(df.sort_values(keys, kind="stable", ignore_index=True))
    return df


# ---------------------------------------------------------------------- OptionsDX


@pytest.mark.realdata
@pytest.mark.parametrize(("month", "rows", "first", "last", "snapshots", "expiries"), [
    ("202106", 12_134, "2021-06-01", "2021-06-30", 30, 40),
    ("202107", 11_926, "2021-07-01", "2021-07-31", 31, 41),
    ("202201", 12_502, "2022-01-01", "2022-01-31", 31, 41),
    ("202202", 12_158, "2022-02-01", "2022-02-28", 28, 38),
    ("202203", 12_602, "2022-03-01", "2022-03-31", 31, 40),
    ("202204", 12_714, "2022-04-01", "2022-04-30", 30, 40),
])
def test_optionsdx_months_match_provenance(real, month: str, rows: int, first: str, last: str,
                                           snapshots: int, expiries: int) -> None:
    path = real(OPTIONSDX.format(month))
    assert detect_format(path, "chain") == "optionsdx"
    df = assert_canonical(load_chain(path))
    assert len(df) == rows
    assert df["ts"].nunique() == snapshots
    assert df["expiry"].nunique() == expiries
    days = df["ts"].dt.tz_convert("America/New_York").dt.strftime("%Y-%m-%d")
    assert (days.min(), days.max()) == (first, last)
    # one snapshot a day at 00:00 New York = 04:00 (EDT) or 05:00 (EST) UTC
    assert set(df["ts"].dt.hour) <= {4, 5}
    assert (df["ts"].dt.tz_convert("America/New_York").dt.hour == 0).all()
    assert (df["expiry"].dt.hour == 8).all()
    assert (df["multiplier"] == 1.0).all()
    per_day = df.groupby("ts").size()  # ~385-435 contracts a day on average
    assert 380 <= per_day.mean() <= 440 and per_day.between(340, 480).all()
    iv = df["mark_iv"]
    assert 0.2 < iv.median() < 2.0  # a fraction
    syn = df["underlying_index"].str.startswith("SYN.BTC-").mean()
    assert 0.18 < syn < 0.28  # ~20-27 % synthetic forwards
    assert df["underlying_index"].str.match(r"^(SYN\.)?BTC-\d{1,2}[A-Z]{3}\d{2}$").all()
    assert {"delta", "gamma", "vega", "theta"} <= set(df.columns)


@pytest.mark.realdata
def test_optionsdx_values_against_direct_read(real) -> None:
    path = real(OPTIONSDX.format("202201"))
    raw = pd.read_csv(path, skipinitialspace=True)
    raw.columns = raw.columns.str.strip("[] ")
    raw["ts"] = pd.to_datetime(raw["QUOTE_UNIXTIME"], unit="s", utc=True)
    raw["expiry"] = pd.to_datetime(raw["EXPIRY_UNIX"], unit="s", utc=True)
    raw["right"] = raw["OPTION_RIGHT"].str[0].str.upper()
    want = raw.sort_values(["ts", "expiry", "STRIKE", "right"], kind="stable",
                           ignore_index=True)
    got = load_chain(path).to_pandas()
    np.testing.assert_allclose(got["mark_iv"], want["MARK_IV"] / 100.0, rtol=1e-12)
    np.testing.assert_array_equal(got["underlying_price"], want["UNDERLYING_PRICE"])
    np.testing.assert_array_equal(got["open_interest"], want["OPEN_INTEREST"])
    np.testing.assert_array_equal(got["gamma"], want["GAMMA"])
    assert list(got["underlying_index"]) == list(want["UNDERLYING_INDEX"])


def test_optionsdx_layout_fixture(tmp_path: Path) -> None:
    frame = optionsdx_frame(days=2)
    df = assert_canonical(load_chain(write_optionsdx(tmp_path / "btc_eod_202201.txt", frame)))
    assert len(df) == len(frame)
    assert list(df["ts"].unique()) == [utc("2022-01-10 05:00:40"), utc("2022-01-11 05:00:40")]
    np.testing.assert_allclose(np.sort(df["mark_iv"]), np.sort(frame["MARK_IV"] / 100))


# ---------------------------------------------------------------------- Deribit hourly


@pytest.mark.realdata
def test_hourly_chain_needs_spot(real) -> None:
    with pytest.raises(DataError, match="--spot") as info:
        load_chain(real(HOURLY))
    assert "underlying_price" in str(info.value)


@pytest.mark.realdata
def test_hourly_chain_with_real_spot(real) -> None:
    path = real(HOURLY)
    assert detect_format(path, "chain") == "deribit_hourly"
    spot_path = real(BINANCE_1H)
    df = assert_canonical(load_chain(path, spot=spot_path))
    assert len(df) == 24_562
    assert df["ts"].nunique() == 37
    assert (df["ts"].min(), df["ts"].max()) == (utc("2026-01-23 01:00"),
                                                utc("2026-01-24 13:00"))
    assert df["expiry"].nunique() == 14 and (df["expiry"].dt.hour == 8).all()
    assert 0.2 < df["mark_iv"].median() < 1.0
    oi = df.groupby("ts")["open_interest"].sum()
    assert oi.between(300_000, 400_000).all()
    # spot completion: the close of the hourly bar that closed exactly at the snapshot
    bars = load_bars(spot_path).to_pandas().set_index("ts")["close"]
    want = bars.reindex(df["ts"] - pd.Timedelta("1h")).to_numpy()
    np.testing.assert_array_equal(df["underlying_price"].to_numpy(), want)
    np.testing.assert_array_equal(df["index_price"].to_numpy(), want)
    # same result from a table as from a path
    table = load_bars(spot_path, start="2026-01-20", end="2026-01-25")
    assert load_chain(path, spot=table).equals(load_chain(path, spot=spot_path))


def spot_reference(snapshots: pd.Series, bars: pd.DataFrame) -> np.ndarray:
    """Slow path: scan every bar, keep the latest one whose close time <= snapshot."""
    step = bars["ts"].diff().mode().iloc[0]
    out = []
    for snap in snapshots:
        best = None
        for ts, close in zip(bars["ts"], bars["close"], strict=True):
            if ts + step <= snap and (best is None or ts > best[0]):
                best = (ts, close)
        out.append(np.nan if best is None else best[1])
    return np.asarray(out)


def test_spot_completion_is_point_in_time(tmp_path: Path) -> None:
    bars = bars_frame(6, freq="1h", start="2026-01-23T00:00:00Z", seed=2)
    flat = 1000.0 + np.arange(6)                   # bar k closes at 1000 + k
    bars["open"] = bars["high"] = bars["low"] = bars["close"] = flat
    dates = ["2026-01-23T01:00:00.000000", "2026-01-23T01:30:00.000000",
             "2026-01-23T01:59:59.999999", "2026-01-23T02:00:00.000000",
             "2026-01-23T05:10:00+00:00"]
    chain = deribit_hourly_frame(dates)
    df = load_chain(write_csv(tmp_path / "hourly.csv", chain), spot=bars).to_pandas()
    got = df.groupby("ts")["underlying_price"].first()
    assert list(got) == [1000.0, 1000.0, 1000.0, 1001.0, 1004.0]
    np.testing.assert_array_equal(got.to_numpy(), spot_reference(got.index.to_series(), bars))
    # never a bar that closes after the snapshot
    used = (df["index_price"] - 1000.0).astype(int)
    bar_close = bars["ts"].iloc[used].reset_index(drop=True) + pd.Timedelta("1h")
    assert (bar_close <= df["ts"]).all()


def test_spot_that_does_not_cover_the_chain(tmp_path: Path) -> None:
    bars = bars_frame(24, freq="1h", start="2026-01-20T00:00:00Z")
    path = write_csv(tmp_path / "hourly.csv", deribit_hourly_frame())
    with pytest.raises(DataError, match=r"row 0, column 'date': no spot bar closed"):
        load_chain(path, spot=bars)


def test_hourly_mark_iv_zero_means_no_quote(tmp_path: Path) -> None:
    chain = deribit_hourly_frame()
    chain.loc[3, "mark_iv"] = 0.0
    bars = bars_frame(6, freq="1h", start="2026-01-23T00:00:00Z")
    df = load_chain(write_csv(tmp_path / "hourly.csv", chain), spot=bars).to_pandas()
    assert df["mark_iv"].isna().sum() == 1


# ---------------------------------------------------------------------- Deribit API dumps


@pytest.mark.realdata
def test_bottama_two_sweeps(real) -> None:
    path = real(BOTTAMA)
    assert detect_format(path, "chain") == "deribit_api_flat"
    df = assert_canonical(load_chain(path))
    assert len(df) == 976
    sizes = df.groupby("ts").size()
    assert list(sizes) == [488, 488]
    raw = pd.read_csv(path)
    stamps = pd.to_datetime(raw["timestamp"], unit="ms", utc=True).sort_values()
    first, second = stamps.iloc[:488], stamps.iloc[488:]
    # ts = last quote of the sweep, rounded up to the minute: never before a quote
    assert list(sizes.index) == [first.max().ceil("min"), second.max().ceil("min")]
    assert sizes.index[0] >= first.max() and sizes.index[1] >= second.max()
    assert (df["expiry"].dt.hour == 8).all()
    assert df["index_price"].notna().all() and df["underlying_index"].notna().all()
    assert 0.3 < df["mark_iv"].median() < 3.0


@pytest.mark.realdata
@pytest.mark.parametrize(("relative", "rows", "ts"), [
    (SCHEPAL_14, 310, "2020-05-14 05:45"), (SCHEPAL_21, 326, "2020-05-21 23:23")])
def test_schepal_one_sweep_with_dict_greeks(real, relative: str, rows: int, ts: str) -> None:
    path = real(relative)
    assert detect_format(path, "chain") == "deribit_api_dict"
    df = assert_canonical(load_chain(path))
    assert len(df) == rows and list(df["ts"].unique()) == [utc(ts)]
    raw = pd.read_csv(path)
    greeks = pd.DataFrame([ast.literal_eval(g) for g in raw["greeks"]])  # slow reference
    raw = pd.concat([raw, greeks.add_prefix("g_")], axis=1)
    raw["expiry"] = pd.to_datetime(raw["expiration_timestamp"], unit="ms", utc=True)
    raw["right"] = raw["option_type"].str[0].str.upper()
    want = raw.sort_values(["expiry", "strike", "right"], ignore_index=True)
    for g in ("delta", "gamma", "vega", "theta"):
        np.testing.assert_array_equal(df[g].to_numpy(), want[f"g_{g}"].to_numpy(dtype=float))
    np.testing.assert_allclose(df["mark_iv"], want["mark_iv"] / 100.0)
    np.testing.assert_array_equal(df["index_price"], want["index_price"])


@pytest.mark.realdata
def test_instrument_names_give_expiry_strike_right(real, tmp_path: Path) -> None:
    raw = pd.read_csv(real(SCHEPAL_21))
    stripped = raw.drop(columns=["expiration_timestamp", "strike", "option_type"])
    path = write_csv(tmp_path / "names_only.csv", stripped)
    assert load_chain(path).equals(load_chain(real(SCHEPAL_21)))


# ---------------------------------------------------------------------- Tardis


def tardis_reference(frame: pd.DataFrame, freq: str = "1h",
                     currency: str = "BTC") -> pd.DataFrame:
    """Slow path: walk the rows in arrival order, keep the last row per (bucket, symbol)."""
    step = int(pd.Timedelta(freq).value // 1000)
    last: dict[tuple[int, str], dict] = {}
    for row in frame.sort_values("local_timestamp", kind="stable").to_dict("records"):
        if row["symbol"].split("-")[0] != currency:
            continue
        bucket = -(-row["local_timestamp"] // step) * step
        last[(bucket, row["symbol"])] = row
    out = pd.DataFrame([{"ts": pd.Timestamp(b * 1000, tz="UTC"), **r}
                        for (b, _), r in last.items()])
    out["right"] = out["type"].str[0].str.upper()
    out["expiry"] = pd.to_datetime(out["expiration"], unit="us", utc=True)
    return out.sort_values(["ts", "expiry", "strike_price", "right"], ignore_index=True)


@pytest.mark.parametrize("freq", ["1h", "30min", "15min"])
def test_tardis_buckets_keep_last_row_per_symbol(tmp_path: Path, freq: str) -> None:
    frame = tardis_frame(hours=3, updates_per_hour=4)
    path = write_tardis(tmp_path / "deribit_options_chain_2020-09-01_OPTIONS.csv.gz", frame)
    assert detect_format(path, "chain") == "tardis"
    df = assert_canonical(load_chain(path, snapshot_freq=freq))
    want = tardis_reference(frame, freq)
    assert len(df) == len(want)
    pd.testing.assert_series_equal(df["ts"], want["ts"].astype(df["ts"].dtype),
                                   check_names=False)
    np.testing.assert_allclose(df["mark_iv"], want["mark_iv"] / 100.0)
    np.testing.assert_array_equal(df["open_interest"], want["open_interest"])
    np.testing.assert_array_equal(df["underlying_price"], want["underlying_price"])
    assert list(df["underlying_index"]) == list(want["underlying_index"])
    if freq == "1h":
        assert list(df["ts"].unique()) == [utc("2020-09-01 01:00"), utc("2020-09-01 02:00"),
                                           utc("2020-09-01 03:00")]
        assert (df.groupby("ts").size() == 12).all()


def test_tardis_documented_row(tmp_path: Path) -> None:
    path = tmp_path / "one.csv"
    path.write_text(
        "exchange,symbol,timestamp,local_timestamp,type,strike_price,expiration,"
        "open_interest,last_price,bid_price,bid_amount,bid_iv,ask_price,ask_amount,ask_iv,"
        "mark_price,mark_iv,underlying_index,underlying_price,delta,gamma,vega,theta,rho\n"
        + TARDIS_ROW + "\n")
    row = load_chain(path).to_pylist()[0]
    assert row["ts"] == utc("2020-06-09 01:00")  # arrival 00:00:00.25, bucket end
    assert row["expiry"] == utc("2020-06-12 08:00")
    assert (row["strike"], row["right"], row["open_interest"]) == (9500.0, "P", 12.5)
    assert row["mark_iv"] == pytest.approx(0.607)
    assert row["underlying_index"] == "SYN.BTC-12JUN20"
    assert (row["underlying_price"], row["gamma"], row["multiplier"]) == (9712.4, 0.00041, 1.0)
    assert "index_price" not in row


def test_tardis_currency_filter(tmp_path: Path) -> None:
    path = write_tardis(tmp_path / "chain.csv")
    assert set(load_chain(path, currency="ETH").to_pandas()["strike"]) == {400.0}
    everything = load_chain(path, currency=None).to_pandas()
    assert len(everything) == 3 * 14
    with pytest.raises(DataError, match=r"no SOL instruments \(found \['BTC', 'BTC_USDC', 'ETH'"):
        load_chain(path, currency="SOL")


def test_tardis_with_spot_fills_index_price_only(tmp_path: Path) -> None:
    path = write_tardis(tmp_path / "chain.csv")
    bars = bars_frame(6, freq="1h", start="2020-09-01T00:00:00Z")
    df = load_chain(path, spot=bars).to_pandas()
    closes = bars.set_index("ts")["close"]
    np.testing.assert_array_equal(df["index_price"],
                                  closes.reindex(df["ts"] - pd.Timedelta("1h")).to_numpy())
    assert not np.array_equal(df["underlying_price"], df["index_price"])


# ---------------------------------------------------------------------- canonical


def test_canonical_parquet_and_csv(tmp_path: Path) -> None:
    table = load_chain(write_optionsdx(tmp_path / "x.txt"))
    path = tmp_path / "chain.parquet"
    pq.write_table(table, path)
    assert detect_format(path, "chain") == "canonical"
    assert load_chain(path).equals(table)
    frame = table.to_pandas().drop(columns=["multiplier"])
    frame["right"] = frame["right"].map({"C": "call", "P": "Put"})
    frame["ts"] = frame["ts"].map(lambda t: t.isoformat())
    got = load_chain(write_csv(tmp_path / "chain.csv", frame)).to_pandas()
    pd.testing.assert_frame_equal(got, table.to_pandas())

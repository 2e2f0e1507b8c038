"""load_bars, bar_freq, resample_bars: real files, every layout, resampling, windows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from feeds.loaders import bar_freq, detect_format, load_bars, resample_bars
from feeds.schema import BARS, UTC_US
from plumbing.errors import ConfigError, DataError
from tests.data.loader_fixtures import (
    bars_frame,
    write_binance_klines,
    write_cdd,
    write_generic_csv,
)

BITSTAMP_1H = "ohlcv/Bitstamp_BTCUSD_1h.csv.gz"
BITSTAMP_1D = "ohlcv/Bitstamp_BTCUSD_d.csv.gz"
BINANCE_1H = "ohlcv/binance_BTCUSDT_1h_2023-2026.csv.gz"
PERP_1H = "perp_funding_basis/BTCUSDT_Binance_futures_data_hour.csv.gz"
SPOT_2020 = "perp_funding_basis/Binance_BTCUSDT_spot_1h_2020-08-02_2020-12-30.csv.gz"


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GAMMABT_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def hourly_bars() -> pd.DataFrame:
    return bars_frame(72, freq="1h", seed=21)


def utc(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


def assert_canonical(table: pa.Table) -> pd.DataFrame:
    assert table.schema.field("ts").type == UTC_US
    assert table.column_names == BARS.names
    df = table.to_pandas()
    assert df["ts"].is_monotonic_increasing and df["ts"].is_unique
    return df


# ---------------------------------------------------------------------- real files


@pytest.mark.realdata
def test_bitstamp_hourly_matches_provenance(real) -> None:
    path = real(BITSTAMP_1H)
    assert detect_format(path) == "cryptodatadownload"
    df = assert_canonical(load_bars(path))
    assert len(df) == 37_387
    assert df["ts"].iloc[0] == utc("2018-05-15 06:00")
    assert df["ts"].iloc[-1] == utc("2022-08-20 00:00")
    assert (df["ts"].diff().dropna() == pd.Timedelta("1h")).all()  # no missing hours
    raw = pd.read_csv(path, skiprows=1).iloc[::-1].reset_index(drop=True)
    assert np.array_equal(df["close"].to_numpy(), raw["close"].to_numpy())
    # the vendor swapped the volume columns for 20,143 old rows: volume is BTC everywhere
    swapped = df["volume"].to_numpy() != raw["Volume BTC"].to_numpy()
    assert swapped.sum() == 20_143
    assert np.array_equal(df["volume"].to_numpy()[swapped], raw["Volume USD"].to_numpy()[swapped])
    assert df.loc[swapped, "ts"].max() < utc("2020-10-13")
    assert (df["volume"] * df["close"] >= df["volume"]).all()


@pytest.mark.realdata
def test_bitstamp_daily(real) -> None:
    df = assert_canonical(load_bars(real(BITSTAMP_1D)))
    assert len(df) == 2_823
    assert (df["ts"].iloc[0], df["ts"].iloc[-1]) == (utc("2014-11-28"), utc("2022-08-20"))
    assert bar_freq(df) == pd.Timedelta("1D")


@pytest.mark.realdata
def test_binance_hourly_export(real) -> None:
    path = real(BINANCE_1H)
    assert detect_format(path) == "binance_hourly"
    df = assert_canonical(load_bars(path))
    assert len(df) == 27_083
    assert (df["ts"].iloc[0], df["ts"].iloc[-1]) == (utc("2023-01-01 00:00"),
                                                    utc("2026-02-02 11:00"))
    gaps = df["ts"].diff() > pd.Timedelta("1h")
    assert gaps.sum() == 1  # the real Binance outage
    assert df.loc[gaps, "ts"].iloc[0] - pd.Timedelta("1h") == utc("2023-03-24 13:00")
    assert bar_freq(df) == pd.Timedelta("1h")


@pytest.mark.realdata
@pytest.mark.parametrize(("relative", "rows"), [(PERP_1H, 3_599), (SPOT_2020, 3_594)])
def test_cryptodatadownload_millisecond_files(real, relative: str, rows: int) -> None:
    df = assert_canonical(load_bars(real(relative)))
    assert len(df) == rows
    assert (df["ts"].iloc[0], df["ts"].iloc[-1]) == (utc("2020-08-02 02:00"),
                                                    utc("2020-12-30 00:00"))


# ---------------------------------------------------------------------- layouts


@pytest.mark.parametrize("unit", ["ms", "us"])
def test_binance_klines_ms_and_us(tmp_path: Path, hourly_bars: pd.DataFrame, unit: str) -> None:
    path = write_binance_klines(tmp_path / f"BTCUSDT-1h-{unit}.csv", hourly_bars, unit=unit)
    assert detect_format(path) == "binance_kline"
    pd.testing.assert_frame_equal(load_bars(path).to_pandas(), hourly_bars)


def test_binance_klines_mixed_units_in_one_file(tmp_path: Path,
                                                hourly_bars: pd.DataFrame) -> None:
    # Binance spot moved from ms to us on 2025-01-01: concatenated files hold both
    units = ["ms"] * 30 + ["us"] * (len(hourly_bars) - 30)
    path = write_binance_klines(tmp_path / "mixed.csv.gz", hourly_bars, units=units)
    pd.testing.assert_frame_equal(load_bars(path).to_pandas(), hourly_bars)


@pytest.mark.parametrize("unit", ["s", "ms"])
@pytest.mark.parametrize("newest_first", [True, False])
def test_cryptodatadownload_layout(tmp_path: Path, hourly_bars: pd.DataFrame, unit: str,
                                   newest_first: bool) -> None:
    path = write_cdd(tmp_path / "cdd.csv", hourly_bars, unit=unit, newest_first=newest_first,
                     swap_volume_rows=10)
    assert detect_format(path) == "cryptodatadownload"
    pd.testing.assert_frame_equal(load_bars(path).to_pandas(), hourly_bars)


@pytest.mark.parametrize("time_column", ["ts", "timestamp", "Date", "DATETIME", "time",
                                         "open_time"])
def test_generic_csv_time_column_names(tmp_path: Path, hourly_bars: pd.DataFrame,
                                       time_column: str) -> None:
    path = write_generic_csv(tmp_path / "bars.csv", hourly_bars, time_column=time_column)
    assert detect_format(path) == "generic_csv"
    pd.testing.assert_frame_equal(load_bars(path).to_pandas(), hourly_bars)


@pytest.mark.parametrize("time_format", ["iso", "s", "ms", "us"])
def test_generic_csv_epochs_and_iso(tmp_path: Path, hourly_bars: pd.DataFrame,
                                    time_format: str) -> None:
    path = write_generic_csv(tmp_path / "bars.csv", hourly_bars, time_format=time_format,
                             upper=True)
    pd.testing.assert_frame_equal(load_bars(path).to_pandas(), hourly_bars)


def test_iso_offsets_are_converted_to_utc(tmp_path: Path) -> None:
    text = ("timestamp,open,high,low,close,volume\n"
            "2022-01-01T02:00:00+02:00,10,11,9,10.5,1\n"
            "2022-01-01T01:00:00Z,10.5,12,10,11,2\n"
            "2022-01-01 02:00:00 UTC,11,11,10,10,3\n")
    path = tmp_path / "offsets.csv"
    path.write_text(text)
    ts = load_bars(path).to_pandas()["ts"]
    assert list(ts) == [utc("2022-01-01 00:00"), utc("2022-01-01 01:00"),
                        utc("2022-01-01 02:00")]


def test_gzip_is_detected_by_content_not_name(tmp_path: Path, hourly_bars: pd.DataFrame) -> None:
    gz = write_generic_csv(tmp_path / "bars.csv.gz", hourly_bars)
    disguised = tmp_path / "bars.csv"
    disguised.write_bytes(gz.read_bytes())
    pd.testing.assert_frame_equal(load_bars(disguised).to_pandas(), hourly_bars)


def test_parquet_canonical_and_generic(tmp_path: Path, hourly_bars: pd.DataFrame) -> None:
    canonical = tmp_path / "canonical.parquet"
    pq.write_table(pa.Table.from_pandas(hourly_bars, preserve_index=False), canonical)
    assert detect_format(canonical) == "parquet"
    pd.testing.assert_frame_equal(load_bars(canonical).to_pandas(), hourly_bars)
    generic = hourly_bars.rename(columns=str.title).rename(columns={"Ts": "Timestamp"})
    generic["Timestamp"] = generic["Timestamp"].to_numpy(dtype="datetime64[ms]").view("int64")
    path = tmp_path / "generic.parquet"
    generic.to_parquet(path)
    pd.testing.assert_frame_equal(load_bars(path).to_pandas(), hourly_bars)


# ---------------------------------------------------------------------- window, freq


def test_start_inclusive_end_exclusive(tmp_path: Path, hourly_bars: pd.DataFrame) -> None:
    path = write_generic_csv(tmp_path / "bars.csv", hourly_bars)
    df = load_bars(path, start="2022-01-01T05:00:00Z", end="2022-01-02 05:00").to_pandas()
    assert df["ts"].iloc[0] == utc("2022-01-01 05:00")   # inclusive
    assert df["ts"].iloc[-1] == utc("2022-01-02 04:00")  # exclusive
    assert len(df) == 24
    tz = load_bars(path, start=pd.Timestamp("2022-01-01 07:00", tz="Europe/Berlin")).to_pandas()
    assert tz["ts"].iloc[0] == utc("2022-01-01 06:00")


def test_window_outside_data_is_an_error(tmp_path: Path, hourly_bars: pd.DataFrame) -> None:
    path = write_generic_csv(tmp_path / "bars.csv", hourly_bars)
    with pytest.raises(DataError, match=r"no bars in .*2022-01-01 00:00:00\+00:00"):
        load_bars(path, start="2030-01-01")
    with pytest.raises(ConfigError, match="not after start"):
        load_bars(path, start="2022-01-02", end="2022-01-01")


def resample_reference(df: pd.DataFrame, freq: str) -> pd.DataFrame:
    """Slow path: pandas' own resampler, bins anchored at the epoch, empty bins dropped.

    pandas ignores ``origin`` for day frequencies on tz-aware indexes, so the reference
    resamples naive UTC times and localizes the result.
    """
    naive = df.assign(ts=df["ts"].dt.tz_localize(None)).set_index("ts")
    resampler = naive.resample(freq, origin="epoch", label="left", closed="left")
    out = resampler.agg({"open": "first", "high": "max", "low": "min", "close": "last",
                         "volume": "sum"})
    out = out[resampler.size() > 0].reset_index()
    out["ts"] = out["ts"].dt.tz_localize("UTC")
    return out


@pytest.mark.parametrize("freq", ["2h", "4h", "1D", "7D"])
def test_resample_matches_pandas_reference(freq: str) -> None:
    bars = bars_frame(500, freq="1h", start="2022-01-01T03:00:00Z", seed=9)
    bars = bars.drop(index=[40, 41, 42, 200]).reset_index(drop=True)  # gaps
    got = resample_bars(pa.Table.from_pandas(bars, preserve_index=False), freq).to_pandas()
    want = resample_reference(bars, freq)
    pd.testing.assert_frame_equal(got, want, check_freq=False, check_dtype=False)


@pytest.mark.realdata
def test_load_bars_freq_on_real_file(real) -> None:
    path = real(BITSTAMP_1H)
    hourly = load_bars(path, start="2022-01-01", end="2022-02-01").to_pandas()
    daily = load_bars(path, freq="1D", start="2022-01-01", end="2022-02-01").to_pandas()
    pd.testing.assert_frame_equal(daily, resample_reference(hourly, "1D"), check_dtype=False)
    assert len(daily) == 31
    assert bar_freq(daily) == pd.Timedelta("1D")


def test_window_is_applied_before_resampling(tmp_path: Path, hourly_bars: pd.DataFrame) -> None:
    path = write_generic_csv(tmp_path / "bars.csv", hourly_bars)
    df = load_bars(path, freq="1D", start="2022-01-01 12:00", end="2022-01-02 06:00").to_pandas()
    inside = hourly_bars[(hourly_bars["ts"] >= utc("2022-01-01 12:00"))
                         & (hourly_bars["ts"] < utc("2022-01-02 06:00"))]
    assert list(df["ts"]) == [utc("2022-01-01"), utc("2022-01-02")]
    assert df["volume"].sum() == pytest.approx(inside["volume"].sum())
    assert df["open"].iloc[0] == inside["open"].iloc[0]
    assert df["close"].iloc[-1] == inside["close"].iloc[-1]


def test_resample_to_native_is_identity(hourly_bars: pd.DataFrame) -> None:
    got = resample_bars(hourly_bars, "60min").to_pandas()
    pd.testing.assert_frame_equal(got, hourly_bars)


def test_resample_rejects_finer_and_non_multiple(hourly_bars: pd.DataFrame) -> None:
    with pytest.raises(ConfigError, match=r"finer than the bars' native spacing 0 days 01:00"):
        resample_bars(hourly_bars, "15min")
    with pytest.raises(ConfigError, match="not a whole multiple"):
        resample_bars(hourly_bars, "90min")
    with pytest.raises(ConfigError, match="cannot read"):
        resample_bars(hourly_bars, "1 fortnight")


def test_bar_freq_is_modal_and_order_free(hourly_bars: pd.DataFrame) -> None:
    gappy = hourly_bars.drop(index=[5, 6, 7, 30]).sample(frac=1.0, random_state=3)
    assert bar_freq(gappy) == pd.Timedelta("1h")
    assert bar_freq(pa.Table.from_pandas(hourly_bars.iloc[::4], preserve_index=False)) \
        == pd.Timedelta("4h")
    with pytest.raises(DataError, match="at least two bars"):
        bar_freq(hourly_bars.iloc[:1])

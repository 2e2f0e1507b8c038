"""Derivatives loaders on the recorded files (skipped when ../shared/data/real is absent)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.realdata


def test_daily_funding_file(real) -> None:
    from feeds.derivs import load_funding

    t = load_funding(real("perp_funding_basis/binance_btc_funding_daily_2019-2026.csv")).to_pandas()
    assert len(t) == 2_348 and t["ts"].is_monotonic_increasing
    # 2019-09-10 is the first day; its mean is known at the end of that day
    assert t["ts"].iloc[0] == pd.Timestamp("2019-09-11", tz="UTC")
    assert t["ts"].iloc[-1] == pd.Timestamp("2026-02-13", tz="UTC")
    assert (t["interval_h"] == 24).all() and t["rate_8h"].abs().max() < 0.003


def test_8h_funding_file(real) -> None:
    from feeds.derivs import load_funding

    t = load_funding(real("perp_funding_basis/btc_funding_8h_2021-2023.csv")).to_pandas()
    assert len(t) == 1_873
    assert t["ts"].iloc[0] == pd.Timestamp("2021-06-29 08:00", tz="UTC")
    assert t["ts"].iloc[-1] == pd.Timestamp("2023-03-15 08:00", tz="UTC")
    assert (t["ts"].diff().dropna() == pd.Timedelta("8h")).all()  # no gaps, oldest first
    assert set(t["ts"].dt.hour) == {0, 8, 16}


def test_perp_klines(real) -> None:
    from feeds.derivs import load_perp

    t = load_perp(real("perp_funding_basis/BTCUSDT_Binance_futures_data_hour.csv.gz")).to_pandas()
    assert len(t) == 3_599
    assert t["ts"].iloc[0] == pd.Timestamp("2020-08-02 02:00", tz="UTC")
    assert (t["ts"].diff().dropna() == pd.Timedelta("1h")).all()


def test_listed_futures_from_optionsdx(real) -> None:
    from feeds.derivs import load_futures
    from feeds.loaders import load_chain

    path = real("options/optionsdx_btc_eod/btc_eod_202203.txt.gz")
    fut = load_futures(path).to_pandas()
    assert fut["ts"].nunique() == 31
    assert not fut["instrument"].str.startswith("SYN").any()
    assert {"BTC-25MAR22", "BTC-24JUN22", "BTC-30SEP22", "BTC-30DEC22"} <= set(fut["instrument"])
    assert (fut["expiry"].dt.hour == 8).all() and (fut["expiry"] > fut["ts"]).all()
    # the median sits inside the (tight) spread of the rows it summarises
    chain = load_chain(path).to_pandas()
    rows = chain[chain["underlying_index"] == "BTC-25MAR22"]
    g = rows.groupby("ts")["underlying_price"].agg(["min", "max", "median"])
    mine = fut[fut["instrument"] == "BTC-25MAR22"].set_index("ts")["price"]
    np.testing.assert_allclose(mine.loc[g.index], g["median"])
    assert ((g["max"] - g["min"]) / g["median"]).max() < 0.01

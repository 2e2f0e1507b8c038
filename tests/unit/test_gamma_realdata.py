"""Gamma engine on the real OptionsDX Deribit chains (181 daily snapshots, six files).

Vendor gamma: the files carry Deribit's published greeks. Deribit's option gamma is the
Black-76 gamma per 1 USD move of the row's own forward (``underlying_price``: the listed
future or the synthetic forward of that expiry), at the mark IV, with T from the snapshot
time to the 08:00 UTC expiry in 365-day years: exactly ``indicators.gamma.bs_gamma``. The
files print it rounded to 5 decimals (1e-5 per USD), so the comparison is against that
rounding: no row has to be excluded (no expired rows, no missing IV in these files).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from feeds.loaders import load_chain
from indicators import gamma
from tests.unit.test_gamma import assert_matches_reference, ref_summary

pytestmark = pytest.mark.realdata

MONTHS = ("202106", "202107", "202201", "202202", "202203", "202204")
FILES = [f"options/optionsdx_btc_eod/btc_eod_{m}.txt.gz" for m in MONTHS]
YEAR = 365 * 86400


@pytest.fixture
def optionsdx(real) -> pd.DataFrame:
    """All six files as one canonical chain (pandas), via feeds.loaders.load_chain."""
    return pd.concat([load_chain(real(f)).to_pandas() for f in FILES], ignore_index=True)


def recomputed_gamma(chain: pd.DataFrame, forward: np.ndarray | None = None) -> np.ndarray:
    T = (chain["expiry"] - chain["ts"]).dt.total_seconds().to_numpy() / YEAR
    F = chain["underlying_price"].to_numpy() if forward is None else forward
    return gamma.bs_gamma(F, chain["strike"], T, chain["mark_iv"])


def test_vendor_gamma_agrees_with_recomputed(optionsdx: pd.DataFrame) -> None:
    ours = recomputed_gamma(optionsdx)
    vendor = optionsdx["gamma"].to_numpy()
    assert len(optionsdx) == 74_036 and optionsdx["ts"].nunique() == 181
    assert np.isfinite(ours).all() and np.isfinite(vendor).all()
    # Deribit's value rounded to 5 decimals equals ours rounded the same way on 99.91%
    # of rows; the rest sit within 1.7e-6 of a rounding boundary (ours ~ x.xxxx5e-5),
    # where a sub-second difference in Deribit's own timestamp decides the digit.
    same_digit = np.round(ours, 5) == vendor
    assert same_digit.mean() > 0.998
    boundary_gap = np.abs((ours[~same_digit] / 1e-5) % 1 - 0.5) * 1e-5
    assert boundary_gap.max() < 2e-6
    # Every row within half a rounding unit plus that gap: 5e-6 + 2e-6 per USD.
    assert np.abs(ours - vendor).max() < 7e-6
    # Where the printed value carries at least two significant digits (>= 1e-4, 4,199
    # rows, mostly near-the-money), the relative error is the rounding bound, 5%.
    big = vendor >= 1e-4
    assert big.sum() > 4000
    assert np.max(np.abs(ours[big] / vendor[big] - 1)) < 0.05


def test_vendor_gamma_is_on_the_rows_forward(optionsdx: pd.DataFrame) -> None:
    vendor = optionsdx["gamma"].to_numpy()
    on_row_forward = np.round(recomputed_gamma(optionsdx), 5) == vendor
    snapshot_median = optionsdx.groupby("ts")["underlying_price"].transform("median")
    on_one_spot = np.round(recomputed_gamma(optionsdx, snapshot_median.to_numpy()), 5) == vendor
    # One spot per snapshot instead of each expiry's forward loses ~6% of the rows.
    assert on_row_forward.mean() > on_one_spot.mean() + 0.04


def test_summarize_all_files(optionsdx: pd.DataFrame) -> None:
    s = gamma.summarize(optionsdx)
    assert len(s) == 181 and s["ts"].is_monotonic_increasing
    assert np.isfinite(s["spot"]).all() and (s["spot"] > 10_000).all()
    assert set(s["spot_source"]) <= {"index", "forward_median"}
    assert set(s["regime"]) <= {-1, 1}
    assert (s["n_contracts"] > 200).all()
    np.testing.assert_allclose(s["gex"], s["gex_call"] + s["gex_put"], rtol=1e-12)
    assert (s["gex_call"] > 0).all() and (s["gex_put"] < 0).all()
    bounds = optionsdx.groupby("ts")["strike"].agg(["min", "max"]).to_numpy()
    for col in ("call_wall", "put_wall"):
        assert np.isfinite(s[col]).all()
        assert ((s[col] >= bounds[:, 0]) & (s[col] <= bounds[:, 1])).all()
    rel = s["gamma_flip"] / s["spot"]
    assert rel.notna().mean() > 0.9
    assert ((rel.dropna() >= 0.5) & (rel.dropna() <= 1.5)).all()
    # Net GEX at spot has the sign of the side of the flip spot is on, when the flip
    # is the only crossing nearby: long gamma above the flip, short gamma below it.
    near = rel.notna() & ((rel - 1).abs() < 0.1)
    agree = np.sign(1 - rel[near]) == s.loc[near, "regime"]
    assert agree.mean() > 0.9


def test_summarize_matches_reference_on_real_data(optionsdx: pd.DataFrame) -> None:
    # The slow reference is a pure-Python loop: check the first snapshot of each file.
    firsts = optionsdx.groupby(optionsdx["ts"].dt.strftime("%Y%m"))["ts"].min()
    sub = optionsdx[optionsdx["ts"].isin(firsts)].reset_index(drop=True)
    assert sub["ts"].nunique() == 6
    assert_matches_reference(gamma.summarize(sub), ref_summary(sub))


def test_strike_gex_on_real_data(optionsdx: pd.DataFrame) -> None:
    sg = gamma.strike_gex(optionsdx)
    s = gamma.summarize(optionsdx)
    net = sg.groupby("ts")["gex_net"].sum().to_numpy()
    np.testing.assert_allclose(net, s["gex"], rtol=1e-9)
    np.testing.assert_allclose(gamma.row_gex(optionsdx).sum(), s["gex"].sum(), rtol=1e-9)

"""Basis, premium, funding closed forms; constant maturity; point-in-time z-scores."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from indicators.basis import (
    annualized_basis,
    basis_table,
    constant_maturity,
    dislocations,
    funding_apr,
    perp_premium,
    rolling_zscore,
)
from plumbing.errors import ConfigError, DataError


def _utc(*stamps: str) -> pd.Series:
    return pd.Series(pd.to_datetime(list(stamps), utc=True, format="ISO8601")).astype(
        "datetime64[us, UTC]")


# ------------------------------------------------------------------------------ closed forms

def test_annualized_basis_closed_form() -> None:
    assert annualized_basis(101.0, 100.0, 36.5) == pytest.approx(0.10)
    assert annualized_basis(99.0, 100.0, 365.0) == pytest.approx(-0.01)
    out = annualized_basis(np.array([101.0, 101.0, 101.0, np.nan]), 100.0,
                           np.array([36.5, 0.0, -1.0, 10.0]))
    assert out[0] == pytest.approx(0.10)
    assert np.isnan(out[1:]).all()  # expired / NaN: no annualization


def test_domain_example_basis_move_at_30_days() -> None:
    """DOMAIN.md: 3.3% -> 9% annualized at 30 DTE is a raw premium 0.27% -> 0.74%."""
    spot = 70_000.0
    raw_lo, raw_hi = 0.033 * 30 / 365, 0.09 * 30 / 365
    assert round(raw_lo * 100, 2) == 0.27 and round(raw_hi * 100, 2) == 0.74
    assert annualized_basis(spot * (1 + raw_lo), spot, 30) == pytest.approx(0.033)
    assert annualized_basis(spot * (1 + raw_hi), spot, 30) == pytest.approx(0.09)


def test_series_keep_index() -> None:
    idx = pd.date_range("2024-01-01", periods=3, freq="D", tz="UTC")
    f = pd.Series([101.0, 102.0, 103.0], index=idx)
    out = annualized_basis(f, 100.0, 365.0)
    assert isinstance(out, pd.Series) and out.index.equals(idx)
    np.testing.assert_allclose(out, [0.01, 0.02, 0.03])


def test_perp_premium_and_funding_apr() -> None:
    assert perp_premium(100.5, 100.0) == pytest.approx(0.005)
    a = pd.Series([101.0, 102.0, 103.0], index=[1, 2, 3])
    b = pd.Series([100.0, 100.0], index=[2, 3])
    out = perp_premium(a, b)  # inner join on the index
    assert list(out.index) == [2, 3]
    np.testing.assert_allclose(out, [0.02, 0.03])
    assert np.isnan(perp_premium(np.array([1.0]), np.array([0.0]))[0])
    with pytest.raises(DataError, match="lengths differ"):
        perp_premium(np.ones(3), np.ones(2))
    assert funding_apr(1e-4) == pytest.approx(0.1095)  # 0.01% per 8h = 10.95% a year
    s = funding_apr(pd.Series([1e-4, np.nan], index=["a", "b"]))
    assert s.index.tolist() == ["a", "b"] and np.isnan(s["b"])


# ------------------------------------------------------------------------------ curve

def _linear_curve_table() -> pd.DataFrame:
    # per snapshot: basis = a + b * dte, listed at 7..180 days, rows shuffled
    rng = np.random.default_rng(11)
    rows = []
    for day, (a, b) in enumerate([(0.02, 2e-4), (0.05, -1e-4), (-0.01, 3e-4)]):
        ts = pd.Timestamp("2022-01-01", tz="UTC") + pd.Timedelta(days=day)
        for dte in (7.0, 21.0, 45.0, 100.0, 180.0):
            rows.append({"ts": ts, "dte_days": dte, "basis_ann": a + b * dte})
    df = pd.DataFrame(rows).sample(frac=1.0, random_state=rng)
    df["ts"] = df["ts"].astype("datetime64[us, UTC]")
    return df


def test_constant_maturity_exact_on_linear_curve() -> None:
    cm = constant_maturity(_linear_curve_table())
    assert list(cm.columns) == ["ts", "basis_ann_30d", "basis_ann_60d", "basis_ann_90d",
                                "basis_ann_120d"]
    assert cm["ts"].is_monotonic_increasing and len(cm) == 3
    for i, (a, b) in enumerate([(0.02, 2e-4), (0.05, -1e-4), (-0.01, 3e-4)]):
        for t in (30, 60, 90, 120):
            assert cm.loc[i, f"basis_ann_{t}d"] == pytest.approx(a + b * t, abs=1e-15)


def test_constant_maturity_no_extrapolation_and_expiry_input() -> None:
    ts = pd.Timestamp("2022-03-01 05:00", tz="UTC")
    df = pd.DataFrame({
        "ts": _utc(*[str(ts)] * 4),
        "expiry": _utc(*(str(ts + pd.Timedelta(days=d)) for d in (40, 40, 80, 100))),
        "basis_ann": [0.04, 0.06, 0.07, np.nan],  # equal DTEs averaged; NaN row dropped
    })
    cm = constant_maturity(df, tenors=(30, 40, 60, 80, 90))
    row = cm.iloc[0]
    assert np.isnan(row["basis_ann_30d"])   # below the shortest listed expiry
    assert row["basis_ann_40d"] == pytest.approx(0.05)
    assert row["basis_ann_60d"] == pytest.approx(0.06)
    assert row["basis_ann_80d"] == pytest.approx(0.07)
    assert np.isnan(row["basis_ann_90d"])   # the 100-day point is NaN: max listed is 80
    with pytest.raises(ConfigError):
        constant_maturity(df, tenors=(0,))


def test_basis_table_uses_the_last_closed_bar() -> None:
    bars = pd.DataFrame({"ts": _utc("2022-01-01 03:00", "2022-01-01 04:00", "2022-01-01 05:00"),
                         "close": [100.0, 200.0, 400.0]})
    fut = pd.DataFrame({
        "ts": _utc("2022-01-01 04:00", "2022-01-01 04:59:59", "2022-01-01 05:00",
                   "2022-01-01 09:00"),
        "expiry": _utc(*["2022-01-31 08:00"] * 4), "price": [101.0, 101.0, 202.0, 404.0]})
    t = basis_table(fut, bars)
    # the 03:00 bar closes at 04:00: usable at 04:00 and 04:59:59; 04:00 bar at 05:00
    np.testing.assert_allclose(t["spot"][:3], [100.0, 100.0, 200.0])
    assert np.isnan(t["spot"][3])  # last close 06:00 is 3 h old > 2 h staleness
    assert t["dte_days"][0] == pytest.approx(30 + 4 / 24)
    assert t["basis_ann"][0] == pytest.approx(0.01 * 365 / (30 + 4 / 24))
    assert basis_table(fut, bars, max_staleness=None)["spot"][3] == 400.0


# ------------------------------------------------------------------------------ z-scores

def test_rolling_zscore_hand_value_and_warmup() -> None:
    x = np.array([1.0, 2.0, 3.0, 10.0, 4.0])
    z = rolling_zscore(x, 3)
    assert np.isnan(z[:3]).all()
    assert z[3] == pytest.approx((10 - 2) / 1.0)  # past [1, 2, 3]: mean 2, std 1
    past = np.array([2.0, 3.0, 10.0])
    assert z[4] == pytest.approx((4 - past.mean()) / past.std(ddof=1))
    assert np.isnan(rolling_zscore(np.ones(6), 3)[5])  # zero dispersion -> NaN
    with pytest.raises(ConfigError):
        rolling_zscore(x, 1)


def test_rolling_zscore_is_point_in_time() -> None:
    rng = np.random.default_rng(5)
    x = pd.Series(rng.normal(size=200))
    z = rolling_zscore(x, 20)
    y = x.copy()
    y.iloc[120:] = rng.normal(50, 9, 80)  # rewrite the future
    z2 = rolling_zscore(y, 20)
    pd.testing.assert_series_equal(z.iloc[:120], z2.iloc[:120])
    assert not np.allclose(z.iloc[120:], z2.iloc[120:])


def test_dislocations_flags_jump_and_oi_drop() -> None:
    rng = np.random.default_rng(9)
    idx = pd.date_range("2026-01-01", periods=60, freq="D", tz="UTC")
    basis = pd.Series(0.033 + rng.normal(0, 0.001, 60), index=idx)
    basis.iloc[40:] += 0.057  # 3.3% -> 9% annualized
    oi = pd.Series(10_000.0, index=idx)
    oi.iloc[40:] = 8_000.0
    d = dislocations(basis, window=10, k_sigma=4.0, jump_pp=3.0, oi=oi)
    assert d["flag"].iloc[40] and d["sigma_jump"].iloc[40] and d["pp_jump"].iloc[40]
    assert d["direction"].iloc[40] == 1
    assert not d["flag"].iloc[:40].any()
    assert d["flag_oi"].iloc[40] and d["oi_change"].iloc[40] == pytest.approx(-0.2)
    # the level move stays inside the 10-day window, then ages out
    assert d["pp_jump"].iloc[40:50].all() and not d["pp_jump"].iloc[51:].any()
    no_oi = dislocations(basis, window=10, k_sigma=4.0, jump_pp=3.0)
    assert "flag_oi" not in no_oi.columns
    pd.testing.assert_series_equal(no_oi["flag"], d["flag"])


def test_dislocations_oi_asof_join_and_past_only() -> None:
    idx = pd.date_range("2026-02-01", periods=30, freq="D", tz="UTC")
    basis = pd.Series(np.linspace(0.03, 0.04, 30), index=idx)
    basis.iloc[20] = -0.05
    oi = pd.Series([100.0, 60.0], index=idx[[0, 20]] + pd.Timedelta("1h"))  # stamped later
    d = dislocations(basis, window=5, k_sigma=3.0, jump_pp=5.0, oi=oi)
    assert d["flag"].iloc[20] and d["direction"].iloc[20] == -1
    assert not d["oi_drop"].iloc[20] and d["oi_drop"].iloc[21]  # known only after 20:01
    future = basis.copy()
    future.iloc[25:] = 1.0
    d2 = dislocations(future, window=5, k_sigma=3.0, jump_pp=5.0)
    pd.testing.assert_frame_equal(d2.iloc[:25], dislocations(basis, 5, 3.0, 5.0).iloc[:25])

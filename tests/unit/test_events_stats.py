"""Event-study statistics against closed forms, slow references and hand-made markets."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from indicators.events import (
    block_bootstrap_indices,
    bootstrap_mean_ci,
    bootstrap_ratio,
    bootstrap_ratio_reference,
    entry_index,
    forward_measures,
    forward_measures_reference,
    mean_run_length,
    permutation_pvalue,
    permutation_pvalue_reference,
    ratio_of_means,
)
from plumbing.errors import ConfigError

HOUR_US = 3_600_000_000


def _bars(n, seed=0, gap_at=None):
    rng = np.random.default_rng(seed)
    ts = np.arange(n, dtype=np.int64) * HOUR_US
    if gap_at is not None:
        ts[gap_at:] += HOUR_US
    c = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    o = np.r_[100.0, c[:-1]] * np.exp(rng.normal(0, 0.001, n))
    hi = np.maximum(o, c) * (1 + rng.uniform(0, 0.01, n))
    lo = np.minimum(o, c) * (1 - rng.uniform(0, 0.01, n))
    return ts, o, hi, lo, c


def test_entry_is_first_bar_opening_at_or_after_availability():
    opens = np.array([0, 10, 20, 30])
    assert entry_index(opens, [0, 1, 10, 29, 31]).tolist() == [0, 1, 1, 3, 4]


def test_forward_measures_closed_form_constant_drift():
    n, r = 50, 0.002
    ts = np.arange(n, dtype=np.int64) * HOUR_US
    c = 100 * np.exp(r * np.arange(1, n + 1))
    o = c * np.exp(-r)
    m = forward_measures(ts, o, c, o, c, [0, 10, 45], 24, bar_us=HOUR_US,
                         periods_per_year=8760)
    assert m["vol_ann"][:2] == pytest.approx([r * np.sqrt(8760)] * 2, rel=1e-12)
    assert m["ret"][:2] == pytest.approx([24 * r] * 2, rel=1e-12)
    assert m["max_adverse"][:2] == pytest.approx([24 * r] * 2, rel=1e-12)  # run-up vs a short
    assert np.isnan(m["vol_ann"][2])  # 45 + 24 > 50: window incomplete


@pytest.mark.parametrize("h", [1, 4, 24])
def test_forward_measures_match_slow_reference(h):
    ts, o, hi, lo, c = _bars(300, seed=h, gap_at=150)
    entry = np.r_[np.arange(-1, 300, 7), 299, 300]
    fast = forward_measures(ts, o, hi, lo, c, entry, h, bar_us=HOUR_US)
    slow = forward_measures_reference(ts, o, hi, lo, c, entry, h, bar_us=HOUR_US)
    for k in fast:
        np.testing.assert_allclose(fast[k], slow[k], rtol=1e-10, equal_nan=True)
    # windows straddling the missing bar are NaN, not measured across the gap
    straddle = (entry >= 150 - h + 1) & (entry < 150) & (entry >= 0)
    if h > 1:
        assert np.isnan(fast["vol_ann"][straddle]).all()


def test_horizon_must_be_positive():
    with pytest.raises(ConfigError, match="horizon"):
        forward_measures([0], [1.0], [1.0], [1.0], [1.0], [0], 0, bar_us=HOUR_US)


def test_block_indices_are_runs_of_consecutive_indices():
    idx = block_bootstrap_indices(23, 5, 50, np.random.default_rng(1))
    assert idx.shape == (50, 23) and idx.min() >= 0 and idx.max() <= 22
    for row in idx:
        for k in range(0, 20, 5):
            assert np.all(np.diff(row[k:k + 5]) == 1)


def test_mean_run_length():
    assert mean_run_length([1, 1, -1, -1, -1, 1]) == 2.0
    assert mean_run_length([]) == 1.0


def test_bootstrap_ratio_matches_slow_reference():
    rng = np.random.default_rng(3)
    v = rng.lognormal(size=120)
    lab = np.repeat(rng.choice([-1, 1], 24), 5)
    fast = bootstrap_ratio(v, lab, block_len=5, n_boot=400, seed=9)
    idx = block_bootstrap_indices(120, 5, 400, np.random.default_rng(9))
    ratio, lo, hi = bootstrap_ratio_reference(v, lab, idx)
    assert fast["ratio"] == pytest.approx(ratio, rel=1e-12)
    assert (fast["lo"], fast["hi"]) == pytest.approx((lo, hi), rel=1e-12)
    assert fast["ratio"] == pytest.approx(v[lab < 0].mean() / v[lab > 0].mean())


def test_permutation_matches_slow_reference():
    rng = np.random.default_rng(4)
    v = rng.lognormal(size=90)
    lab = np.repeat(rng.choice([-1, 1], 18), 5)
    assert permutation_pvalue(v, lab, n_perm=50, seed=2) == pytest.approx(
        permutation_pvalue_reference(v, lab, n_perm=50, seed=2))
    assert permutation_pvalue(v, lab, n_perm=1000) == pytest.approx(
        permutation_pvalue_reference(v, lab, n_perm=1000))


def test_empty_side_gives_nan_not_an_error():
    assert np.isnan(ratio_of_means([1.0, 2.0], [1, 1]))
    assert np.isnan(bootstrap_ratio([1.0, 2.0], [1, 1])["lo"])
    assert np.isnan(permutation_pvalue([1.0, 2.0], [1, 1]))
    assert np.isnan(bootstrap_mean_ci([1.0])[0])


def _regime_market(seed, vol_ratio, n_days=240, mean_run=5.0, sigma_long=0.006):
    """Hourly bars whose per-hour vol is set by a persistent daily regime.

    Regimes switch with probability 1/mean_run per day; the snapshot of day d is taken at
    04:00 and its regime holds for the next 24 bars, so the forward 24 h vol after a
    short-gamma snapshot has true scale ``vol_ratio`` times that after a long-gamma one.
    """
    rng = np.random.default_rng(seed)
    switch = rng.random(n_days) < 1 / mean_run
    regime = np.where(np.cumsum(switch) % 2 == 0, 1, -1)
    hours = n_days * 24 + 4
    sigma = np.full(hours, sigma_long)
    for d in range(n_days):
        if regime[d] < 0:
            sigma[4 + 24 * d: 4 + 24 * (d + 1)] *= vol_ratio
    lr = rng.normal(0, sigma)
    c = 100 * np.exp(np.cumsum(lr))
    o = np.r_[100.0, c[:-1]]
    ts = np.arange(hours, dtype=np.int64) * HOUR_US
    entry = 4 + 24 * np.arange(n_days)
    return ts, o, np.maximum(o, c), np.minimum(o, c), c, entry, regime


def test_known_vol_ratio_is_recovered_within_its_interval():
    ts, o, hi, lo, c, entry, regime = _regime_market(seed=11, vol_ratio=1.5)
    vol = forward_measures(ts, o, hi, lo, c, entry, 24, bar_us=HOUR_US)["vol_ann"]
    b = bootstrap_ratio(vol, regime, n_boot=2000, seed=0)
    assert b["lo"] <= 1.5 <= b["hi"]
    assert b["lo"] > 1.0  # a 1.5x effect on 240 days is not missed
    assert permutation_pvalue(vol, regime) < 0.01


def test_interval_coverage_and_test_size_on_many_markets():
    # Binomial bounds: with true 95% coverage, <= 24 covers out of 30 has probability
    # ~0.8%; with a valid 5% test, >= 6 rejections out of 30 has probability ~0.8%.
    covered = rejected = 0
    for seed in range(30):
        ts, o, hi, lo, c, entry, regime = _regime_market(seed=100 + seed, vol_ratio=1.3,
                                                         n_days=120)
        vol = forward_measures(ts, o, hi, lo, c, entry, 24, bar_us=HOUR_US)["vol_ann"]
        b = bootstrap_ratio(vol, regime, n_boot=500, seed=seed)
        covered += b["lo"] <= 1.3 <= b["hi"]
        ts, o, hi, lo, c, entry, regime = _regime_market(seed=500 + seed, vol_ratio=1.0,
                                                         n_days=120)
        vol = forward_measures(ts, o, hi, lo, c, entry, 24, bar_us=HOUR_US)["vol_ann"]
        rejected += permutation_pvalue(vol, regime, n_perm=500, seed=seed) < 0.05
    assert covered >= 25
    assert rejected <= 5


def test_inputs_are_not_mutated():
    ts, o, hi, lo, c = _bars(60)
    copies = [x.copy() for x in (ts, o, hi, lo, c)]
    forward_measures(ts, o, hi, lo, c, [0, 5], 4, bar_us=HOUR_US)
    for a, b in zip((ts, o, hi, lo, c), copies, strict=True):
        np.testing.assert_array_equal(a, b)
    v = pd.Series([1.0, 2.0, 3.0, np.nan])
    bootstrap_ratio(v, [1, -1, 1, -1])
    assert v.isna().sum() == 1


def test_stylized_facts_against_scipy_and_pandas():
    from scipy.stats import kurtosis

    from indicators.events import stylized_facts

    rng = np.random.default_rng(8)
    r = rng.standard_t(4, 5000) * 0.01
    r[100] = np.nan
    f = stylized_facts(r, periods_per_year=8760)
    v = r[np.isfinite(r)]
    assert f["vol_ann"] == pytest.approx(np.std(v, ddof=1) * np.sqrt(8760), rel=1e-12)
    assert f["kurtosis_excess"] == pytest.approx(kurtosis(v, fisher=True, bias=True), rel=1e-10)
    s = pd.Series(np.abs(r))
    for lag in (1, 24, 168):
        assert f[f"acf_abs_{lag}"] == pytest.approx(s.autocorr(lag), rel=1e-10)


def test_path_measures_on_a_hand_made_crash():
    from indicators.events import path_measures

    # up 10% over 5 bars, then down to 70% of the peak over 3 bars, flat after
    c = np.array([102, 104, 106, 108, 110, 100, 85, 77, 77, 77], dtype=float)
    o = np.r_[100.0, c[:-1]]
    m = path_measures(o, np.maximum(o, c), np.minimum(o, c), c, speed_bars=3)
    assert m["max_drawdown"] == pytest.approx(1 - 77 / 110)
    assert m["bars_to_trough"] == 3           # peak at bar 4 (close 110), trough bar 7
    assert m["worst_move"] == pytest.approx(np.log(77 / 110))
    assert m["ret"] == pytest.approx(np.log(77 / 100))
    r = np.diff(np.log(np.r_[100.0, c]))
    assert m["vol_ann"] == pytest.approx(np.sqrt(np.mean(r ** 2) * 8760))
    assert np.isnan(path_measures([], [], [], [])["vol_ann"])

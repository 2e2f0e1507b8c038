"""Deflated Sharpe ratio and PBO against worked examples, a slow reference and invariants."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from gammabt.overfit import (
    deflated_sharpe,
    deflated_sharpe_of,
    expected_max_sharpe,
    probability_of_overfitting,
    probability_of_overfitting_reference,
    sharpe_per_period,
)


@pytest.fixture
def noise_480x20() -> np.ndarray:
    return np.random.default_rng(20150101).normal(0.0, 0.01, (480, 20))


def test_paper_worked_example() -> None:
    # Bailey and Lopez de Prado (2014), numerical example: annualized SR 2.5 over
    # 1250 daily returns (250 a year), 100 trials with annualized SR variance 0.5,
    # skew -3, raw kurtosis 10 -> E[max SR] about 1.79 annualized, DSR 0.9004.
    sr = 2.5 / math.sqrt(250)
    var = 0.5 / 250
    assert expected_max_sharpe(100, var) * math.sqrt(250) == pytest.approx(1.7894, abs=1e-4)
    dsr = deflated_sharpe(sr, n_trials=100, var_sharpe=var, n_obs=1250, skew=-3, kurt=10)
    assert dsr == pytest.approx(0.9004, abs=1e-4)


def test_hand_computed_sr0_and_dsr() -> None:
    # N = 10, V = 0.0025: Phi^-1(0.9) = 1.2815516, Phi^-1(1 - 1/(10e)) = 1.7892418
    # SR0 = 0.05 * (0.4227843 * 1.2815516 + 0.5772157 * 1.7892418) = 0.0787299
    sr0 = expected_max_sharpe(10, 0.0025)
    assert sr0 == pytest.approx(0.05 * (0.4227843351 * 1.2815516 + 0.5772156649 * 1.7892418),
                                rel=1e-6)
    # normal returns (skew 0, kurt 3): z = (0.1 - SR0) * sqrt(999) / sqrt(1 + 0.5 * 0.01)
    z = (0.1 - sr0) * math.sqrt(999) / math.sqrt(1.005)
    dsr = deflated_sharpe(0.1, n_trials=10, var_sharpe=0.0025, n_obs=1000, skew=0.0, kurt=3.0)
    assert dsr == pytest.approx(stats.norm.cdf(z), rel=1e-12)
    assert z == pytest.approx(0.67061, abs=1e-4)
    assert dsr == pytest.approx(0.74876, abs=1e-4)


def test_raw_not_excess_kurtosis() -> None:
    # the same series with excess kurtosis fed in would be a different (wrong) number
    raw = deflated_sharpe(0.2, n_trials=5, var_sharpe=0.01, n_obs=100, skew=0.0, kurt=3.0)
    excess = deflated_sharpe(0.2, n_trials=5, var_sharpe=0.01, n_obs=100, skew=0.0, kurt=1.0)
    assert raw < excess
    with pytest.raises(ValueError, match="raw kurtosis"):
        deflated_sharpe(0.2, n_trials=5, var_sharpe=0.01, n_obs=100, skew=0.0, kurt=0.0)


def test_dsr_falls_as_trials_grow() -> None:
    values = [deflated_sharpe(0.1, n_trials=n, var_sharpe=0.002, n_obs=500, skew=-0.5,
                              kurt=5.0) for n in (1, 2, 10, 100, 1000, 10000)]
    assert all(a > b for a, b in zip(values, values[1:], strict=False))
    # one trial: SR0 = 0 -> the probabilistic Sharpe ratio
    assert values[0] == pytest.approx(stats.norm.cdf(0.1 * math.sqrt(499) / math.sqrt(
        1 + 0.05 + 1.0 * 0.01)))


def test_deflated_sharpe_of_matrix_uses_best_column_moments() -> None:
    rng = np.random.default_rng(7)
    x = rng.normal(0.0, 0.01, (400, 8))
    x[:, 3] += 0.003
    res = deflated_sharpe_of(x)
    assert res.best == 3
    col = x[:, 3]
    assert res.sharpe == pytest.approx(col.mean() / col.std(ddof=1))
    assert res.kurt == pytest.approx(stats.kurtosis(col) + 3.0)
    assert res.skew == pytest.approx(stats.skew(col))
    assert res.var_sharpe == pytest.approx(np.var(x.mean(0) / x.std(0, ddof=1), ddof=1))
    assert res.dsr == pytest.approx(deflated_sharpe(
        res.sharpe, n_trials=8, var_sharpe=res.var_sharpe, n_obs=400, skew=res.skew,
        kurt=res.kurt))
    # claiming more trials were tried deflates more
    assert deflated_sharpe_of(x, n_trials=800).dsr < res.dsr


def test_sharpe_per_period_edges() -> None:
    assert np.isnan(sharpe_per_period([0.01])).all()
    assert sharpe_per_period(np.zeros((5, 2))).tolist() == [0.0, 0.0]
    x = np.array([0.01, 0.03, -0.01])
    assert sharpe_per_period(x)[0] == pytest.approx(0.01 / 0.02)
    with pytest.raises(ValueError, match="NaN"):
        sharpe_per_period([0.01, np.nan])


def test_pbo_hand_worked_example() -> None:
    # T = 5, S = 2: the first row (5 mod 2 = 1) is dropped; blocks are rows 1-2 and 3-4.
    # A: block0 [.01, .03] SR +1.414, block1 [-.01, -.03] SR -1.414
    # B: block0 [.00, .02] SR +0.707, block1 [.01, .03] SR +1.414
    # split {0}: train picks A (1.414 > 0.707); test A -1.414 < B 1.414 -> rank 1 -> w 1/3
    # split {1}: train picks B (1.414 > -1.414); test B 0.707 < A 1.414 -> rank 1 -> w 1/3
    r = np.array([[100.0, 100.0], [0.01, 0.0], [0.03, 0.02], [-0.01, 0.01], [-0.03, 0.03]])
    res = probability_of_overfitting(r, n_blocks=2)
    assert res.n_obs == 4 and res.n_splits == 2
    assert res.logits == pytest.approx([math.log(0.5), math.log(0.5)])
    assert res.pbo == 1.0
    s = math.sqrt(2)
    assert res.train_sharpe == pytest.approx([s, s])
    assert res.test_sharpe == pytest.approx([-s, s / 2])
    assert res.degradation == pytest.approx(np.median([-2 * s, s / 2 - s]))
    assert res.prob_loss == 0.5


def test_pbo_fast_matches_slow_reference(noise_480x20: np.ndarray) -> None:
    x = noise_480x20[:, :12] + np.linspace(-0.001, 0.001, 12)
    fast = probability_of_overfitting(x[:, :12], n_blocks=8, chunk=7)
    slow = probability_of_overfitting_reference(x[:, :12], n_blocks=8)
    assert fast.pbo == slow.pbo
    np.testing.assert_allclose(fast.logits, slow.logits, rtol=1e-12)
    np.testing.assert_allclose(fast.test_sharpe, slow.test_sharpe, rtol=1e-9)
    np.testing.assert_allclose(fast.train_sharpe, slow.train_sharpe, rtol=1e-9)


def test_pbo_near_half_for_noise() -> None:
    rng = np.random.default_rng(99)
    pbos = [probability_of_overfitting(rng.normal(0, 0.01, (320, 10)), n_blocks=8).pbo
            for _ in range(40)]
    assert np.mean(pbos) == pytest.approx(0.5, abs=0.08)


def test_pbo_near_zero_with_one_real_edge(noise_480x20: np.ndarray) -> None:
    x = noise_480x20.copy()
    x[:, 5] += 0.004  # SR about 0.4 per period: found in any half of the data
    res = probability_of_overfitting(x)
    assert res.n_splits == 12870
    assert res.pbo < 0.05
    assert res.prob_loss < 0.05


def test_pbo_invariant_to_column_order_and_scale(noise_480x20: np.ndarray) -> None:
    x = noise_480x20
    base = probability_of_overfitting(x, n_blocks=8)
    perm = probability_of_overfitting(x[:, ::-1] * 3.0, n_blocks=8)
    assert base.pbo == perm.pbo
    np.testing.assert_allclose(base.logits, perm.logits)


def test_pbo_input_checks() -> None:
    with pytest.raises(ValueError, match="even"):
        probability_of_overfitting(np.zeros((100, 3)), n_blocks=5)
    with pytest.raises(ValueError, match="too few"):
        probability_of_overfitting(np.zeros((20, 3)), n_blocks=16)
    with pytest.raises(ValueError, match="2 trials"):
        probability_of_overfitting(np.zeros((100, 1)), n_blocks=4)

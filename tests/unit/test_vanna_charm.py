"""Dealer vanna and charm exposure: greeks against finite differences of delta, closed
forms at the money, the invariants of the gamma engine, profiles, and the simulator's
own dealer vanna recovered from its chain."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from indicators import gamma
from plumbing.errors import ConfigError
from tests.unit.test_gamma import GREEK_CASES, bs_delta, frame, make_chain, one_row


@pytest.fixture(scope="module")
def chain11() -> pd.DataFrame:
    return make_chain(11)


@pytest.mark.parametrize("call", [True, False])
def test_charm_is_minus_the_derivative_of_delta_in_T(call: bool) -> None:
    F, K, T, iv = (np.array(c) for c in zip(*GREEK_CASES, strict=True))
    got = gamma.bs_charm(F, K, T, iv)
    e = 1e-6 * T
    fd = np.array([(bs_delta(f, k, t - h, v, call) - bs_delta(f, k, t + h, v, call)) / (2 * h)
                   for f, k, t, v, h in zip(F, K, T, iv, e, strict=True)])
    np.testing.assert_allclose(got, fd, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("call", [True, False])
def test_bs_delta_matches_the_reference(call: bool) -> None:
    F, K, T, iv = (np.array(c) for c in zip(*GREEK_CASES, strict=True))
    ref = [bs_delta(f, k, t, v, call) for f, k, t, v in zip(F, K, T, iv, strict=True)]
    np.testing.assert_allclose(gamma.bs_delta(F, K, T, iv, call), ref, rtol=1e-12,
                               atol=1e-15)
    assert np.isnan(gamma.bs_charm(40_000.0, 40_000.0, 0.0, 0.5))


def test_atm_closed_forms() -> None:
    # ATM, T = 0.25 y, iv = 0.5: s = 0.25, d1 = 0.125, d2 = -0.125.
    pdf = math.exp(-0.5 * 0.125**2) / math.sqrt(2 * math.pi)
    charm_year = pdf * -0.125 / (2 * 0.25)
    for right, sign in (("C", 1.0), ("P", -1.0)):
        chain = frame([one_row(right, oi=10.0)])
        s = gamma.summarize(chain).iloc[0]
        assert s["charm"] == pytest.approx(sign * 10 * charm_year / 365, rel=1e-12)
        assert s["vanna"] == pytest.approx(sign * 10 * pdf * 0.125 / 0.5 * 500.0, rel=1e-12)
        np.testing.assert_allclose(gamma.row_charm(chain), [s["charm"]], rtol=1e-15)
        np.testing.assert_allclose(gamma.row_vanna(chain), [s["vanna"]], rtol=1e-15)
    # at r = q = 0 the ATM call delta N(s/2) falls toward 0.5 as time passes: charm < 0
    assert charm_year < 0


def test_rows_strikes_and_summary_agree(chain11: pd.DataFrame) -> None:
    s = gamma.summarize(chain11)
    sg = gamma.strike_gex(chain11)
    by_ts = sg.groupby("ts")[["vanna", "charm"]].sum()
    np.testing.assert_allclose(by_ts["vanna"].to_numpy(), s["vanna"], rtol=1e-10)
    np.testing.assert_allclose(by_ts["charm"].to_numpy(), s["charm"], rtol=1e-10)
    rows = chain11.assign(v=gamma.row_vanna(chain11), c=gamma.row_charm(chain11))
    per = rows.groupby("ts")[["v", "c"]].sum()
    np.testing.assert_allclose(per["v"].to_numpy(), s["vanna"], rtol=1e-10)
    np.testing.assert_allclose(per["c"].to_numpy(), s["charm"], rtol=1e-10)


def test_scaling_open_interest_scales_exposures(chain11: pd.DataFrame) -> None:
    a = gamma.summarize(chain11)
    b = gamma.summarize(chain11.assign(open_interest=chain11["open_interest"] * 3.0))
    for col in ("vanna", "charm"):
        np.testing.assert_allclose(b[col], 3.0 * a[col], rtol=1e-12)


def test_row_order_and_dealer_conventions(chain11: pd.DataFrame) -> None:
    a = gamma.summarize(chain11)
    shuffled = chain11.sample(frac=1.0, random_state=5).reset_index(drop=True)
    b = gamma.summarize(shuffled)
    inv = gamma.summarize(chain11, dealer="short_calls_long_puts")
    pos = np.where(chain11["right"] == "C", 1.0, -1.0) * chain11["open_interest"]
    exp = gamma.summarize(chain11.assign(dealer_position=pos), dealer="explicit")
    for col in ("vanna", "charm"):
        np.testing.assert_allclose(b[col], a[col], rtol=1e-12)
        np.testing.assert_allclose(inv[col], -a[col], rtol=1e-12)
        np.testing.assert_allclose(exp[col], a[col], rtol=1e-12)
    np.testing.assert_allclose(gamma.row_vanna(shuffled).sum(), gamma.row_vanna(chain11).sum(),
                               rtol=1e-12)


def test_expired_and_unquoted_rows_have_no_exposure() -> None:
    rows = [one_row("C", days=-1.0), one_row("P", iv=0.0), one_row("C", oi=0.0)]
    chain = frame(rows)
    assert (gamma.row_vanna(chain) == 0).all() and (gamma.row_charm(chain) == 0).all()
    s = gamma.summarize(chain).iloc[0]
    assert s["vanna"] == 0 and s["charm"] == 0


def test_profiles_equal_the_summary_of_a_shifted_chain(chain11: pd.DataFrame) -> None:
    # Sticky strike: the profile at x is the summary of the chain whose forwards (and
    # reference spot) are all multiplied by x.
    levels = np.array([0.8, 1.0, 1.13])
    snap = chain11[chain11["ts"] == chain11["ts"].iloc[0]]
    for kind in ("vanna", "charm", "gex"):
        prof = gamma.exposure_profile(snap, kind=kind, levels=levels)
        for x, got in zip(levels, prof[kind], strict=True):
            shifted = snap.assign(underlying_price=snap["underlying_price"] * x,
                                  index_price=snap["index_price"] * x)
            want = gamma.summarize(shifted)[kind].iloc[0]
            assert got == pytest.approx(want, rel=1e-10), (kind, x)
    with pytest.raises(ConfigError, match="did you mean 'vanna'"):
        gamma.exposure_profile(snap, kind="vana")  # type: ignore[arg-type]


def test_vanna_of_the_whole_book_is_the_delta_change_for_a_vol_bump(chain11) -> None:
    # Dealer delta (BTC) before and after every IV rises by 0.5 vol points, valued at F.
    snap = chain11[chain11["ts"] == chain11["ts"].iloc[0]]
    T = (snap["expiry"] - snap["ts"]).dt.total_seconds().to_numpy() / (365 * 86400)
    F, K = snap["underlying_price"].to_numpy(), snap["strike"].to_numpy()
    call = (snap["right"] == "C").to_numpy()
    w = np.where(call, 1.0, -1.0) * snap["open_interest"].to_numpy()
    iv = snap["mark_iv"].to_numpy()
    h = 0.005

    def usd_delta(vol: np.ndarray) -> float:
        return float((w * gamma.bs_delta(F, K, T, vol, call) * F).sum())

    fd = (usd_delta(iv + h) - usd_delta(iv - h)) / (2 * h) * 0.01
    assert gamma.summarize(snap)["vanna"].iloc[0] == pytest.approx(fd, rel=1e-4)


def test_simulator_true_dealer_vanna_is_recovered_from_its_chain() -> None:
    from feeds.synthetic import simulate

    market = simulate("gamma_squeeze_down", days=2, seed=4)
    truth = market.dealer_gamma.to_pandas()
    s = gamma.summarize(market.chain, dealer="explicit")
    both = s.merge(truth, on="ts", suffixes=("", "_sim"))
    assert len(both) == len(truth) > 24
    assert (both["dealer_vanna_usd"].abs() > 0).all()
    np.testing.assert_allclose(both["vanna"], both["dealer_vanna_usd"], rtol=1e-8)


def test_atm_iv_picks_the_expiry_nearest_30_days_and_the_strike_nearest_forward() -> None:
    rows = [one_row("C", K=50_000.0, days=28, iv=0.61), one_row("P", K=50_000.0, days=28,
                                                                iv=0.63),
            one_row("C", K=52_000.0, days=28, iv=0.9), one_row("C", K=50_000.0, days=7,
                                                               iv=0.4),
            one_row("C", K=50_000.0, days=33, iv=0.7, oi=0.0)]  # 33 d: further than 28
    got = gamma.atm_iv(frame(rows))
    assert len(got) == 1 and got["atm_iv"].iloc[0] == pytest.approx(0.62, rel=1e-12)
    assert gamma.atm_iv(frame([one_row("C", days=-1.0)]))["atm_iv"].isna().all()



def test_second_order_switch_changes_only_vanna_and_charm(chain11: pd.DataFrame) -> None:
    a = gamma.summarize(chain11)
    b = gamma.summarize(chain11, second_order=False)
    assert b["vanna"].isna().all() and b["charm"].isna().all()
    pd.testing.assert_frame_equal(a.drop(columns=["vanna", "charm"]),
                                  b.drop(columns=["vanna", "charm"]))

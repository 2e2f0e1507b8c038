"""The vanna_crash scenario: vanna hedging on vs off, and the dealers' vanna read from
the simulated chain."""

from __future__ import annotations

import numpy as np
import pytest

from feeds.synthetic import simulate
from indicators import barrier, gamma

SEEDS = (1, 3, 5)
SHOCK = "2026-02-05"


def shock_selling(seed: int, vanna_hedge: bool) -> float:
    """Dealers' net hedge flow (BTC, + = buy) over the first two hours of the shock."""
    m = simulate("vanna_crash", days=2.25, seed=seed,
                 overrides={"dealers": {"vanna_hedge": vanna_hedge}})
    dg = m.dealer_gamma.to_pandas()
    i0 = int(np.flatnonzero(dg["ts"] == SHOCK)[0])
    return float(dg["hedge_flow_btc"].iloc[i0:i0 + 2].sum())


def test_vanna_hedging_makes_dealers_sell_more_in_the_iv_shock() -> None:
    # The shock lifts ATM IV by 10 vol points at once; dealers short OTM puts have
    # positive vanna exposure (about 50 M USD per vol point here), so re-hedging the IV
    # move means selling. Measured over seeds 1, 3, 5 (2.25-day runs): dealers sell
    # 2,443 / 803 / 740 BTC with vanna hedging against 26 / 110 / -57 BTC without it,
    # means 1,329 vs 26 BTC, about 50x (paths differ from the lead-in on, so single
    # seeds vary).
    on = np.array([shock_selling(s, True) for s in SEEDS])
    off = np.array([shock_selling(s, False) for s in SEEDS])
    assert (on < 0).all()
    assert (on < off).all()
    assert on.mean() < off.mean() - 500.0


def test_dealers_have_positive_vanna_before_the_shock() -> None:
    m = simulate("vanna_crash", days=2.5, seed=1)
    s = gamma.summarize(m.chain, dealer="explicit")
    before = s[s["ts"] < SHOCK]
    # positive: an IV rise makes dealers longer delta -> they sell to re-hedge
    assert (before["vanna"] > 0).mean() > 0.9
    truth = m.dealer_gamma.to_pandas().merge(s, on="ts")
    np.testing.assert_allclose(truth["vanna"], truth["dealer_vanna_usd"], rtol=1e-8)


def test_unknown_switch_value_is_refused() -> None:
    from plumbing.errors import ConfigError

    with pytest.raises(ConfigError):
        simulate("vanna_crash", days=1, seed=1, overrides={"dealers": {"vanna_hedge": 1.5}})


@pytest.mark.parametrize("seed", [1, 2, 4])
def test_barrier_book_gamma_changes_sign_where_the_closed_form_says(seed: int) -> None:
    # The simulator's dealers hold a small knock-in put (barrier 16% below) and a large
    # knock-out put (strike 5% above, barrier 7% below), long both. The knock-out is
    # short gamma above its barrier, so the book starts short gamma; near the barrier
    # and once it knocks out the knock-in dominates and the sign turns positive. The
    # closed forms on the market's bars and barriers table, at the simulator's IV,
    # reproduce the simulator's true barrier gamma at every bar, sign changes included.
    m = simulate("vanna_crash", days=4, seed=seed)
    truth = m.dealer_gamma.to_pandas()["barrier_gex_usd"].to_numpy()
    bars = m.bars.to_pandas()
    positions = m.barriers.to_pandas()
    assert list(positions["type"]) == ["down_in_put", "down_out_put"]
    # the truth at bar k's open is the state after bar k - 1's close
    iv_at_close = np.r_[m.flows.to_pandas()["iv_atm"].to_numpy()[1:], np.nan]
    lines, events = barrier.barrier_book(positions, bars, iv=iv_at_close)
    est = lines["barrier_gex"].to_numpy()[:-1]
    np.testing.assert_allclose(est, truth[1:], rtol=1e-9, atol=1e-3)
    sign = np.sign(truth)
    assert sign[0] < 0 < sign[-1]
    assert list(events["knocked"]) == [False, True]  # the knock-out was touched
    knock = int(np.flatnonzero(bars["ts"] == events["knock_ts"].iloc[1])[0])
    assert (lines["n_barrier_live"].iloc[knock:] == 1).all()
    assert (np.sign(lines["barrier_gex"].iloc[knock:]) > 0).all()


def test_barrier_items_are_checked() -> None:
    from plumbing.errors import ConfigError

    item = {"type": "down_in_putt", "moneyness": 0.9, "barrier_moneyness": 0.8}
    with pytest.raises(ConfigError, match="down_in_put"):
        simulate("calm", days=1, seed=1, overrides={"options": {"barriers": [item]}})
    item = {"type": "down_in_put", "moneyness": 0.9, "barrier_moneyness": 0.8,
            "dealer_side": 2}
    with pytest.raises(ConfigError, match="dealer_side"):
        simulate("calm", days=1, seed=1, overrides={"options": {"barriers": [item]}})

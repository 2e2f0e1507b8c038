"""Barrier options: parity with the vanilla, greeks against finite differences of the
closed form, price against a seeded Monte Carlo with fine monitoring, the barrier
itself, and the book tracked along bars."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from indicators import barrier as br
from indicators import gamma
from plumbing.errors import ConfigError

PAIRS = [("down_in_put", "down_out_put"), ("up_in_call", "up_out_call"),
         ("down_in_call", "down_out_call"), ("up_in_put", "up_out_put")]


def grid(down: bool) -> tuple[np.ndarray, ...]:
    """S, K, H, T, iv cases on the live side of the barrier, strikes either side of H."""
    S = 80_000.0
    Hs = [0.7 * S, 0.85 * S, 0.97 * S] if down else [1.03 * S, 1.15 * S, 1.3 * S]
    cases = [(S, K, H, T, v) for H in Hs for K in (0.75 * S, 0.9 * S, S, 1.1 * S, 1.25 * S)
             for T in (7 / 365, 0.25, 1.0) for v in (0.3, 0.8)]
    return tuple(np.array(c) for c in zip(*cases, strict=True))


def vanilla(S, K, T, iv, call):
    s = iv * np.sqrt(T)
    d1 = np.log(S / K) / s + s / 2
    from scipy.special import ndtr
    return np.where(call, S * ndtr(d1) - K * ndtr(d1 - s), K * ndtr(s - d1) - S * ndtr(-d1))


@pytest.mark.parametrize(("kin", "kout"), PAIRS)
def test_in_plus_out_is_the_vanilla(kin: str, kout: str) -> None:
    S, K, H, T, iv = grid(kin.startswith("down"))
    a, b = br.barrier_greeks(kin, S, K, H, T, iv), br.barrier_greeks(kout, S, K, H, T, iv)
    call = kin.endswith("call")
    np.testing.assert_allclose(a.price + b.price, vanilla(S, K, T, iv, call), rtol=1e-10,
                               atol=1e-7)
    np.testing.assert_allclose(a.delta + b.delta, gamma.bs_delta(S, K, T, iv, call),
                               rtol=1e-8, atol=1e-11)
    np.testing.assert_allclose(a.gamma + b.gamma, gamma.bs_gamma(S, K, T, iv), rtol=1e-8,
                               atol=1e-14)
    np.testing.assert_allclose(a.vanna + b.vanna, gamma.bs_vanna(S, K, T, iv), rtol=1e-8,
                               atol=1e-10)
    assert (a.price >= -1e-9).all() and (b.price >= -1e-9).all()


@pytest.mark.parametrize("kind", br.BARRIER_TYPES)
def test_greeks_are_finite_differences_of_the_price(kind: str) -> None:
    S, K, H, T, iv = grid(kind.startswith("down"))
    # keep the bumps off the barrier
    S = np.where(kind.startswith("down"), np.maximum(S, H * 1.02), np.minimum(S, H / 1.02))
    g = br.barrier_greeks(kind, S, K, H, T, iv)
    h = S * 1e-4

    def price(s=S, t=T, v=iv):
        return br.barrier_price(kind, s, K, H, t, v)

    def delta(s=S, t=T, v=iv):
        return br.barrier_greeks(kind, s, K, H, t, v).delta

    scale = float(np.abs(g.price).max() / S.min())
    np.testing.assert_allclose(g.delta, (price(S + h) - price(S - h)) / (2 * h), rtol=1e-5,
                               atol=1e-7 * max(scale, 1e-3))
    np.testing.assert_allclose(g.gamma, (delta(S + h) - delta(S - h)) / (2 * h), rtol=1e-4,
                               atol=1e-11)
    e = 1e-5
    np.testing.assert_allclose(g.vanna, (delta(v=iv + e) - delta(v=iv - e)) / (2 * e),
                               rtol=1e-4, atol=1e-7)
    dt = T * 1e-5
    np.testing.assert_allclose(g.charm, (delta(t=T - dt) - delta(t=T + dt)) / (2 * dt),
                               rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(("kind", "K", "H"), [("down_in_put", 72_000.0, 64_000.0),
                                              ("down_out_put", 72_000.0, 64_000.0),
                                              ("up_out_call", 80_000.0, 92_000.0)])
def test_price_against_monte_carlo(kind: str, K: float, H: float) -> None:
    # Driftless GBM of the forward, 20,000 steps over T with a Brownian-bridge crossing
    # probability between steps (continuous monitoring, no discretization bias).
    rng = np.random.default_rng(20240205)
    S0, T, iv, n_paths, n_steps = 76_000.0, 30 / 365, 0.6, 40_000, 200
    dt = T / n_steps
    lnS = np.full(n_paths, math.log(S0))
    hit = np.zeros(n_paths, dtype=bool)
    lnH = math.log(H)
    down = kind.startswith("down")
    for _ in range(n_steps):
        nxt = lnS - 0.5 * iv * iv * dt + iv * math.sqrt(dt) * rng.standard_normal(n_paths)
        a, b = (lnS - lnH, nxt - lnH) if down else (lnH - lnS, lnH - nxt)
        crossed = (a <= 0) | (b <= 0)
        p_bridge = np.exp(-2 * np.maximum(a, 0) * np.maximum(b, 0) / (iv * iv * dt))
        hit |= crossed | (rng.random(n_paths) < p_bridge)
        lnS = nxt
    ST = np.exp(lnS)
    pay = np.maximum(K - ST, 0) if kind.endswith("put") else np.maximum(ST - K, 0)
    pay = pay * (hit if "_in_" in kind else ~hit)
    mc, se = pay.mean(), pay.std(ddof=1) / math.sqrt(n_paths)
    exact = float(br.barrier_price(kind, S0, K, H, T, iv))
    assert abs(mc - exact) < 3.5 * se, (mc, exact, se)
    assert se < 0.05 * exact


def test_at_and_through_the_barrier() -> None:
    K, H, T, iv = 72_000.0, 64_000.0, 0.1, 0.6
    for S in (64_000.0, 60_000.0):  # at and through a down barrier
        dip = br.barrier_greeks("down_in_put", S, K, H, T, iv)
        dop = br.barrier_greeks("down_out_put", S, K, H, T, iv)
        assert float(dip.price) == pytest.approx(float(vanilla(S, K, T, iv, False)),
                                                 rel=1e-12)
        assert float(dip.gamma) == pytest.approx(float(gamma.bs_gamma(S, K, T, iv)),
                                                 rel=1e-12)
        assert float(dop.price) == float(dop.gamma) == float(dop.vanna) == 0.0
    # approaching the barrier from above, the knock-in price tends to the vanilla's
    near = br.barrier_price("down_in_put", H * (1 + 1e-9), K, H, T, iv)
    assert float(near) == pytest.approx(float(vanilla(H, K, T, iv, False)), rel=1e-6)
    uoc = br.barrier_greeks("up_out_call", 92_000.0, 80_000.0, 92_000.0, T, iv)
    assert float(uoc.price) == 0.0
    assert np.isnan(br.barrier_price("down_in_put", 70_000.0, K, H, 0.0, iv))
    with pytest.raises(ConfigError, match="did you mean 'down_in_put'"):
        br.barrier_price("down_inn_put", 70_000.0, K, H, T, iv)


def test_knock_out_put_is_short_gamma_between_barrier_and_strike() -> None:
    # A down-and-out put struck above its barrier is worth 0 at the barrier and at high
    # spots: concave in between (gamma < 0) where the vanilla put has gamma > 0, so its
    # knock-in twin (vanilla minus it) carries more gamma than the vanilla there.
    S = np.linspace(64_500.0, 76_000.0, 50)
    dop = br.barrier_greeks("down_out_put", S, 72_000.0, 64_000.0, 0.1, 0.6).gamma
    dip = br.barrier_greeks("down_in_put", S, 72_000.0, 64_000.0, 0.1, 0.6).gamma
    van = gamma.bs_gamma(S, 72_000.0, 0.1, 0.6)
    assert (dop < 0).all() and (van > 0).all() and (dip > van).all()
    # far above the strike the knock-out is close to a vanilla put again: gamma > 0
    assert br.barrier_greeks("down_out_put", 95_000.0, 72_000.0, 64_000.0, 0.1, 0.6).gamma > 0


def bars_frame(closes, highs, lows, start="2026-02-03") -> pd.DataFrame:
    ts = pd.date_range(start, periods=len(closes), freq="1h", tz="UTC")
    return pd.DataFrame({"ts": ts, "open": closes, "high": highs, "low": lows,
                         "close": closes, "volume": 1.0})


def book(rows) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=["ts", "type", "strike", "barrier", "expiry",
                                     "notional", "dealer_side"])
    for c in ("ts", "expiry"):
        df[c] = pd.to_datetime(df[c], utc=True)
    return df


def test_book_knocks_in_and_out_at_the_first_touching_bar() -> None:
    closes = np.array([70_000.0, 68_000.0, 66_000.0, 65_500.0, 67_000.0, 66_000.0])
    lows = closes - np.array([500.0, 500.0, 500.0, 1_600.0, 500.0, 500.0])
    bars = bars_frame(closes, closes + 500.0, lows)
    exp = "2026-03-01 08:00"
    pos = book([("2026-02-03 00:00", "down_in_put", 70_000.0, 64_000.0, exp, 10.0, 1),
                ("2026-02-03 01:30", "down_out_put", 70_000.0, 64_000.0, exp, 5.0, -1)])
    lines, events = br.barrier_book(pos, bars, iv=0.6)
    # bar 3's low 63,900 touches 64,000
    assert list(events["knocked"]) == [True, True]
    assert (events["knock_ts"] == bars["ts"].iloc[3]).all()
    # the second position is known at 01:30: it enters at the bar closing 02:00 (bar 1)
    assert list(lines["n_barrier_live"]) == [1, 2, 2, 1, 1, 1]
    T = (pd.Timestamp(exp, tz="UTC") - (bars["ts"] + pd.Timedelta("1h"))).dt.total_seconds(
    ).to_numpy() / (365 * 86400)
    for i in range(6):
        S = closes[i]
        if i < 3:
            g1 = br.barrier_greeks("down_in_put", S, 70_000.0, 64_000.0, T[i], 0.6).gamma
            g2 = br.barrier_greeks("down_out_put", S, 70_000.0, 64_000.0, T[i], 0.6).gamma
            want = (10 * g1 - 5 * g2 * (i >= 1)) * S * S * 0.01
            assert lines["dist_to_barrier"].iloc[i] == pytest.approx(S / 64_000.0 - 1)
        else:  # knocked in: a vanilla put; the knock-out is gone
            want = 10 * gamma.bs_gamma(S, 70_000.0, T[i], 0.6) * S * S * 0.01
            assert np.isnan(lines["dist_to_barrier"].iloc[i])
        assert lines["barrier_gex"].iloc[i] == pytest.approx(float(want), rel=1e-12)


def test_book_ignores_positions_after_expiry_and_before_they_are_known() -> None:
    closes = np.full(4, 70_000.0)
    bars = bars_frame(closes, closes + 10, closes - 10)
    pos = book([("2026-02-03 00:00", "up_out_call", 70_000.0, 80_000.0,
                 "2026-02-03 02:00", 1.0, 1),
                ("2026-02-10 00:00", "up_out_call", 70_000.0, 80_000.0,
                 "2026-03-03 02:00", 1.0, 1)])
    lines, events = br.barrier_book(pos, bars, iv=0.5)
    assert list(lines["n_barrier_live"]) == [1, 0, 0, 0]
    assert not events["knocked"].any() and events["knock_ts"].isna().all()
    empty, ev = br.barrier_book(pos.iloc[:0], bars)
    assert (empty["barrier_gex"] == 0).all() and empty["dist_to_barrier"].isna().all()
    assert len(ev) == 0

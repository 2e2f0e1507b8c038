"""Liquidation prices (closed forms, margin identities) and the estimated liquidation map."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from indicators.liquidation import (
    LiqMapParams,
    cluster_hit_rate,
    clusters_at,
    estimate_liq_map,
    liq_map_reference,
    liquidation_price,
)
from plumbing.errors import ConfigError, DataError

# ------------------------------------------------------------------------------ prices


@pytest.mark.parametrize(("side", "contract", "expected"), [
    # EP = 100, L = 10, MMR = 0.5%, worked by hand
    ("long", "linear", 100 * 0.9 / 0.995),     # 90.452261...
    ("short", "linear", 100 * 1.1 / 1.005),    # 109.452736...
    ("long", "inverse", 100 * 1.005 / 1.1),    # 91.363636...
    ("short", "inverse", 100 * 0.995 / 0.9),   # 110.555555...
])
def test_hand_worked_examples(side: str, contract: str, expected: float) -> None:
    got = liquidation_price(100.0, 10, side, mmr=0.005, contract=contract)
    assert isinstance(got, float)
    assert got == pytest.approx(expected, rel=1e-12)


def test_hand_worked_decimals() -> None:
    assert liquidation_price(30_000, 20, "long") == pytest.approx(28_643.216080402, rel=1e-11)
    assert liquidation_price(30_000, 20, "short") == pytest.approx(31_343.283582090, rel=1e-11)
    # no maintenance margin: the whole margin is lost at exactly EP (1 -/+ 1/L)
    assert liquidation_price(50_000, 5, "long", mmr=0.0) == pytest.approx(40_000.0)
    assert liquidation_price(50_000, 5, "short", mmr=0.0) == pytest.approx(60_000.0)


def test_one_x_edges() -> None:
    assert liquidation_price(100.0, 1, "short", contract="inverse") == math.inf
    assert liquidation_price(100.0, 1, "long", contract="linear") == 0.0
    assert liquidation_price(100.0, 1, "long", contract="inverse") == pytest.approx(
        100 * 1.005 / 2)
    assert liquidation_price(100.0, 1, "short", contract="linear") == pytest.approx(
        100 * 2 / 1.005)


def test_margin_identity_holds_at_the_liquidation_price() -> None:
    """At P_liq the position's equity equals the maintenance margin (isolated margin)."""
    rng = np.random.default_rng(20240501)
    ep = rng.uniform(1_000, 100_000, 500)
    lev = rng.uniform(1.5, 100, 500)
    mmr = rng.uniform(0, 0.009, 500)
    q = 1.0  # BTC (linear) / USD contracts (inverse): the identity is linear in size
    p = liquidation_price(ep, lev, "long", mmr=mmr)
    np.testing.assert_allclose(ep * q / lev + (p - ep) * q, mmr * p * q, rtol=1e-9, atol=1e-9)
    p = liquidation_price(ep, lev, "short", mmr=mmr)
    np.testing.assert_allclose(ep * q / lev + (ep - p) * q, mmr * p * q, rtol=1e-9, atol=1e-9)
    p = liquidation_price(ep, lev, "long", mmr=mmr, contract="inverse")  # BTC margin
    np.testing.assert_allclose(q / (ep * lev) + q / ep - q / p, mmr * q / p, rtol=1e-9)
    p = liquidation_price(ep, lev, "short", mmr=mmr, contract="inverse")
    np.testing.assert_allclose(q / (ep * lev) + q / p - q / ep, mmr * q / p, rtol=1e-9)


def test_vectorized_broadcast_and_nan() -> None:
    out = liquidation_price(np.array([100.0, np.nan]), np.array([[10.0], [20.0]]),
                            np.array(["long", "short"]))
    assert out.shape == (2, 2)
    assert out[0, 0] == pytest.approx(100 * 0.9 / 0.995)
    assert np.isnan(out[:, 1]).all()
    signs = liquidation_price([100.0, 100.0], 10, [1, -1])
    np.testing.assert_allclose(signs, [100 * 0.9 / 0.995, 100 * 1.1 / 1.005])
    # higher leverage -> closer to entry, for both sides
    lv = liquidation_price(100.0, np.array([2, 5, 10, 50, 100]), "long")
    assert np.all(np.diff(lv) > 0) and lv[-1] < 100


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"side": "lng"}, "side"),
    ({"contract": "inverted"}, "did you mean 'inverse'"),
    ({"leverage": 0.5}, "leverage"),
    ({"entry": -1.0}, "entry"),
    ({"mmr": 1.2}, "mmr"),
    ({"leverage": 250.0}, "maintenance margin"),  # 1/L = 0.4% < MMR 0.5%
])
def test_invalid_inputs_raise_config_error(kwargs: dict, match: str) -> None:
    args = {"entry": 100.0, "leverage": 10.0, "side": "long"}
    args |= {k: v for k, v in kwargs.items() if k in args}
    options = {k: v for k, v in kwargs.items() if k not in args}
    with pytest.raises(ConfigError, match=match):
        liquidation_price(args["entry"], args["leverage"], args["side"], **options)


# ------------------------------------------------------------------------------ map, by hand

def _bars(rows: list[tuple[float, float, float, float]], volume: float | list[float] = 0.0,
          start: str = "2024-01-01") -> pd.DataFrame:
    ts = pd.date_range(start, periods=len(rows), freq="h", tz="UTC").astype("datetime64[us, UTC]")
    o, h, lo, c = (np.array(x, dtype=float) for x in zip(*rows, strict=True))
    return pd.DataFrame({"ts": ts, "open": o, "high": h, "low": lo, "close": c,
                         "volume": np.broadcast_to(np.asarray(volume, float), len(rows))})


def _oi(bars: pd.DataFrame, values: list[float]) -> pd.DataFrame:
    # measured at each bar's close
    return pd.DataFrame({"ts": bars["ts"] + pd.Timedelta("1h"), "oi_btc": values})


ONE_10X = {"leverage_mix": {10: 1.0}, "bucket_frac": 1e-5}
LONG_10X = 100 * 0.9 / 0.995   # 90.4523
SHORT_10X = 100 * 1.1 / 1.005  # 109.4527


def test_map_levels_consumption_order() -> None:
    bars = _bars([
        (100, 101, 99, 100),   # 0: OI known from here
        (100, 101, 85, 100),   # 1: +10 BTC at close 100; low 85 does not touch new levels
        (100, 105, 95, 100),   # 2: nothing crossed
        (100, 101, 90, 99),    # 3: low 90 <= 90.45: long level consumed
        (99, 110, 98, 100),    # 4: high 110 >= 109.45: short level consumed
    ])
    m = estimate_liq_map(bars, oi=_oi(bars, [1000, 1010, 1010, 1010, 1010]), **ONE_10X)
    ln = m.lines
    assert np.isnan(ln.loc[0, "liq_below"]) and ln.loc[0, "long_usd"] == 0
    for t in (1, 2):
        assert ln.loc[t, "liq_below"] == pytest.approx(LONG_10X, rel=1e-5)
        assert ln.loc[t, "liq_below_usd"] == pytest.approx(5 * LONG_10X, rel=1e-5)
        assert ln.loc[t, "liq_above"] == pytest.approx(SHORT_10X, rel=1e-5)
        assert ln.loc[t, "liq_above_usd"] == pytest.approx(5 * SHORT_10X, rel=1e-5)
        assert ln.loc[t, "liq_usd_within"] == 0.0  # both levels ~10% away, band 2%
    assert np.isnan(ln.loc[3, "liq_below"]) and np.isnan(ln.loc[3, "liq_below_usd"])
    assert ln.loc[3, "long_usd"] == 0 and ln.loc[3, "liq_above"] == pytest.approx(
        SHORT_10X, rel=1e-5)
    assert np.isnan(ln.loc[4, "liq_above"]) and ln.loc[4, "short_usd"] == 0
    f = m.frame(2)
    assert list(f.columns) == ["ts", "price", "long_usd", "short_usd"]
    assert len(f) == 2 and (f["ts"] == bars["ts"][2]).all()
    assert f["long_usd"].sum() == pytest.approx(5 * LONG_10X, rel=1e-5)
    assert m.frame(4).empty


def test_oi_decrease_retires_proportionally_net_of_liquidations() -> None:
    bars = _bars([(100, 101, 99, 100)] * 3 + [(100, 101, 90, 100)])
    # bar 2: OI -101 (10% of 1010): every level x 0.9
    m = estimate_liq_map(bars, oi=_oi(bars, [1000, 1010, 909, 904.5]), **ONE_10X)
    assert m.lines.loc[2, "long_usd"] == pytest.approx(4.5 * LONG_10X, rel=1e-5)
    assert m.lines.loc[2, "short_usd"] == pytest.approx(4.5 * SHORT_10X, rel=1e-5)
    # bar 3: the long level (4.5 BTC) is liquidated and OI falls by 4.5: nothing retired
    assert m.lines.loc[3, "long_usd"] == 0
    assert m.lines.loc[3, "short_usd"] == pytest.approx(4.5 * SHORT_10X, rel=1e-5)


def test_observed_events_extend_the_range_and_replace_liquidated_size() -> None:
    bars = _bars([(100, 101, 99, 100), (100, 101, 99, 100), (100, 101, 95, 100)])
    ev = pd.DataFrame({"ts": [bars["ts"][2] + pd.Timedelta("10min")], "side": ["long"],
                       "price": [90.0], "size": [2.0]})
    oi = _oi(bars, [1000, 1010, 1005])  # -5: 2 observed liquidations, 3 retired of 1010
    m = estimate_liq_map(bars, oi=oi, liquidations=ev, **ONE_10X)
    ln = m.lines
    assert ln.loc[2, "long_usd"] == 0  # bar low 95, but a long was liquidated at 90
    assert ln.loc[2, "short_usd"] == pytest.approx(5 * (1 - 3 / 1010) * SHORT_10X, rel=1e-5)
    assert ln.loc[2, "realized_long_usd"] == pytest.approx(180.0)
    assert ln.loc[2, "realized_short_usd"] == 0.0 and ln.loc[1, "realized_long_usd"] == 0.0
    assert np.isnan(estimate_liq_map(bars, oi=oi, **ONE_10X).lines["realized_long_usd"]).all()


def test_volume_mode_participation_decay_and_direction_split() -> None:
    bars = _bars([(99, 101, 99, 100), (100, 100.5, 99.5, 100)], volume=[100.0, 0.0])
    m = estimate_liq_map(bars, participation=0.1, volume_half_life="1h", split="direction",
                         direction_tilt=0.2, **ONE_10X)
    # bar 0: 10 BTC, up bar -> 70% long; bar 1: halved
    assert m.lines.loc[0, "long_usd"] == pytest.approx(7 * LONG_10X, rel=1e-5)
    assert m.lines.loc[0, "short_usd"] == pytest.approx(3 * SHORT_10X, rel=1e-5)
    assert m.lines.loc[1, "long_usd"] == pytest.approx(3.5 * LONG_10X, rel=1e-5)
    none = estimate_liq_map(bars, volume_half_life=None, **ONE_10X)
    assert none.lines.loc[1, "long_usd"] == pytest.approx(5 * LONG_10X, rel=1e-5)


def test_leverage_mix_spreads_levels_and_within_band() -> None:
    bars = _bars([(100, 100, 100, 100), (100, 100, 100, 100)])
    m = estimate_liq_map(bars, oi=_oi(bars, [0, 100]), leverage_mix={100: 0.5, 5: 0.5},
                         bucket_frac=1e-5, within_frac=0.02)
    f = m.frame(1)
    expected = sorted([liquidation_price(100.0, lv, s) for lv in (5, 100)
                       for s in ("long", "short")])
    np.testing.assert_allclose(f["price"], expected, rtol=2e-5)
    # only the 100x levels (99.5, 100.5) lie within +/- 2% of the close
    within = 25 * (liquidation_price(100.0, 100, "long") + liquidation_price(100.0, 100, "short"))
    assert m.lines.loc[1, "liq_usd_within"] == pytest.approx(within, rel=2e-5)
    assert m.lines.loc[1, "liq_below"] == pytest.approx(99.497, rel=1e-4)


def test_inverse_one_x_short_never_enters_the_map() -> None:
    bars = _bars([(100, 100, 100, 100), (100, 100, 100, 100)])
    m = estimate_liq_map(bars, oi=_oi(bars, [0, 100]), leverage_mix={1: 1.0},
                         contract="inverse", bucket_frac=1e-5)
    assert m.lines.loc[1, "short_usd"] == 0
    assert m.lines.loc[1, "long_usd"] == pytest.approx(50 * 100 * 1.005 / 2, rel=1e-5)


# ------------------------------------------------------------------------------ fast vs slow

def _random_market(seed: int, n: int) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    close = 40_000 * np.exp(np.cumsum(rng.normal(0, 0.008, n)))
    open_ = np.concatenate([[40_000], close[:-1]])
    high = np.maximum(open_, close) * (1 + np.abs(rng.normal(0, 0.004, n)))
    low = np.minimum(open_, close) * (1 - np.abs(rng.normal(0, 0.004, n)))
    bars = _bars(list(zip(open_, high, low, close, strict=True)),
                 volume=list(rng.gamma(2.0, 300.0, n)))
    oi_vals = 20_000 + np.cumsum(rng.normal(0, 150, n))
    oi = _oi(bars, list(oi_vals))
    k = n // 10
    pick = rng.integers(0, n, k)
    is_long = rng.random(k) < 0.5
    ev_price = np.where(is_long, low[pick] * rng.uniform(0.99, 1.0, k),
                        high[pick] * rng.uniform(1.0, 1.01, k))
    ev = pd.DataFrame({"ts": bars["ts"].iloc[pick].to_numpy() + pd.Timedelta("5min"),
                       "side": np.where(is_long, "long", "short"), "price": ev_price,
                       "size": rng.uniform(0.1, 5, k)}).sort_values("ts", kind="stable")
    return bars, oi, ev


@pytest.mark.parametrize("case", [
    {"use_oi": True},
    {"use_oi": False, "split": "direction", "entry_price": "typical"},
    {"use_oi": True, "events": True, "contract": "inverse", "bucket_frac": 0.001},
    {"use_oi": False, "events": True, "cluster_mult": 0.0, "min_cluster_usd": 1e6},
])
def test_fast_map_agrees_with_slow_reference(case: dict) -> None:
    bars, oi, ev = _random_market(seed=7, n=240)
    kw = {k: v for k, v in case.items() if k not in ("use_oi", "events")}
    kw["checkpoint_every"] = 7
    if case["use_oi"]:
        kw["oi"] = oi
    if case.get("events"):
        kw["liquidations"] = ev
    fast = estimate_liq_map(bars, **kw)
    lines, maps = liq_map_reference(bars, **kw)
    pd.testing.assert_frame_equal(fast.lines, lines, rtol=1e-9, atol=1e-6)
    assert fast.lines["liq_below"].notna().mean() > 0.5
    for t in (0, 6, 7, 8, 100, 239):
        f = fast.frame(t)
        ref = maps[t]
        np.testing.assert_allclose(f["price"], list(ref), rtol=1e-12)
        np.testing.assert_allclose(f["long_usd"], [v[0] for v in ref.values()], rtol=1e-9,
                                   atol=1e-6)
        np.testing.assert_allclose(f["short_usd"], [v[1] for v in ref.values()], rtol=1e-9,
                                   atol=1e-6)
    long_df = fast.to_frame(5, 9)
    assert long_df["ts"].nunique() <= 4 and long_df["ts"].is_monotonic_increasing


def test_input_is_not_mutated_and_arrow_is_accepted() -> None:
    import pyarrow as pa

    bars, oi, _ = _random_market(seed=3, n=50)
    before = bars.copy()
    a = estimate_liq_map(pa.Table.from_pandas(bars), oi=pa.Table.from_pandas(oi))
    b = estimate_liq_map(bars, oi=oi)
    pd.testing.assert_frame_equal(bars, before)
    pd.testing.assert_frame_equal(a.lines, b.lines)


# ------------------------------------------------------------------------------ validation

def test_bad_bars_and_params() -> None:
    bars, oi, _ = _random_market(seed=1, n=20)
    with pytest.raises(DataError, match="strictly increasing"):
        estimate_liq_map(bars.iloc[::-1].reset_index(drop=True))
    naive = bars.assign(ts=bars["ts"].dt.tz_localize(None))
    with pytest.raises(DataError, match="timezone"):
        estimate_liq_map(naive)
    with pytest.raises(DataError, match="bad price"):
        estimate_liq_map(bars.assign(low=np.where(np.arange(20) == 4, np.nan, bars["low"])))
    with pytest.raises(ConfigError, match="did you mean 'bucket_frac'"):
        estimate_liq_map(bars, bucket_fraction=0.01)
    with pytest.raises(ConfigError, match="sum to 1"):
        LiqMapParams(leverage_mix={5: 0.5, 10: 0.4})
    with pytest.raises(ConfigError, match="mmr"):
        LiqMapParams(leverage_mix={300: 1.0})
    with pytest.raises(ConfigError, match="did you mean 'direction'"):
        LiqMapParams(split="directon")
    with pytest.raises(IndexError):
        estimate_liq_map(bars, oi=oi).frame(20)


def test_lazy_access_order_does_not_matter() -> None:
    bars, oi, _ = _random_market(seed=12, n=120)
    walk = estimate_liq_map(bars, oi=oi, checkpoint_every=16)
    jump = estimate_liq_map(bars, oi=oi, checkpoint_every=16)
    forward = [walk.arrays(i) for i in range(120)]
    order = np.random.default_rng(4).permutation(120)
    for i in order:
        for a, b in zip(jump.arrays(int(i)), forward[int(i)], strict=True):
            np.testing.assert_array_equal(a, b)
    long_, _ = walk.sizes(50)
    long_[:] = -1.0  # a copy: the map is unchanged
    np.testing.assert_array_equal(walk.arrays(50)[1], forward[50][1])


def test_clusters_stand_out_from_their_neighbourhood() -> None:
    # a steady climb leaves an even band of 10x levels (one per bucket or so): no bucket
    # stands out; one bar with ten times the new OI makes the only cluster on each side
    n = 41
    close = 100 * 1.003 ** np.arange(n)  # a little more than one 0.25% bucket per bar
    open_ = np.concatenate([[close[0]], close[:-1]])
    bars = _bars(list(zip(open_, close * 1.001, np.minimum(open_, close) * 0.999, close,
                          strict=True)))
    oi = 1000 + 10 * np.arange(n) + np.where(np.arange(n) >= 20, 90, 0)
    # levels ~1.2 buckets apart: an interior level holds ~1.2x its neighbourhood's mean
    # (+/- 8 buckets), the band's top edge ~2.2x, the spike ~7x; 2.5 separates them
    m = estimate_liq_map(bars, oi=_oi(bars, list(oi)), leverage_mix={10: 1.0},
                         cluster_mult=2.5)
    f = m.frame(n - 1)
    assert (f["long_usd"] > 0).sum() == n - 1  # one bucket per bar: an even band
    ln = m.lines
    assert np.isnan(ln.loc[19, "liq_below"]) and np.isnan(ln.loc[19, "liq_above"])
    spike_long = liquidation_price(close[20], 10, "long")
    spike_short = liquidation_price(close[20], 10, "short")
    longs, shorts = clusters_at(m, n - 1)
    assert longs == pytest.approx([spike_long], rel=0.0013)
    assert shorts == pytest.approx([spike_short], rel=0.0013)
    for t in (20, 30, n - 1):
        assert ln.loc[t, "liq_below"] == pytest.approx(spike_long, rel=0.0013)
        assert ln.loc[t, "liq_below_usd"] == pytest.approx(50 * spike_long, rel=0.0013)
        assert ln.loc[t, "liq_above"] == pytest.approx(spike_short, rel=0.0013)
    # a stricter multiple removes it, a looser one flags the whole band
    assert estimate_liq_map(bars, oi=_oi(bars, list(oi)), leverage_mix={10: 1.0},
                            cluster_mult=20.0).lines["liq_below"].isna().all()
    loose = estimate_liq_map(bars, oi=_oi(bars, list(oi)), leverage_mix={10: 1.0},
                             cluster_mult=0.5).lines
    assert loose.loc[19, "liq_below"] == pytest.approx(
        liquidation_price(close[19], 10, "long"), rel=0.0013)


def test_oi_turnover_opens_from_volume_and_retires_the_rest() -> None:
    bars = _bars([(100, 101, 99, 100)] * 3, volume=100.0)
    m = estimate_liq_map(bars, oi=_oi(bars, [1000, 1000, 1000]), oi_turnover=True,
                         participation=0.1, **ONE_10X)
    # flat OI: 10 BTC opened per bar and as much closed, 1% of OI, pro rata
    assert m.lines.loc[0, "long_usd"] == pytest.approx(5 * LONG_10X, rel=1e-5)
    assert m.lines.loc[1, "long_usd"] == pytest.approx((5 * 0.99 + 5) * LONG_10X, rel=1e-5)
    plain = estimate_liq_map(bars, oi=_oi(bars, [1000, 1000, 1000]), **ONE_10X)
    assert (plain.lines["long_usd"] == 0).all()


def test_cluster_hit_rate_by_hand() -> None:
    bars = _bars([(100, 101, 99, 100), (100, 101, 99, 100), (100, 101, 89, 95)])
    m = estimate_liq_map(bars, oi=_oi(bars, [1000, 1010, 1010]), **ONE_10X)
    ts = bars["ts"][2] + pd.Timedelta("20min")
    events = pd.DataFrame({"ts": [ts, ts, ts], "side": ["long", "long", "short"],
                           "price": [LONG_10X * 1.001, 95.05, 101.0], "size": [2.0, 1.0, 1.0]})
    r = cluster_hit_rate(m, events, tol_frac=0.005)
    usd = np.array([2 * LONG_10X * 1.001, 95.05, 101.0])
    # hit: the long near 90.45; miss: the long at 95.05 and the short at 101 (no short
    # cluster that close); one evenly spread long level sits at sqrt(90.45 * 100) = 95.1
    assert r["n_events"] == 3
    assert r["hit_rate"] == pytest.approx(usd[0] / usd.sum())
    assert r["uniform_baseline"] == pytest.approx(usd[1] / usd.sum())
    assert r["mean_clusters"] == 1.0

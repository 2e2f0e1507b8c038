"""Gamma engine: greeks against finite differences, closed forms, invariants, edge chains,
and the fast vectorized summary against a slow, readable reference kept here."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from scipy.optimize import brentq

from indicators import gamma
from plumbing.errors import ConfigError, DataError

YEAR = 365 * 86400
SUMMARY_COLUMNS = ["ts", "spot", "spot_source", "gex", "gex_call", "gex_put", "gamma_flip",
                   "call_wall", "put_wall", "regime", "vanna", "charm",
                   "n_contracts"]


# ---------------------------------------------------------------------------------------
# Fixtures: seeded chains built by code


def make_chain(seed: int, *, n_snap: int = 4, spot0: float = 40_000.0,
               index: bool = True) -> pd.DataFrame:
    """A small Deribit-like chain: hourly snapshots, 5 expiries, 13 strikes, a smile."""
    rng = np.random.default_rng(seed)
    t0 = pd.Timestamp("2024-03-01 10:00", tz="UTC")
    frames = []
    spot = spot0
    for j in range(n_snap):
        ts = t0 + pd.Timedelta(hours=j)
        spot *= math.exp(0.01 * rng.standard_normal())
        for days in (3, 10, 24, 59, 150):
            expiry = (ts + pd.Timedelta(days=days)).normalize() + pd.Timedelta(hours=8)
            T = (expiry - ts).total_seconds() / YEAR
            fwd = spot * (1 + 0.05 * T) * (1 + 2e-4 * rng.standard_normal())
            strikes = np.unique(np.round(spot * np.linspace(0.6, 1.6, 13) / 1000) * 1000)
            m = np.log(strikes / fwd)
            iv = 0.55 - 0.15 * m + 0.6 * m * m + 0.02 * rng.standard_normal(strikes.size)
            for right in ("C", "P"):
                frames.append(pd.DataFrame({
                    "ts": ts, "expiry": expiry, "strike": strikes, "right": right,
                    "open_interest": np.round(rng.gamma(1.2, 300.0, strikes.size), 1),
                    "mark_iv": iv, "underlying_price": fwd, "multiplier": 1.0,
                    "index_price": spot if index else np.nan,
                }))
    chain = pd.concat(frames, ignore_index=True)
    for col in ("ts", "expiry"):
        chain[col] = chain[col].astype("datetime64[us, UTC]")
    return chain


def one_row(right: str = "C", *, F: float = 50_000.0, K: float = 50_000.0,
            days: float = 91.25, iv: float = 0.5, oi: float = 10.0,
            ts: str = "2024-01-01 08:00") -> dict:
    t = pd.Timestamp(ts, tz="UTC")
    return {"ts": t, "expiry": t + pd.Timedelta(days=days), "strike": K, "right": right,
            "open_interest": oi, "mark_iv": iv, "underlying_price": F, "multiplier": 1.0}


def frame(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    for col in ("ts", "expiry"):
        df[col] = df[col].astype("datetime64[us, UTC]")
    return df


def wild_chain(seed: int) -> pd.DataFrame:
    """Irregular chains: 1-3 snapshots, expiries from 30 minutes to 8 months, few and
    scattered strikes, zero OI and NaN IV here and there, index price on ~70% of rows.
    Regions without any strike make the profile underflow (~1e-30): hard cases."""
    rng = np.random.default_rng(seed)
    t0 = pd.Timestamp("2024-03-01 07:00", tz="UTC")
    parts = []
    for _ in range(rng.integers(1, 4)):
        ts = t0 + pd.Timedelta(hours=int(rng.integers(0, 48)))
        spot = 30_000 * math.exp(rng.normal(0, 0.3))
        for _ in range(rng.integers(1, 6)):
            hours = float(rng.choice([0.5, 3, 20, 70, 200, 700, 2000, 6000]))
            K = np.unique(np.round(spot * np.exp(rng.normal(0, 0.25, rng.integers(1, 15)))
                                   / 100) * 100)
            for right in "CP":
                iv = np.abs(rng.normal(0.7, 0.3, K.size)) + 0.05
                iv[rng.random(K.size) < 0.05] = np.nan
                parts.append(pd.DataFrame({
                    "ts": ts, "expiry": ts + pd.Timedelta(hours=hours), "strike": K,
                    "right": right,
                    "open_interest": rng.gamma(0.7, 200, K.size) * (rng.random(K.size) > 0.2),
                    "mark_iv": iv,
                    "underlying_price": spot * (1 + 0.05 * hours / 8760)
                    * (1 + rng.normal(0, 1e-3, K.size)),
                    "multiplier": 1.0,
                    "index_price": np.where(rng.random(K.size) > 0.3, spot, np.nan)}))
    chain = pd.concat(parts, ignore_index=True)
    for col in ("ts", "expiry"):
        chain[col] = chain[col].astype("datetime64[us, UTC]")
    return chain


@pytest.fixture
def chain_seed7() -> pd.DataFrame:
    return make_chain(7)


# ---------------------------------------------------------------------------------------
# Slow, readable reference: a plain loop per snapshot and per row, float64, scipy brentq


def ref_gamma(F: float, K: float, T: float, iv: float) -> float:
    s = iv * math.sqrt(T)
    d1 = (math.log(F / K) + 0.5 * s * s) / s
    return math.exp(-0.5 * d1 * d1) / math.sqrt(2 * math.pi) / (F * s)


def ref_summary(chain: pd.DataFrame, dealer: str = "long_calls_short_puts",
                span: tuple[float, float] = (0.5, 1.5), step: float = 0.005) -> pd.DataFrame:
    out = []
    for ts, snap in chain.groupby("ts", sort=True):
        index = []
        if "index_price" in snap:
            index = [v for v in snap["index_price"] if v == v and v > 0]
        if index:
            spot, source = statistics.median(index), "index"
        else:
            spot = statistics.median(v for v in snap["underlying_price"] if v > 0)
            source = "forward_median"
        rows = []
        for r in snap.itertuples():
            T = (r.expiry - r.ts).total_seconds() / YEAR
            if not (T > 0 and r.open_interest > 0 and r.mark_iv > 0):
                continue
            if dealer == "explicit":
                pos = r.dealer_position
            elif dealer == "long_calls_short_puts":
                pos = r.open_interest if r.right == "C" else -r.open_interest
            else:
                pos = -r.open_interest if r.right == "C" else r.open_interest
            if not pos == pos or pos == 0:
                continue
            rows.append((r.underlying_price, r.strike, T, r.mark_iv, pos * r.multiplier,
                         r.right == "C"))

        def profile(x: float, rows=rows) -> float:
            return sum(w * ref_gamma(F * x, K, T, iv) * (F * x) ** 2 * 0.01
                       for F, K, T, iv, w, _ in rows)

        gex_call = sum(w * ref_gamma(F, K, T, iv) * F * F * 0.01
                       for F, K, T, iv, w, c in rows if c)
        gex_put = sum(w * ref_gamma(F, K, T, iv) * F * F * 0.01
                      for F, K, T, iv, w, c in rows if not c)
        vanna = 0.0
        for F, K, T, iv, w, _ in rows:
            s = iv * math.sqrt(T)
            d1 = (math.log(F / K) + 0.5 * s * s) / s
            vanna += w * -math.exp(-0.5 * d1 * d1) / math.sqrt(2 * math.pi) * (d1 - s) / iv \
                * F * 0.01
        # charm from its definition: delta's change as time passes (T shrinks), per day
        charm = 0.0
        for F, K, T, iv, w, c in rows:
            e = 1e-5 * T
            charm += w * (bs_delta(F, K, T - e, iv, c) - bs_delta(F, K, T + e, iv, c)) \
                / (2 * e) / 365.0
        per_strike: dict[float, list[float]] = {}
        for F, K, T, iv, w, c in rows:
            cell = per_strike.setdefault(K, [0.0, 0.0])
            cell[0 if c else 1] += w * ref_gamma(F, K, T, iv) * F * F * 0.01
        call_wall = put_wall = math.nan
        best_call, best_put = 0.0, 0.0
        for K in sorted(per_strike):
            if per_strike[K][0] > best_call:
                best_call, call_wall = per_strike[K][0], K
            if per_strike[K][1] < best_put:
                best_put, put_wall = per_strike[K][1], K

        # Flip: the module's grid of x = S'/S, nearest sign change each side, brentq.
        n_lo = round((1 - span[0]) / step)
        n_hi = round((span[1] - 1) / step)
        grid = list(np.linspace(span[0], 1, n_lo + 1)) + list(np.linspace(1, span[1],
                                                                           n_hi + 1))[1:]
        # A grid value has no sign when |profile| <= 1e-10 * x * gross, gross being the
        # GEX the snapshot would show with every row at the money (underflow and the
        # ~1e-30 tails far from every strike are not crossings).
        gross = sum(abs(w) * 0.01 * F / (iv * math.sqrt(T) * math.sqrt(2 * math.pi))
                    for F, K, T, iv, w, _ in rows)
        signs = []
        for x in grid:
            value = profile(x) if rows else 0.0
            signs.append(0 if abs(value) <= 1e-10 * x * gross else (1 if value > 0 else -1))
        roots = []
        for c in range(n_lo - 1, -1, -1):  # cells below spot, nearest first
            if signs[c] * signs[c + 1] < 0:
                roots.append(brentq(profile, grid[c], grid[c + 1], xtol=1e-13))
                break
        for c in range(n_lo, len(grid) - 1):  # cells above spot, nearest first
            if signs[c] * signs[c + 1] < 0:
                roots.append(brentq(profile, grid[c], grid[c + 1], xtol=1e-13))
                break
        flip = min(roots, key=lambda x: (abs(x - 1), x)) * spot if roots else math.nan
        gex = gex_call + gex_put
        out.append({"ts": ts, "spot": spot, "spot_source": source, "gex": gex,
                    "gex_call": gex_call, "gex_put": gex_put, "gamma_flip": flip,
                    "call_wall": call_wall, "put_wall": put_wall,
                    "regime": (gex > 0) - (gex < 0), "vanna": vanna,
                    "charm": charm, "n_contracts": len(rows)})
    return pd.DataFrame(out)


def assert_matches_reference(fast: pd.DataFrame, ref: pd.DataFrame) -> None:
    assert list(fast.columns) == SUMMARY_COLUMNS
    assert len(fast) == len(ref)
    assert (fast["ts"].to_numpy() == ref["ts"].to_numpy()).all()
    assert list(fast["spot_source"]) == list(ref["spot_source"])
    for col in ("spot", "gex", "gex_call", "gex_put", "vanna"):
        np.testing.assert_allclose(fast[col], ref[col], rtol=1e-9, atol=1e-6, err_msg=col)
    # the reference charm is a central difference in time (truncation ~1e-10 relative)
    scale = float(np.abs(ref["charm"]).max()) if len(ref) else 0.0
    np.testing.assert_allclose(fast["charm"], ref["charm"], rtol=1e-6, atol=1e-7 * scale)
    for col in ("call_wall", "put_wall", "regime", "n_contracts"):
        np.testing.assert_array_equal(fast[col].to_numpy(float), ref[col].to_numpy(float),
                                      err_msg=col)
    # The fast flip is a bracket below 2.5e-4 of spot plus linear interpolation.
    np.testing.assert_allclose(fast["gamma_flip"], ref["gamma_flip"], rtol=2e-5)


# ---------------------------------------------------------------------------------------
# Greeks


def bs_delta(F: float, K: float, T: float, iv: float, call: bool) -> float:
    s = iv * math.sqrt(T)
    d1 = (math.log(F / K) + 0.5 * s * s) / s
    n = 0.5 * (1 + math.erf(d1 / math.sqrt(2)))
    return n if call else n - 1


GREEK_CASES = [(F, K, T, iv) for F in (20_000.0, 43_000.0) for K in (15_000.0, 40_000.0,
                                                                       60_000.0)
               for T in (2 / 365, 0.1, 1.5) for iv in (0.3, 0.8, 1.6)]


@pytest.mark.parametrize("call", [True, False])
def test_gamma_is_the_derivative_of_delta(call: bool) -> None:
    F, K, T, iv = (np.array(c) for c in zip(*GREEK_CASES, strict=True))
    got = gamma.bs_gamma(F, K, T, iv)
    h = F * 1e-5
    fd = np.array([(bs_delta(f + e, k, t, v, call) - bs_delta(f - e, k, t, v, call)) / (2 * e)
                   for f, k, t, v, e in zip(F, K, T, iv, h, strict=True)])
    np.testing.assert_allclose(got, fd, rtol=1e-6, atol=1e-13)


def test_vanna_is_the_derivative_of_delta_in_iv() -> None:
    F, K, T, iv = (np.array(c) for c in zip(*GREEK_CASES, strict=True))
    got = gamma.bs_vanna(F, K, T, iv)
    e = 1e-6
    fd = np.array([(bs_delta(f, k, t, v + e, True) - bs_delta(f, k, t, v - e, True)) / (2 * e)
                   for f, k, t, v in zip(F, K, T, iv, strict=True)])
    np.testing.assert_allclose(got, fd, rtol=1e-6, atol=1e-9)


def test_greeks_are_nan_for_invalid_inputs() -> None:
    F = np.array([40_000.0, 40_000.0, 40_000.0, np.nan, 40_000.0])
    T = np.array([0.0, -0.1, 0.1, 0.1, 0.1])
    iv = np.array([0.5, 0.5, 0.0, 0.5, np.nan])
    assert np.isnan(gamma.bs_gamma(F, 40_000.0, T, iv)).all()
    assert np.isnan(gamma.bs_vanna(F, 40_000.0, T, iv)).all()
    assert gamma.bs_gamma(40_000.0, 40_000.0, 0.1, 0.5).shape == ()


# ---------------------------------------------------------------------------------------
# Closed forms and edge chains


def test_single_call_closed_form() -> None:
    # ATM, T = 0.25 y, iv = 0.5: d1 = 0.125, gamma = pdf(0.125) / (F * 0.25).
    chain = frame([one_row("C", oi=10.0)])
    pdf = math.exp(-0.5 * 0.125**2) / math.sqrt(2 * math.pi)
    expected = 10.0 * pdf / (50_000.0 * 0.25) * 50_000.0**2 * 0.01
    np.testing.assert_allclose(gamma.row_gex(chain), [expected], rtol=1e-12)
    s = gamma.summarize(chain).iloc[0]
    assert s["gex"] == pytest.approx(expected, rel=1e-12)
    assert s["gex_call"] == pytest.approx(expected, rel=1e-12) and s["gex_put"] == 0
    assert (s["spot"], s["spot_source"], s["regime"], s["n_contracts"]) == (
        50_000.0, "forward_median", 1, 1)
    assert s["call_wall"] == 50_000.0 and np.isnan(s["put_wall"])
    assert np.isnan(s["gamma_flip"])  # a lone long call: positive everywhere
    # vanna = -pdf(d1) d2 / iv with d2 = -0.125, in USD per vol point
    assert s["vanna"] == pytest.approx(10 * pdf * 0.125 / 0.5 * 50_000.0 * 0.01, rel=1e-12)


def test_single_strike_call_and_put() -> None:
    same = frame([one_row("C", oi=3.0), one_row("P", oi=1.0)])
    s = gamma.summarize(same).iloc[0]
    single = gamma.row_gex(frame([one_row("C", oi=1.0)]))[0]
    assert s["gex"] == pytest.approx(2 * single, rel=1e-12)
    assert s["call_wall"] == s["put_wall"] == 50_000.0
    assert s["regime"] == 1 and np.isnan(s["gamma_flip"])
    # Same strike, different IVs: the low-vol call dominates at spot, the high-vol put in
    # the tails, so the profile crosses zero on both sides; the flip is the nearer one.
    smile = frame([one_row("C", iv=0.3, oi=1.0), one_row("P", iv=0.9, oi=1.0)])
    fast = gamma.summarize(smile)
    assert_matches_reference(fast, ref_summary(smile))
    assert np.isfinite(fast["gamma_flip"].iloc[0])


def test_all_expired_chain_gives_empty_sums() -> None:
    rows = [one_row(r, K=k, days=-1.0 + 0 * k) for r in "CP" for k in (40e3, 50e3)]
    rows += [one_row("C", days=0.0)]  # expiring exactly now: T = 0 is dropped too
    chain = frame(rows)
    s = gamma.summarize(chain)
    assert len(s) == 1
    row = s.iloc[0]
    assert (row["gex"], row["gex_call"], row["gex_put"], row["regime"], row["n_contracts"],
            row["vanna"]) == (0, 0, 0, 0, 0, 0)
    assert np.isnan([row["gamma_flip"], row["call_wall"], row["put_wall"]]).all()
    assert row["spot"] == 50_000.0  # the forwards still give a reference spot
    assert (gamma.row_gex(chain) == 0).all()
    assert gamma.strike_gex(chain).empty


def test_nan_and_zero_iv_rows_are_ignored(chain_seed7: pd.DataFrame) -> None:
    junk = chain_seed7.sample(40, random_state=3).copy()
    junk["open_interest"] = 1e6
    junk["mark_iv"] = [np.nan, 0.0, -0.2, np.nan] * 10
    noisy = pd.concat([chain_seed7, junk], ignore_index=True)
    a, b = gamma.summarize(chain_seed7), gamma.summarize(noisy)
    pd.testing.assert_frame_equal(a, b, rtol=1e-12)
    assert (gamma.row_gex(noisy)[len(chain_seed7):] == 0).all()


def test_empty_chain() -> None:
    empty = make_chain(1).iloc[:0]
    s = gamma.summarize(empty)
    assert s.empty and list(s.columns) == SUMMARY_COLUMNS
    assert str(s["ts"].dtype) == "datetime64[us, UTC]"
    sg = gamma.strike_gex(empty)
    assert sg.empty and list(sg.columns) == ["ts", "strike", "gex_call", "gex_put", "gex_net",
                                          "vanna", "charm"]
    assert gamma.row_gex(empty).shape == (0,)
    assert gamma.summarize(pa.Table.from_pandas(empty, preserve_index=False)).empty
    untyped = pd.DataFrame(columns=list(empty.columns))  # object columns, no rows
    assert gamma.summarize(untyped).empty and gamma.strike_gex(untyped).empty


# ---------------------------------------------------------------------------------------
# Invariants


def test_scaling_open_interest_scales_gex_and_keeps_flip(chain_seed7: pd.DataFrame) -> None:
    scaled = chain_seed7.assign(open_interest=chain_seed7["open_interest"] * 7.5)
    a, b = gamma.summarize(chain_seed7), gamma.summarize(scaled)
    for col in ("gex", "gex_call", "gex_put", "vanna"):
        np.testing.assert_allclose(b[col], 7.5 * a[col], rtol=1e-12)
    np.testing.assert_allclose(b["gamma_flip"], a["gamma_flip"], rtol=1e-9)
    assert a["gamma_flip"].notna().any()
    for col in ("call_wall", "put_wall", "regime", "n_contracts", "spot"):
        pd.testing.assert_series_equal(a[col], b[col])


def test_row_order_changes_nothing(chain_seed7: pd.DataFrame) -> None:
    perm = np.random.default_rng(11).permutation(len(chain_seed7))
    shuffled = chain_seed7.iloc[perm].reset_index(drop=True)
    pd.testing.assert_frame_equal(gamma.summarize(shuffled), gamma.summarize(chain_seed7),
                                  rtol=1e-9)
    pd.testing.assert_frame_equal(gamma.strike_gex(shuffled),
                                  gamma.strike_gex(chain_seed7), rtol=1e-12)
    np.testing.assert_allclose(gamma.row_gex(shuffled), gamma.row_gex(chain_seed7)[perm],
                               rtol=1e-15)


def test_timestamp_units_and_zones(chain_seed7: pd.DataFrame) -> None:
    other = chain_seed7.assign(ts=chain_seed7["ts"].astype("datetime64[ns, UTC]"),
                               expiry=chain_seed7["expiry"].dt.tz_convert("Asia/Tokyo"))
    pd.testing.assert_frame_equal(gamma.summarize(other), gamma.summarize(chain_seed7))
    missing = chain_seed7.copy()
    missing.loc[3, "expiry"] = pd.NaT
    with pytest.raises(DataError, match="row 3.*'expiry'"):
        gamma.summarize(missing)


def test_pyarrow_table_input(chain_seed7: pd.DataFrame) -> None:
    table = pa.Table.from_pandas(chain_seed7, preserve_index=False)
    pd.testing.assert_frame_equal(gamma.summarize(table), gamma.summarize(chain_seed7))


def test_inputs_are_not_mutated(chain_seed7: pd.DataFrame) -> None:
    before = chain_seed7.copy()
    gamma.summarize(chain_seed7)
    gamma.strike_gex(chain_seed7)
    pd.testing.assert_frame_equal(chain_seed7, before)


# ---------------------------------------------------------------------------------------
# The flip


def two_crossing_chain() -> pd.DataFrame:
    """Short-gamma pockets at 80 and 112 (puts) around long calls at 100 (spot).

    The profile is negative near 0.8 S, positive around spot, negative again near
    1.12 S; it crosses zero near 0.90 S and 1.05 S: the first crossing scanning up from
    0.5 S (what public scripts report) is below spot, the one nearest spot is above it.
    """
    rows = [one_row("C", F=100.0, K=100.0, days=7, iv=0.5, oi=100.0),
            one_row("P", F=100.0, K=80.0, days=7, iv=0.5, oi=150.0),
            one_row("P", F=100.0, K=112.0, days=7, iv=0.5, oi=120.0)]
    return frame(rows)


def test_flip_is_the_crossing_nearest_spot() -> None:
    chain = two_crossing_chain()
    fast = gamma.summarize(chain)
    assert_matches_reference(fast, ref_summary(chain))
    prof = gamma.gex_profile(chain, levels=np.linspace(0.5, 1.5, 20001))
    x, g = prof["rel"].to_numpy(), prof["gex"].to_numpy()
    cells = np.flatnonzero(np.sign(g[:-1]) * np.sign(g[1:]) < 0)
    roots = x[cells] - g[cells] * (x[cells + 1] - x[cells]) / (g[cells + 1] - g[cells])
    assert roots.size >= 2 and roots.min() < 1 < roots.max()
    first_from_below = roots[0]
    nearest = roots[np.argmin(np.abs(roots - 1))]
    flip = fast["gamma_flip"].iloc[0] / fast["spot"].iloc[0]
    assert abs(first_from_below - nearest) > 0.05
    assert flip == pytest.approx(nearest, abs=1e-4)
    assert flip > 1 > first_from_below


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_flip_accuracy_against_a_fine_grid(seed: int) -> None:
    chain = make_chain(seed, n_snap=3)
    fast = gamma.summarize(chain)
    x = np.linspace(0.5, 1.5, 20_001)  # brute force: 5e-5 of spot
    prof = gamma.gex_profile(chain, levels=x)
    assert fast["gamma_flip"].notna().any()
    for i, (_, snap) in enumerate(prof.groupby("ts", sort=True)):
        g = snap["gex"].to_numpy()
        cells = np.flatnonzero(np.sign(g[:-1]) * np.sign(g[1:]) < 0)
        flip = fast["gamma_flip"].iloc[i]
        if cells.size == 0:
            assert np.isnan(flip)
            continue
        nearest = x[cells[np.argmin(np.minimum(np.abs(x[cells] - 1), np.abs(x[cells + 1] - 1)))]]
        assert abs(flip / fast["spot"].iloc[i] - nearest) < 5e-4  # < 0.05% of spot


def test_flip_zero_of_profile(chain_seed7: pd.DataFrame) -> None:
    s = gamma.summarize(chain_seed7)
    rel = (s["gamma_flip"] / s["spot"]).to_numpy()
    ok = np.isfinite(rel)
    assert ok.any()
    prof = gamma.gex_profile(chain_seed7, levels=[1.0])
    np.testing.assert_allclose(prof["gex"], s["gex"], rtol=1e-12)
    for i in np.flatnonzero(ok):
        one = chain_seed7[chain_seed7["ts"] == s["ts"].iloc[i]]
        around = gamma.gex_profile(one, levels=[rel[i] * (1 - 1e-4), rel[i] * (1 + 1e-4)])
        assert np.sign(around["gex"].iloc[0]) != np.sign(around["gex"].iloc[1])


# ---------------------------------------------------------------------------------------
# Dealer conventions


def test_inverted_dealer_flips_signs(chain_seed7: pd.DataFrame) -> None:
    a = gamma.summarize(chain_seed7)
    b = gamma.summarize(chain_seed7, dealer="short_calls_long_puts")
    for col in ("gex", "gex_call", "gex_put", "vanna"):
        np.testing.assert_allclose(b[col], -a[col], rtol=1e-12)
    np.testing.assert_array_equal(b["regime"], -a["regime"])
    np.testing.assert_allclose(b["gamma_flip"], a["gamma_flip"], rtol=1e-9)
    # Walls keep their definition (largest positive call GEX, most negative put GEX):
    # dealers short every call and long every put hold neither.
    assert b["call_wall"].isna().all() and b["put_wall"].isna().all()
    np.testing.assert_allclose(gamma.row_gex(chain_seed7, "short_calls_long_puts"),
                               -gamma.row_gex(chain_seed7))


def test_explicit_positions_reproduce_the_default(chain_seed7: pd.DataFrame) -> None:
    oi = chain_seed7["open_interest"]
    explicit = chain_seed7.assign(dealer_position=np.where(chain_seed7["right"] == "C",
                                                           oi, -oi))
    pd.testing.assert_frame_equal(gamma.summarize(explicit, dealer="explicit"),
                                  gamma.summarize(chain_seed7), rtol=1e-12)
    pd.testing.assert_frame_equal(gamma.strike_gex(explicit, dealer="explicit"),
                                  gamma.strike_gex(chain_seed7))


def test_explicit_positions_against_reference(chain_seed7: pd.DataFrame) -> None:
    rng = np.random.default_rng(5)
    pos = np.round(rng.normal(0, 200, len(chain_seed7)), 1)
    pos[::17] = np.nan  # unknown positions are dropped
    explicit = chain_seed7.assign(dealer_position=pos)
    assert_matches_reference(gamma.summarize(explicit, dealer="explicit"),
                             ref_summary(explicit, dealer="explicit"))


def test_dealer_errors(chain_seed7: pd.DataFrame) -> None:
    with pytest.raises(ConfigError, match="dealer_position"):
        gamma.summarize(chain_seed7, dealer="explicit")
    with pytest.raises(ConfigError, match="did you mean 'long_calls_short_puts'"):
        gamma.summarize(chain_seed7, dealer="long_call_short_put")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------
# Fast path against the slow reference


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_summarize_matches_reference(seed: int) -> None:
    chain = make_chain(seed, n_snap=4)
    # No index on one snapshot: its spot falls back to the median forward.
    last = chain["ts"] == chain["ts"].max()
    chain.loc[last, "index_price"] = np.nan
    fast = gamma.summarize(chain)
    assert_matches_reference(fast, ref_summary(chain))
    assert list(fast["spot_source"]) == ["index"] * 3 + ["forward_median"]


# Chains of this kind exposed two bugs during development (crossings of ~1e-30 tails
# far from every strike; a wrongly accumulated local gross).
@pytest.mark.parametrize("seed", range(8))
def test_summarize_matches_reference_on_wild_chains(seed: int) -> None:
    chain = wild_chain(seed)
    dealer = "explicit" if seed % 2 else "long_calls_short_puts"
    if dealer == "explicit":
        chain["dealer_position"] = np.round(np.random.default_rng(seed).normal(0, 100,
                                                                               len(chain)), 1)
    assert_matches_reference(gamma.summarize(chain, dealer=dealer),
                             ref_summary(chain, dealer=dealer))


def test_grid_sums_against_direct_sums(chain_seed7: pd.DataFrame) -> None:
    inp = gamma._prepare(chain_seed7, "long_calls_short_puts")
    blk = gamma._block(inp, 0, inp.ts_us.size)
    r = blk.rows
    u = np.log(np.linspace(0.6, 1.4, 33))
    t = r.d[:, None] + r.k[:, None] * u[None, :]
    terms = r.a[:, None] * np.exp(-t * t)
    for dtype, rtol in ((np.float64, 1e-12), (np.float32, 1e-4)):
        g, gross = gamma._grid_sums(r.d, r.k, r.a, r.snap, blk.n_snap, u, dtype)
        for j in range(blk.n_snap):
            rows = r.snap == j
            scale = np.abs(terms[rows]).sum(axis=0)
            np.testing.assert_allclose(gross[j], scale, rtol=rtol)
            np.testing.assert_allclose(g[j], terms[rows].sum(axis=0), rtol=0,
                                       atol=rtol * scale.max())


def test_summarize_without_index_column() -> None:
    chain = make_chain(3, n_snap=2).drop(columns="index_price")
    assert_matches_reference(gamma.summarize(chain), ref_summary(chain))


def test_strike_gex_agrees_with_summary(chain_seed7: pd.DataFrame) -> None:
    sg = gamma.strike_gex(chain_seed7)
    s = gamma.summarize(chain_seed7)
    assert sg.equals(sg.sort_values(["ts", "strike"], ignore_index=True))
    assert not sg.duplicated(["ts", "strike"]).any()
    per_ts = sg.groupby("ts")[["gex_call", "gex_put", "gex_net"]].sum()
    np.testing.assert_allclose(per_ts["gex_net"], s["gex"], rtol=1e-12)
    np.testing.assert_allclose(per_ts["gex_call"], s["gex_call"], rtol=1e-12)
    walls = sg.loc[sg.groupby("ts")["gex_call"].idxmax(), "strike"].to_numpy()
    np.testing.assert_array_equal(walls, s["call_wall"])
    walls = sg.loc[sg.groupby("ts")["gex_put"].idxmin(), "strike"].to_numpy()
    np.testing.assert_array_equal(walls, s["put_wall"])
    np.testing.assert_allclose(sg["gex_net"], sg["gex_call"] + sg["gex_put"])


# ---------------------------------------------------------------------------------------
# Input errors


def test_input_errors(chain_seed7: pd.DataFrame) -> None:
    with pytest.raises(DataError, match="missing column.*mark_iv"):
        gamma.summarize(chain_seed7.drop(columns="mark_iv"))
    naive = chain_seed7.assign(ts=chain_seed7["ts"].dt.tz_localize(None))
    with pytest.raises(DataError, match="timezone-naive"):
        gamma.summarize(naive)
    with pytest.raises(DataError, match="percent"):
        gamma.summarize(chain_seed7.assign(mark_iv=chain_seed7["mark_iv"] * 100))
    bad = chain_seed7.copy()
    bad.loc[5, "right"] = "call"
    with pytest.raises(DataError, match="row 5.*'right'"):
        gamma.row_gex(bad)
    with pytest.raises(ConfigError, match="flip_tol"):
        gamma.summarize(chain_seed7, flip_tol=1e-3)
    with pytest.raises(ConfigError, match="span"):
        gamma.summarize(chain_seed7, span=(1.1, 1.5))
    with pytest.raises(DataError, match="unsupported chain type"):
        gamma.summarize([1, 2, 3])  # type: ignore[arg-type]


def test_multiplier_defaults_to_one(chain_seed7: pd.DataFrame) -> None:
    a = gamma.summarize(chain_seed7)
    b = gamma.summarize(chain_seed7.drop(columns="multiplier"))
    pd.testing.assert_frame_equal(a, b)
    c = gamma.summarize(chain_seed7.assign(multiplier=0.1))
    np.testing.assert_allclose(c["gex"], 0.1 * a["gex"], rtol=1e-12)


def test_float32_grid_errors_are_caught(chain_seed7: pd.DataFrame,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # The coarse grid only locates sign changes (float32). Shift its values so that the
    # sign changes land in wrong cells: the float64 bracket check must notice and redo
    # those snapshots on a float64 grid, giving the same flips.
    good = gamma.summarize(chain_seed7)
    real_grid_sums = gamma._grid_sums
    used: list[type] = []

    def shifted(d, k, a, seg, n_seg, u, dtype=np.float32):
        used.append(dtype)
        out = real_grid_sums(d, k, a, seg, n_seg, u, dtype)
        if dtype is np.float32:
            out = out + 0.2 * np.abs(out).max(axis=1, keepdims=True)
        return out

    monkeypatch.setattr(gamma, "_grid_sums", shifted)
    bad = gamma.summarize(chain_seed7)
    assert np.float64 in used  # the float64 redo ran
    np.testing.assert_allclose(bad["gamma_flip"], good["gamma_flip"], rtol=1e-9)
    assert good["gamma_flip"].notna().sum() >= 2


def test_blocks_of_snapshots_change_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    # Large chains are processed in blocks of whole snapshots; force tiny blocks.
    chain = make_chain(9, n_snap=6)
    perm = np.random.default_rng(2).permutation(len(chain))
    chain = chain.iloc[perm].reset_index(drop=True)  # ungrouped input, too
    whole = (gamma.summarize(chain), gamma.strike_gex(chain), gamma.row_gex(chain),
             gamma.gex_profile(chain))
    monkeypatch.setattr(gamma, "_BLOCK_ROWS", 150)
    assert len(gamma._blocks(gamma._prepare(chain, "long_calls_short_puts"))) == 6
    pd.testing.assert_frame_equal(gamma.summarize(chain), whole[0], rtol=1e-12)
    pd.testing.assert_frame_equal(gamma.strike_gex(chain), whole[1], rtol=1e-12)
    np.testing.assert_allclose(gamma.row_gex(chain), whole[2], rtol=1e-12)
    pd.testing.assert_frame_equal(gamma.gex_profile(chain), whole[3], rtol=1e-12)


def test_explicit_positions_match_the_simulator_ground_truth() -> None:
    # The simulator knows the dealers' book: its true net dealer GEX per 1% move at each
    # step must be what the engine computes from the chain's signed dealer positions.
    from feeds.synthetic import simulate

    market = simulate("calm", days=2, seed=3)
    truth = market.dealer_gamma.to_pandas()
    s = gamma.summarize(market.chain, dealer="explicit")
    both = s.merge(truth, on="ts", suffixes=("", "_sim"))
    assert len(both) == len(truth) > 24
    np.testing.assert_allclose(both["gex"], both["dealer_gex_usd"], rtol=1e-8)
    np.testing.assert_allclose(both["spot"], both["spot_sim"], rtol=1e-12)
    assert (s["spot_source"] == "index").all()

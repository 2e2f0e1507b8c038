"""Unit tests of the market simulator (feeds.synthetic and feeds.sim.*): pieces, schemas,
calendar, configuration, determinism and the on-disk format. Fast: short runs only."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from scipy.stats import norm

from feeds.schema import BARS, CHAIN, FUNDING, FUTURES, LIQUIDATIONS, PERP_OI, conform
from feeds.sim.calendar import from_us, listed_expiries, to_us
from feeds.sim.perps import LeverageBook, liquidation_price
from feeds.synthetic import Market, list_scenarios, load_market, simulate
from plumbing.errors import ConfigError, DataError

SCENARIOS = ("calm", "gamma_squeeze_down", "basis_unwind", "long_gamma_pin")


@pytest.fixture(scope="module")
def calm_3d() -> Market:
    """Three days of the calm preset, hourly bars and chains, seed 11."""
    return simulate("calm", days=3, seed=11, n_options=200)


@pytest.fixture(scope="module")
def squeeze_3d() -> Market:
    """The squeeze preset's two-day lead-in and its first day (stack, put block, cushion)."""
    return simulate("gamma_squeeze_down", days=3, seed=5, n_options=200)


# ---------------------------------------------------------------- liquidations

def test_liquidation_price_matches_domain_formulas():
    # DOMAIN.md: long EP (1 - 1/L) / (1 - MMR), short EP (1 + 1/L) / (1 + MMR)
    assert liquidation_price(100.0, 10.0, "long", 0.005) == pytest.approx(90.0 / 0.995)
    assert liquidation_price(100.0, 10.0, "short", 0.005) == pytest.approx(110.0 / 1.005)
    lev = np.array([2.0, 5.0, 20.0, 100.0])
    longs = liquidation_price(50_000.0, lev, "long", 0.004)
    assert np.all(np.diff(longs) > 0) and np.all(longs < 50_000)
    assert liquidation_price(100.0, 1.0, "long") == 0.0  # a 1x long never liquidates


def test_leverage_book_triggers_exactly_when_the_level_is_crossed():
    book = LeverageBook(100.0, level_step=0.001, mmr=0.005)
    book.open(100.0, 2.0, "long", np.array([10.0]), np.array([1.0]))
    book.open(100.0, 3.0, "short", np.array([10.0]), np.array([1.0]))
    level_long = 90.0 / 0.995
    level_short = 110.0 / 1.005
    ln = math.log
    # a path that stays inside both levels triggers nothing
    assert all(len(a) == 0 for a in book.trigger(ln(91.0), ln(109.0), ln(91.0), ln(109.0)))
    assert book.total_long == pytest.approx(2.0) and book.total_short == pytest.approx(3.0)
    # the low crosses the long level (grid resolution 0.1%)
    li, ls, si, ss = book.trigger(ln(level_long * 0.998), ln(100.0), ln(90.0), ln(100.0))
    assert ls.sum() == pytest.approx(2.0) and len(ss) == 0
    price = book.levels[li][0]
    assert price == pytest.approx(level_long, rel=1e-3)
    assert price >= level_long * 0.998  # never below the low that triggered it
    assert book.total_long == pytest.approx(0.0)
    # the same level does not liquidate twice
    assert len(book.trigger(ln(80.0), ln(100.0), ln(80.0), ln(100.0))[1]) == 0
    # the high crosses the short level
    _, _, si, ss = book.trigger(ln(100.0), ln(level_short * 1.002), ln(100.0), ln(112.0))
    assert ss.sum() == pytest.approx(3.0)
    assert book.levels[si][0] == pytest.approx(level_short, rel=1e-3)


def test_open_mix_puts_sizes_at_each_leverage_level():
    book = LeverageBook(50_000.0)
    lev = np.array([1.0, 5.0, 20.0])
    book.set_mix(lev, np.array([0.2, 0.4, 0.4]))
    book.open_mix(math.log(50_000.0), 10.0 * book.long_share, 10.0)
    assert book.long_share == pytest.approx(0.8)
    assert book.longs.sum() == pytest.approx(8.0) and book.shorts.sum() == pytest.approx(10.0)
    got = np.sort(book.levels[np.flatnonzero(book.longs)])
    want = liquidation_price(50_000.0, lev[1:], "long")
    np.testing.assert_allclose(got, np.sort(want), rtol=1.5e-3)


def test_market_liquidations_lie_inside_their_bars(squeeze_3d):
    bars = squeeze_3d.bars.to_pandas()
    liq = squeeze_3d.liquidations.to_pandas()
    assert len(liq) > 0 and set(liq["side"]) <= {"long", "short"}
    step = pd.Timedelta(seconds=squeeze_3d.meta["step_seconds"])
    # the event is stamped at the end of the step that crossed the level
    bar_idx = bars["ts"].searchsorted(liq["ts"] - step, side="right") - 1
    low = bars["low"].to_numpy()[bar_idx]
    high = bars["high"].to_numpy()[bar_idx]
    longs = (liq["side"] == "long").to_numpy()
    assert np.all(liq["price"].to_numpy()[longs] >= low[longs] * (1 - 1e-12))
    assert np.all(liq["price"].to_numpy()[~longs] <= high[~longs] * (1 + 1e-12))



def test_a_stack_enters_on_its_day_with_entries_relative_to_the_spot_then():
    kw = {"days": 2, "seed": 3, "chain_freq": "1D", "n_options": 60}
    stack = {"side": "long", "entry_lo": 1.0, "entry_hi": 1.02, "size_btc": 5000.0,
             "leverage": [10.0], "leverage_weights": [1.0], "day": 1.0}
    base = simulate("calm", **kw)
    m = simulate("calm", overrides={"perps": {"stacks": [stack]}}, **kw)
    # before its day the stack does not exist, and entering is no market order (the perp
    # bar closing at day 1 already carries the premium the stack's imbalance adds then)
    day1 = pd.Timestamp(m.params["sim"]["start"]) + pd.Timedelta(days=1)
    for name, end in (("bars", day1), ("flows", day1), ("liquidations", day1),
                      ("perp", day1 - pd.Timedelta("1h"))):
        a, b = getattr(base, name).to_pandas(), getattr(m, name).to_pandas()
        pd.testing.assert_frame_equal(a[a["ts"] < end], b[b["ts"] < end], obj=name)
    i = 24  # the hourly bar opening at day 1 sees the stack
    long_a = base.flows.to_pandas()["perp_long_btc"].to_numpy()
    long_b = m.flows.to_pandas()["perp_long_btc"].to_numpy()
    assert long_b[i - 1] == long_a[i - 1]
    assert long_b[i] - long_a[i] == pytest.approx(5000.0, rel=1e-9)
    # entries up to 1.2 x the spot of day 1 at 10x: levels from 0.905 to 1.085 x that
    # spot; the part already crossed is dropped without a liquidation
    spot1 = base.bars.to_pandas()["open"].iloc[i]
    wide = dict(stack, entry_hi=1.2)
    w = simulate("calm", overrides={"perps": {"stacks": [wide]}}, **kw)
    entries = spot1 * np.linspace(1.0, 1.2, 25)
    below = (liquidation_price(entries, 10.0, "long") < spot1).sum()
    jump = w.flows.to_pandas()["perp_long_btc"].iloc[i] - long_a[i]
    assert abs(jump - 5000.0 * below / 25) <= 5000.0 / 25 + 1e-6
    liq = w.liquidations.to_pandas()
    first = liq[(liq["ts"] > day1) & (liq["ts"] <= day1 + pd.Timedelta(minutes=10))]
    assert first["size"].sum() < 50.0


def test_stack_day_must_not_be_negative():
    stack = {"side": "long", "day": -1.0}
    with pytest.raises(ConfigError, match=r"perps.stacks\[0\].day"):
        simulate("calm", days=1, overrides={"perps": {"stacks": [stack]}})


# ---------------------------------------------------------------- calendar

def test_listed_expiries_follow_the_deribit_pattern():
    now = to_us(pd.Timestamp("2025-01-06T09:00:00Z").to_pydatetime())  # a Monday
    exps = [from_us(e) for e in listed_expiries(now, daily=4, weekly=3, monthly=3, quarterly=4)]
    assert all(e.hour == 8 and e.minute == 0 for e in exps)
    assert exps[0].day == 7  # today's 08:00 has passed
    assert [e.day for e in exps[:4]] == [7, 8, 9, 10]
    fridays = [e for e in exps if e.weekday() == 4]
    assert {(e.month, e.day) for e in fridays} >= {(1, 10), (1, 17), (1, 24), (1, 31), (2, 28),
                                                   (3, 28), (6, 27), (9, 26), (12, 26)}
    assert exps == sorted(set(exps))


def test_expiries_roll_off_at_0800_utc(calm_3d):
    chain = calm_3d.chain.to_pandas()
    assert (chain["expiry"].dt.hour == 8).all() and (chain["expiry"].dt.minute == 0).all()
    assert (chain["expiry"] > chain["ts"]).all()  # nothing expired is ever reported
    by_ts = chain.groupby("ts")["expiry"].agg(lambda e: set(e))
    t7, t8 = pd.Timestamp("2025-01-07T07:00Z"), pd.Timestamp("2025-01-07T08:00Z")
    assert pd.Timestamp("2025-01-07T08:00Z") in by_ts[t7]
    assert pd.Timestamp("2025-01-07T08:00Z") not in by_ts[t8]
    new = by_ts[t8] - by_ts[t7]
    assert new == {pd.Timestamp("2025-01-11T08:00Z")}  # the next daily lists at the roll
    names = chain.drop_duplicates("expiry").set_index("expiry")["underlying_index"]
    assert names[pd.Timestamp("2025-01-31T08:00Z")] == "SYN.BTC-31JAN25"


# ---------------------------------------------------------------- schemas and outputs

@pytest.mark.parametrize("name,schema", [("bars", BARS), ("perp", BARS), ("chain", CHAIN),
                                         ("perp_oi", PERP_OI), ("funding", FUNDING),
                                         ("liquidations", LIQUIDATIONS),
                                         ("futures", FUTURES)])
def test_tables_are_canonical(squeeze_3d, name, schema):
    table = getattr(squeeze_3d, name)
    for f in schema.fields:
        if f.required:
            assert f.name in table.column_names
            assert table.schema.field(f.name).type == f.type
    again = conform(table.to_pandas(), schema, source=name)  # re-validates every rule
    assert again.num_rows == table.num_rows


def test_dealer_gamma_and_flows_tables(calm_3d):
    dg = calm_3d.dealer_gamma
    assert dg.schema.field("ts").type == pa.timestamp("us", tz="UTC")
    df = dg.to_pandas()
    assert {"ts", "spot", "dealer_gex_usd", "net_gamma", "regime", "hedge_flow_btc"} <= set(df)
    np.testing.assert_allclose(df["dealer_gex_usd"], df["net_gamma"] * df["spot"] ** 2 * 0.01)
    assert set(np.unique(df["regime"])) <= {-1, 1}
    bars = calm_3d.bars.to_pandas()
    assert (df["ts"] == bars["ts"]).all() and np.allclose(df["spot"], bars["open"])
    flows = calm_3d.flows.to_pandas()
    assert np.allclose(flows["dealer_btc"], df["hedge_flow_btc"])
    assert (flows["depth_btc"] > 0).all() and flows["mm_health"].between(0, 1).all()


def test_bars_are_consistent_ohlc(calm_3d):
    for table in (calm_3d.bars, calm_3d.perp):
        b = table.to_pandas()
        assert (b["high"] >= b[["open", "close"]].max(axis=1)).all()
        assert (b["low"] <= b[["open", "close"]].min(axis=1)).all()
        assert (b["volume"] > 0).all()
    b = calm_3d.bars.to_pandas()
    np.testing.assert_allclose(b["open"].to_numpy()[1:], b["close"].to_numpy()[:-1])


def test_chain_is_consistent_with_the_dealer_book(calm_3d):
    chain = calm_3d.chain.to_pandas()
    assert chain["index_price"].notna().all() and chain["dealer_position"].notna().all()
    # calm is a convention book: dealer position = OI * (+1 calls, -1 puts), exactly
    sign = np.where(chain["right"] == "C", 1.0, -1.0)
    np.testing.assert_allclose(chain["dealer_position"], sign * chain["open_interest"],
                               atol=1e-9)
    # each row's forward is S (1 + b T): a few basis points over spot for short tenors
    T = (chain["expiry"] - chain["ts"]).dt.total_seconds() / (365 * 86400)
    fwd_ann = (chain["underlying_price"] / chain["index_price"] - 1) / T
    assert fwd_ann.between(-0.2, 0.3).all()
    assert chain["mark_iv"].between(0.05, 3.0).all()
    rows = chain.groupby("ts").size()
    assert rows.between(150, 260).all()  # n_options=200 target


def test_true_dealer_gamma_matches_a_slow_reference_on_the_chain(squeeze_3d):
    """dealer_gex_usd = sum(pos * BS gamma(F, K, T, iv) * F^2 * 0.01) over the snapshot."""
    chain = squeeze_3d.chain.to_pandas()
    dg = squeeze_3d.dealer_gamma.to_pandas().set_index("ts")
    for ts, snap in list(chain.groupby("ts"))[::7]:
        total = 0.0
        for row in snap.itertuples():
            T = (row.expiry - row.ts).total_seconds() / (365 * 86400)
            if row.open_interest <= 0:
                continue
            s = row.mark_iv * math.sqrt(T)
            d1 = (math.log(row.underlying_price / row.strike) + 0.5 * s * s) / s
            gamma = norm.pdf(d1) / (row.underlying_price * s)
            total += row.dealer_position * gamma * row.underlying_price ** 2 * 0.01
        assert total == pytest.approx(dg.loc[ts, "dealer_gex_usd"], rel=1e-9, abs=1e-3)


def test_futures_and_funding(calm_3d):
    fut = calm_3d.futures.to_pandas()
    assert "open_interest" in fut and (fut["open_interest"] > 0).all()
    assert (fut["expiry"].dt.hour == 8).all() and (fut["expiry"].dt.day_of_week == 4).all()
    spot = calm_3d.bars.to_pandas().set_index("ts")["open"]
    dte = (fut["expiry"] - fut["ts"]).dt.total_seconds() / 86400
    ann = (fut["price"] / fut["ts"].map(spot) - 1) * 365 / dte
    assert ann.between(-0.05, 0.12).all()
    fund = calm_3d.funding.to_pandas()
    assert (fund["ts"].dt.hour % 8 == 0).all() and (fund["interval_h"] == 8).all()
    assert len(fund) == 3 * 3 - 1  # paid at 08/16/00 UTC after the first accrual
    assert fund["rate_8h"].abs().max() <= 0.003


@pytest.mark.parametrize("freq,n_sub", [("1min", 1), ("5min", 1), ("15min", 2), ("1h", 6),
                                        ("4h", 24), ("1D", 144)])
def test_any_bar_frequency_from_one_minute(freq, n_sub):
    days = 0.25 if freq in ("1min", "5min") else 2
    m = simulate("calm", days=days, freq=freq, chain_freq="1D", seed=2, n_options=60)
    bars = m.bars.to_pandas()
    step = pd.Timedelta(freq)
    assert len(bars) == int(pd.Timedelta(days=days) / step)
    assert (bars["ts"].diff().dropna() == step).all()
    assert m.meta["n_sub"] == n_sub
    assert len(m.dealer_gamma) == len(bars) == len(m.perp) == len(m.perp_oi)


def test_frequency_and_length_errors():
    with pytest.raises(ConfigError, match="at least 1 minute"):
        simulate("calm", days=1, freq="30s")
    with pytest.raises(ConfigError, match="shorter than one bar"):
        simulate("calm", days=0.5, freq="1D")
    with pytest.raises(ConfigError, match="not a duration"):
        simulate("calm", days=1, freq="hourly")


# ---------------------------------------------------------------- configuration

def test_presets_are_listed_and_load():
    assert set(SCENARIOS) <= set(list_scenarios())
    assert not any(name.startswith("_") for name in list_scenarios())


def test_unknown_keys_and_names_get_a_hint():
    with pytest.raises(ConfigError, match="did you mean 'depth_btc'"):
        simulate("calm", days=1, overrides={"market.depht_btc": 1.0})
    with pytest.raises(ConfigError, match="did you mean 'basis_unwind'"):
        simulate("basis_unwnd", days=1)
    with pytest.raises(ConfigError, match="did you mean 'oi_btc'"):
        simulate("calm", days=1, overrides={"options": {"clusters": [
            {"moneyness": 0.9, "oi_bt": 5.0}]}})
    with pytest.raises(ConfigError, match="expected a number"):
        simulate("calm", days=1, overrides={"market": {"depth_btc": "deep"}})
    with pytest.raises(ConfigError, match="lacks required key 'day'"):
        simulate("calm", days=1, overrides={"shocks": [{"hours": 2.0}]})


def test_user_toml_extends_a_preset(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('base = "calm"\ndescription = "thin book"\n[market]\ndepth_btc = 90000.0\n'
                    "[[shocks]]\nday = 0.5\ndepth_hit = 0.5\n")
    m = simulate(str(path), days=1, seed=1, chain_freq="6h", n_options=60)
    assert m.scenario == "mine"
    assert m.params["market"]["depth_btc"] == 90000.0
    assert m.params["sim"]["start"] == "2025-01-06T00:00:00Z"  # from calm
    depth = m.flows.to_pandas()["depth_btc"].to_numpy()
    assert depth[0] == pytest.approx(90000.0) and depth[13] < 0.6 * 90000.0
    bad = tmp_path / "bad.toml"
    bad.write_text("[market]\ndepth_btc = \n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        simulate(str(bad), days=1)


def test_dealer_hedging_ablation_has_no_dealer_flow():
    m = simulate("calm", days=1, seed=3, chain_freq="1D", n_options=60,
                 overrides={"dealers.hedge": False})
    flows = m.flows.to_pandas()
    assert (flows["dealer_btc"] == 0).all() and (flows["dealer_book_btc"] == 0).all()


# ---------------------------------------------------------------- determinism and disk

def test_same_seed_same_tables_different_seed_differs():
    a = simulate("calm", days=1, seed=7, n_options=60)
    b = simulate("calm", days=1, seed=7, n_options=60)
    c = simulate("calm", days=1, seed=8, n_options=60)
    for name in a.tables():
        assert a.tables()[name].equals(b.tables()[name]), name
    assert not a.bars.equals(c.bars)
    assert not a.chain.equals(c.chain)


def test_a_longer_run_extends_a_shorter_one():
    # the shorter run already crosses the squeeze's start (day 2: stack, clusters, outflows)
    short = simulate("gamma_squeeze_down", days=3, seed=9, n_options=60, chain_freq="6h")
    long_ = simulate("gamma_squeeze_down", days=4, seed=9, n_options=60, chain_freq="6h")
    for name in ("bars", "dealer_gamma", "perp_oi"):
        table = getattr(short, name)
        assert getattr(long_, name).slice(0, table.num_rows).equals(table), name


def test_write_is_atomic_refuses_to_overwrite_and_round_trips(tmp_path, calm_3d):
    out = calm_3d.write(tmp_path / "m")
    names = {p.name for p in out.iterdir()}
    assert names == {f"{t}.parquet" for t in calm_3d.tables()} | {"market.json"}
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # no temporary folder left
    with pytest.raises(ConfigError, match="not empty"):
        calm_3d.write(out)
    calm_3d.write(out, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]
    back = load_market(out)
    assert back.scenario == "calm" and back.seed == 11
    assert back.params == calm_3d.params and back.meta["freq"] == "1h"
    for name, table in calm_3d.tables().items():
        assert getattr(back, name).equals(table), name
    empty = tmp_path / "empty"
    empty.mkdir()
    calm_3d.write(empty)  # an existing empty folder is fine


def test_parquet_bytes_are_reproducible(tmp_path):
    a = simulate("basis_unwind", days=1, seed=4, n_options=60).write(tmp_path / "a")
    b = simulate("basis_unwind", days=1, seed=4, n_options=60).write(tmp_path / "b")
    c = simulate("basis_unwind", days=1, seed=5, n_options=60).write(tmp_path / "c")
    for f in sorted(a.iterdir()):
        assert f.read_bytes() == (b / f.name).read_bytes(), f.name
    assert (a / "bars.parquet").read_bytes() != (c / "bars.parquet").read_bytes()
    assert (a / "chain.parquet").read_bytes() != (c / "chain.parquet").read_bytes()


def test_load_market_errors(tmp_path):
    with pytest.raises(DataError, match="no market.json"):
        load_market(tmp_path)
    m = simulate("calm", days=1, seed=1, n_options=60, chain_freq="1D").write(tmp_path / "m")
    Path(m / "chain.parquet").unlink()
    with pytest.raises(DataError, match="chain.parquet is missing"):
        load_market(m)

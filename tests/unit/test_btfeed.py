"""GammaFeed: point-in-time lines, bulk preload, run modes, snapshot access, look-ahead canary."""

from __future__ import annotations

import datetime as dt
import math

import backtrader as bt
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from feeds.btfeed import (
    LINES_BASIS,
    LINES_GAMMA,
    LINES_LIQ,
    LINES_SECOND,
    GammaCoreFeed,
    GammaFeed,
    bt_datenum,
    build_arrays,
)
from plumbing.errors import ConfigError, DataError

H = pd.Timedelta("1h")
US = pd.Timedelta(1, "us")
T0 = pd.Timestamp("2024-01-01", tz="UTC")


# --------------------------------------------------------------------------- fixtures


def make_bars(n: int, seed: int, *, freq: str = "1h", start: pd.Timestamp = T0,
              vol: float = 0.01) -> pd.DataFrame:
    """Seeded random-walk bars, ``open`` = previous close, canonical columns."""
    rng = np.random.default_rng(seed)
    ts = pd.date_range(start, periods=n, freq=freq, unit="us")
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, vol, n)))
    open_ = np.r_[100.0, close[:-1]]
    return pd.DataFrame({"ts": ts, "open": open_, "high": np.maximum(open_, close) * 1.002,
                         "low": np.minimum(open_, close) * 0.998, "close": close,
                         "volume": rng.uniform(1.0, 10.0, n)})


@pytest.fixture
def bars_small() -> pd.DataFrame:
    return make_bars(48, seed=11)


@pytest.fixture
def inputs_full(bars_small: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Every kind of input, stamped off the bar grid, with gaps and staleness."""
    rng = np.random.default_rng(12)
    ts = bars_small["ts"]
    snap_ts = T0 + pd.to_timedelta([90, 210, 330, 1000, 1600, 1601], unit="min")
    k = len(snap_ts)
    summary = pd.DataFrame({"ts": snap_ts, "spot": 100.0, "gex": rng.normal(0, 1e8, k),
                            "gamma_flip": [99.0, np.nan, 101.0, 98.0, 102.0, 103.0],
                            "call_wall": rng.uniform(105, 110, k),
                            "put_wall": rng.uniform(90, 95, k),
                            "regime": [1, -1, 1, -1, 1, -1],
                            "vanna": rng.normal(0, 1e6, k), "charm": rng.normal(0, 50, k),
                            "atm_iv": [0.5, 0.55, np.nan, 0.6, 0.62, 0.7]})
    strikes = pd.DataFrame({"ts": np.repeat(snap_ts, 3),
                            "strike": np.tile([90.0, 100.0, 110.0], k)[::-1],  # unsorted
                            "gex_call": rng.uniform(0, 1, 3 * k),
                            "gex_put": -rng.uniform(0, 1, 3 * k)})
    strikes["gex_net"] = strikes["gex_call"] + strikes["gex_put"]
    strikes["vanna"] = rng.normal(0, 1e5, 3 * k)
    extra = pd.DataFrame({"ts": T0 + pd.to_timedelta([30, 200, 480, 900, 2000], unit="min"),
                          "basis_ann": [0.05, np.nan, 0.07, 0.08, 0.09],
                          "basis_z": [0.1, 0.2, np.nan, 0.4, 0.5],
                          "funding_ann": [np.nan, 0.11, np.nan, np.nan, 0.12]})
    sel = np.sort(rng.choice(len(ts), 40, replace=False))
    liq_lines = pd.DataFrame({"ts": ts.iloc[sel].to_numpy(),
                              "liq_below": bars_small["close"].iloc[sel].to_numpy() * 0.97,
                              "liq_below_usd": rng.uniform(1e6, 5e6, 40),
                              "liq_above": bars_small["close"].iloc[sel].to_numpy() * 1.03,
                              "liq_above_usd": rng.uniform(1e6, 5e6, 40),
                              "liq_usd_within": 1.0})
    liq_lines["ts"] = liq_lines["ts"].dt.tz_convert("UTC")
    rows = []
    for i in sel[::2]:
        for p in (95.0, 97.5, 104.0):
            rows.append({"ts": ts.iloc[i], "price": p * (1 + i / 1000),
                         "long_usd": float(i), "short_usd": float(2 * i)})
    liq_map = pd.DataFrame(rows)
    bsel = np.sort(rng.choice(len(ts), 30, replace=False))
    barrier_lines = pd.DataFrame({"ts": ts.iloc[bsel].dt.tz_convert("UTC").to_numpy(),
                                  "barrier_gex": rng.normal(0, 1e6, 30),
                                  "dist_to_barrier": np.where(rng.random(30) < 0.3, np.nan,
                                                              rng.uniform(0, 0.2, 30))})
    return {"summary": summary, "strikes": strikes, "extra": extra, "liq_lines": liq_lines,
            "liq_map": liq_map, "barrier_lines": barrier_lines}


def full_feed(bars: pd.DataFrame, inputs: dict[str, pd.DataFrame], **kw) -> GammaFeed:
    stale = {"summary": "6h", "strikes": "6h", "basis_ann": "8h", "default": "4h"}
    return GammaFeed.from_frames(bars, max_staleness=stale, **inputs, **kw)


def utc_naive(ts: pd.Timestamp) -> dt.datetime:
    return ts.tz_convert("UTC").to_pydatetime().replace(tzinfo=None)


def nan_eq(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def clean(value: object) -> object:
    """Make NaN comparable (None) inside logged tuples."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, np.ndarray):
        return tuple(clean(float(v)) for v in value)
    if isinstance(value, tuple | list):
        return tuple(clean(v) for v in value)
    return value


class Recorder(bt.Strategy):
    """Logs every line, the snapshot accessors and the broker on every bar, and trades."""

    params = (("log", None), ("trade", True))

    def __init__(self) -> None:
        # minimum period 2 so that ago=-1 is valid in every mode (exactbars=1 too)
        self.sma = bt.indicators.SMA(self.data.close, period=2)

    def prenext(self) -> None:
        self._record()

    def next(self) -> None:
        self._record()
        if not self.p.trade:
            return
        regime = self.data.regime[0]
        if regime > 0 and not self.position:
            self.buy(size=1.0)
        elif regime < 0 and self.position:
            self.close()

    def _record(self) -> None:
        d = self.data
        row = {alias: getattr(d.lines, alias)[0] for alias in d.getlinealiases()}
        row["strike_gex"] = clean(d.strike_gex(0))
        try:
            row["strike_prev"] = clean(d.strike_gex(-1)) if len(d) > 1 else None
        except ConfigError:  # exactbars=1 keeps only the current bar of this line
            row["strike_prev"] = "not kept"
        prof = d.strike_profile(0)
        row["strike_ts"] = prof.ts
        if isinstance(d, GammaFeed):
            lv = d.liq_map(0)
            row["liq_map"] = (lv.ts, clean(lv.price), clean(lv.long_usd), clean(lv.short_usd))
        row["value"] = self.broker.getvalue()
        row["position"] = self.position.size
        self.p.log.append({k: clean(v) for k, v in row.items()})


def run_log(data: bt.feed.DataBase, *, runonce: bool = True, preload: bool = True,
            exactbars: int = 0, trade: bool = True) -> list[dict]:
    log: list[dict] = []
    cerebro = bt.Cerebro(stdstats=False, runonce=runonce, preload=preload,
                         exactbars=exactbars)
    cerebro.broker.setcash(10_000.0)
    cerebro.adddata(data)
    cerebro.addstrategy(Recorder, log=log, trade=trade)
    cerebro.run()
    return log


# --------------------------------------------------------------------------- time


def test_bt_datenum_is_bit_identical_to_backtrader():
    rng = np.random.default_rng(3)
    us = np.r_[rng.integers(-2_000_000_000_000_000, 4_000_000_000_000_000, 20_000),
               np.arange(0, 48) * 3_600_000_000, [0, -1, 86_400_000_000 - 1]]
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    expected = [bt.date2num(epoch + dt.timedelta(microseconds=int(x))) for x in us]
    np.testing.assert_array_equal(bt_datenum(us), np.array(expected))


def test_bar_datetime_is_close_time(bars_small):
    feed = GammaFeed.from_frames(bars_small)
    log = run_log(feed, trade=False)
    closes = bars_small["ts"] + H
    assert [row["datetime"] for row in log] == [bt.date2num(utc_naive(t)) for t in closes]
    assert feed.p.timeframe == bt.TimeFrame.Minutes and feed.p.compression == 60


def test_daily_bars_timeframe():
    feed = GammaFeed.from_frames(make_bars(5, seed=1, freq="1D"))
    assert (feed.p.timeframe, feed.p.compression) == (bt.TimeFrame.Days, 1)
    assert feed.arrays.bar_freq_us == 86_400_000_000


# --------------------------------------------------------------------------- PIT joins


def test_summary_lines_hand_worked(bars_small, inputs_full):
    frame = full_feed(bars_small, inputs_full).arrays.to_frame()
    summ = inputs_full["summary"]
    # bar closes 01:00 (nothing), 02:00 (snapshot 01:30), 03:00, ..., 07:00 (6h > staleness?)
    by_close = frame.set_index("close_ts")

    def at(hour: float) -> pd.Series:
        return by_close.loc[T0 + pd.Timedelta(hours=hour)]

    assert np.isnan(at(1)["gex"]) and np.isnan(at(1)["regime"])
    assert at(2)["gex"] == summ["gex"][0] and at(2)["regime"] == 1
    assert at(2)["flip_dist"] == pytest.approx(at(2)["close"] / 99.0 - 1, rel=1e-15)
    # snapshot 1 (03:30) has a NaN flip: it is in force, its NaN is not back-filled
    assert at(4)["regime"] == -1 and np.isnan(at(4)["gamma_flip"]) and np.isnan(at(4)["flip_dist"])
    # snapshot 2 at 05:30 is in force until 11:30 (6h), stale from the 12:00 close
    assert at(11)["regime"] == 1 and np.isnan(at(12)["regime"])
    # snapshot 3 at 16:40 (1000 min) -> from the 17:00 close
    assert np.isnan(at(16)["gex"]) and at(17)["gex"] == summ["gex"][3]
    # snapshots 4 and 5 at 26:40 and 26:41 -> bar closing 27:00 sees the later one
    assert at(27)["gex"] == summ["gex"][5] and at(27)["call_wall"] == summ["call_wall"][5]


def test_stamp_exactly_at_close_is_used_one_microsecond_later_is_not(bars_small):
    close_5 = T0 + 5 * H
    for stamp, first_bar in ((close_5, 5), (close_5 + US, 6)):
        summary = pd.DataFrame({"ts": [stamp], "gex": [1.0], "gamma_flip": [100.0],
                                "call_wall": [1.0], "put_wall": [1.0], "regime": [1.0]})
        log = run_log(GammaFeed.from_frames(bars_small, summary=summary), trade=False)
        seen = [i for i, row in enumerate(log) if row["regime"] == 1.0]
        # bar index i closes at T0 + (i + 1) h
        assert seen[0] == first_bar - 1


def test_extra_is_joined_per_column_with_its_own_staleness(bars_small, inputs_full):
    frame = full_feed(bars_small, inputs_full).arrays.to_frame().set_index("close_ts")

    def at(hour: float, col: str) -> float:
        return frame.loc[T0 + pd.Timedelta(hours=hour), col]

    # basis_ann: 00:30 (0.05), 08:00 (0.07), 15:00 (0.08), 33:20 (0.09); staleness 8h
    assert at(1, "basis_ann") == 0.05 and at(8, "basis_ann") == 0.07
    assert at(7, "basis_ann") == 0.05  # the NaN row at 03:20 is skipped, not a value
    assert np.isnan(at(24, "basis_ann"))  # 15:00 + 8h < 24:00
    # basis_z: default 4h; 03:20 (0.2) in force until 07:20
    assert at(7, "basis_z") == 0.2 and np.isnan(at(8, "basis_z"))
    # funding: 03:20 (0.11) for 4h
    assert np.isnan(at(3, "funding_ann")) and at(4, "funding_ann") == 0.11
    assert np.isnan(at(8, "funding_ann"))


def test_liq_lines_are_exactly_aligned_per_bar(bars_small, inputs_full):
    frame = full_feed(bars_small, inputs_full).arrays.to_frame().set_index("ts")
    ll = inputs_full["liq_lines"].set_index("ts")
    for col in LINES_LIQ:
        got = frame[col]
        np.testing.assert_array_equal(got.loc[ll.index].to_numpy(), ll[col].to_numpy())
        assert got.drop(ll.index).isna().all()  # no carry-over into bars without a row


def test_strike_and_liq_map_access_matches_inputs(bars_small, inputs_full):
    log = run_log(full_feed(bars_small, inputs_full), trade=False)
    strikes = inputs_full["strikes"]
    lmap = inputs_full["liq_map"]
    for i, row in enumerate(log):
        close = T0 + (i + 1) * H
        live = inputs_full["summary"]["ts"]
        live = live[(live <= close) & (close - live <= pd.Timedelta("6h"))]
        if live.empty:
            assert row["strike_gex"] == ((), ()) and row["strike_ts"] is None
        else:
            snap = strikes[strikes["ts"] == live.iloc[-1]].sort_values("strike")
            assert row["strike_ts"] == live.iloc[-1]
            assert row["strike_gex"] == (tuple(snap["strike"]), tuple(snap["gex_net"]))
        if i > 0:
            assert row["strike_prev"] == log[i - 1]["strike_gex"]
        rows = lmap[lmap["ts"] == T0 + i * H].sort_values("price")
        expected_ts = rows["ts"].iloc[0] if len(rows) else None
        assert row["liq_map"] == (expected_ts, tuple(rows["price"]), tuple(rows["long_usd"]),
                                  tuple(rows["short_usd"]))


class FakeLiqMap:
    """A lazy map source like indicators.liquidation.LiqMap (lines['ts'] + arrays(i))."""

    def __init__(self, ts: pd.Series) -> None:
        self.lines = pd.DataFrame({"ts": ts})
        self.calls: list[int] = []

    def arrays(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        self.calls.append(i)
        return np.array([90.0 + i, 110.0 + i]), np.array([i, 0.0]), np.array([0.0, 2 * i])


def test_lazy_liq_map_source(bars_small):
    source = FakeLiqMap(bars_small["ts"].iloc[5:])
    feed = GammaFeed.from_frames(bars_small, liq_map=source)
    log = run_log(feed, trade=False)
    assert log[4]["liq_map"] == (None, (), (), ())
    assert log[7]["liq_map"] == (bars_small["ts"][7], (92.0, 112.0), (2.0, 0.0), (0.0, 4.0))
    assert len(source.calls) == len(log) - 5  # built on demand, once per bar asked


# --------------------------------------------------------------------------- run modes


MODES = [
    pytest.param(True, True, 0, id="runonce-preload"),
    pytest.param(False, True, 0, id="next-preload"),
    pytest.param(False, False, 0, id="next-nopreload"),
    pytest.param(True, False, 0, id="runonce-nopreload"),
    pytest.param(False, True, -1, id="exactbars-1"),
    pytest.param(False, True, -2, id="exactbars-2"),
    pytest.param(False, False, 1, id="exactbars1"),
]


@pytest.mark.parametrize(("runonce", "preload", "exactbars"), MODES)
def test_identical_logs_in_every_run_mode(bars_small, inputs_full, runonce, preload, exactbars):
    reference = run_log(full_feed(bars_small, inputs_full))
    got = run_log(full_feed(bars_small, inputs_full), runonce=runonce, preload=preload,
                  exactbars=exactbars)
    if exactbars == 1:
        assert all(row.pop("strike_prev") == "not kept" for row in got[1:])
        got[0].pop("strike_prev")
        for row in reference:
            row.pop("strike_prev")
    assert got == reference
    assert any(row["position"] for row in reference)  # the strategy did trade


def test_logged_lines_equal_the_arrays(bars_small, inputs_full):
    feed = full_feed(bars_small, inputs_full)
    log = run_log(feed, trade=False)
    assert len(log) == len(bars_small)
    for alias in feed.getlinealiases():
        expected = [clean(float(v)) for v in feed.arrays.lines[alias]]
        assert [row[alias] for row in log] == expected, alias


def test_same_run_as_backtrader_pandasdata(bars_small, inputs_full):
    feed = full_feed(bars_small, inputs_full)
    frame = feed.arrays.to_frame()
    frame.index = pd.DatetimeIndex(frame.pop("close_ts")).tz_localize(None)
    columns = (*LINES_GAMMA, *LINES_LIQ, *LINES_BASIS, *LINES_SECOND, "snap_idx",
               "liqmap_idx")

    class Pandas(bt.feeds.PandasData):
        lines = columns
        params = tuple((c, -1) for c in columns)

    class Plain(Recorder):
        def _record(self) -> None:
            d = self.data
            row = {a: clean(getattr(d.lines, a)[0]) for a in d.getlinealiases()}
            self.p.log.append(row | {"value": self.broker.getvalue(),
                                     "position": self.position.size})

    logs = []
    for data in (feed, Pandas(dataname=frame.drop(columns=["ts"]))):
        log: list = []
        cerebro = bt.Cerebro(stdstats=False)
        cerebro.broker.setcash(10_000.0)
        cerebro.adddata(data)
        cerebro.addstrategy(Plain, log=log)
        cerebro.run()
        logs.append(log)
    assert logs[0] == logs[1]


def test_fromdate_todate_slice_inclusively(bars_small, inputs_full):
    start, end = T0 + 10 * H, T0 + 20 * H  # exactly bar closes: both included
    logs = [run_log(full_feed(bars_small, inputs_full, fromdate=start.to_pydatetime(),
                              todate=end.to_pydatetime()), runonce=ro, preload=pl)
            for ro, pl in ((True, True), (False, False))]
    assert logs[0] == logs[1]
    assert len(logs[0]) == 11
    assert logs[0][0]["datetime"] == bt.date2num(utc_naive(start))
    assert logs[0][-1]["datetime"] == bt.date2num(utc_naive(end))
    # the sliced lines are the full run's lines for those bars (PIT state is not reset)
    full = {row["datetime"]: row for row in run_log(full_feed(bars_small, inputs_full),
                                                   trade=False)}
    for row in logs[0]:
        for alias in (*LINES_GAMMA, *LINES_LIQ, *LINES_BASIS, *LINES_SECOND):
            assert row[alias] == full[row["datetime"]][alias]


def test_feed_can_be_run_twice(bars_small, inputs_full):
    feed = full_feed(bars_small, inputs_full)
    assert run_log(feed) == run_log(feed)


# --------------------------------------------------------------------------- resample/replay


def _four_hourly(bars: pd.DataFrame) -> pd.DataFrame:
    g = bars.set_index("ts").resample("4h")
    out = pd.DataFrame({"open": g["open"].first(), "high": g["high"].max(),
                        "low": g["low"].min(), "close": g["close"].last(),
                        "volume": g["volume"].sum()})
    return out.reset_index()


@pytest.mark.parametrize(("runonce", "preload"), [(True, True), (False, False)])
def test_resampled_bars_carry_lines_as_of_their_close(bars_small, inputs_full, runonce,
                                                      preload):
    inputs = {k: v for k, v in inputs_full.items() if k in ("summary", "strikes", "extra")}
    hourly = full_feed(bars_small, inputs)
    direct = run_log(full_feed(_four_hourly(bars_small), inputs), trade=False)
    log: list[dict] = []
    cerebro = bt.Cerebro(stdstats=False, runonce=runonce, preload=preload)
    cerebro.resampledata(hourly, timeframe=bt.TimeFrame.Minutes, compression=240)
    cerebro.addstrategy(Recorder, log=log, trade=False)
    cerebro.run()
    assert len(log) == len(direct) == 12
    for got, want in zip(log, direct, strict=True):
        for alias in ("datetime", "open", "close", *LINES_GAMMA, *LINES_BASIS,
                      "vanna_exp", "charm_exp", "atm_iv"):
            assert nan_eq(got[alias], want[alias]) or got[alias] == pytest.approx(want[alias]), alias
        assert got["strike_gex"] == want["strike_gex"]


def test_resampling_a_feed_already_added_keeps_its_lines(bars_small, inputs_full):
    feed = full_feed(bars_small, inputs_full)
    log: list[dict] = []
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(feed)
    four = cerebro.resampledata(feed, timeframe=bt.TimeFrame.Minutes, compression=240)
    assert isinstance(four, GammaFeed)

    class Both(bt.Strategy):
        def next(self) -> None:
            log.append((self.datas[0].regime[0], self.datas[1].regime[0],
                        self.datas[1].datetime[0]))

    cerebro.addstrategy(Both)
    cerebro.run()
    assert any(not math.isnan(r[1]) for r in log)


def test_replay_never_shows_a_later_bar(bars_small, inputs_full):
    feed = full_feed(bars_small, inputs_full)
    arrays = feed.arrays
    seen: list[tuple[float, float]] = []

    class Watch(bt.Strategy):
        def next(self) -> None:
            seen.append((self.data.datetime[0], self.data.gex[0]))

    cerebro = bt.Cerebro(stdstats=False)
    cerebro.replaydata(feed, timeframe=bt.TimeFrame.Minutes, compression=240)
    cerebro.addstrategy(Watch)
    cerebro.run()
    assert len(seen) == len(bars_small)  # one call per underlying hourly bar
    for when, gex in seen:
        k = int(np.searchsorted(arrays.lines["datetime"], when, side="right")) - 1
        assert nan_eq(gex, float(arrays.lines["gex"][k]))


# --------------------------------------------------------------------------- canary


def _canary(n: int, leak: bool) -> tuple[float, float, float]:
    """Trade the sign in ``regime``: long +1 / short -1, one unit, no costs.

    A snapshot stamped 1 us after bar ``i`` closes carries the sign of bar ``i+1``'s
    return (an oracle if seen early). ``leak`` stamps it one bar earlier, as a feed
    joining on bar open (or with an off-by-one) would deliver it.
    Returns (pnl, hit rate of the per-bar PnL, 4-sigma PnL bound under no edge).
    """
    bars = make_bars(n, seed=2024)
    close_ts = bars["ts"] + H
    ret = np.log(bars["close"] / bars["open"]).to_numpy()
    stamps = close_ts.iloc[:-1] + US - (H if leak else pd.Timedelta(0))
    summary = pd.DataFrame({"ts": stamps.to_numpy(), "gex": 0.0, "gamma_flip": np.nan,
                            "call_wall": np.nan, "put_wall": np.nan,
                            "regime": np.sign(ret[1:])})
    summary["ts"] = summary["ts"].dt.tz_convert("UTC")
    values: list[float] = []

    class SignTrader(bt.Strategy):
        def next(self) -> None:
            values.append(self.broker.getvalue())
            regime = self.data.regime[0]
            target = 1.0 if regime > 0 else -1.0 if regime < 0 else 0.0
            self.order_target_size(target=target)

    cerebro = bt.Cerebro(stdstats=False)
    cerebro.broker.setcash(1e6)
    cerebro.adddata(GammaFeed.from_frames(bars, summary=summary))
    cerebro.addstrategy(SignTrader)
    cerebro.run()
    pnl = np.diff(values)
    traded = pnl[pnl != 0]
    bound = 4.0 * float(np.sqrt(np.sum(np.diff(bars["close"].to_numpy()) ** 2)))
    return float(values[-1] - values[0]), float(np.mean(traded > 0)), bound


def test_lookahead_canary_point_in_time_feed_cannot_profit():
    pnl, hit, bound = _canary(2000, leak=False)
    assert abs(pnl) < bound
    assert abs(hit - 0.5) < 4 * 0.5 / math.sqrt(2000)


def test_lookahead_canary_can_fail_with_a_leaky_feed():
    pnl, hit, bound = _canary(2000, leak=True)
    assert hit > 0.99
    assert pnl > 5 * bound  # about 20 standard deviations of a no-edge PnL


# --------------------------------------------------------------------------- real summarize


def test_with_real_gamma_summarize(bars_small):
    from indicators import gamma
    snaps = [T0 + pd.Timedelta("2h30min"), T0 + pd.Timedelta("20h")]
    strikes = np.arange(80.0, 121.0, 5.0)
    rows = []
    # puts below, calls above: long gamma at spot 104, short gamma at 96, flip near 98.5
    for ts, spot in zip(snaps, (104.0, 96.0), strict=True):
        for k in strikes:
            for right, oi in (("C", 10 * max(0.0, k - 90) + 1), ("P", 10 * max(0.0, 110 - k) + 1)):
                rows.append({"ts": ts, "expiry": T0 + pd.Timedelta("10D8h"), "strike": k,
                             "right": right, "open_interest": oi, "mark_iv": 0.6,
                             "underlying_price": spot, "multiplier": 1.0, "index_price": spot})
    chain = pd.DataFrame(rows)
    summary = gamma.summarize(chain)
    assert summary["regime"].tolist() == [1, -1] and summary["gamma_flip"].notna().all()
    per_strike = gamma.strike_gex(chain)
    feed = GammaFeed.from_frames(bars_small, summary=summary, strikes=per_strike,
                                 max_staleness="12h")
    log = run_log(feed, trade=False)
    for i, row in enumerate(log):
        close = T0 + (i + 1) * H
        live = [j for j, ts in enumerate(snaps) if ts <= close <= ts + pd.Timedelta("12h")]
        if not live:
            assert row["gex"] is None and row["strike_gex"] == ((), ())
            continue
        j = live[-1]
        for col in ("gex", "gamma_flip", "call_wall", "put_wall", "regime"):
            assert row[col] == clean(float(summary[col].iloc[j])), col
        part = per_strike[per_strike["ts"] == snaps[j]]
        assert row["strike_gex"] == (tuple(part["strike"]), tuple(part["gex_net"]))
        assert row["flip_dist"] == clean(row["close"] / summary["gamma_flip"].iloc[j] - 1)
    assert {row["regime"] for row in log} == {None, 1.0, -1.0}


def test_with_real_liquidation_map():
    from indicators import liquidation
    bars = make_bars(120, seed=5)
    lm = liquidation.estimate_liq_map(bars)
    log = run_log(GammaFeed.from_frames(bars, liq_lines=lm.lines, liq_map=lm), trade=False)
    for i in (0, 60, 119):
        price, long_usd, short_usd = lm.arrays(i)
        assert log[i]["liq_map"] == (bars["ts"][i], clean(price), clean(long_usd),
                                     clean(short_usd))
        for col in LINES_LIQ:
            assert log[i][col] == clean(float(lm.lines[col].iloc[i]))


# --------------------------------------------------------------------------- input checks


def test_arrow_and_pandas_inputs_agree(bars_small, inputs_full):
    a = build_arrays(pa.Table.from_pandas(bars_small), summary=inputs_full["summary"])
    b = build_arrays(bars_small, summary=inputs_full["summary"])
    for alias, values in a.lines.items():
        np.testing.assert_array_equal(values, b.lines[alias])


def test_inputs_are_not_mutated(bars_small, inputs_full):
    copies = {k: v.copy(deep=True) for k, v in inputs_full.items()}
    bars_copy = bars_small.copy(deep=True)
    full_feed(bars_small, inputs_full)
    pd.testing.assert_frame_equal(bars_small, bars_copy)
    for k, v in inputs_full.items():
        pd.testing.assert_frame_equal(v, copies[k])


def test_arrays_are_read_only(bars_small, inputs_full):
    feed = full_feed(bars_small, inputs_full)
    with pytest.raises(ValueError, match="read-only"):
        feed.arrays.lines["gex"][0] = 1.0


@pytest.mark.parametrize(("mutate", "match"), [
    (lambda b: b.assign(ts=b["ts"].dt.tz_localize(None)), "timezone-naive"),
    (lambda b: b.iloc[::-1], "row 1.*unsorted"),
    (lambda b: pd.concat([b.iloc[:3], b.iloc[2:]]), "row 3.*duplicated"),
    (lambda b: b.drop(columns=["volume"]), "missing column"),
    (lambda b: b.assign(close=np.where(b.index == 4, np.nan, b["close"])), "row 4.*close"),
    (lambda b: b.iloc[:0], "no bars"),
])
def test_bad_bars_raise_data_error(bars_small, mutate, match):
    with pytest.raises(DataError, match=match):
        GammaFeed.from_frames(mutate(bars_small))


def test_bad_configuration(bars_small, inputs_full):
    with pytest.raises(ConfigError, match="did you mean 'summary'"):
        GammaFeed.from_frames(bars_small, max_staleness={"sumary": "1h"})
    with pytest.raises(ConfigError, match="max_staleness"):
        GammaFeed.from_frames(bars_small, max_staleness="-1h")
    with pytest.raises(ConfigError, match="did you mean 'fromdate'"):
        GammaFeed.from_frames(bars_small, fromdat=None)
    with pytest.raises(ConfigError, match="GammaFeed.from_frames"):
        GammaCoreFeed.from_frames(bars_small, extra=inputs_full["extra"])
    with pytest.raises(ConfigError, match="from_frames"):
        GammaFeed(dataname=bars_small)
    with pytest.raises(ConfigError, match="tzinput"):
        GammaFeed.from_frames(bars_small, tzinput="Europe/Berlin")
    with pytest.raises(DataError, match="bar_freq"):
        GammaFeed.from_frames(bars_small.iloc[:1])
    assert len(GammaFeed.from_frames(bars_small.iloc[:1], bar_freq="1h").arrays) == 1


def test_bad_inputs(bars_small, inputs_full):
    with pytest.raises(DataError, match="summary.*missing column.*regime"):
        GammaFeed.from_frames(bars_small, summary=inputs_full["summary"].drop(columns="regime"))
    with pytest.raises(DataError, match="extra.*unexpected column.*basis_30d"):
        GammaFeed.from_frames(bars_small, extra=inputs_full["extra"].assign(basis_30d=1.0))
    shifted = inputs_full["liq_lines"].assign(ts=inputs_full["liq_lines"]["ts"] + US)
    with pytest.raises(DataError, match="liq_lines.*not the open time"):
        GammaFeed.from_frames(bars_small, liq_lines=shifted)
    lmap = inputs_full["liq_map"]
    with pytest.raises(DataError, match="liq_map, row 3.*not the open time"):
        GammaFeed.from_frames(bars_small, liq_map=lmap.assign(
            ts=lmap["ts"].where(lmap.index < 3, lmap["ts"] + pd.Timedelta("30min"))))
    dup = pd.concat([inputs_full["liq_lines"].iloc[:2], inputs_full["liq_lines"].iloc[1:]])
    with pytest.raises(DataError, match="duplicated"):
        GammaFeed.from_frames(bars_small, liq_lines=dup)


def test_core_feed_has_only_gamma_lines(bars_small, inputs_full):
    core = GammaCoreFeed.from_frames(bars_small, summary=inputs_full["summary"],
                                     strikes=inputs_full["strikes"])
    assert core.getlinealiases()[7:] == (*LINES_GAMMA, "snap_idx")
    full = GammaFeed.from_frames(bars_small, summary=inputs_full["summary"],
                                 strikes=inputs_full["strikes"])
    a, b = run_log(core), run_log(full)
    for x, y in zip(a, b, strict=True):
        assert {k: v for k, v in y.items() if k in x and k != "liq_map"} == x


# --------------------------------------------------------------------------- preload internals


def _started(feed: GammaFeed) -> GammaFeed:
    bt.Cerebro().adddata(feed)
    feed.reset()
    feed._start()
    return feed


@pytest.mark.parametrize("lookahead", [0, 2])
def test_bulk_preload_leaves_buffers_like_backtrader_preload(bars_small, inputs_full,
                                                            lookahead):
    bulk = _started(full_feed(bars_small, inputs_full))
    slow = _started(full_feed(bars_small, inputs_full))
    for feed in (bulk, slow):
        feed.extend(size=lookahead)  # what Cerebro does before preloading
    bulk.preload()
    bt.feed.DataBase.preload(slow)  # Backtrader's own loop over _load
    assert bulk._bulk and not slow._bulk
    for a, b in zip(bulk.lines, slow.lines, strict=True):
        assert (a.idx, a.lencount, a.extension, a.buflen()) == \
            (b.idx, b.lencount, b.extension, b.buflen())
        np.testing.assert_array_equal(np.asarray(a.array), np.asarray(b.array))
    assert bulk._pos == slow._pos == len(bars_small) - 1
    assert not bulk.load() and not slow.load()  # exhausted either way


class CountingFeed(GammaFeed):
    """Counts per-bar loads (a plain subclass, as users may write)."""

    loads = 0

    def _load(self) -> bool:
        type(self).loads += 1
        return super()._load()


@pytest.mark.parametrize(("runonce", "preload", "expected"), [
    (True, True, 0), (False, True, 1), (False, False, 49)])
def test_preload_does_not_load_bar_by_bar(bars_small, runonce, preload, expected):
    CountingFeed.loads = 0
    run_log(CountingFeed.from_frames(bars_small), runonce=runonce, preload=preload)
    assert CountingFeed.loads == expected


@pytest.mark.parametrize(("runonce", "preload", "oldsync"), [
    (True, True, False), (False, True, False), (False, False, False), (True, True, True),
    (False, True, True)])
def test_two_feeds_of_different_length(bars_small, inputs_full, runonce, preload, oldsync):
    def run(runonce: bool, preload: bool, oldsync: bool) -> list[tuple]:
        log: list[tuple] = []

        class Two(bt.Strategy):
            def next(self) -> None:
                d0, d1 = self.datas
                log.append((d0.datetime[0], clean(d0.gex[0]), len(d1),
                            clean(d1.regime[0]), clean(d1.basis_ann[0]), d1.strike_gex()[0].size))

        cerebro = bt.Cerebro(stdstats=False, runonce=runonce, preload=preload, oldsync=oldsync)
        cerebro.adddata(full_feed(bars_small, inputs_full))
        late = T0 + pd.Timedelta("10h30min")
        cerebro.adddata(full_feed(bars_small, inputs_full, fromdate=late.to_pydatetime()))
        cerebro.addstrategy(Two)
        cerebro.run()
        return log

    reference = run(False, False, False)
    assert run(runonce, preload, oldsync) == reference
    assert reference[0][2] == 0 or reference[-1][2] == len(bars_small) - 10


def test_pickle_round_trip(bars_small, inputs_full):
    import pickle

    feed = full_feed(bars_small, inputs_full)
    assert run_log(pickle.loads(pickle.dumps(feed))) == run_log(feed)


def test_empty_inputs_give_nan_lines_and_empty_snapshots(bars_small, inputs_full):
    empty = {k: v.iloc[:0] for k, v in inputs_full.items()}
    log = run_log(GammaFeed.from_frames(bars_small, **empty), trade=False)
    for row in log:
        assert all(row[a] is None for a in (*LINES_GAMMA, *LINES_LIQ, *LINES_BASIS,
                                            *LINES_SECOND))
        assert row["strike_gex"] == ((), ()) and row["liq_map"] == (None, (), (), ())


def test_second_order_lines_are_point_in_time(bars_small, inputs_full):
    arrays = full_feed(bars_small, inputs_full).arrays
    s = inputs_full["summary"]
    close = bars_small["ts"] + H
    for i, c in enumerate(close):
        known = s[(s["ts"] <= c) & (c - s["ts"] <= pd.Timedelta("6h"))]
        for column, line in (("vanna", "vanna_exp"), ("charm", "charm_exp"),
                             ("atm_iv", "atm_iv")):
            want = known[column].iloc[-1] if len(known) else np.nan
            assert nan_eq(float(arrays.lines[line][i]), float(want)), (line, i)
    bl = inputs_full["barrier_lines"].set_index("ts")
    for i, t in enumerate(bars_small["ts"]):
        for line in ("barrier_gex", "dist_to_barrier"):
            want = bl[line].get(t, np.nan)
            assert nan_eq(float(arrays.lines[line][i]), float(want)), (line, i)


def test_strike_vanna_accessor(bars_small, inputs_full):
    got = []

    class Probe(bt.Strategy):
        def next(self) -> None:
            got.append((self.data.strike_vanna(0), self.data.strike_profile(0)))

    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(full_feed(bars_small, inputs_full))
    cerebro.addstrategy(Probe)
    cerebro.run()
    st = inputs_full["strikes"]
    seen = 0
    for (strike, vanna), prof in got:
        if prof.ts is None:
            assert strike.size == vanna.size == 0
            continue
        seen += 1
        snap = st[st["ts"] == prof.ts].sort_values("strike")
        np.testing.assert_array_equal(strike, snap["strike"].to_numpy())
        np.testing.assert_array_equal(vanna, snap["vanna"].to_numpy())
    assert seen > 10

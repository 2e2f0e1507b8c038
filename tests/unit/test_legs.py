"""Leg lines on the spot clock: point in time, fresh quotes, settlement, funding."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from feeds.btfeed import build_arrays
from feeds.legs import (
    Leg,
    bar_leg_lines,
    front_leg_lines,
    funding_per_bar,
    observation_leg_lines,
)
from tests.data.hand_made import flat_bars

HOUR = 3_600_000_000


@pytest.fixture
def clock():
    return build_arrays(flat_bars(40_000 + 10.0 * np.arange(10)))


def us(text: str) -> int:
    return int(pd.Timestamp(text, tz="UTC").value // 1000)


def test_marks_to_the_last_quote_and_is_fresh_only_with_a_new_one(clock):
    # bars open 00:00 .. 09:00; quotes at 02:30 and 06:00
    obs = np.array([us("2024-01-01 02:30"), us("2024-01-01 06:00")])
    lines = observation_leg_lines(clock, obs, np.array([100.0, 200.0]))
    close = lines["close"]
    assert np.isnan(close[:2]).all()  # bar 1 closes at 02:00: nothing quoted yet
    assert close[2:5].tolist() == [100.0] * 3  # 02:30 <= close of bar 2 (03:00)
    assert close[5:].tolist() == [200.0] * 5  # bar 5 closes at 06:00: that quote counts
    assert lines["fresh"].tolist() == [0, 0, 1, 0, 0, 0, 1, 0, 0, 0]
    assert lines["open"][2] == 100.0 and lines["open"][6] == 200.0  # fill prices
    assert np.isnan(lines["settle"]).all() and (lines["funding_rate"] == 0).all()


def test_nothing_stamped_after_a_bar_changes_that_bar(clock):
    obs = clock.open_us[::2] + HOUR // 2
    price = np.arange(len(obs), dtype=float) + 100.0
    base = observation_leg_lines(clock, obs, price)
    for k in range(len(clock)):
        later = obs > clock.close_us[k]
        moved = observation_leg_lines(clock, obs, np.where(later, price * 7, price))
        for name in ("open", "high", "low", "close", "fresh"):
            np.testing.assert_array_equal(base[name][:k + 1], moved[name][:k + 1])


def test_settles_at_the_spot_in_force_at_expiry_and_then_stops(clock):
    obs = clock.open_us.copy()
    expiry = us("2024-01-01 05:00")
    spot = clock.lines["close"]
    lines = observation_leg_lines(clock, obs, np.full(len(obs), 41_000.0),
                                  expiry_us=expiry, spot_close=spot)
    k = 4  # bar 4 closes at 05:00
    assert np.isnan(np.delete(lines["settle"], k)).all()
    assert lines["settle"][k] == spot[k]
    assert (lines["close"][k:] == spot[k]).all()
    assert lines["fresh"][k + 1:].sum() == 0 and lines["fresh"][k] == 1
    assert lines["dte"][0] == pytest.approx(4 / 24) and lines["dte"][k] == 0
    assert np.isnan(lines["dte"][k + 1:]).all()


def test_perp_bars_missing_on_the_clock_carry_the_close_and_are_not_fresh(clock):
    bars = flat_bars(41_000 + np.arange(10.0)).drop(index=[0, 4]).reset_index(drop=True)
    lines = bar_leg_lines(clock, bars)
    assert np.isnan(lines["close"][0]) and lines["fresh"][0] == 0
    assert lines["close"][4] == lines["close"][3] == lines["open"][4]
    assert lines["fresh"].tolist() == [0, 1, 1, 1, 0, 1, 1, 1, 1, 1]


def test_funding_lands_in_the_bar_whose_close_reaches_its_stamp(clock):
    funding = pd.DataFrame({
        "ts": pd.to_datetime(["2024-01-01 00:00", "2024-01-01 03:00", "2024-01-01 03:30",
                              "2024-01-02 00:00"], utc=True),
        "rate_8h": [1e-4, 2e-4, 3e-4, 4e-4], "interval_h": [8.0, 8.0, 24.0, 8.0]})
    rate = funding_per_bar(clock, funding)
    # 00:00 is the first bar's open: settled before the run; 03:00 closes bar 2;
    # 03:30 is a daily mean (three 8-hour payments) in bar 3; the last is after the run
    expected = np.zeros(10)
    expected[2] = 2e-4
    expected[3] = 3 * 3e-4
    np.testing.assert_allclose(rate, expected)


def test_front_is_the_nearest_expiry_with_enough_days_left(clock):
    spot = clock.lines["close"]
    near = observation_leg_lines(clock, clock.open_us, np.full(10, 1.0),
                                 expiry_us=us("2024-01-06 08:00"), spot_close=spot)
    far = observation_leg_lines(clock, clock.open_us, np.full(10, 2.0),
                                expiry_us=us("2024-03-01 08:00"), spot_close=spot)
    legs = {Leg("a", "future"): near, Leg("b", "future"): far}
    assert (front_leg_lines(clock, legs, min_dte_days=1)["close"] == 1.0).all()
    front = front_leg_lines(clock, legs, min_dte_days=7)
    assert (front["close"] == 2.0).all() and (front["fresh"] == 0).all()

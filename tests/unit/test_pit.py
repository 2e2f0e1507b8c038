"""Point-in-time joins (feeds.pit) against hand-worked cases and a slow reference."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from feeds.pit import (
    asof_indices,
    asof_take,
    available_at_us,
    exact_indices,
    group_offsets,
)
from plumbing.errors import ConfigError, InputError
from plumbing.timeconv import modal_spacing_us as modal_spacing
from plumbing.timeconv import to_epoch_us

HOUR = 3_600_000_000


def asof_reference(closes, stamps, max_staleness):
    """Slow, readable as-of join: the last row (input order) with the latest stamp <= close."""
    out = []
    for close in closes:
        best = -1
        for k, stamp in enumerate(stamps):
            if stamp <= close and (best < 0 or stamp >= stamps[best]):
                best = k
        if best >= 0 and close - stamps[best] > max_staleness:
            best = -1
        out.append(best)
    return np.array(out, dtype=np.intp)


@pytest.fixture
def rng_pit() -> np.random.Generator:
    return np.random.default_rng(20240611)


def test_stamp_at_close_is_usable_one_microsecond_later_is_not():
    close = np.array([10 * HOUR])
    assert asof_indices(close, [10 * HOUR], HOUR).tolist() == [0]
    assert asof_indices(close, [10 * HOUR + 1], HOUR).tolist() == [-1]


def test_hand_worked_case_with_staleness_boundary():
    closes = np.array([1, 2, 3, 4, 5, 6]) * HOUR
    stamps = np.array([1 * HOUR + 30 * 60_000_000, 2 * HOUR])  # 01:30, 02:00
    # 01:00 nothing yet; 02:00 -> stamp 1 (02:00); age 2h at 04:00 is allowed, 2h+ not
    got = asof_indices(closes, stamps, 2 * HOUR)
    assert got.tolist() == [-1, 1, 1, 1, -1, -1]
    assert asof_indices(closes, stamps, 2 * HOUR - 1).tolist() == [-1, 1, 1, -1, -1, -1]
    assert asof_indices(closes, stamps, 0).tolist() == [-1, 1, -1, -1, -1, -1]


def test_duplicate_stamps_take_the_last_row():
    stamps = np.array([HOUR, 2 * HOUR, 2 * HOUR, 2 * HOUR, 3 * HOUR])
    assert asof_indices([2 * HOUR, 2 * HOUR + 5], stamps, HOUR).tolist() == [3, 3]


def test_unsorted_stamps_index_into_the_input_order():
    stamps = np.array([3 * HOUR, HOUR, 2 * HOUR, HOUR])
    got = asof_indices(np.array([1, 2, 3, 4]) * HOUR, stamps, 10 * HOUR)
    assert got.tolist() == [3, 2, 0, 0]


def test_no_stamps_and_negative_staleness():
    assert asof_indices([1, 2], np.array([], dtype=np.int64), 5).tolist() == [-1, -1]
    with pytest.raises(ConfigError, match="max_staleness"):
        asof_indices([1], [1], -1)


def test_fast_path_matches_slow_reference(rng_pit):
    for _ in range(20):
        stamps = rng_pit.integers(0, 50, rng_pit.integers(0, 30))
        closes = rng_pit.integers(-5, 60, 40)
        stale = int(rng_pit.integers(0, 20))
        np.testing.assert_array_equal(asof_indices(closes, stamps, stale),
                                      asof_reference(closes, stamps, stale))


def test_datetime64_units_are_converted_explicitly():
    ts = pd.Timestamp("2024-03-01 12:34:56.789012", tz="UTC")
    us = (ts - pd.Timestamp("1970-01-01", tz="UTC")) // pd.Timedelta(1, "us")
    as_ns = np.array([ts.tz_localize(None).as_unit("ns").to_datetime64()])
    as_us = as_ns.astype("datetime64[us]")
    as_s = as_ns.astype("datetime64[s]")
    assert to_epoch_us(as_ns).tolist() == [us]
    assert to_epoch_us(as_us).tolist() == [us]
    assert to_epoch_us(as_s).tolist() == [us - 789012]
    # datetime64 closes and int stamps mix freely
    assert asof_indices(as_us, np.array([us]), 0).tolist() == [0]


def test_bad_time_input():
    with pytest.raises(InputError, match="NaT"):
        to_epoch_us(np.array(["2024-01-01", "NaT"], dtype="datetime64[us]"))
    with pytest.raises(InputError, match="dtype float64"):
        to_epoch_us(np.array([1.5]))


def test_asof_take_fills_nan_for_missing():
    vals = np.array([10.0, np.nan, 30.0])
    out = asof_take(vals, np.array([2, -1, 0, 1]))
    np.testing.assert_array_equal(out, [30.0, np.nan, 10.0, np.nan])
    two_d = asof_take(np.arange(6).reshape(3, 2), np.array([-1, 1]))
    np.testing.assert_array_equal(two_d, [[np.nan, np.nan], [2.0, 3.0]])
    assert asof_take(np.array([]), np.array([-1, -1])).shape == (2,)


def test_exact_indices():
    stamps = np.array([10, 20, 30])
    assert exact_indices([5, 10, 25, 30, 40], stamps).tolist() == [-1, 0, -1, 2, -1]
    assert exact_indices([1], np.array([], dtype=np.int64)).tolist() == [-1]


def test_group_offsets():
    stamps, offsets = group_offsets(np.array([5, 5, 7, 9, 9, 9]))
    assert stamps.tolist() == [5, 7, 9]
    assert offsets.tolist() == [0, 2, 3, 6]
    empty_stamps, empty_offsets = group_offsets(np.array([], dtype=np.int64))
    assert empty_stamps.size == 0 and empty_offsets.tolist() == [0]
    with pytest.raises(InputError, match="row 2"):
        group_offsets(np.array([1, 3, 2]))


def test_modal_spacing_ignores_gaps():
    ts = np.array([0, 1, 2, 3, 5, 6, 7, 20]) * HOUR
    assert modal_spacing(ts) == HOUR
    with pytest.raises(InputError, match="bar_freq"):
        modal_spacing(np.array([HOUR]))


def test_available_at_is_stamp_plus_delay():
    assert available_at_us([0, 10], 5).tolist() == [5, 15]
    stamps = np.array(["2024-01-01T00:00"], dtype="datetime64[s]")
    assert available_at_us(stamps, HOUR).tolist() == [stamps.astype("datetime64[us]")
                                                        .view(np.int64)[0] + HOUR]
    with pytest.raises(ConfigError, match="negative"):
        available_at_us([0], -1)


@pytest.mark.parametrize("delay", [0, 1, HOUR // 2, HOUR, 5 * HOUR])
def test_a_delay_shifts_the_join_by_exactly_the_delay(delay):
    """Joining on stamp + delay at close c is joining on the stamp at c - delay: a value
    is in force exactly ``delay`` later, and goes stale ``delay`` later."""
    rng = np.random.default_rng(4)
    stamps = np.sort(rng.integers(0, 48 * HOUR, 30))
    closes = np.arange(0, 60 * HOUR, HOUR // 4)
    lagged = asof_indices(closes, available_at_us(stamps, delay), 3 * HOUR)
    np.testing.assert_array_equal(lagged, asof_indices(closes - delay, stamps, 3 * HOUR))
    first = int(np.flatnonzero(lagged >= 0)[0])
    assert closes[first] >= stamps[0] + delay

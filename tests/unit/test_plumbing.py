"""The shared helpers: time conversion, durations, bar spacing, atomic writes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from plumbing.atomic import write_atomic, write_dir_atomic, write_text_atomic
from plumbing.errors import ConfigError, DataError
from plumbing.timeconv import (
    bar_spacing,
    duration_us,
    from_epoch_us,
    modal_spacing_us,
    parse_duration,
    to_epoch_us,
)

HOURS = pd.Series(pd.date_range("2024-01-01", periods=5, freq="1h", tz="UTC"))


@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns"])
def test_epoch_us_round_trip_whatever_the_unit(unit):
    col = HOURS.dt.as_unit(unit)
    us = to_epoch_us(col)
    assert us.dtype == np.int64
    assert us[1] - us[0] == 3_600_000_000
    pd.testing.assert_series_equal(from_epoch_us(us), HOURS.dt.as_unit("us"))


def test_epoch_us_reads_other_zones_arrow_and_index_alike():
    ref = to_epoch_us(HOURS)
    assert (to_epoch_us(HOURS.dt.tz_convert("America/New_York")) == ref).all()
    assert (to_epoch_us(pd.DatetimeIndex(HOURS)) == ref).all()
    arrow = pa.array(HOURS).to_pandas(types_mapper=pd.ArrowDtype)
    assert (to_epoch_us(arrow) == ref).all()
    assert (to_epoch_us(ref) == ref).all()  # int64 microseconds pass through


def test_epoch_us_refuses_naive_and_missing_times():
    with pytest.raises(DataError, match="timezone-naive"):
        to_epoch_us(HOURS.dt.tz_localize(None))
    with pytest.raises(DataError, match="NaT") as err:
        to_epoch_us(pd.Series([HOURS[0], pd.NaT]))
    assert err.value.row == 1


def test_parse_duration_bounds():
    assert parse_duration("26h", name="max_staleness") == pd.Timedelta(hours=26)
    assert duration_us("1min", name="freq") == 60_000_000
    assert parse_duration("180d", name="train") == pd.Timedelta(days=180)
    assert parse_duration("0s", name="delay", minimum="nonnegative") == pd.Timedelta(0)
    with pytest.raises(ConfigError, match="not a duration"):
        parse_duration("hourly", name="freq")
    with pytest.raises(ConfigError, match="not positive"):
        parse_duration("0s", name="freq")
    with pytest.raises(ConfigError, match="negative"):
        parse_duration("-1h", name="delay", minimum="nonnegative")


def test_bar_spacing_ignores_order_gaps_and_repeats():
    shuffled = HOURS.drop(index=2).sample(frac=1.0, random_state=3)
    assert bar_spacing(pd.concat([shuffled, shuffled])) == pd.Timedelta("1h")


def test_bar_spacing_of_fewer_than_two_bars_raises_or_takes_an_explicit_default():
    with pytest.raises(DataError, match="fewer than two"):
        bar_spacing(HOURS[:1])
    with pytest.raises(DataError, match="fewer than two"):
        modal_spacing_us(np.array([5, 5], dtype=np.int64))
    assert bar_spacing(HOURS[:1], default=pd.Timedelta("4h")) == pd.Timedelta("4h")


def test_write_atomic_leaves_nothing_behind_on_error(tmp_path):
    target = write_text_atomic(tmp_path / "a" / "x.txt", "old")

    def fail(tmp):
        tmp.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_atomic(target, fail)
    assert target.read_text() == "old"
    assert sorted(p.name for p in target.parent.iterdir()) == ["x.txt"]


def test_write_dir_atomic_creates_and_overwrites_only_when_asked(tmp_path):
    out = tmp_path / "run"
    write_dir_atomic(out, lambda d: (d / "a.txt").write_text("1"))
    assert (out / "a.txt").read_text() == "1"
    with pytest.raises(OSError):
        write_dir_atomic(out, lambda d: (d / "b.txt").write_text("2"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    write_dir_atomic(out, lambda d: (d / "b.txt").write_text("2"), overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]

"""Prepare once, run a window: analytics on the full history, identical lines per bar."""

from __future__ import annotations

import contextlib
import dataclasses
import io

import numpy as np
import pandas as pd
import pytest

from gammabt.config import RunConfig
from gammabt.prepared import load_prepared, save_prepared
from gammabt.run import build_legs, prepare, run


@pytest.fixture(scope="module")
def market_dir(tmp_path_factory):
    from feeds.synthetic import simulate

    out = tmp_path_factory.mktemp("sim") / "market"
    with contextlib.redirect_stdout(io.StringIO()):
        simulate("calm", days=12, seed=4).write(out)
    return out


@pytest.fixture(scope="module")
def full_config(market_dir) -> RunConfig:
    return RunConfig(strategy="liquidation_cascade", market=str(market_dir), instrument="perp")


def _lines(feeds) -> dict[str, pd.DataFrame]:
    return {f.leg.name: f.arrays.to_frame().set_index("ts") for f in feeds}


def test_window_lines_equal_full_run_lines(full_config) -> None:
    full = _lines(build_legs(full_config, prepare(full_config)))
    window = dataclasses.replace(full_config, start="2025-01-10", end="2025-01-14")
    late = _lines(build_legs(window, prepare(window)))
    assert set(late) == set(full)
    ts = late["spot"].index
    assert len(ts) == 96 and ts[0] == pd.Timestamp("2025-01-10", tz="UTC")
    for name, frame in late.items():
        expected = full[name].loc[ts]
        pd.testing.assert_frame_equal(frame, expected, check_exact=True)
    # the liquidation map is already populated on the window's first bar
    assert np.isfinite(late["spot"]["liq_below_usd"].iloc[0])


def test_window_run_equals_run_on_prepared_market(full_config, tmp_path) -> None:
    window = dataclasses.replace(full_config, start="2025-01-09", end="2025-01-15")
    fresh = run(window)
    folder = save_prepared(prepare(full_config), tmp_path / "prep")
    mapped = run(window, load_prepared(folder))
    assert fresh.digest == mapped.digest
    pd.testing.assert_series_equal(fresh.returns, mapped.returns)
    pd.testing.assert_frame_equal(fresh.equity, mapped.equity)
    assert fresh.metrics == mapped.metrics or all(
        fresh.metrics[k] == mapped.metrics[k] or (pd.isna(fresh.metrics[k])
                                                   and pd.isna(mapped.metrics[k]))
        for k in fresh.metrics)


def test_prepared_round_trip_is_memory_mapped(full_config, tmp_path) -> None:
    prepared = prepare(full_config)
    folder = save_prepared(prepared, tmp_path / "prep")
    assert save_prepared(prepared, folder) == folder  # same key: left as it is
    loaded = load_prepared(folder)
    assert loaded.key == prepared.key and len(loaded.key) == 64
    assert [leg for leg, _ in loaded.legs] == [leg for leg, _ in prepared.legs]
    for (_, a), (_, b) in zip(prepared.legs, loaded.legs, strict=True):
        np.testing.assert_array_equal(a.open_us, b.open_us)
        assert set(a.lines) == set(b.lines)
        for name in a.lines:
            np.testing.assert_array_equal(a.lines[name], b.lines[name])
        assert not b.lines["close"].flags.writeable
        assert not b.lines["close"].flags.owndata  # a view of the mapped file
    k = int(prepared.legs[0][1].lines["liqmap_idx"][-1])
    for x, y in zip(prepared.legs[0][1].liq_map.group(k).values(),
                    loaded.legs[0][1].liq_map.group(k).values(), strict=True):
        np.testing.assert_array_equal(x, y)


def test_prepared_settings_must_match(full_config) -> None:
    from plumbing.errors import ConfigError

    prepared = prepare(full_config)
    other = dataclasses.replace(full_config, max_staleness="2h")
    with pytest.raises(ConfigError, match="max_staleness"):
        run(other, prepared)


def test_key_hashes_the_content_not_just_the_settings() -> None:
    from gammabt.run import MarketInputs
    from tests.data.hand_made import make_bars

    config = RunConfig(bars="same-name.csv")
    a = prepare(config, MarketInputs(bars=make_bars(seed=1)))
    b = prepare(config, MarketInputs(bars=make_bars(seed=2)))
    again = prepare(config, MarketInputs(bars=make_bars(seed=1)))
    assert a.key != b.key and a.key == again.key

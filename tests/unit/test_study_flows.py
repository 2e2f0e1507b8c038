"""Basis and liquidation studies: known answers on hand-made markets, references."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gammabt.cli import main
from gammabt.study_flows import basis_study, liquidation_study, write_basis_study
from indicators.events import cluster_touches, cluster_touches_reference

JUMPS = tuple(f"2024-{m:02d}-{d:02d} 12:00" for m in (1, 2, 3) for d in (8, 18, 28))


def test_cluster_touches_match_the_slow_reference():
    rng = np.random.default_rng(4)
    n = 400
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    high, low = close * 1.004, close * 0.996
    below = np.where(rng.random(n) < 0.2, np.nan, close * (1 - rng.uniform(0, 0.01, n)))
    above = np.where(rng.random(n) < 0.2, np.nan, close * (1 + rng.uniform(0, 0.01, n)))
    below_usd, above_usd = rng.uniform(0, 1e6, n), rng.uniform(0, 1e6, n)
    fast = cluster_touches(high, low, below, below_usd, above, above_usd, min_usd=3e5)
    slow = cluster_touches_reference(high, low, below, below_usd, above, above_usd,
                                     min_usd=3e5)
    assert len(slow) > 20
    assert list(zip(fast["bar"], fast["direction"], fast["level"], strict=True)) == slow


def write_basis_market(folder, n_days=95, seed=2):
    """Hourly spot with 4x the hourly vol for 24 h after each basis jump, and one far
    future quoted at every bar open whose annualized basis steps up 3 points at each
    jump (and stays there)."""
    rng = np.random.default_rng(seed)
    ts = pd.date_range("2024-01-01", periods=24 * n_days, freq="1h", tz="UTC")
    sigma = np.full(len(ts), 0.004)
    basis = np.full(len(ts), 0.05) + rng.normal(0, 2e-4, len(ts))
    for jump in JUMPS:
        k = int(np.flatnonzero(ts == pd.Timestamp(jump, tz="UTC"))[0])
        sigma[k:k + 24] *= 4
        basis[k:] += 0.03
    close = 40_000 * np.exp(np.cumsum(rng.normal(0, sigma)))
    open_ = np.r_[40_000, close[:-1]]
    bars = pd.DataFrame({"ts": ts, "open": open_, "high": np.maximum(open_, close),
                         "low": np.minimum(open_, close), "close": close, "volume": 1.0})
    expiry = pd.Timestamp("2024-12-27 08:00", tz="UTC")
    dte = (expiry - ts) / pd.Timedelta(days=1)
    futures = pd.DataFrame({"ts": ts, "expiry": expiry,
                            "price": open_ * (1 + basis * dte / 365)})
    bars.to_csv(folder / "spot.csv", index=False, date_format="%Y-%m-%dT%H:%M:%SZ")
    futures.to_csv(folder / "futures.csv", index=False, date_format="%Y-%m-%dT%H:%M:%SZ")
    return folder / "futures.csv", folder / "spot.csv"


def test_basis_study_finds_the_jumps_and_the_vol_that_followed(tmp_path):
    futures, spot = write_basis_market(tmp_path)
    # z = 8: the basis noise (2e-4 a step) never makes 8 sigma; the 3-point jumps do
    res = basis_study([futures], [spot], horizons=(pd.Timedelta("24h"),), window=10, z=8,
                      n_boot=1000)
    events = res.frame[res.frame["group"].astype(str).str.startswith("event")]
    assert list(events["ts"]) == [pd.Timestamp(j, tz="UTC") for j in JUMPS]
    assert (events["group"] == "event: basis up").all()
    ratio = res.tables["ratios"].set_index("measure").loc["vol_ann"]
    # 4x the hourly vol over the 24 h after each jump: the ratio of realized vols is 4,
    # up to sampling error (24 returns a window, 9 events: about 5% relative, so 15% is
    # three standard errors)
    assert ratio["ratio_event_control"] == pytest.approx(4, rel=0.15)
    assert ratio["ci_lo"] > 2 and ratio["p_value"] < 0.01
    assert ratio["n_event"] == len(JUMPS)
    control = res.frame[res.frame["group"] == "control"]
    # controls are at least 24 h away from any flagged stamp
    for jump in JUMPS:
        assert ((control["ts"] - pd.Timestamp(jump, tz="UTC")).abs()
                > pd.Timedelta("24h")).all()
    page = write_basis_study(res, tmp_path / "out")
    assert "basis dislocations" in page.read_text()
    assert (tmp_path / "out" / "plotly.min.js").exists()


def test_basis_study_measures_from_the_availability_time(tmp_path):
    futures, spot = write_basis_market(tmp_path)
    base = basis_study([futures], [spot], horizons=(pd.Timedelta("4h"),), window=10,
                       n_boot=200)
    late = basis_study([futures], [spot], horizons=(pd.Timedelta("4h"),), window=10,
                       n_boot=200, delay=pd.Timedelta("90min"))
    # a quote stamped 12:00 published 90 min later is first tradable at the 14:00 bar:
    # the 4h window then covers bars 14:00..17:00, i.e. the base window two bars later
    first = base.frame.set_index("ts")["vol_ann_4h"]
    shifted = late.frame.set_index("ts")["vol_ann_4h"]
    stamp = pd.Timestamp(JUMPS[0], tz="UTC")
    assert shifted[stamp] == pytest.approx(first[stamp + pd.Timedelta("2h")], rel=1e-12)


@pytest.fixture(scope="module")
def squeeze(tmp_path_factory):
    from feeds.synthetic import simulate

    folder = tmp_path_factory.mktemp("m") / "squeeze"
    simulate("gamma_squeeze_down", days=6, seed=3).write(folder)
    return folder


def test_liquidation_study_on_a_simulated_market(squeeze):
    from feeds.synthetic import load_market
    from indicators.liquidation import cluster_hit_rate, estimate_liq_map

    m = load_market(squeeze)
    bars = m.perp.to_pandas()
    res = liquidation_study(bars, m.liquidations, oi=m.perp_oi, n_boot=200,
                            tolerances=(0.0025, 0.01))
    direct = cluster_hit_rate(estimate_liq_map(bars, oi=m.perp_oi), m.liquidations,
                              tol_frac=0.01, burn_in=24)
    hits = res.tables["hit_rates"].set_index("tolerance")
    assert hits.loc[0.01, "hit_rate"] == pytest.approx(direct["hit_rate"])
    assert (hits["hit_rate"] >= hits["hit_rate"].iloc[0]).all()  # wider tolerance, more hits
    touches = res.frame[res.frame["group"] != "control"]
    lows = bars["low"].to_numpy()
    for _, row in touches[touches["direction"] < 0].iterrows():
        assert lows[row["bar"]] <= row["level"]  # the bar really reached the level
    assert res.meta["map_from"] == "open interest"


def test_study_commands_end_to_end(tmp_path, squeeze, capsys):
    futures, spot = write_basis_market(tmp_path)
    assert main(["study", "basis", "--futures", str(futures), "--spot", str(spot),
                 "--window", "10", "--z", "8", "--boot", "200", "--out", str(tmp_path / "b")]) == 0
    assert (tmp_path / "b" / "study.html").exists()
    assert main(["study", "liquidations", "--market", str(squeeze), "--boot", "200",
                 "--out", str(tmp_path / "l")]) == 0
    assert (tmp_path / "l" / "study.parquet").exists()
    capsys.readouterr()
    assert main(["study", "liquidations", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "--market DIR" in err and len(err.strip().splitlines()) == 1

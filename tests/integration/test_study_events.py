"""``gammabt study events``: a hand-made crash and the real 2026-02-05 perp window."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gammabt.cli import main
from gammabt.study_events import events_study

PERP = "ohlcv/binance_futures_um_BTCUSDT_1h/BTCUSDT-1h-{}.csv.gz"


def _write_bars(path, ts, c):
    o = np.r_[c[0], c[:-1]]
    pd.DataFrame({"ts": ts, "open": o, "high": np.maximum(o, c), "low": np.minimum(o, c),
                  "close": c, "volume": 10.0}).to_csv(path, index=False)


def test_hand_made_crash_against_calm_weeks(tmp_path):
    rng = np.random.default_rng(2)
    ts = pd.date_range("2024-01-01", periods=24 * 60, freq="1h", tz="UTC")
    sigma = np.where(ts >= pd.Timestamp("2024-02-01", tz="UTC"), 0.02, 0.005)
    lr = rng.normal(0, sigma)
    crash = (ts >= pd.Timestamp("2024-02-05", tz="UTC")) & \
        (ts < pd.Timestamp("2024-02-05 10:00", tz="UTC"))
    lr[crash] = np.log(0.98)                       # -2% an hour for 10 hours
    path = tmp_path / "bars.csv"
    _write_bars(path, ts, 50_000 * np.exp(np.cumsum(lr)))
    t = events_study([pd.Timestamp("2024-02-05", tz="UTC")], [path],
                     window=pd.Timedelta("4D"), calm=pd.Timedelta("14D"))
    ev, calm = t.set_index("segment").loc["event"], t.set_index("segment").loc["calm"]
    assert ev["n_bars"] == 192 and calm["n_bars"] == 336
    assert ev["vol_ann"] / calm["vol_ann"] == pytest.approx(4.0, rel=0.25)
    assert ev["worst_move"] <= 10 * np.log(0.98) + 0.1
    assert "no chain covers 2024-02-05" in ev["notes"]


def test_real_2026_02_05_perp_window(real, tmp_path):
    files = [real(PERP.format(m)) for m in ("2026-01", "2026-02")]
    out = tmp_path / "events.parquet"
    assert main(["study", "events", "--at", "2026-02-05", "--window", "7D", "--calm", "14D",
                 *sum((["--bars", str(f)] for f in files), []), "--out", str(out)]) == 0
    t = pd.read_parquet(out).set_index("segment")
    # PROVENANCE: the perp low of the window is 59,800.0 (the 2026-02-06 00:00 bar)
    assert t.loc["event", "low"] == 59_800.0
    assert t.loc["event", "vol_ann"] > 1.5 * t.loc["calm", "vol_ann"]
    assert "premium not measured" in t.loc["event", "notes"]


def test_bad_date_is_one_line_exit_2(tmp_path, capsys):
    path = tmp_path / "bars.csv"
    _write_bars(path, pd.date_range("2024-01-01", periods=48, freq="1h", tz="UTC"),
                np.full(48, 100.0))
    assert main(["study", "events", "--at", "someday", "--bars", str(path)]) == 2
    assert "--at" in capsys.readouterr().err

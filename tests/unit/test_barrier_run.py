"""A run with a barrier book: the inputs carry the book's lines and summary columns,
the switch keeps the options' flip, and bad files fail with one clear error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from feeds.btfeed import build_arrays
from feeds.synthetic import simulate
from gammabt.cli import main
from gammabt.config import RunConfig
from gammabt.run import load_inputs, run
from indicators import barrier

BOOK = """ts,type,strike,barrier,expiry,notional,dealer_side,iv
2026-02-03T00:00:00Z,down_in_put,72000,68000,2026-03-27T08:00:00Z,3000,1,
2026-02-04T12:00:00Z,down_out_put,72000,60000,2026-03-27T08:00:00Z,2000,-1,0.6
"""


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("vc") / "market"
    simulate("vanna_crash", days=3, seed=1, n_options=200).write(path)
    (path.parent / "book.csv").write_text(BOOK)
    return path


def test_inputs_carry_the_book(folder: Path) -> None:
    book = str(folder.parent / "book.csv")
    with_book = load_inputs(RunConfig(market=str(folder), barriers=book))
    plain = load_inputs(RunConfig(market=str(folder), barrier_flip=False))
    off = load_inputs(RunConfig(market=str(folder), barriers=book, barrier_flip=False))
    s, p, o = with_book.summary, plain.summary, off.summary
    assert {"barrier_gex", "barrier_vanna", "gex_total", "vanna_total", "atm_iv"} <= set(s)
    np.testing.assert_allclose(o["gamma_flip"], p["gamma_flip"], rtol=0)
    np.testing.assert_allclose(s["gex"], p["gex"] + s["barrier_gex"], rtol=1e-12)
    assert (s["barrier_gex"] != 0).any()
    # the per-bar lines are the book evaluated on the run's bars with the chain's ATM IV
    lines = with_book.barrier_lines
    assert len(lines) == len(with_book.bars)
    assert lines["n_barrier_live"].iloc[0] == 1 and lines["n_barrier_live"].max() == 2
    arrays = build_arrays(with_book.bars, summary=s, barrier_lines=lines)
    np.testing.assert_allclose(arrays.lines["barrier_gex"], lines["barrier_gex"], rtol=0)
    assert np.isfinite(arrays.lines["vanna_exp"][5:]).all()
    assert np.isfinite(arrays.lines["atm_iv"][5:]).all()
    close = with_book.bars["close"].to_numpy()
    low = with_book.bars["low"].to_numpy()
    # the nearest untouched barrier below the close: 68,000 until a bar's low touches
    # it (the knock-in becomes a vanilla), then the knock-out's 60,000
    knock = int(np.flatnonzero(low <= 68_000.0)[0])
    assert 0 < knock and (low[knock:] > 60_000.0).all()
    want = np.where(np.arange(close.size) < knock, 68_000.0, 60_000.0)
    np.testing.assert_allclose(lines["dist_to_barrier"], close / want - 1, rtol=1e-12)
    assert any("barrier book (--barriers): 2 positions" in n for n in with_book.notes)


def test_vol_shock_runs_on_the_scenario_with_the_ledger_identity(folder: Path) -> None:
    from tests.unit.test_account import assert_identity

    result = run(RunConfig(strategy="vol_shock", market=str(folder), instrument="perp",
                           barriers=str(folder.parent / "book.csv")))
    assert result.metrics["n_rejected"] == 0
    assert_identity(result, 100_000.0)


def test_cli_bad_barrier_file_is_one_line_exit_2(folder: Path, tmp_path: Path,
                                                  capsys) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(BOOK.replace("down_out_put", "down_out_putt"))
    code = main(["run", "--market", str(folder), "--barriers", str(bad), "--results",
                 str(tmp_path / "res")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "did you mean 'down_out_put'" in err
    assert "bad.csv" in err and "row 1" in err


def test_book_lines_are_point_in_time() -> None:
    # a position known at 12:30 cannot affect the bar closing at 12:00
    bars = pd.DataFrame({"ts": pd.date_range("2026-02-04 10:00", periods=4, freq="1h",
                                             tz="UTC"),
                         "open": 70_000.0, "high": 70_100.0, "low": 69_900.0,
                         "close": 70_000.0, "volume": 1.0})
    pos = pd.DataFrame({"ts": [pd.Timestamp("2026-02-04 12:30", tz="UTC")],
                        "type": ["down_in_put"], "strike": [72_000.0],
                        "barrier": [66_000.0],
                        "expiry": [pd.Timestamp("2026-03-27 08:00", tz="UTC")],
                        "notional": [10.0], "dealer_side": [1.0]})
    lines, _ = barrier.barrier_book(pos, bars)
    assert list(lines["n_barrier_live"]) == [0, 0, 1, 1]


def test_the_simulated_book_is_written_and_used(folder: Path) -> None:
    from feeds.synthetic import load_market

    market = load_market(folder)
    assert market.barriers is not None and market.barriers.num_rows == 2
    inputs = load_inputs(RunConfig(market=str(folder)))
    assert any("barrier book (simulated): 2 positions" in n for n in inputs.notes)
    assert inputs.barrier_lines is not None
    assert (inputs.barrier_lines["n_barrier_live"] >= 1).all()

"""basis_dislocation on hand-made markets: entries, exits and PnL computed by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gammabt.config import RunConfig
from gammabt.run import MarketInputs, run
from plumbing.errors import ConfigError
from tests.data.hand_made import flat_bars
from tests.unit.test_account import assert_identity

FEE = 5e-4
EXPIRY = pd.Timestamp("2024-01-20 08:00", tz="UTC")


def market(z_path, spot=None, premium=None, n=60, expiry=EXPIRY):
    """Hourly spot bars, one future quoted at every bar open, and a basis z-score line
    stamped at each bar's close (so bar ``i`` sees ``z_path[i]``)."""
    spot = np.full(n, 40_000.0) if spot is None else np.asarray(spot, float)
    bars = flat_bars(spot)
    premium = np.full(n, 0.01) if premium is None else np.asarray(premium, float)
    futures = pd.DataFrame({"ts": bars["ts"], "expiry": expiry,
                            "price": bars["open"] * (1 + premium), "instrument": "BTC-FUT"})
    closes = bars["ts"] + pd.Timedelta(hours=1)
    extra = pd.DataFrame({"ts": closes, "basis_ann": np.asarray(z_path) * 0.01 + 0.05,
                          "basis_z": np.asarray(z_path, float)})
    return bars, futures, extra


def config(**kw) -> RunConfig:
    kw.setdefault("slippage_bps", 0.0)
    params = tuple(kw.pop("params", {}).items())
    return RunConfig(strategy="basis_dislocation", bars="unused.csv", params=params, **kw)


def z_path(n=60, on=(20, 30), value=3.0):
    z = np.zeros(n)
    z[on[0]:on[1]] = value
    return z


def fills(result, name):
    rows = result.ledger[(result.ledger["kind"] == "fill")
                         & (result.ledger["instrument"] == name)]
    return rows.reset_index(drop=True)


def test_carry_opens_on_the_jump_and_unwinds_on_reversion_with_hand_computed_pnl():
    n = 60
    spot = 40_000 + 50.0 * np.arange(n)  # spot drifts up: the hedge must cancel it
    premium = np.full(n, 0.01)
    premium[21:31] = 0.03  # the future is rich while the basis is dislocated
    premium[31:] = 0.012
    bars, futures, extra = market(z_path(n), spot=spot, premium=premium, n=n)
    result = run(config(), MarketInputs(bars=bars, futures=futures, extra=extra))
    spot_fills, fut_fills = fills(result, "spot"), fills(result, "BTC-FUT")
    assert len(spot_fills) == 2 and len(fut_fills) == 2
    # decided at bar 20's close (z = 3), filled at bar 21's open; exit decided at bar 30
    # (z back to 0), filled at bar 31's open
    s_in, s_out = bars["open"].iloc[21], bars["open"].iloc[31]
    f_in, f_out = futures["price"].iloc[21], futures["price"].iloc[31]
    qty = 100_000 * 0.95 / bars["close"].iloc[20]
    assert spot_fills["qty"].iloc[0] == pytest.approx(qty)
    assert fut_fills["qty"].iloc[0] == pytest.approx(-qty)
    assert spot_fills["price"].tolist() == [s_in, s_out]
    assert fut_fills["price"].tolist() == [f_in, f_out]
    spot_pnl = qty * (s_out - s_in)
    fut_pnl = -qty * (f_out - f_in)
    fees = FEE * qty * (s_in + s_out + f_in + f_out)
    assert result.metrics["final_value"] == pytest.approx(
        100_000 + spot_pnl + fut_pnl - fees, abs=1e-6)
    legs = result.metrics["pnl_by_instrument"]
    assert legs["BTC-FUT"] == pytest.approx(fut_pnl - FEE * qty * (f_in + f_out), abs=1e-6)
    assert legs["spot"] == pytest.approx(spot_pnl - FEE * qty * (s_in + s_out), abs=1e-6)
    assert fut_pnl > 0  # the premium shrank from 3% to 1.2%
    assert_identity(result, 100_000)


def test_no_signal_no_trade_and_nan_lines_stay_flat():
    bars, futures, extra = market(np.zeros(60))
    assert run(config(), MarketInputs(bars=bars, futures=futures, extra=extra)).ledger.empty
    extra["basis_z"] = np.nan
    assert run(config(), MarketInputs(bars=bars, futures=futures, extra=extra)).ledger.empty


def test_unwinds_before_expiry():
    expiry = pd.Timestamp("2024-01-03 12:00", tz="UTC")  # bar 60 closes 2024-01-03 12:00
    n = 60
    z = np.zeros(n)
    z[5:] = 3.0  # the dislocation never reverts
    bars, futures, extra = market(z, n=n, expiry=expiry)
    futures = futures[futures["ts"] < expiry]
    result = run(config(params={"entry_min_dte": 1.0, "min_dte": 1.0}),
                 MarketInputs(bars=bars, futures=futures, extra=extra))
    out = fills(result, "BTC-FUT").iloc[1]
    # dte < 1 day first at the close of bar 36 (2024-01-02 13:00): fill at bar 37's open
    assert out["ts"] == bars["ts"].iloc[37] + pd.Timedelta(hours=1)
    assert result.ledger[result.ledger["kind"] == "settlement"].empty
    assert result.positions["ts"].max() < out["ts"]


def test_stop_loss_exits_when_the_basis_keeps_widening():
    n = 60
    premium = np.full(n, 0.01)
    premium[21:] = np.linspace(0.01, 0.05, n - 21)  # the carry loses as the basis widens
    z = np.zeros(n)
    z[20:] = 3.0
    bars, futures, extra = market(z, premium=premium, n=n)
    result = run(config(params={"stop_loss": 0.005}),
                 MarketInputs(bars=bars, futures=futures, extra=extra))
    out = fills(result, "BTC-FUT").iloc[1]
    qty = -fills(result, "BTC-FUT")["qty"].iloc[0]
    # first bar whose close marks a loss of 0.5% of the spot notional
    loss = qty * (futures["price"] - futures["price"].iloc[21])
    first = int(np.flatnonzero((loss.to_numpy() >= 0.005 * qty * 40_000)[22:])[0]) + 22
    # the mark at bar i's close is the quote stamped at bar i + 1's open
    assert out["ts"] == bars["ts"].iloc[first] + pd.Timedelta(hours=1)


def test_mirror_needs_borrowing_and_never_keeps_a_naked_leg():
    bars, futures, extra = market(z_path(value=-3.0))
    refused = run(config(params={"mirror": True}),
                  MarketInputs(bars=bars, futures=futures, extra=extra))
    # the spot sale is refused, the future filled: it is sold back on the next bar and
    # the side is not retried while the dislocation lasts
    assert refused.metrics["refusals"] == {"short_without_borrow": 1}
    fut = fills(refused, "BTC-FUT")
    assert fut["qty"].tolist() == [pytest.approx(fut["qty"].iloc[0]),
                                   pytest.approx(-fut["qty"].iloc[0])]
    assert fut["ts"].iloc[1] - fut["ts"].iloc[0] == pd.Timedelta(hours=1)
    assert_identity(refused, 100_000)
    done = run(config(params={"mirror": True}, borrow=True),
               MarketInputs(bars=bars, futures=futures, extra=extra))
    spot_fills = fills(done, "spot")
    assert spot_fills["qty"].iloc[0] < 0 and fills(done, "BTC-FUT")["qty"].iloc[0] > 0
    assert (done.ledger["kind"] == "borrow").sum() == 10  # bars 21..30 held short
    assert_identity(done, 100_000)


def test_front_signal_uses_the_front_series_own_basis():
    n = 80
    bars = flat_bars(np.full(n, 40_000.0))
    dte = ((EXPIRY - bars["ts"]) / pd.Timedelta(days=1)).to_numpy()
    basis = 0.05 + 1e-3 * np.sin(np.arange(n))  # annualized, a little noise
    basis[60:70] = 0.15
    _, futures, _ = market(np.zeros(n), premium=basis * dte / 365, n=n)
    result = run(config(params={"signal": "front", "window": 24}),
                 MarketInputs(bars=bars, futures=futures))
    entry = fills(result, "BTC-FUT").iloc[0]
    # the jump is stamped at bar 60's open; bar 59 closes at that stamp, so it sees it
    assert entry["ts"] == bars["ts"].iloc[60] + pd.Timedelta(hours=1)


def test_out_of_range_and_inconsistent_params_are_refused():
    with pytest.raises(ConfigError, match="z_entry"):
        config(params={"z_entry": -1.0})
    with pytest.raises(ConfigError, match="signal"):
        config(params={"signal": "cm60"})
    bars, futures, extra = market(np.zeros(60))
    with pytest.raises(ConfigError, match="z_exit"):
        run(config(params={"z_exit": 3.0, "z_entry": 2.0}),
            MarketInputs(bars=bars, futures=futures, extra=extra))


@pytest.mark.parametrize("runonce,preload", [(False, True), (False, False)])
def test_same_result_in_every_run_mode(runonce, preload):
    bars, futures, extra = market(z_path())
    inputs = MarketInputs(bars=bars, futures=futures, extra=extra)
    reference = run(config(), inputs)
    other = run(config(runonce=runonce, preload=preload), inputs)
    pd.testing.assert_frame_equal(reference.ledger, other.ledger)
    assert reference.metrics["final_value"] == other.metrics["final_value"]


@pytest.fixture(scope="module")
def basis_unwind_market(tmp_path_factory):
    from feeds.synthetic import simulate

    folder = tmp_path_factory.mktemp("markets") / "basis_unwind"
    simulate("basis_unwind", days=8, seed=1).write(folder)
    return folder


def test_carry_on_the_simulated_basis_unwind(basis_unwind_market):
    result = run(RunConfig(strategy="basis_dislocation", market=str(basis_unwind_market)))
    entries = result.ledger[(result.ledger["kind"] == "fill")].groupby("instrument").first()
    shock = pd.Timestamp("2026-02-05 12:00", tz="UTC")  # the preset's de-leveraging day
    assert set(entries.index) == {"spot", "BTC-27FEB26"}  # nearest expiry >= 7 days
    assert (entries["ts"] >= shock).all()  # opened on the jump, not before it
    assert entries.loc["spot", "qty"] == pytest.approx(-entries.loc["BTC-27FEB26", "qty"])
    assert result.metrics["n_liquidations"] == 0
    assert_identity(result, 100_000)

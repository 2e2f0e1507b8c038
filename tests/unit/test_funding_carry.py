"""The funding-carry strategy on a hand-made spot / perp market with hand-computed PnL.

40 hourly bars from 2024-01-01 00:00 (bar ``k`` closes at ``k + 1`` h); both legs'
bars open at the previous close, so an order decided at bar ``k``'s close fills at
close ``k``. Funding every 8 h: the row stamped ``t`` is paid at the close of the bar
ending at ``t`` (bars 7, 15, 23, 31, 39) and is the ``funding_ann`` in force from that
bar's close. Taker fee 5 bps on both legs, no slippage, sizing 95% of equity.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from feeds.synthetic import simulate
from gammabt.config import RunConfig
from gammabt.run import MarketInputs, basis_funding_lines, run
from plumbing.errors import ConfigError
from tests.data.hand_made import flat_bars
from tests.unit.test_account import assert_identity

CASH = 100_000.0
FEE = 5e-4
N = 40
SPOT = 40_000.0 + 25.0 * np.arange(N)
PERP = SPOT + 20.0 + 2.0 * np.arange(N)  # a premium that widens by 2 USD a bar
STAMPS = pd.date_range("2024-01-01 00:00", periods=6, freq="8h", tz="UTC").as_unit("us")
# APR = rate * 3 * 365: 8.8% (below entry 10%), 13.1% (entry), 21.9%, 5.5% (between
# exit 3% and entry: hold), 2.2% (exit), 8.8% (between: stay flat)
RATES = [0.8e-4, 1.2e-4, 2e-4, 0.5e-4, 0.2e-4, 0.8e-4]
PAID_AT = {pd.Timestamp(t): int((t - STAMPS[0]) / pd.Timedelta(hours=1)) - 1
           for t in STAMPS[1:]}  # stamp -> index of the bar closing at it


def config(**kw) -> RunConfig:
    params = kw.pop("params", {})
    kw.setdefault("slippage_bps", 0.0)
    kw.setdefault("commission_bps", 5.0)
    kw.setdefault("instrument", "perp")
    return RunConfig(strategy="funding_carry", bars="unused.csv",
                     params=tuple(params.items()), **kw)


def market(rates=RATES, *, spot=SPOT, perp=PERP, funding: bool = True) -> MarketInputs:
    bars, perp_bars = flat_bars(spot), flat_bars(perp)
    if not funding:
        return MarketInputs(bars=bars, perp=perp_bars)
    table = pa.Table.from_pandas(pd.DataFrame({"ts": STAMPS, "rate_8h": rates,
                                               "interval_h": 8.0}), preserve_index=False)
    extra = basis_funding_lines(bars, futures=None, funding=table)
    return MarketInputs(bars=bars, perp=perp_bars, funding=table, extra=extra)


def rows(result, kind: str, instrument: str | None = None) -> pd.DataFrame:
    ledger = result.ledger
    keep = ledger["kind"] == kind
    if instrument is not None:
        keep &= ledger["instrument"] == instrument
    return ledger[keep].reset_index(drop=True)


def close_ts(k: int) -> pd.Timestamp:
    return STAMPS[0] + pd.Timedelta(hours=k + 1)


def test_hedged_book_receives_funding_over_three_stamps():
    result = run(config(), market())
    # 00:00 pays 8.8% APR: nothing; 08:00 (bar 7) 13.1% > 10%: in at bar 8's open;
    # 00:00 day 2 (bar 23) 5.5% is above the 3% exit: held; 08:00 day 2 (bar 31)
    # 2.2%: out at bar 32's open; 16:00 day 2 (bar 39) 8.8%: stays flat
    q = CASH * 0.95 / SPOT[7]
    for leg, sign, prices in (("spot", 1, SPOT), ("perp", -1, PERP)):
        fills = rows(result, "fill", leg)
        assert list(fills["ts"]) == [close_ts(8), close_ts(32)]
        np.testing.assert_allclose(fills["qty"], [sign * q, -sign * q], rtol=1e-12)
        np.testing.assert_allclose(fills["price"], [prices[7], prices[31]], rtol=0)
    funding = rows(result, "funding")
    held = [(t, k) for t, k in PAID_AT.items() if 8 <= k <= 31]
    assert [k for _, k in held] == [15, 23, 31]
    rate_at = dict(zip(STAMPS, RATES, strict=True))
    received = [q * PERP[k] * rate_at[t] for t, k in held]
    assert list(funding["ts"]) == [t for t, _ in held]
    np.testing.assert_allclose(funding["amount_usd"], received, rtol=1e-12)
    spot_pnl = q * (SPOT[31] - SPOT[7])
    perp_pnl = -q * (PERP[31] - PERP[7])  # the widening premium costs the short
    fees = FEE * q * (SPOT[7] + PERP[7] + SPOT[31] + PERP[31])
    expected = CASH + spot_pnl + perp_pnl + sum(received) - fees
    final = result.metrics["final_value"]
    assert final == pytest.approx(expected, abs=1e-6)
    assert result.equity["cash"].iloc[-1] == pytest.approx(expected, abs=1e-6)  # flat
    assert result.metrics["funding_received_usd"] == pytest.approx(sum(received), abs=1e-9)
    assert result.metrics["funding_paid_usd"] == 0
    assert result.metrics["fees_paid_usd"] == pytest.approx(fees, abs=1e-9)
    pnl = result.metrics["pnl_by_instrument"]
    assert pnl["spot"] == pytest.approx(spot_pnl - FEE * q * (SPOT[7] + SPOT[31]), abs=1e-6)
    assert pnl["perp"] == pytest.approx(
        perp_pnl + sum(received) - FEE * q * (PERP[7] + PERP[31]), abs=1e-6)
    # while hedged the legs are equal and opposite at every bar
    pos = result.positions.pivot(index="ts", columns="instrument", values="qty")
    np.testing.assert_allclose(pos["spot"] + pos["perp"], 0.0, atol=1e-12)
    assert_identity(result, CASH)


def test_hysteresis_rates_between_exit_and_entry_change_nothing():
    # 8.8% is between the thresholds: flat stays flat for the whole run
    result = run(config(), market(rates=[0.8e-4] * 6))
    assert result.metrics["n_orders"] == 0
    # with the exit threshold at the entry one, 5.5% at bar 23 takes the book off
    tight = run(config(params={"exit_apr": 0.10}), market())
    assert list(rows(tight, "fill", "spot")["ts"]) == [close_ts(8), close_ts(24)]


def test_a_refused_spot_leg_does_not_leave_a_naked_perp():
    # 99.99% of equity in spot plus its fee is more than the cash: spot is refused,
    # the perp short (margin only) fills; the strategy closes it the next bar
    result = run(config(percent=99.99), market())
    assert result.metrics["refusals"] == {"cash": 1}
    assert rows(result, "fill", "spot").empty
    perp = rows(result, "fill", "perp")
    q = CASH * 0.9999 / SPOT[7]
    assert list(perp["ts"]) == [close_ts(8), close_ts(9)]
    np.testing.assert_allclose(perp["qty"], [-q, q], rtol=1e-12)
    expected = CASH - q * (PERP[8] - PERP[7]) - FEE * q * (PERP[7] + PERP[8])
    assert result.metrics["final_value"] == pytest.approx(expected, abs=1e-6)
    assert rows(result, "funding").empty  # flat again before the 16:00 stamp
    assert_identity(result, CASH)


def test_a_liquidated_perp_leg_does_not_leave_naked_spot():
    # a wick at bar 12: the account's pessimistic path (spot to its low, perp to its
    # high) liquidates the short perp; the spot left alone is sold the next bar
    spot_bars, perp_bars = flat_bars(SPOT), flat_bars(PERP)
    spot_bars.loc[12, "low"] = SPOT[11] * 0.5
    perp_bars.loc[12, "high"] = PERP[11] * 3.0
    base = market()
    inputs = MarketInputs(bars=spot_bars, perp=perp_bars, funding=base.funding,
                          extra=base.extra)
    result = run(config(), inputs)
    assert result.metrics["n_liquidations"] == 1
    spot = rows(result, "fill", "spot")
    assert list(spot["ts"]) == [close_ts(8), close_ts(13)]
    assert spot["qty"].sum() == pytest.approx(0.0, abs=1e-12)
    assert result.positions["ts"].max() == close_ts(12)
    assert_identity(result, CASH)


def test_retry_waits_after_an_unwind():
    # the spot leg is refused at every try: with retry_bars=0 the book is tried again
    # on the bar after each unwind while funding pays; with the default 24 bars the
    # next try would come at bar 33, when funding no longer pays
    eager = run(config(percent=99.99, params={"retry_bars": 0}), market())
    patient = run(config(percent=99.99), market())
    assert patient.metrics["refusals"] == {"cash": 1}
    assert eager.metrics["refusals"]["cash"] > 1
    assert_identity(eager, CASH)


@pytest.mark.parametrize("case", ["no_funding", "stale_funding"])
def test_no_funding_line_means_no_book(case):
    if case == "no_funding":
        inputs, staleness = market(funding=False), "26h"
    else:  # one paying stamp, already older than the limit at the first bar's close
        inputs, staleness = market(rates=[2e-4] + [float("nan")] * 5), "30min"
    result = run(config(max_staleness=staleness), inputs)
    assert result.metrics["n_orders"] == 0
    assert result.equity["value"].eq(CASH).all()


def test_an_open_book_is_kept_when_the_funding_line_turns_nan():
    # entry on the 08:00 stamp; later stamps are missing and the line is NaN from
    # bar 10 on (2 h staleness): the hedged book stays on to the end
    nan = float("nan")
    result = run(config(max_staleness="2h"), market(rates=[0.8e-4, 1.2e-4] + [nan] * 4))
    assert result.metrics["n_orders"] == 2
    last = result.positions[result.positions["ts"] == close_ts(N - 1)]
    q = CASH * 0.95 / SPOT[7]
    np.testing.assert_allclose(last.set_index("instrument")["qty"].sort_index(),
                               [-q, q], rtol=1e-12)  # perp, spot
    assert_identity(result, CASH)


def test_exit_above_entry_is_refused_at_start():
    with pytest.raises(ConfigError, match="exit_apr=0.2 above entry_apr=0.1"):
        run(config(params={"entry_apr": 0.1, "exit_apr": 0.2}), market())


def test_a_run_without_a_perp_is_refused():
    base = market()
    with pytest.raises(ConfigError, match="perpetual"):
        run(config(instrument="spot"), MarketInputs(bars=base.bars, extra=base.extra))


@pytest.mark.parametrize("name,value", [("entry_apr", 11.0), ("exit_apr", -11.0),
                                        ("retry_bars", -1), ("retry_bars", 1.5),
                                        ("entry_apr", float("nan"))])
def test_out_of_range_params_are_refused(name, value):
    with pytest.raises(ConfigError, match=name):
        config(params={name: value})


@pytest.mark.parametrize("runonce,preload", [(True, True), (False, True), (False, False)])
def test_same_result_in_every_run_mode(runonce, preload):
    reference = run(config(), market())
    again = run(config(runonce=runonce, preload=preload), market())
    assert len(rows(reference, "funding")) == 3
    pd.testing.assert_frame_equal(reference.ledger, again.ledger)
    pd.testing.assert_frame_equal(reference.equity, again.equity)


def test_simulated_market_runs_with_the_ledger_identity(tmp_path: Path):
    path = tmp_path / "squeeze"
    simulate("gamma_squeeze_down", days=10, seed=1, n_options=200).write(path)
    result = run(RunConfig(strategy="funding_carry", market=str(path), instrument="perp"))
    assert len(rows(result, "fill", "spot")) >= 1
    assert result.metrics["funding_received_usd"] > 0
    assert result.metrics["n_rejected"] == 0
    assert_identity(result, CASH)

"""The account broker on hand-made markets with answers computed by hand.

Every test checks the accounting identity at every bar: value = initial cash + sum of
ledger amounts so far + unrealized PnL of derivatives at mark + spot holdings at price.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gammabt.config import RunConfig
from gammabt.run import MarketInputs, run
from tests.data.hand_made import flat_bars

SCRIPTED = "tests.data.hand_made:Scripted"
HOUR_YEARS = 3600 / (365 * 86400)


def scripted(script, **kw) -> RunConfig:
    kw.setdefault("slippage_bps", 0.0)
    return RunConfig(strategy=SCRIPTED, bars="unused.csv", params=(("script", tuple(script)),),
                     **kw)


def assert_identity(result, cash: float) -> None:
    equity = result.equity.set_index("ts")
    flows = result.ledger.groupby("ts")["amount_usd"].sum().cumsum()
    flows = flows.reindex(equity.index, method="ffill").fillna(0.0)
    pos = result.positions
    spot = pos[pos["instrument"] == "spot"].groupby("ts")["notional"].sum()
    unreal = pos[pos["instrument"] != "spot"].groupby("ts")["unrealized_usd"].sum()
    expected = (cash + flows + spot.reindex(equity.index, fill_value=0.0)
                + unreal.reindex(equity.index, fill_value=0.0))
    np.testing.assert_allclose(equity["value"], expected, rtol=0, atol=1e-6)
    np.testing.assert_allclose(equity["cash"], cash + flows, rtol=0, atol=1e-6)


# --------------------------------------------------------------------------- markets


def carry_market():
    """Spot 40,000 for 48 hourly bars (2024-01-01 00:00 ..), a future expiring
    2024-01-02 08:00 quoted at every bar open, its premium shrinking linearly to 0."""
    n = 48
    spot = np.full(n, 40_000.0)
    spot[10:20] = 39_000.0  # spot dips: the hedged book does not care
    bars = flat_bars(spot)
    expiry = pd.Timestamp("2024-01-02 08:00", tz="UTC")
    ts = bars["ts"]
    left = ((expiry - ts) / pd.Timedelta(hours=32)).clip(lower=0).to_numpy()
    opens = bars["open"].to_numpy()
    futures = pd.DataFrame({"ts": ts, "expiry": expiry, "price": opens * (1 + 0.01 * left),
                            "instrument": "BTC-02JAN24"})
    return bars, futures[ts < expiry]


def test_cash_and_carry_held_to_expiry_earns_the_convergence_minus_fees():
    bars, futures = carry_market()
    qty = 1.5
    # fill at bar 1's open: spot 40,000, future stamped at bar 1's open
    config = scripted([(0, "spot", qty), (0, "BTC-02JAN24", -qty)], commission_bps=5.0)
    result = run(config, MarketInputs(bars=bars, futures=futures))
    f_fill = futures["price"].iloc[1]
    s_fill = 40_000.0
    settle = 40_000.0  # spot in force at 08:00 on the 2nd: the close of the bar ending then
    fees = 5e-4 * qty * (s_fill + f_fill)
    convergence = qty * (f_fill - settle) + qty * (bars["close"].iloc[-1] - s_fill)
    assert result.metrics["final_value"] == pytest.approx(100_000 + convergence - fees,
                                                          abs=1e-6)
    ledger = result.ledger
    settlement = ledger[ledger["kind"] == "settlement"]
    assert len(settlement) == 1
    row = settlement.iloc[0]
    assert row["ts"] == pd.Timestamp("2024-01-02 08:00", tz="UTC")
    assert row["price"] == settle and row["qty"] == pytest.approx(qty)
    assert row["amount_usd"] == pytest.approx(qty * (f_fill - settle), abs=1e-9)
    fee_rows = ledger[ledger["kind"] == "fee"].set_index("instrument")["amount_usd"]
    assert fee_rows["spot"] == pytest.approx(-5e-4 * qty * s_fill)
    assert fee_rows["BTC-02JAN24"] == pytest.approx(-5e-4 * qty * f_fill)
    pnl = result.metrics["pnl_by_instrument"]
    assert pnl["BTC-02JAN24"] == pytest.approx(qty * (f_fill - settle) - 5e-4 * qty * f_fill)
    assert sum(pnl.values()) == pytest.approx(result.metrics["final_value"] - 100_000)
    assert_identity(result, 100_000)


def test_orders_on_an_expired_future_are_refused():
    bars, futures = carry_market()
    result = run(scripted([(40, "BTC-02JAN24", -1.0)]),
                 MarketInputs(bars=bars, futures=futures))
    assert result.metrics["refusals"] == {"expired": 1}
    assert result.ledger.empty


def test_front_series_is_for_signals_only():
    bars, futures = carry_market()
    result = run(scripted([(3, "front", 1.0)]), MarketInputs(bars=bars, futures=futures))
    assert result.metrics["refusals"] == {"not_tradable": 1}


def test_sparse_future_fills_only_at_a_price_stamped_after_the_order():
    bars, futures = carry_market()
    daily = futures[futures["ts"].dt.hour == 0]  # one quote a day, at 00:00
    result = run(scripted([(2, "BTC-02JAN24", -1.0)]),
                 MarketInputs(bars=bars, futures=daily))
    fill = result.ledger[result.ledger["kind"] == "fill"].iloc[0]
    # decided at 03:00; the next quote is stamped 2024-01-02 00:00 (bar 24 opens then)
    assert fill["ts"] == pd.Timestamp("2024-01-02 01:00", tz="UTC")
    assert fill["price"] == daily["price"].iloc[1]
    # until then the leg marks to the quote in force: no unrealized PnL before the fill
    assert result.positions["ts"].min() == fill["ts"]
    assert_identity(result, 100_000)


def test_perp_pays_and_receives_funding_at_each_stamp():
    n = 30
    prices = 40_000 + 100 * np.arange(n)
    bars = flat_bars(prices)
    perp = flat_bars(prices * 1.001)
    stamps = pd.to_datetime(["2024-01-01 08:00", "2024-01-01 16:00", "2024-01-02 00:00"],
                            utc=True).as_unit("us")
    rates = [1e-4, -2e-4, 3e-4]
    funding = pd.DataFrame({"ts": stamps, "rate_8h": rates, "interval_h": 8.0})
    qty = 2.0
    result = run(scripted([(0, "perp", qty)], instrument="perp", commission_bps=0.0),
                 MarketInputs(bars=bars, perp=perp, funding=funding))
    rows = result.ledger[result.ledger["kind"] == "funding"].reset_index(drop=True)
    assert list(rows["ts"]) == list(stamps)
    close_at = perp.set_index(perp["ts"] + pd.Timedelta(hours=1))["close"]
    expected = [-qty * close_at[t] * r for t, r in zip(stamps, rates, strict=True)]
    np.testing.assert_allclose(rows["amount_usd"], expected, rtol=1e-12)
    assert rows["amount_usd"].iloc[0] < 0 < rows["amount_usd"].iloc[1]  # long pays, receives
    assert result.metrics["funding_paid_usd"] == pytest.approx(-(expected[0] + expected[2]))
    assert result.metrics["funding_received_usd"] == pytest.approx(expected[1])
    assert_identity(result, 100_000)


def test_short_perp_receives_positive_funding():
    bars = flat_bars(np.full(12, 40_000.0))
    funding = pd.DataFrame({"ts": pd.to_datetime(["2024-01-01 08:00"], utc=True).as_unit("us"),
                            "rate_8h": [5e-4], "interval_h": [8.0]})
    result = run(scripted([(0, "perp", -1.0)], instrument="perp"),
                 MarketInputs(bars=bars, perp=bars, funding=funding))
    row = result.ledger[result.ledger["kind"] == "funding"].iloc[0]
    assert row["amount_usd"] == pytest.approx(40_000 * 5e-4)


@pytest.mark.parametrize("mmr", [0.005, 0.01])
def test_10x_long_is_liquidated_at_the_formula_price(mmr):
    # cash 10,000 buys 100,000 of perp at 10x: the account holds exactly the margin
    prices = np.r_[np.full(5, 50_000.0), 48_000.0, np.full(4, 40_000.0)]
    bars = flat_bars(prices)
    ep, lev = 50_000.0, 10.0
    qty = 100_000 / ep
    terms = {"perp": {"leverage": lev, "mmr": mmr, "taker_bps": 0.0,
                      "liquidation_fee_bps": 50.0}}
    config = scripted([(0, "perp", qty)], instrument="perp", cash=10_000.0, terms=terms)
    result = run(config, MarketInputs(bars=bars, perp=bars))
    liq_price = ep * (1 - 1 / lev) / (1 - mmr)  # DOMAIN: linear long
    rows = result.ledger[result.ledger["kind"] == "liquidation"]
    forced = rows[rows["qty"] != 0]
    assert len(forced) == 2  # the forced close's realized PnL, then the liquidation fee
    close, fee = forced.iloc[0], forced.iloc[1]
    # a deficit is covered (insurance fund): here at most the rounding of a zero balance
    assert 0 <= rows.loc[rows["qty"] == 0, "amount_usd"].sum() < 1e-6
    assert close["price"] == pytest.approx(liq_price, rel=1e-12)
    assert close["amount_usd"] == pytest.approx(qty * (liq_price - ep), rel=1e-9)
    assert fee["amount_usd"] == pytest.approx(-50e-4 * qty * liq_price, rel=1e-9)
    # the bar that crossed the level opens at 48,000 and closes at 40,000 (bar 6);
    # ledger rows are stamped with the bar's close
    assert close["ts"] == bars["ts"].iloc[6] + pd.Timedelta(hours=1)
    assert result.metrics["n_liquidations"] == 1
    # equity left = maintenance margin at the liquidation price, minus the fee (0 when
    # the fee takes it all)
    left = (mmr - 50e-4) * qty * liq_price
    assert result.metrics["final_value"] == pytest.approx(left, abs=1e-6)
    assert_identity(result, 10_000.0)


def test_liquidation_uses_the_adverse_extreme_within_the_bar():
    prices = np.full(8, 50_000.0)
    bars = flat_bars(prices)
    bars.loc[4, "low"] = 44_000.0  # a wick through the level, closing unchanged
    config = scripted([(0, "perp", 2.0)], instrument="perp", cash=10_000.0,
                      terms={"perp": {"taker_bps": 0.0}})
    result = run(config, MarketInputs(bars=bars, perp=bars))
    assert result.metrics["n_liquidations"] == 1
    assert (result.positions["ts"] < bars["ts"].iloc[5]).all()


def test_short_spot_is_refused_without_borrowing_and_charged_with_it():
    prices = np.full(10, 30_000.0)
    bars = flat_bars(prices)
    refused = run(scripted([(0, "spot", -1.0)]), MarketInputs(bars=bars))
    assert refused.metrics["refusals"] == {"short_without_borrow": 1}
    assert refused.ledger.empty
    config = scripted([(0, "spot", -1.0)], borrow=True, commission_bps=0.0,
                      terms={"spot": {"borrow_apr": 0.1}})
    result = run(config, MarketInputs(bars=bars))
    borrow = result.ledger[result.ledger["kind"] == "borrow"]
    assert len(borrow) == 9  # every bar from the fill (bar 1) to the last
    np.testing.assert_allclose(borrow["amount_usd"], -30_000 * 0.1 * HOUR_YEARS, rtol=1e-12)
    fill = result.ledger[result.ledger["kind"] == "fill"].iloc[0]
    assert fill["amount_usd"] == pytest.approx(30_000.0)  # the sale credits its proceeds
    assert result.metrics["borrow_paid_usd"] == pytest.approx(9 * 30_000 * 0.1 * HOUR_YEARS)
    assert_identity(result, 100_000)


def test_fees_are_charged_per_leg_at_their_own_rate():
    bars, futures = carry_market()
    terms = {"spot": {"taker_bps": 10.0}, "perp": {"taker_bps": 4.0},
             "future": {"taker_bps": 3.0}}
    script = [(0, "spot", 1.0), (0, "perp", -1.0), (0, "BTC-02JAN24", -1.0)]
    result = run(scripted(script, terms=terms),
                 MarketInputs(bars=bars, perp=bars, futures=futures))
    fees = result.ledger[result.ledger["kind"] == "fee"].set_index("instrument")
    price = {"spot": 40_000.0, "perp": 40_000.0, "BTC-02JAN24": futures["price"].iloc[1]}
    for name, bps in (("spot", 10.0), ("perp", 4.0), ("BTC-02JAN24", 3.0)):
        assert fees.loc[name, "amount_usd"] == pytest.approx(-bps / 1e4 * price[name])
    assert_identity(result, 100_000)


def test_an_order_beyond_the_margin_is_refused():
    bars = flat_bars(np.full(10, 40_000.0))
    # 30 BTC perp = 1.2M notional needs 120k at 10x: more than the 100k account
    result = run(scripted([(0, "perp", 30.0)], instrument="perp"),
                 MarketInputs(bars=bars, perp=bars))
    assert result.metrics["refusals"] == {"margin": 1}
    assert result.ledger.empty


@pytest.mark.parametrize("runonce,preload", [(True, True), (False, True), (False, False)])
def test_same_ledger_in_every_run_mode_and_on_repeat(runonce, preload):
    bars, futures = carry_market()
    funding = pd.DataFrame({"ts": bars["ts"][bars["ts"].dt.hour % 8 == 0].iloc[1:],
                            "rate_8h": 1e-4, "interval_h": 8.0})
    script = [(0, "spot", 1.0), (0, "BTC-02JAN24", -1.0), (5, "perp", -0.5),
              (20, "perp", 0.0)]
    inputs = MarketInputs(bars=bars, perp=bars, futures=futures, funding=funding)
    reference = run(scripted(script), inputs)
    again = run(scripted(script, runonce=runonce, preload=preload), inputs)
    pd.testing.assert_frame_equal(reference.ledger, again.ledger)
    pd.testing.assert_frame_equal(reference.equity, again.equity)
    assert set(reference.ledger["kind"]) == {"fill", "fee", "funding", "settlement"}
    assert_identity(again, 100_000)


def test_terms_from_toml_and_their_errors(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('bars = "bars.csv"\ninstrument = "perp"\npercent = 300\n'
                    "[terms.perp]\nleverage = 5\ntaker_bps = 4\n")
    config = RunConfig.from_toml(path)
    terms = config.resolved_terms()
    assert terms["perp"].leverage == 5 and terms["perp"].taker_bps == 4
    assert terms["future"].taker_bps == config.commission_bps  # the run's taker fee
    assert config.to_dict()["terms"] == {"perp": {"leverage": 5, "taker_bps": 4}}
    from plumbing.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown term perp.leverag"):
        RunConfig(bars="b.csv", terms={"perp": {"leverag": 5}})
    with pytest.raises(ConfigError, match="unknown instrument kind 'perps'"):
        RunConfig(bars="b.csv", terms={"perps": {"leverage": 5}})
    with pytest.raises(ConfigError, match="mmr < 1 / leverage"):
        RunConfig(bars="b.csv", terms={"perp": {"leverage": 50, "mmr": 0.05}})
    with pytest.raises(ConfigError, match="percent <= 500"):
        RunConfig(bars="b.csv", instrument="perp", percent=600,
                  terms={"perp": {"leverage": 5}})


def test_trading_the_perp_needs_perp_prices():
    from plumbing.errors import ConfigError

    bars = flat_bars(np.full(5, 40_000.0))
    with pytest.raises(ConfigError, match="instrument 'perp' has no prices"):
        run(scripted([], instrument="perp"), MarketInputs(bars=bars))


@pytest.mark.realdata
def test_daily_optionsdx_futures_fill_only_at_their_next_snapshot(real):
    from feeds.derivs import load_futures
    from feeds.loaders import load_bars

    bars = load_bars(real("ohlcv/Bitstamp_BTCUSD_1h.csv.gz")).to_pandas()
    bars = bars[(bars["ts"] >= "2022-03-01") & (bars["ts"] < "2022-03-11")]
    bars = bars.reset_index(drop=True)
    futures = load_futures(real("options/optionsdx_btc_eod/btc_eod_202203.txt.gz"))
    table = futures.to_pandas()
    name = "BTC-25MAR22"
    quotes = table[table["instrument"] == name].set_index("ts")["price"]
    # decide at the close of the 13:00 bar on 2022-03-03; OptionsDX snapshots are taken
    # at 00:00 New York (05:00 UTC in March before the DST change)
    decide = int(np.flatnonzero(bars["ts"] == pd.Timestamp("2022-03-03 13:00", tz="UTC"))[0])
    result = run(scripted([(decide, "spot", 1.0), (decide, name, -1.0)]),
                 MarketInputs(bars=bars, futures=futures))
    fills = result.ledger[result.ledger["kind"] == "fill"].set_index("instrument")
    next_quote = quotes[quotes.index > pd.Timestamp("2022-03-03 14:00", tz="UTC")].index[0]
    assert next_quote.floor("h") == pd.Timestamp("2022-03-04 05:00", tz="UTC")
    # the spot leg fills at the next bar's open; the future waits for its next snapshot,
    # in the bar that contains it, at that snapshot's price
    assert fills.loc["spot", "ts"] == pd.Timestamp("2022-03-03 15:00", tz="UTC")
    assert fills.loc[name, "ts"] == next_quote.floor("h") + pd.Timedelta(hours=1)
    assert fills.loc[name, "price"] == quotes[next_quote]
    assert_identity(result, 100_000)

"""The input registry: one spec per kind drives config, CLI, loading, delays, coverage.

Hand-made market: 72 hourly bars from 2024-01-01 00:00 (bar ``k`` closes at
``k + 1`` h), funding every 8 h from 08:00, a dated future quoted every 4 h.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import backtrader as bt
import click
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from click.testing import CliRunner

from gammabt.cli import _build_config, _run_options, main
from gammabt.config import RunConfig
from gammabt.inputs import (
    DEALERS,
    INPUT_SPECS,
    InputSpec,
    format_duration,
    merge_files,
    with_available_at,
)
from gammabt.run import build_legs, input_coverage, load_inputs, prepare, run
from indicators import gamma
from plumbing.errors import ConfigError, DataError
from tests.data.hand_made import flat_bars

N = 72
START = pd.Timestamp("2024-01-01", tz="UTC")
HOUR = pd.Timedelta("1h")


def _iso(stamps) -> list[str]:
    return [pd.Timestamp(t).isoformat() for t in stamps]


@pytest.fixture
def market(tmp_path) -> dict[str, str]:
    """Paths of the hand-made bars, funding and futures files."""
    bars = tmp_path / "bars.parquet"
    flat_bars(40_000.0 + 10.0 * np.arange(N)).to_parquet(bars)
    fund_ts = pd.date_range(START + 8 * HOUR, periods=8, freq="8h")
    funding = tmp_path / "funding.csv"
    pd.DataFrame({"ts": _iso(fund_ts), "rate_8h": 1e-4 * np.arange(1, 9)}).to_csv(
        funding, index=False)
    fut_ts = pd.date_range(START + 2 * HOUR, periods=17, freq="4h")
    futures = tmp_path / "futures.csv"
    pd.DataFrame({"ts": _iso(fut_ts), "expiry": "2024-03-29T08:00:00+00:00",
                  "price": 41_000.0 + np.arange(17)}).to_csv(futures, index=False)
    return {"bars": str(bars), "funding": str(funding), "futures": str(futures)}


def _first(values: np.ndarray) -> int:
    return int(np.flatnonzero(np.isfinite(values))[0])


# ------------------------------------------------------------------ delays in the feed
def test_a_delayed_funding_input_appears_exactly_the_delay_later(market):
    base = prepare(RunConfig(**market)).legs[0][1].lines
    late = prepare(RunConfig(**market, delays={"funding": "2h"})).legs[0][1].lines
    # the 08:00 rate is in force from the bar closing at 08:00 (index 7), two bars later
    assert _first(base["funding_ann"]) == 7
    assert _first(late["funding_ann"]) == 9
    np.testing.assert_array_equal(late["funding_ann"][2:], base["funding_ann"][:-2])
    # the other inputs do not move
    np.testing.assert_array_equal(late["basis_ann"], base["basis_ann"])


def test_a_delayed_futures_input_moves_the_basis_and_the_future_leg(market):
    base = prepare(RunConfig(**market))
    late = prepare(RunConfig(**market, delays={"futures": "3h"}))
    b, lt = base.legs[0][1].lines, late.legs[0][1].lines
    assert _first(b["basis_ann"]) == 1  # the 02:00 quote, at the bar closing at 02:00
    assert _first(lt["basis_ann"]) == 4
    np.testing.assert_array_equal(lt["basis_ann"][3:], b["basis_ann"][:-3])
    np.testing.assert_array_equal(lt["funding_ann"], b["funding_ann"])
    fut_b = dict((leg.kind, arrays) for leg, arrays in base.legs)["future"].lines
    fut_l = dict((leg.kind, arrays) for leg, arrays in late.legs)["future"].lines
    # a quote enters its leg when published: fresh and close move by the delay too
    assert _first(np.where(fut_l["fresh"] > 0, 1.0, np.nan)) == \
        _first(np.where(fut_b["fresh"] > 0, 1.0, np.nan)) + 3
    np.testing.assert_array_equal(fut_l["close"][3:], fut_b["close"][:-3])


class _Recorder(bt.Strategy):
    def __init__(self) -> None:
        self.seen: list[tuple[pd.Timestamp, float, float]] = []

    def next(self) -> None:
        close = pd.Timestamp(self.data.datetime.datetime(0), tz="UTC")
        self.seen.append((close, self.data.funding_ann[0], self.data.basis_ann[0]))


@pytest.mark.parametrize("runonce,preload", [(True, True), (False, True), (False, False)])
def test_a_strategy_never_sees_a_value_before_its_available_at(market, runonce, preload):
    config = RunConfig(**market, delays={"funding": "90min", "futures": "30min"},
                       runonce=runonce, preload=preload)
    cerebro = bt.Cerebro(stdstats=False, runonce=runonce, preload=preload)
    cerebro.adddata(build_legs(config, prepare(config))[0], name="spot")
    cerebro.addstrategy(_Recorder)
    seen = cerebro.run()[0].seen
    first_funding = START + 8 * HOUR + pd.Timedelta("90min")
    first_quote = START + 2 * HOUR + pd.Timedelta("30min")
    for close, funding, basis in seen:
        assert np.isnan(funding) or close >= first_funding
        assert np.isnan(basis) or close >= first_quote
    # and from the first bar close at or after it, the value is there
    assert next(c for c, f, _ in seen if np.isfinite(f)) == START + 10 * HOUR
    assert next(c for c, _, b in seen if np.isfinite(b)) == START + 3 * HOUR


@pytest.mark.realdata
def test_the_deribit_hourly_chain_is_used_one_hour_after_its_label(real):
    chain = real("options/deribit_hourly_chain_2026/full_data_sample.csv.gz")
    spot = real("ohlcv/binance_BTCUSDT_1h_2023-2026.csv.gz")
    config = RunConfig(bars=str(spot), chain=(str(chain),), spot=str(spot),
                       start="2026-01-22", end="2026-01-26")
    inputs = load_inputs(config)
    spot_arrays = prepare(config, inputs).legs[0][1]
    close = pd.to_datetime(spot_arrays.close_us, unit="us", utc=True)
    gex = pd.Series(spot_arrays.lines["gex"], index=close)
    first_label = inputs.tables["chain"].to_pandas()["ts"].min()
    assert first_label.minute == 0  # labelled with the hour
    # taken up to 49 min after its label: not usable by the bar closing at the label
    assert np.isnan(gex[first_label])
    assert np.isfinite(gex[first_label + HOUR])
    assert inputs.delays["chain"] == "1h"
    assert any("chain 1h" in n for n in inputs.notes)
    # the same snapshot with the delay overridden to 0 is used at its label (the
    # old --chain-delay spelling is an alias of --delay chain=...)
    for now in (config.replace(chain_delay="0s"), config.replace(delays={"chain": "0s"})):
        lines = prepare(now).legs[0][1].lines
        assert np.isfinite(pd.Series(lines["gex"], index=close)[first_label])


# ------------------------------------------------------------------ several files
def test_a_chain_given_twice_counts_once_and_a_conflicting_copy_is_refused(tmp_path):
    from feeds.synthetic import simulate

    m = simulate("calm", days=1, seed=0)
    m.write(tmp_path / "m")
    chain = tmp_path / "m" / "chain.parquet"
    bars = tmp_path / "m" / "bars.parquet"
    once = load_inputs(RunConfig(bars=str(bars), chain=str(chain)))
    twice = load_inputs(RunConfig(bars=str(bars), chain=(str(chain), str(chain))))
    assert twice.tables["chain"].num_rows == once.tables["chain"].num_rows
    pd.testing.assert_frame_equal(twice.summary, once.summary)
    frame = pd.read_parquet(chain)
    last = frame["ts"] == frame["ts"].max()
    frame.loc[last, "open_interest"] *= 2  # the same snapshot, other numbers
    other = tmp_path / "other.parquet"
    frame.to_parquet(other)
    with pytest.raises(DataError, match="chain files disagree") as err:
        load_inputs(RunConfig(bars=str(bars), chain=(str(chain), str(other))))
    assert str(chain) in str(err.value) and str(other) in str(err.value)


def test_overlapping_funding_files_merge_and_disagreeing_ones_are_refused(market, tmp_path):
    frame = pd.read_csv(market["funding"])
    first, second = tmp_path / "f1.csv", tmp_path / "f2.csv"
    frame.iloc[:5].to_csv(first, index=False)
    frame.iloc[3:].to_csv(second, index=False)  # rows 3 and 4 in both
    merged = load_inputs(RunConfig(bars=market["bars"], funding=(str(first), str(second))))
    single = load_inputs(RunConfig(bars=market["bars"], funding=market["funding"]))
    assert merged.tables["funding"].equals(single.tables["funding"])
    frame.loc[4, "rate_8h"] = 9e-4
    frame.iloc[3:].to_csv(second, index=False)
    with pytest.raises(DataError, match="funding files disagree") as err:
        load_inputs(RunConfig(bars=market["bars"], funding=(str(first), str(second))))
    assert f"{first} and {second}" in str(err.value)


def test_bars_files_are_merged_like_any_other_input(market, tmp_path):
    bars = pd.read_parquet(market["bars"])
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    bars.iloc[:40].to_parquet(a)
    bars.iloc[30:].to_parquet(b)
    inputs = load_inputs(RunConfig(bars=(str(a), str(b))))
    assert len(inputs.bars) == N
    np.testing.assert_array_equal(inputs.bars["close"], bars["close"])


def test_events_repeated_inside_one_file_stay_and_overlap_across_files_counts_once():
    spec = INPUT_SPECS["liquidations"]
    ts = pd.to_datetime(["2024-01-01 01:00", "2024-01-01 01:00", "2024-01-01 02:00"],
                        utc=True).as_unit("us")
    events = pa.table({"ts": ts, "side": ["long", "long", "short"],
                       "price": [1.0, 1.0, 2.0], "size": [0.5, 0.5, 0.1]})
    stamped = with_available_at(events, pd.Timedelta(0))
    later = pa.table({"ts": ts[1:].append(pd.DatetimeIndex([ts[2] + HOUR])),
                      "side": ["long", "short", "short"], "price": [1.0, 2.0, 3.0],
                      "size": [0.5, 0.1, 0.2]})
    merged = merge_files(spec, [("a", stamped), ("b", with_available_at(later,
                                                                          pd.Timedelta(0)))])
    # two identical events in file a (both kept), one of them and the 02:00 event in b
    assert merged.num_rows == 4
    assert merged["price"].to_pylist() == [1.0, 1.0, 2.0, 3.0]


# ------------------------------------------------------------------ config and CLI
def test_delays_from_toml_and_the_command_line(market, tmp_path):
    (tmp_path / "run.toml").write_text(
        f'bars = "{market["bars"]}"\nfunding = ["{market["funding"]}"]\n'
        '[delays]\nfunding = "1h"\nchain = "2h"\n')
    config = RunConfig.from_toml(tmp_path / "run.toml")
    assert config.funding == (market["funding"],)
    assert config.delay_overrides() == {"chain": "2h", "funding": "1h"}
    merged = _build_config(tmp_path / "run.toml", (), (),
                           {"delays": ("funding=30min",), "chain_delay": None})
    assert merged.delay_overrides() == {"chain": "2h", "funding": "30min"}
    alias = _build_config(None, (), (), {"bars": Path(market["bars"]), "chain_delay": "0s"})
    assert alias.delay_overrides() == {"chain": "0s"} and alias.chain_delay == "0s"


@pytest.mark.parametrize("delays,message", [({"bars": "1h"}, "takes no delay"),
                                            ({"fundng": "1h"}, "did you mean 'funding'"),
                                            ({"funding": "soon"}, "not a duration"),
                                            ({"oi": "-1h"}, "negative")])
def test_bad_delays_are_refused_by_name(delays, message):
    with pytest.raises(ConfigError, match=message):
        RunConfig(bars="b.csv", delays=delays)


def test_one_market_folder_only():
    with pytest.raises(ConfigError, match="market given 2 times"):
        RunConfig(market=("a", "b"))


def test_dealer_conventions_are_listed_once():
    assert DEALERS == ("auto", *gamma.DEALERS)
    assert gamma.DEALERS[0] == "long_calls_short_puts"
    with pytest.raises(ConfigError, match="unknown dealer"):
        RunConfig(bars="b.csv", dealer="both")


def test_format_duration():
    assert [format_duration(pd.Timedelta(v)) for v in ("0s", "1h", "90min", "1D", "1.5s")] \
        == ["0s", "1h", "1h30min", "1d", "1s500000us"]


def test_a_cli_run_records_the_delays_it_used(tmp_path, capsys):
    from feeds.synthetic import simulate

    simulate("calm", days=3, seed=1).write(tmp_path / "m")
    results = tmp_path / "r"
    assert main(["run", "--market", str(tmp_path / "m"), "--delay", "funding=1h",
                 "--chain-delay", "2h", "--results", str(results)]) == 0
    out = capsys.readouterr().out
    assert "publication delay: chain 2h, funding 1h" in " ".join(out.split())
    folder = next(p for p in results.iterdir() if (p / "metrics.json").is_file())
    config = json.loads((folder / "config.json").read_text())["config"]
    metrics = json.loads((folder / "metrics.json").read_text())
    assert config["delays"] == {"chain": "2h", "funding": "1h"}
    assert metrics["delays"]["chain"] == "2h" and metrics["delays"]["oi"] == "0s"
    assert metrics["coverage"]["funding"]["delay"] == "1h"


# ------------------------------------------------------------------ a new input kind
def _load_dvol(path: Path, ctx) -> pa.Table:
    frame = pd.read_csv(path)
    return pa.table({"ts": pd.to_datetime(frame["ts"], utc=True).astype("datetime64[us, UTC]"),
                     "value": frame["value"].astype(float)})


DVOL = InputSpec("dvol", "A volatility index: ts,value CSV; repeatable.", _load_dvol,
                 delay=lambda path: pd.Timedelta("30min"), delay_doc="30min",
                 values=("value",))


@pytest.fixture
def dvol(monkeypatch, market, tmp_path) -> tuple[str, str]:
    """The throw-away kind registered for this test only, and two overlapping files."""
    monkeypatch.setitem(INPUT_SPECS, "dvol", DVOL)
    stamps = pd.date_range(START + 5 * HOUR, periods=10, freq="6h")
    frame = pd.DataFrame({"ts": _iso(stamps), "value": 50.0 + np.arange(10)})
    a, b = tmp_path / "dvol_a.csv", tmp_path / "dvol_b.csv"
    frame.iloc[:6].to_csv(a, index=False)
    frame.iloc[4:].to_csv(b, index=False)
    return str(a), str(b)


def test_a_new_input_kind_needs_only_its_spec(dvol, market, tmp_path):
    a, b = dvol
    captured = {}

    @click.command()
    @_run_options
    def probe(config_file, params, terms, prepared_dir, **options):
        captured["config"] = _build_config(config_file, params, terms, options, prepared_dir)

    runner = CliRunner()
    assert "--dvol" in runner.invoke(probe, ["--help"]).output
    result = runner.invoke(probe, ["--bars", market["bars"], "--dvol", a, "--dvol", b,
                                   "--delay", "dvol=1h"])
    assert result.exit_code == 0, result.output
    config = captured["config"]
    assert config.dvol == (a, b) and config.delay_overrides() == {"dvol": "1h"}
    # a TOML key too, resolved against the file's folder like every input
    (tmp_path / "run.toml").write_text(f'bars = "{market["bars"]}"\n'
                                       'dvol = ["dvol_a.csv", "dvol_b.csv"]\n')
    assert RunConfig.from_toml(tmp_path / "run.toml").dvol == (a, b)
    # loaded (the overlap counted once), delayed, joined as of each bar close
    inputs = load_inputs(config)
    assert inputs.tables["dvol"].num_rows == 10 and inputs.delays["dvol"] == "1h"
    prepared = prepare(config, inputs)
    line = prepared.legs[0][1].lines["dvol"]
    assert _first(line) == 5  # 05:00 + 1h: the bar closing at 06:00
    assert line[5] == 50.0 and line[11] == 51.0
    default = prepare(RunConfig(bars=market["bars"], dvol=a)).legs[0][1].lines["dvol"]
    assert _first(default) == 5  # 05:00 + 30 min (its default) -> the 06:00 close too
    assert np.isnan(line[4])
    # reported in the coverage and kept in the prepared manifest
    coverage = input_coverage(prepared, config, 0, N)
    assert coverage["dvol"]["delay"] == "1h" and coverage["dvol"]["first"] == \
        (START + 6 * HOUR).isoformat()
    assert run(config, prepared).metrics["coverage"]["dvol"]["share"] > 0.9
    from gammabt.prepared import read_manifest, save_prepared

    folder = save_prepared(prepared, tmp_path / "prepared")
    manifest = read_manifest(folder)
    assert manifest["market"]["dvol"] == [a, b] and manifest["delays"]["dvol"] == "1h"
    with pytest.raises(ConfigError, match="--dvol given with --prepared"):
        _build_config(None, (), (), {"dvol": (Path(a),)}, prepared_dir=folder)


def test_the_new_kind_refuses_files_that_disagree(dvol, market, tmp_path):
    a, b = dvol
    frame = pd.read_csv(b)
    frame.loc[0, "value"] = -1.0
    frame.to_csv(b, index=False)
    with pytest.raises(DataError, match="dvol files disagree"):
        load_inputs(RunConfig(bars=market["bars"], dvol=(a, b)))


def test_a_kind_may_declare_its_own_staleness(monkeypatch, dvol, market):
    a, _ = dvol
    monkeypatch.setitem(INPUT_SPECS, "dvol", dataclasses.replace(DVOL, staleness="2h"))
    line = prepare(RunConfig(bars=market["bars"], dvol=a)).legs[0][1].lines["dvol"]
    # values every 6 h, usable 30 min after their stamp, for 2 h: 3 bars of 6 in force
    assert np.isfinite(line[5:11]).tolist() == [True, True, False, False, False, False]


def test_a_futures_file_read_from_a_chain_takes_the_chain_format_delay(tmp_path, market):
    from gammabt.inputs import futures_delay
    from tests.data.loader_fixtures import deribit_hourly_frame, write_csv

    hourly = write_csv(tmp_path / "hourly.csv", deribit_hourly_frame())
    assert futures_delay(hourly) == HOUR
    assert futures_delay(Path(market["futures"])) == pd.Timedelta(0)


def test_every_market_table_named_by_a_spec_exists():
    from feeds.sim.market import OPTIONAL_TABLES, TABLES

    named = {s.market_table for s in INPUT_SPECS.values() if s.market_table}
    assert named <= set(TABLES) | set(OPTIONAL_TABLES)


def test_the_report_page_draws_snapshots_from_when_they_were_usable(tmp_path):
    from feeds.synthetic import simulate
    from gammabt.runpage import _usable

    simulate("calm", days=1, seed=0).write(tmp_path / "m")
    inputs = load_inputs(RunConfig(market=str(tmp_path / "m"), delays={"chain": "1h"}))
    assert (inputs.summary["available_at"] - inputs.summary["ts"] == HOUR).all()
    for frame in (inputs.summary, inputs.strikes):
        assert (_usable(frame)["ts"] == frame["available_at"]).all()


def test_a_prepared_market_keeps_its_delays(market, tmp_path):
    from gammabt.prepared import load_prepared, save_prepared

    config = RunConfig(**market, delays={"funding": "1h"})
    folder = save_prepared(prepare(config), tmp_path / "p")
    loaded = load_prepared(folder)
    assert loaded.delays["funding"] == "1h" and loaded.delays["futures"] == "0s"
    assert run(config, loaded).metrics["delays"]["funding"] == "1h"
    with pytest.raises(ConfigError, match="drop --delay or prepare again"):
        run(config.replace(delays={"funding": "2h"}), loaded)


def test_a_file_replaces_the_simulated_markets_table_of_its_kind(market, tmp_path):
    from feeds.synthetic import simulate

    simulate("calm", days=1, seed=0).write(tmp_path / "m")
    sim = load_inputs(RunConfig(market=str(tmp_path / "m")))
    mixed = load_inputs(RunConfig(market=str(tmp_path / "m"), funding=market["funding"]))
    assert mixed.tables["funding"].num_rows == 8 != sim.tables["funding"].num_rows
    assert mixed.tables["chain"].equals(sim.tables["chain"])


class _DvolReader(bt.Strategy):
    def __init__(self) -> None:
        self.seen: list[tuple[pd.Timestamp, float]] = []

    def next(self) -> None:
        close = pd.Timestamp(self.data.datetime.datetime(0), tz="UTC")
        self.seen.append((close, self.data.input_value("dvol")))


@pytest.mark.parametrize("runonce,preload", [(True, True), (False, False)])
def test_a_strategy_reads_the_new_kind_point_in_time(dvol, market, runonce, preload):
    a, b = dvol
    config = RunConfig(bars=market["bars"], dvol=(a, b), delays={"dvol": "1h"},
                       start="2024-01-01T03:00")
    prepared = prepare(config)
    cerebro = bt.Cerebro(stdstats=False, runonce=runonce, preload=preload)
    feed = build_legs(config, prepared)[0]
    cerebro.adddata(feed, name="spot")
    cerebro.addstrategy(_DvolReader)
    seen = cerebro.run()[0].seen
    line = prepared.legs[0][1].lines["dvol"]
    np.testing.assert_array_equal([v for _, v in seen], line[3:])  # the window starts at 3
    first = next(c for c, v in seen if np.isfinite(v))
    assert first == START + 6 * HOUR  # stamped 05:00, published 06:00
    with pytest.raises(ConfigError, match="did you mean 'dvol'"):
        feed.input_value("dvl")


def test_delayed_open_interest_and_liquidations_reach_the_map_later(tmp_path):
    from feeds.synthetic import simulate

    simulate("calm", days=2, seed=0).write(tmp_path / "m")

    def liq(**delays):
        return prepare(RunConfig(market=str(tmp_path / "m"), delays=delays)
                       ).legs[0][1].lines["liq_below_usd"]

    base, late_oi, late_liq = liq(), liq(oi="3h"), liq(liquidations="3h")
    assert _first(late_oi) == _first(base) + 3
    assert not np.array_equal(late_liq, base, equal_nan=True)

"""Bad input gets one readable line, exit 2, and nothing written (a growing corpus)."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from feeds.synthetic import simulate
from gammabt.cli import main


@pytest.fixture(scope="module")
def market_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("m") / "calm"
    simulate("calm", days=2, seed=1).write(folder)
    return folder


def _damage(src: Path, dst: Path, how: str) -> Path:
    import shutil

    shutil.copytree(src, dst)
    if how == "missing table":
        (dst / "chain.parquet").unlink()
    elif how == "truncated table":
        data = (dst / "bars.parquet").read_bytes()
        (dst / "bars.parquet").write_bytes(data[: len(data) // 2])
    elif how == "foreign table":
        (dst / "funding.parquet").write_bytes((dst / "bars.parquet").read_bytes())
    elif how == "bad metadata":
        (dst / "market.json").write_text("{")
    return dst


def _bars_csv(path: Path, body: str) -> Path:
    path.write_text("ts,open,high,low,close,volume\n" + body)
    return path


CASES = {
    "truncated gzip": lambda d: _write(d / "bars.csv.gz", gzip.compress(b"ts,open\n" * 500)[:40]),
    "not gzip at all": lambda d: _write(d / "bars.csv.gz", b"\x1f\x8b not really"),
    "corrupt parquet": lambda d: _write(d / "bars.parquet", b"PAR1" + b"\0" * 64),
    "empty csv": lambda d: _write(d / "bars.csv", b""),
    "header only": lambda d: _bars_csv(d / "bars.csv", ""),
    "nan price": lambda d: _bars_csv(d / "bars.csv", "2024-01-01T00:00Z,1,2,0.5,nan,1\n"
                                     "2024-01-01T01:00Z,1,2,0.5,1,1\n"),
    "negative price": lambda d: _bars_csv(d / "bars.csv", "2024-01-01T00:00Z,1,2,0.5,-1,1\n"
                                          "2024-01-01T01:00Z,1,2,0.5,1,1\n"),
    "naive timestamps": lambda d: _bars_csv(d / "bars.csv", "2024-01-01 00:00,1,2,0.5,1,1\n"
                                            "2024-01-01 01:00,1,2,0.5,1,1\n"),
}


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _assert_one_line_error(capsys, code: int, *needles: str) -> str:
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("gammabt: error:"), err
    for needle in needles:
        assert needle in err, err
    return err


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_bars_file(case, tmp_path, capsys):
    path = CASES[case](tmp_path)
    results = tmp_path / "results"
    code = main(["run", "--bars", str(path), "--results", str(results)])
    _assert_one_line_error(capsys, code, path.name)
    assert not results.exists() or not any(results.iterdir())


@pytest.mark.parametrize("how", ["missing table", "truncated table", "foreign table",
                                 "bad metadata"])
def test_damaged_market_folder(how, market_dir, tmp_path, capsys):
    folder = _damage(market_dir, tmp_path / "m", how)
    results = tmp_path / "results"
    code = main(["run", "--market", str(folder), "--results", str(results)])
    _assert_one_line_error(capsys, code, "gammabt simulate")
    assert not results.exists() or not any(results.iterdir())


@pytest.mark.parametrize("toml,key", [
    ('cash = "lots"', "cash"),
    ("percent = true", "percent"),
    ('zscore_window = 2.5', "zscore_window"),
    ("borrow = 1", "borrow"),
    ('instrument = "future"', "instrument"),
    ("[params]\nlookback = true", "lookback"),
    ("[params]\nmax_hold = 2.5", "max_hold"),
    ("[params]\nlookback = -5", "lookback"),
    ("[terms.perp]\nleverage = 0.5", "leverage"),
    ("[terms.perp]\nmmr = inf", "mmr"),
    ('terms = "cheap"', "terms"),
])
def test_bad_toml_values_name_the_key(toml, key, tmp_path, capsys):
    path = tmp_path / "run.toml"
    path.write_text(f'bars = "bars.csv"\n{toml}\n')
    code = main(["run", "--config", str(path), "--results", str(tmp_path / "r")])
    _assert_one_line_error(capsys, code, key)
    assert not (tmp_path / "r").exists()


def test_toml_date_literals_are_dates(tmp_path):
    from gammabt.config import RunConfig

    path = tmp_path / "run.toml"
    path.write_text('bars = "bars.csv"\nstart = 2022-01-01\nend = 2022-02-01T00:00:00Z\n')
    config = RunConfig.from_toml(path)
    assert config.start == "2022-01-01T00:00:00+00:00"
    assert config.end == "2022-02-01T00:00:00+00:00"


@pytest.mark.parametrize("argv,flag", [
    (["liq", "--bars", "{bars}", "--out", "{bars}"], "--out"),
    (["liq", "--bars", "{bars}", "--map-out", "{bars}"], "--map-out"),
    (["gex", "--chain", "{bars}", "--out", "{bars}"], "--out"),
    (["basis", "--futures", "{bars}", "--spot", "{other}", "--out", "{other}"], "--out"),
])
def test_an_output_that_is_an_input_is_refused_and_the_input_kept(argv, flag, tmp_path,
                                                                  capsys):
    bars = _bars_csv(tmp_path / "bars.csv", "2024-01-01T00:00Z,1,2,0.5,1,1\n"
                     "2024-01-01T01:00Z,1,2,0.5,1,1\n")
    other = _bars_csv(tmp_path / "other.csv", "2024-01-01T00:00Z,1,2,0.5,1,1\n")
    before = bars.read_bytes(), other.read_bytes()
    code = main([a.format(bars=bars, other=other) for a in argv])
    _assert_one_line_error(capsys, code, flag, "is the")
    assert (bars.read_bytes(), other.read_bytes()) == before


def _hourly_bars(path: Path, start: str, n: int) -> Path:
    import numpy as np
    import pandas as pd

    ts = pd.date_range(start, periods=n, freq="1h", tz="UTC")
    close = 100.0 + np.sin(np.arange(n) / 5.0)
    pd.DataFrame({"ts": ts, "open": close, "high": close + 1, "low": close - 1,
                  "close": close, "volume": 1.0}).to_csv(path, index=False,
                                                          date_format="%Y-%m-%dT%H:%M:%SZ")
    return path


def _funding(path: Path, start: str, n: int) -> Path:
    import pandas as pd

    ts = pd.date_range(start, periods=n, freq="8h", tz="UTC")
    pd.DataFrame({"ts": ts, "rate_8h": 1e-4}).to_csv(path, index=False,
                                                      date_format="%Y-%m-%dT%H:%M:%SZ")
    return path


def test_an_input_that_never_overlaps_the_bars_is_refused(tmp_path, capsys):
    bars = _hourly_bars(tmp_path / "bars.csv", "2024-01-01", 48)
    funding = _funding(tmp_path / "funding.csv", "2020-01-01", 30)
    results = tmp_path / "results"
    code = main(["run", "--bars", str(bars), "--funding", str(funding),
                 "--results", str(results)])
    _assert_one_line_error(capsys, code, "funding.csv", "covers none of the run's bars")
    assert not results.exists() or not [p for p in results.iterdir() if p.is_dir()]


def test_partial_coverage_and_zero_trades_are_said(tmp_path, capsys):
    import json

    bars = _hourly_bars(tmp_path / "bars.csv", "2024-01-01", 96)
    funding = _funding(tmp_path / "funding.csv", "2024-01-03T16:00Z", 3)  # the last day
    results = tmp_path / "results"
    assert main(["run", "--bars", str(bars), "--funding", str(funding),
                 "--results", str(results)]) == 0
    err = capsys.readouterr().err
    assert "funding covers only" in err and "no order was placed" in err
    [folder] = [p for p in results.iterdir() if p.is_dir()]
    metrics = json.loads((folder / "metrics.json").read_text())
    cov = metrics["coverage"]["funding"]
    # stamps 16:00 on the 3rd, 00:00 and 08:00 on the 4th, each in force for 26 h at most:
    # the bars closing from 16:00 on the 3rd to the last close (00:00 on the 5th): 8 + 24 + 1
    assert cov["first"] == "2024-01-03T16:00:00+00:00"
    assert cov["share"] == pytest.approx(33 / 96)
    assert len(metrics["warnings"]) == 2


# -- run and strategy parameters: NaN, infinity, zero or negative where meaningless ----
# (flags, the key the message must name); the same values are refused from TOML below.
CLI_VALUES = [
    (["--cash", "nan"], "cash"),
    (["--cash", "0"], "cash"),
    (["--cash", "-inf"], "cash"),
    (["--cash", "inf"], "cash"),
    (["--percent", "inf"], "percent"),
    (["--percent", "0"], "percent"),
    (["--commission-bps", "nan"], "commission_bps"),
    (["--slippage-bps", "-1"], "slippage_bps"),
    (["--param", "lookback=0"], "lookback"),
    (["--param", "lookback=-3"], "lookback"),
    (["--param", "momentum_min=nan"], "momentum_min"),
    (["--param", "momentum_min=inf"], "momentum_min"),
    (["--param", "nonsense=1"], "nonsense"),
    (["--strategy", "basis_dislocation", "--param", "window=0"], "window"),
    (["--strategy", "basis_dislocation", "--param", "signal=nan"], "signal"),
    (["--strategy", "liquidation_cascade", "--param", "band=0"], "band"),
    (["--strategy", "funding_carry", "--param", "entry_apr=inf"], "entry_apr"),
    (["--strategy", "vol_shock", "--param", "stop=nan"], "stop"),
    (["--strategy", "vol_shock", "--param", "max_hold=-1"], "max_hold"),
    (["--max-staleness", "-1h"], "max_staleness"),
    (["--max-staleness", "nan"], "max_staleness"),
    (["--freq", "0h"], "freq"),
    (["--freq", "nan"], "freq"),
    (["--chain-delay", "nan"], "chain_delay"),
    (["--front-min-dte", "nan"], "front_min_dte"),
    (["--front-min-dte", "-1"], "front_min_dte"),
    (["--from", "nan"], "start"),
    (["--term", "perp.leverage=0"], "perp.leverage"),
    (["--term", "perp.leverage=nan"], "perp.leverage"),
    (["--term", "perp.mmr=inf"], "perp.mmr"),
    (["--term", "spot.taker_bps=-1"], "spot.taker_bps"),
    (["--term", "future.borrow_apr=nan"], "future.borrow_apr"),
]


@pytest.mark.parametrize("flags,key", CLI_VALUES, ids=lambda v: " ".join(v)
                         if isinstance(v, list) else v)
def test_meaningless_run_values_on_the_command_line(flags, key, tmp_path, capsys):
    bars = _hourly_bars(tmp_path / "bars.csv", "2024-01-01", 48)
    results = tmp_path / "results"
    code = main(["run", "--bars", str(bars), "--results", str(results), *flags])
    err = _assert_one_line_error(capsys, code, "command line", f"'{key}'", "Fix:")
    assert "column 'params'" not in err
    assert key == "window" or "column 'window'" not in err
    assert not results.exists()


TOML_VALUES = [
    ("cash = nan", "cash"),
    ("percent = -inf", "percent"),
    ("slippage_bps = inf", "slippage_bps"),
    ("zscore_window = 0", "zscore_window"),
    ("zscore_window = 1", "zscore_window"),
    ("front_min_dte = nan", "front_min_dte"),
    ('max_staleness = "-1h"', "max_staleness"),
    ('freq = "nan"', "freq"),
    ('chain_delay = "nan"', "chain_delay"),
    ('start = "nan"', "start"),
    ('label = "a/b"', "label"),
    ("[params]\nlookback = 0", "lookback"),
    ("[params]\nmomentum_min = nan", "momentum_min"),
    ("[terms.perp]\nleverage = 0", "perp.leverage"),
    ("[terms.spot]\nborrow_apr = inf", "spot.borrow_apr"),
]


@pytest.mark.parametrize("toml,key", TOML_VALUES)
def test_meaningless_run_values_in_toml(toml, key, tmp_path, capsys):
    bars = _hourly_bars(tmp_path / "bars.csv", "2024-01-01", 48)
    path = tmp_path / "run.toml"
    path.write_text(f'bars = "bars.csv"\n{toml}\n')
    results = tmp_path / "results"
    code = main(["run", "--config", str(path), "--results", str(results)])
    err = _assert_one_line_error(capsys, code, "run.toml", f"'{key}'", "Fix:")
    assert "column 'params'" not in err and "column 'window'" not in err
    assert not results.exists()
    assert bars.exists()


@pytest.mark.parametrize("label", ["../escape", "a/b", "a\\b", "[bold red]x[/]",
                                   "<script>alert(1)</script>", "x" * 65, ""])
def test_a_bad_label_is_refused_before_any_input_is_read(label, tmp_path, capsys):
    missing = tmp_path / "never_read.csv"  # the label is checked before the bars
    _hourly_bars(missing, "2024-01-01", 48)
    missing.write_text("not,a,bars,file\n")
    code = main(["run", "--bars", str(missing), "--label", label,
                 "--results", str(tmp_path / "results")])
    _assert_one_line_error(capsys, code, "--label", "Fix:")
    assert not (tmp_path / "results").exists()


# -- inputs that never overlap the bars (2020 data beside 2024 bars) ------------------
def _old_inputs(tmp_path: Path) -> dict[str, Path]:
    import pandas as pd

    def stamps(n: int, freq: str) -> list[str]:
        return [t.isoformat() for t in pd.date_range("2020-01-01", periods=n, freq=freq,
                                                       tz="UTC")]

    frames = {
        "chain": pd.DataFrame([{"ts": "2020-01-01T00:00:00+00:00",
                                "expiry": "2020-01-31T08:00:00+00:00", "strike": k,
                                "right": r, "open_interest": 10.0, "mark_iv": 0.6,
                                "underlying_price": 9_000.0}
                               for k in (8_000.0, 9_000.0, 10_000.0) for r in "CP"]),
        "futures": pd.DataFrame({"ts": stamps(3, "1h"), "expiry": "2020-03-27T08:00:00Z",
                                 "price": 9_000.0}),
        "funding": pd.DataFrame({"ts": stamps(3, "8h"), "rate_8h": 1e-4}),
        "oi": pd.DataFrame({"ts": stamps(6, "1h"), "oi_btc": 1_000.0}),
        "liquidations": pd.DataFrame({"ts": stamps(4, "1h"), "side": "long",
                                      "price": 9_000.0, "size": 1.0}),
        "barriers": pd.DataFrame({"ts": stamps(1, "1h"), "type": "down_in_put",
                                  "strike": 9_000.0, "barrier": 8_000.0,
                                  "expiry": "2020-03-27T08:00:00Z", "notional": 10.0,
                                  "dealer_side": -1.0}),
    }
    out = {}
    for role, frame in frames.items():
        out[role] = tmp_path / f"{role}_2020.csv"
        frame.to_csv(out[role], index=False)
    return out


DISJOINT = [
    (["run", "--chain", "{chain}", "--results", "{results}"], "chain"),
    (["run", "--futures", "{futures}", "--results", "{results}"], "futures"),
    (["run", "--funding", "{funding}", "--results", "{results}"], "funding"),
    (["run", "--oi", "{oi}", "--results", "{results}"], "oi"),
    (["run", "--liquidations", "{liquidations}", "--results", "{results}"], "liquidations"),
    (["run", "--barriers", "{barriers}", "--results", "{results}"], "barriers"),
    (["liq", "--oi", "{oi}", "--out", "{results}/lines.csv"], "oi"),
    (["liq", "--liquidations", "{liquidations}"], "liquidations"),
    (["basis", "--futures", "{futures}", "--spot", "{bars}", "--out", "{results}/b.csv"],
     "futures"),
    (["gex", "--chain", "{chain}", "--spot", "{bars}"], "chain"),
]


@pytest.mark.parametrize("argv,role", DISJOINT, ids=lambda v: " ".join(v[:2])
                         if isinstance(v, list) else v)
def test_an_input_outside_the_bars_is_refused(argv, role, tmp_path, capsys):
    bars = _hourly_bars(tmp_path / "bars.csv", "2024-01-01", 48)
    files = _old_inputs(tmp_path)
    results = tmp_path / "results"
    args = [a.format(results=results, bars=bars, **files) for a in argv]
    if "--bars" not in args and args[0] in ("run", "liq"):
        args[1:1] = ["--bars", str(bars)]
    code = main(args)
    _assert_one_line_error(capsys, code, f"{role}_2020.csv", "Fix:")
    assert not results.exists()


# -- the other commands' numeric options ------------------------------------------------
OTHER_VALUES = [
    (["simulate", "--freq", "nan", "--days", "1", "--out", "{out}"], "freq"),
    (["simulate", "--freq", "0min", "--days", "1", "--out", "{out}"], "freq"),
    (["simulate", "--days", "0", "--out", "{out}"], "days"),
    (["simulate", "--days", "-1", "--out", "{out}"], "days"),
    (["basis", "--futures", "{futures}", "--spot", "{bars}", "--tenors", "nan"], "tenors"),
    (["basis", "--futures", "{futures}", "--spot", "{bars}", "--tenors", "30,0"], "tenors"),
    (["study", "basis", "--futures", "{futures}", "--spot", "{bars}", "--z", "nan",
      "--out", "{out}"], "--z"),
    (["study", "basis", "--futures", "{futures}", "--spot", "{bars}", "--jump", "inf",
      "--out", "{out}"], "--jump"),
    (["study", "basis", "--futures", "{futures}", "--spot", "{bars}", "--window", "0",
      "--out", "{out}"], "--window"),
    (["study", "basis", "--futures", "{futures}", "--spot", "{bars}", "--boot", "0",
      "--out", "{out}"], "--boot"),
    (["study", "basis", "--futures", "{futures}", "--spot", "{bars}", "--horizons", "nan",
      "--out", "{out}"], "--horizons"),
    (["study", "events", "--at", "2024-01-02", "--bars", "{bars}", "--window", "nan"],
     "--window"),
    (["study", "events", "--at", "2024-01-02", "--bars", "{bars}", "--calm", "-1D"], "--calm"),
    (["study", "events", "--at", "nan", "--bars", "{bars}"], "at"),
    (["optimize", "--bars", "{bars}", "--grid", "momentum_min=nan,0.1", "--no-progress",
      "--results", "{out}"], "momentum_min"),
    (["optimize", "--bars", "{bars}", "--grid", "lookback=0,3", "--no-progress",
      "--results", "{out}"], "lookback"),
    (["optimize", "--bars", "{bars}", "--grid", "lookback=2,3", "--name", "../up",
      "--results", "{out}"], "--name"),
    (["optimize", "--bars", "{bars}", "--grid", "lookback=1:nan", "--random", "2",
      "--no-progress", "--results", "{out}"], "lookback"),
    (["optimize", "--bars", "{bars}", "--grid", "momentum_min=0:inf", "--random", "2",
      "--no-progress", "--results", "{out}"], "momentum_min"),
    (["optimize", "--bars", "{bars}", "--grid", "lookback=0:24:6", "--no-progress",
      "--results", "{out}"], "lookback"),
]


@pytest.mark.parametrize("argv,key", OTHER_VALUES, ids=lambda v: " ".join(v[:3])
                         if isinstance(v, list) else v)
def test_meaningless_values_of_other_commands(argv, key, tmp_path, capsys):
    import pandas as pd

    bars = _hourly_bars(tmp_path / "bars.csv", "2024-01-01", 48)
    futures = tmp_path / "futures.csv"
    pd.DataFrame({"ts": ["2024-01-01T00:00:00Z", "2024-01-01T01:00:00Z"],
                  "expiry": "2024-03-29T08:00:00Z", "price": 101.0}).to_csv(futures,
                                                                           index=False)
    out = tmp_path / "out"
    code = main([a.format(out=out, bars=bars, futures=futures) for a in argv])
    err = _assert_one_line_error(capsys, code, f"'{key}'", "Fix:")
    assert "--param" not in err  # a bad --grid value is named as the --grid it came from
    assert not out.exists()


@pytest.mark.parametrize("table,column,value", [
    ("bars", "close", float("inf")), ("bars", "low", -1.0), ("perp", "volume", float("nan")),
    ("funding", "rate_8h", float("nan")), ("chain", "mark_iv", float("inf")),
    ("chain", "strike", -1.0), ("liquidations", "size", float("nan")),
    ("perp_oi", "oi_btc", -5.0), ("futures", "price", 0.0),
])
def test_a_hand_edited_market_table_is_checked_like_a_loaded_file(table, column, value,
                                                                  market_dir, tmp_path,
                                                                  capsys):
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "m"
    shutil.copytree(market_dir, folder)
    data = pq.read_table(folder / f"{table}.parquet")
    values = data.column(column).to_numpy().copy()
    values[1] = value
    pq.write_table(data.set_column(data.schema.get_field_index(column), column,
                                   pa.array(values)), folder / f"{table}.parquet")
    results = tmp_path / "results"
    code = main(["run", "--market", str(folder), "--results", str(results)])
    _assert_one_line_error(capsys, code, f"{table}.parquet", "row 1", f"'{column}'",
                           "gammabt simulate")
    assert not results.exists()


@pytest.mark.parametrize("toml,key", [
    ("bars = 5", "bars"),
    ('market = ["m1", "m2"]', "market"),  # one simulated market, not a list
    ('bars = "bars.csv"\nchain = [1, 2]', "chain"),
    ('bars = "bars.csv"\n[terms]\nperp = 3', "terms.perp"),
    ('bars = "bars.csv"\n[terms.perp]\nleverage = "high"', "perp.leverage"),
    ('bars = "bars.csv"\n[terms.perp]\nleverage = true', "perp.leverage"),
    ('bars = "bars.csv"\nspot = "bars.csv"', "spot"),
])
def test_wrong_typed_toml_inputs_name_the_key(toml, key, tmp_path, capsys):
    _hourly_bars(tmp_path / "bars.csv", "2024-01-01", 48)
    path = tmp_path / "run.toml"
    path.write_text(toml + "\n")
    results = tmp_path / "results"
    code = main(["run", "--config", str(path), "--results", str(results)])
    _assert_one_line_error(capsys, code, "run.toml", f"'{key}'", "Fix:")
    assert not results.exists()


def test_spot_bars_without_a_chain_are_refused_not_ignored(tmp_path, capsys):
    bars = _hourly_bars(tmp_path / "bars.csv", "2024-01-01", 48)
    code = main(["run", "--bars", str(bars), "--spot", str(bars),
                 "--results", str(tmp_path / "results")])
    _assert_one_line_error(capsys, code, "'spot'", "--chain")
    assert not (tmp_path / "results").exists()


def test_an_iv_of_zero_in_a_percent_format_is_no_quote_not_zero_volatility(tmp_path):
    """Vendors write 0 where an option has no mark IV: it becomes NaN (left out of the
    exposure sums), never an IV of 0; in the canonical format 0 is refused (see the
    corpus of bad values)."""
    from feeds.loaders import load_chain
    from tests.data.loader_fixtures import optionsdx_frame, write_optionsdx

    frame = optionsdx_frame(days=1)
    frame.loc[1, "MARK_IV"] = 0.0
    table = load_chain(write_optionsdx(tmp_path / "btc_eod.txt", frame), cache=False)
    iv = table.to_pandas()["mark_iv"]
    assert iv.isna().sum() == 1 and (iv.dropna() > 0).all()


def test_a_window_shorter_than_the_strategys_look_back(tmp_path, capsys):
    bars = _hourly_bars(tmp_path / "bars.csv", "2024-01-01", 48)
    results = tmp_path / "results"
    code = main(["run", "--bars", str(bars), "--param", "lookback=60",
                 "--results", str(results)])
    _assert_one_line_error(capsys, code, "'--from/--to'", "48 bars", "Fix:")
    assert not results.exists()

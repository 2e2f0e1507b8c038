"""End to end through the command line: simulated market and real data."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from gammabt.cli import main
from gammabt.results import FILES

RUN_FILES = set(FILES)


def _only_run(results: Path) -> Path:
    runs = [p for p in results.iterdir() if p.is_dir() and p.name != "markets"]
    assert len(runs) == 1, runs
    return runs[0]


def _check_run_folder(folder: Path) -> dict:
    assert RUN_FILES <= {p.name for p in folder.iterdir()}
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".tmp-")]
    metrics = json.loads((folder / "metrics.json").read_text())
    config = json.loads((folder / "config.json").read_text())
    assert config["versions"]["backtrader"] == "1.9.78.123"
    assert all(len(h) == 64 for h in config["input_hashes"].values())
    returns = pd.read_parquet(folder / "returns.parquet")
    assert list(returns.columns) == ["strategy", "buy_and_hold"]
    assert returns.index.tz is not None and len(returns) >= 2
    equity = pd.read_parquet(folder / "equity.parquet")
    # the last equity value compounds the daily returns exactly
    start = config["config"]["cash"]
    compounded = start * (1 + returns["strategy"]).prod()
    assert compounded == pytest.approx(equity["value"].iloc[-1], rel=1e-9)
    html = (folder / "tearsheet.html").read_text()
    assert "Buy &amp; hold" in html or "Buy & hold" in html
    return metrics


def test_help_everywhere(capsys):
    for args in (["--help"], ["run", "--help"], ["gex", "--help"], ["simulate", "--help"],
                 ["demo", "--help"], ["strategies", "--help"], ["ls", "--help"],
                 ["compare", "--help"], ["plot", "gex", "--help"], ["plot", "liq", "--help"],
                 ["plot", "basis", "--help"]):
        assert main(args) == 0
    assert "--strategy" in capsys.readouterr().out


def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    bad = tmp_path / "bars.csv"
    bad.write_text("ts,open,high,low,close,volume\n"
                   "2022-01-01T00:00:00Z,100,90,95,96,1\n"
                   "2022-01-01T01:00:00Z,100,101,95,96,1\n")
    code = main(["run", "--bars", str(bad), "--results", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.count("\n") == 0 and "Traceback" not in err
    assert "bars.csv" in err and "high" in err
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").iterdir())


def test_unknown_strategy_exit_2(tmp_path, capsys):
    code = main(["run", "--strategy", "gama_flip", "--bars", __file__])
    assert code == 2
    assert "did you mean 'gamma_flip'" in capsys.readouterr().err


def test_debug_shows_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "gammabt.cli", "--debug", "run",
                           "--strategy", "nope", "--bars", __file__],
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_simulate_then_run_on_the_folder(tmp_path):
    market = tmp_path / "market"
    assert main(["simulate", "--scenario", "gamma_squeeze_down", "--days", "20",
                 "--seed", "3", "--out", str(market)]) == 0
    results = tmp_path / "results"
    assert main(["run", "--market", str(market), "--instrument", "perp",
                 "--results", str(results)]) == 0
    folder = _only_run(results)
    metrics = _check_run_folder(folder)
    assert metrics["n_trades"] > 0
    assert metrics["n_rejected"] == 0
    ledger = pd.read_parquet(folder / "ledger.parquet")
    assert set(ledger["kind"]) >= {"fill", "fee"}
    assert metrics["fees_paid_usd"] == pytest.approx(-ledger.loc[ledger["kind"] == "fee",
                                                                 "amount_usd"].sum())


def test_short_spot_without_borrowing_is_refused_and_said(tmp_path, capsys):
    market = tmp_path / "market"
    assert main(["simulate", "--scenario", "gamma_squeeze_down", "--days", "20",
                 "--seed", "3", "--out", str(market)]) == 0
    results = tmp_path / "results"
    assert main(["run", "--market", str(market), "--results", str(results)]) == 0
    metrics = json.loads((_only_run(results) / "metrics.json").read_text())
    assert metrics["refusals"].get("short_without_borrow", 0) >= 1
    assert "short without borrow" in capsys.readouterr().err


def test_same_config_same_numbers(tmp_path):
    market = tmp_path / "market"
    main(["simulate", "--scenario", "calm", "--days", "10", "--seed", "5", "--out", str(market)])
    for name in ("a", "b"):
        assert main(["run", "--market", str(market), "--results", str(tmp_path / name)]) == 0
    a = _only_run(tmp_path / "a")
    b = _only_run(tmp_path / "b")
    assert a.name.split("-")[-1] == b.name.split("-")[-1]  # same config+data hash
    pd.testing.assert_frame_equal(pd.read_parquet(a / "equity.parquet"),
                                  pd.read_parquet(b / "equity.parquet"))
    assert json.loads((a / "metrics.json").read_text()) == \
        json.loads((b / "metrics.json").read_text())


@pytest.mark.realdata
@pytest.mark.slow
def test_real_bitstamp_and_optionsdx_2022(real, tmp_path):
    bars = real("ohlcv/Bitstamp_BTCUSD_1h.csv.gz")
    chains = [real(f"options/optionsdx_btc_eod/btc_eod_2022{m:02d}.txt.gz") for m in (1, 2, 3, 4)]
    args = ["run", "--strategy", "gamma_flip", "--bars", str(bars), "--from", "2022-01-01",
            "--to", "2022-05-01", "--results", str(tmp_path)]
    for chain in chains:
        args += ["--chain", str(chain)]
    assert main(args) == 0
    folder = _only_run(tmp_path)
    metrics = _check_run_folder(folder)
    assert metrics["n_trades"] > 0
    equity = pd.read_parquet(folder / "equity.parquet")
    assert equity["ts"].min() >= pd.Timestamp("2022-01-01", tz="UTC")
    assert equity["ts"].max() <= pd.Timestamp("2022-05-01", tz="UTC")
    assert len(equity) == 24 * (31 + 28 + 31 + 30)
    config = json.loads((folder / "config.json").read_text())
    assert {"bars", "chain", "chain.3"} <= set(config["input_hashes"])


@pytest.mark.realdata
def test_gex_command_on_real_chain(real, tmp_path, capsys):
    chain = real("options/optionsdx_btc_eod/btc_eod_202203.txt.gz")
    out = tmp_path / "gex.parquet"
    assert main(["gex", "--chain", str(chain), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "gamma_flip" in printed
    summary = pd.read_parquet(out)
    assert len(summary) == 31
    # each snapshot's spot lies within the underlying prices quoted in the raw file that
    # day (read here with pandas, independently of the loaders)
    raw = pd.read_csv(chain, skipinitialspace=True, usecols=["[QUOTE_DATE]",
                                                            "[UNDERLYING_PRICE]"])
    span = raw.groupby("[QUOTE_DATE]")["[UNDERLYING_PRICE]"].agg(["min", "max"])
    day = summary["ts"].dt.strftime("%Y-%m-%d")
    lo, hi = span["min"].reindex(day).to_numpy(), span["max"].reindex(day).to_numpy()
    assert ((summary["spot"].to_numpy() >= lo) & (summary["spot"].to_numpy() <= hi)).all()


@pytest.mark.realdata
def test_basis_command_on_real_futures(real, tmp_path):
    chain = real("options/optionsdx_btc_eod/btc_eod_202202.txt.gz")
    spot = real("ohlcv/Bitstamp_BTCUSD_1h.csv.gz")
    out = tmp_path / "basis.parquet"
    assert main(["basis", "--futures", str(chain), "--spot", str(spot), "--out", str(out)]) == 0
    table = pd.read_parquet(out)
    assert {"ts", "expiry", "dte_days", "future", "spot", "basis_ann",
            "basis_ann_30d", "basis_ann_120d"} <= set(table.columns)
    far = table[table["dte_days"] >= 7]
    assert far["basis_ann"].between(-0.30, 0.60).all()


@pytest.mark.realdata
def test_liq_command_on_real_bars(real, tmp_path):
    out = tmp_path / "liq.parquet"
    bars = real("perp_funding_basis/BTCUSDT_Binance_futures_data_hour.csv.gz")
    assert main(["liq", "--bars", str(bars), "--out", str(out)]) == 0
    lines = pd.read_parquet(out)
    assert len(lines) == 3599
    ok = lines.dropna(subset=["liq_below", "liq_above"])
    assert len(ok) > 3000
    assert (ok["liq_below"] < ok["liq_above"]).all()


@pytest.mark.realdata
def test_run_with_basis_and_funding_lines(real, tmp_path):
    from gammabt.config import RunConfig
    from gammabt.run import load_inputs

    chain = real("options/optionsdx_btc_eod/btc_eod_202203.txt.gz")
    config = RunConfig(bars=str(real("ohlcv/Bitstamp_BTCUSD_1h.csv.gz")), chain=(str(chain),),
                       futures=str(chain),
                       funding=str(real("perp_funding_basis/btc_funding_8h_2021-2023.csv")),
                       start="2022-03-01", end="2022-04-01")
    inputs = load_inputs(config)
    assert inputs.extra["basis_ann"].notna().sum() == 31
    assert inputs.extra["funding_ann"].notna().sum() >= 90
    code = main(["run", "--bars", *config.bars, "--chain", str(chain), "--futures", str(chain),
                 "--funding", *config.funding, "--from", "2022-03-01", "--to", "2022-04-01",
                 "--results", str(tmp_path)])
    assert code == 0
    _check_run_folder(_only_run(tmp_path))


def test_bad_term_is_one_line_exit_2(tmp_path, capsys):
    bars = tmp_path / "bars.csv"
    make_bars_csv = pd.DataFrame({"ts": pd.date_range("2024-01-01", periods=5, freq="1h",
                                                      tz="UTC"),
                                  "open": 1.0, "high": 1.0, "low": 1.0, "close": 1.0,
                                  "volume": 1.0})
    make_bars_csv.to_csv(bars, index=False)
    code = main(["run", "--bars", str(bars), "--term", "perp.leverage=abc",
                 "--results", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and "perp.leverage" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_demo_end_to_end(tmp_path, capsys):
    results = tmp_path / "results"
    assert main(["demo", "--days", "6", "--results", str(results)]) == 0
    folder = _only_run(results)
    metrics = _check_run_folder(folder)
    config = json.loads((folder / "config.json").read_text())
    assert config["config"]["strategy"] == "gamma_flip"
    assert config["config"]["instrument"] == "perp"
    assert len(config["input_hashes"]["strategy_source"]) == 64
    assert metrics["n_bars"] == 6 * 24
    out = capsys.readouterr().out
    assert "gamma_squeeze_down" in out and "seed 7" in out and "tearsheet.html" in out

"""Outputs that cannot or must not be written are refused before any work, in one line;
a command that fails half-way leaves nothing behind (no folder, no half of its files).
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from feeds.synthetic import simulate
from gammabt.cli import cli, main
from plumbing.errors import DataError
from tests.data.loader_fixtures import bars_frame, write_csv, write_generic_csv
from tests.integration.test_bad_data_values import _canonical_chain, _chain_file


def refused(capsys, code: int, *needles: str) -> str:
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("gammabt: error:") and "Fix:" in err, err
    for needle in needles:
        assert needle in err, err
    return err


def listing(root: Path) -> dict[Path, bytes | None]:
    return {p: (p.read_bytes() if p.is_file() else None) for p in root.rglob("*")}


@pytest.fixture(scope="module")
def market_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("m") / "calm"
    simulate("calm", days=2, seed=1).write(folder)
    return folder


@pytest.fixture
def files(tmp_path) -> dict[str, Path]:
    """Small valid inputs of every kind a writing command reads."""
    frame = bars_frame(72, start="2024-01-01T00:00:00Z")
    futures = pd.DataFrame({"ts": [t.isoformat() for t in frame["ts"][:3]],
                            "expiry": "2024-03-29T08:00:00+00:00", "price": 43_000.0})
    return {"bars": write_generic_csv(tmp_path / "bars.csv", frame),
            "page": write_generic_csv(tmp_path / "bars.html", frame),  # a csv named .html
            "chain": _chain_file(tmp_path, _canonical_chain()),
            "futures": write_csv(tmp_path / "futures.csv", futures),
            "toml": _write(tmp_path / "calm.toml", 'base = "calm"\n')}


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# -- an output that is one of the inputs ------------------------------------------------
SAME = [
    (["liq", "--bars", "{bars}", "--out", "{bars}"], "--out"),
    (["liq", "--bars", "{bars}", "--map-out", "{bars}"], "--map-out"),
    (["gex", "--chain", "{chain}", "--out", "{chain}"], "--out"),
    (["basis", "--futures", "{futures}", "--spot", "{bars}", "--out", "{futures}"], "--out"),
    (["study", "events", "--at", "2024-01-02", "--bars", "{bars}", "--out", "{bars}"],
     "--out"),
    (["study", "regime", "--chain", "{chain}", "--bars", "{bars}", "--out", "{bars}"],
     "--out"),
    (["plot", "liq", "--bars", "{page}", "--out", "{page}"], "--out"),
    (["plot", "gex", "--chain", "{chain}", "--out", "{chain}"], "--out"),
    (["plot", "basis", "--futures", "{futures}", "--spot", "{bars}", "--out", "{bars}"],
     "--out"),
    (["simulate", "--scenario", "{toml}", "--days", "1", "--out", "{toml}"], "--out"),
    (["prepare", "--bars", "{bars}", "--out", "{bars}"], "--out"),
    (["run", "--bars", "{bars}", "--results", "{bars}"], "--results"),
    (["compare", "{bars}", "b", "--csv", "{bars}", "--results", "{tmp}"], "--csv"),
]


@pytest.mark.parametrize("argv,flag", SAME, ids=lambda v: " ".join(v[:2])
                         if isinstance(v, list) else v)
def test_an_output_that_is_an_input_is_refused(argv, flag, files, tmp_path, capsys):
    before = listing(tmp_path)
    code = main([a.format(tmp=tmp_path, **files) for a in argv])
    refused(capsys, code, flag)
    assert listing(tmp_path) == before


def test_an_output_folder_that_is_the_input_market_is_refused(market_dir, tmp_path, capsys):
    before = listing(market_dir)
    code = main(["prepare", "--market", str(market_dir), "--out", str(market_dir)])
    refused(capsys, code, "--out", "is the --market input")
    assert listing(market_dir) == before


# -- outputs that cannot be written -----------------------------------------------------
UNDER_A_FILE = [
    (["run", "--bars", "{bars}", "--results", "{blocker}/results"], "--results"),
    (["prepare", "--bars", "{bars}", "--out", "{blocker}/prepared"], "--out"),
    (["simulate", "--days", "1", "--out", "{blocker}/market"], "--out"),
    (["gex", "--chain", "{chain}", "--out", "{blocker}/gex.csv"], "--out"),
    (["liq", "--bars", "{bars}", "--map-out", "{blocker}/map.parquet"], "--map-out"),
    (["basis", "--futures", "{futures}", "--spot", "{bars}", "--out", "{blocker}/b.csv"],
     "--out"),
    (["plot", "liq", "--bars", "{bars}", "--out", "{blocker}/x.html"], "--out"),
    (["study", "basis", "--futures", "{futures}", "--spot", "{bars}",
      "--out", "{blocker}/deep/study"], "--out"),
    (["compare", "a", "b", "--csv", "{blocker}/m.csv", "--results", "{tmp}"], "--csv"),
]


@pytest.mark.parametrize("argv,flag", UNDER_A_FILE, ids=lambda v: " ".join(v[:2])
                         if isinstance(v, list) else v)
def test_an_output_under_a_regular_file_is_refused(argv, flag, files, tmp_path, capsys):
    blocker = _write(tmp_path / "somefile", "not a folder\n")
    before = listing(tmp_path)
    code = main([a.format(tmp=tmp_path, blocker=blocker, **files) for a in argv])
    refused(capsys, code, flag, "somefile")
    assert listing(tmp_path) == before


@pytest.mark.parametrize("argv", [
    ["run", "--bars", "{bars}", "--results", "{bars}"],
    ["study", "basis", "--futures", "{futures}", "--spot", "{bars}", "--out", "{bars}"],
])
def test_a_results_folder_that_is_a_file_is_refused(argv, files, tmp_path, capsys):
    before = listing(tmp_path)
    code = main([a.format(**files) for a in argv])
    refused(capsys, code, "is a file")
    assert listing(tmp_path) == before


@pytest.mark.parametrize("suffix", [".txt", ".json", ""])
def test_a_table_output_of_an_unknown_kind_is_refused_before_any_work(suffix, files,
                                                                      tmp_path, capsys):
    out = tmp_path / "new" / f"lines{suffix}"
    code = main(["liq", "--bars", str(files["bars"]), "--out", str(out)])
    refused(capsys, code, "--out", ".parquet or .csv")
    assert not (tmp_path / "new").exists()


READ_ONLY = [
    (["run", "--bars", "{bars}", "--results", "{ro}/results"], "--results"),
    (["run", "--bars", "{bars}", "--results", "{ro}"], "--results"),
    (["gex", "--chain", "{chain}", "--out", "{ro}/gex.csv"], "--out"),
    (["simulate", "--days", "1", "--out", "{ro}/market"], "--out"),
    (["plot", "liq", "--bars", "{bars}", "--out", "{ro}/sub/x.html"], "--out"),
]


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="root ignores folder permissions, so a read-only folder is "
                           "writable for it")
@pytest.mark.parametrize("argv,flag", READ_ONLY, ids=lambda v: " ".join(v[:2])
                         if isinstance(v, list) else v)
def test_an_output_in_a_read_only_folder_is_refused(argv, flag, files, tmp_path, capsys):
    ro = tmp_path / "read_only"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        code = main([a.format(ro=ro, **files) for a in argv])
        refused(capsys, code, flag, "permission denied")
        assert list(ro.iterdir()) == []
    finally:
        ro.chmod(0o755)


def test_a_read_only_folder_is_named_with_the_flag(files, tmp_path, capsys, monkeypatch):
    """The same check as above, for a root test run: the permission test is simulated."""
    real = os.access
    monkeypatch.setattr("gammabt.cli.os.access",
                        lambda path, mode: real(path, mode) and not mode & os.W_OK)
    code = main(["gex", "--chain", str(files["chain"]), "--out", str(tmp_path / "g.csv")])
    refused(capsys, code, "--out", "permission denied", "chmod")
    assert not (tmp_path / "g.csv").exists()


# -- a command that fails half-way leaves nothing behind -------------------------------
def _boom(*args, **kwargs):
    raise DataError("disk trouble (injected)", source="test", expected="a working disk",
                    fix="none: injected by the test")


def test_run_failing_while_writing_leaves_no_results_folder(files, tmp_path, capsys,
                                                            monkeypatch):
    monkeypatch.setattr("gammabt.results.write_tearsheet", _boom)
    results = tmp_path / "new" / "results"
    code = main(["run", "--bars", str(files["bars"]), "--results", str(results)])
    refused(capsys, code, "injected")
    assert not (tmp_path / "new").exists()


def test_run_failing_keeps_an_existing_results_folder_as_it_was(files, tmp_path, capsys,
                                                                monkeypatch):
    results = tmp_path / "results"
    results.mkdir()
    (results / "keep.txt").write_text("mine\n")
    monkeypatch.setattr("gammabt.results.write_tearsheet", _boom)
    code = main(["run", "--bars", str(files["bars"]), "--results", str(results)])
    refused(capsys, code, "injected")
    assert sorted(p.name for p in results.iterdir()) == ["keep.txt"]


def test_liq_failing_after_its_first_table_removes_it(files, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("indicators.liquidation.LiqMap.to_frame", _boom)
    out = tmp_path / "new" / "lines.csv"
    code = main(["liq", "--bars", str(files["bars"]), "--out", str(out),
                 "--map-out", str(tmp_path / "new" / "map.parquet")])
    refused(capsys, code, "injected")
    assert not (tmp_path / "new").exists()


def test_prepare_failing_mid_way_leaves_no_folder(files, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("gammabt.prepared._write_ipc", _boom)
    out = tmp_path / "new" / "prepared"
    code = main(["prepare", "--bars", str(files["bars"]), "--out", str(out)])
    refused(capsys, code, "injected")
    assert not (tmp_path / "new").exists()


def test_simulate_failing_mid_way_leaves_no_folder(tmp_path, capsys, monkeypatch):
    import pyarrow.parquet as pq

    real = pq.write_table
    calls = []

    def second_fails(*args, **kwargs):
        calls.append(1)
        if len(calls) > 1:
            _boom()
        return real(*args, **kwargs)

    monkeypatch.setattr("feeds.sim.market.pq.write_table", second_fails)
    out = tmp_path / "new" / "market"
    code = main(["simulate", "--days", "1", "--out", str(out)])
    refused(capsys, code, "injected")
    assert len(calls) == 2 and not (tmp_path / "new").exists()


def test_a_study_failing_after_its_first_file_leaves_no_folder(market_dir, tmp_path, capsys,
                                                               monkeypatch):
    monkeypatch.setattr("jinja2.Environment", _boom)  # after study.parquet, tables.json
    out = tmp_path / "new" / "study"
    code = main(["study", "liquidations", "--market", str(market_dir), "--boot", "100",
                 "--out", str(out)])
    refused(capsys, code, "injected")
    assert not (tmp_path / "new").exists()


def test_a_plot_failing_after_plotlyjs_leaves_no_folder(files, tmp_path, capsys,
                                                        monkeypatch):
    monkeypatch.setattr("gammabt.runpage.render", _boom)
    out = tmp_path / "new" / "liq.html"
    code = main(["plot", "liq", "--bars", str(files["bars"]), "--out", str(out)])
    refused(capsys, code, "injected")
    assert not (tmp_path / "new").exists()


def test_optimize_with_a_bad_input_found_late_leaves_no_results(files, tmp_path, capsys,
                                                                monkeypatch):
    monkeypatch.setattr("gammabt.optimize.make_executor", _boom)  # after the market cache
    results = tmp_path / "new" / "results"
    code = main(["optimize", "--bars", str(files["bars"]), "--grid", "lookback=2,3",
                 "--no-progress", "--results", str(results)])
    refused(capsys, code, "injected")
    assert not (tmp_path / "new").exists()


def test_every_writing_command_declares_its_outputs():
    """A new command with an output option must go through the output checks."""
    import click

    writes = {"out", "map_out", "csv_out", "parquet_out", "results_dir"}
    missing = []

    def walk(command: click.Command, path: str) -> None:
        if isinstance(command, click.Group):
            for name, sub in command.commands.items():
                walk(sub, f"{path} {name}")
            return
        names = {p.name for p in command.params} & writes
        declared = set(getattr(command.callback, "outputs", ()))
        if path != "gammabt ls" and names - declared:
            missing.append(f"{path}: {sorted(names - declared)}")

    walk(cli, "gammabt")
    assert not missing, missing


def test_a_finished_run_is_never_removed_by_a_later_failure(files, tmp_path, capsys,
                                                            monkeypatch):
    """The run folder is complete before the console report: a failure there keeps it."""
    monkeypatch.setattr("gammabt.cli._report_run", _boom)
    results = tmp_path / "new" / "results"
    code = main(["run", "--bars", str(files["bars"]), "--results", str(results)])
    refused(capsys, code, "injected")
    [folder] = [p for p in results.iterdir() if p.is_dir()]
    assert (folder / "metrics.json").is_file()

"""The results store writes whole runs or nothing."""

from __future__ import annotations

import json

import pandas as pd
import pytest

import gammabt.results as results
from gammabt.config import RunConfig
from gammabt.report import rolling_windows
from gammabt.run import MarketInputs, run
from tests.data.hand_made import make_bars, make_summary


@pytest.fixture(scope="module")
def result():
    bars = make_bars(n=24 * 5)
    inputs = MarketInputs(bars=bars, summary=make_summary(bars, -1.0, 1.05))
    return run(RunConfig(bars="unused.csv"), inputs)


def test_write_and_read_back(result, tmp_path):
    folder = results.write_run(result, tmp_path, tearsheet=False)
    assert folder.name == result.run_id
    back = results.load_run(folder)
    assert back["metrics"]["n_bars"] == len(result.equity)
    pd.testing.assert_frame_equal(back["equity"], result.equity)
    assert json.loads((folder / "config.json").read_text())["digest"] == result.digest


def test_same_run_id_twice_never_overwrites(result, tmp_path):
    first = results.write_run(result, tmp_path, tearsheet=False)
    second = results.write_run(result, tmp_path, tearsheet=False)
    assert second.name == f"{first.name}-2" and first.is_dir()


def test_crash_mid_write_leaves_no_run_folder(result, tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(results, "write_tearsheet", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        results.write_run(result, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_zero_trade_run_says_so(tmp_path):
    bars = make_bars(n=24 * 5)
    quiet = run(RunConfig(bars="unused.csv"),
                MarketInputs(bars=bars, summary=make_summary(bars, 1.0, 0.5)))
    assert quiet.metrics["n_orders"] == 0
    page = (results.write_run(quiet, tmp_path) / "tearsheet.html").read_text()
    assert "This run placed no order" in page
    assert results.zero_trade_notice(quiet) is not None


def test_months_outside_the_data_are_blank():
    from gammabt.report import blank_outside

    table = pd.DataFrame([[0.0] * 12 + [0.1]], index=[2024],
                         columns=["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG",
                                  "SEP", "OCT", "NOV", "DEC", "EOY"])
    out = blank_outside(table, pd.Timestamp("2024-03-10"), pd.Timestamp("2024-05-08"))
    assert out.loc[2024, ["MAR", "APR", "MAY", "EOY"]].tolist() == [0.0, 0.0, 0.0, 0.1]
    assert out.loc[2024, ["JAN", "FEB", "JUN", "DEC"]].isna().all()


@pytest.fixture(scope="module")
def written(result, tmp_path_factory):
    """One run written with its tearsheet, spying on what QuantStats was asked to draw."""
    import quantstats
    import seaborn

    heatmaps, rolling = [], {}
    heatmap, rolling_sharpe = seaborn.heatmap, quantstats.plots.rolling_sharpe

    def heatmap_spy(data, *args, **kwargs):
        heatmaps.append(pd.DataFrame(data).copy())
        return heatmap(data, *args, **kwargs)

    def rolling_spy(*args, **kwargs):
        rolling.update(kwargs)
        return rolling_sharpe(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(seaborn, "heatmap", heatmap_spy)
        patch.setattr(quantstats.plots, "rolling_sharpe", rolling_spy)
        folder = results.write_run(result, tmp_path_factory.mktemp("written"), report=False)
    return folder, heatmaps, rolling


def test_tearsheet_header(result, written):
    page = (written[0] / "tearsheet.html").read_text()
    header = page[page.index('class="gammabt-header"'):]
    for text in ("gamma_flip", "Parameters", "commission 5 bps", "unused.csv", "Period",
                 f"{result.returns.index[0]:%Y-%m-%d}"):
        assert text in header, text
    assert rolling_windows(10_000) == (365, 182)


def test_tearsheet_heatmap_leaves_missing_months_blank(written):
    _, heatmaps, _ = written
    assert heatmaps, "QuantStats drew no monthly heatmap"
    year = heatmaps[0].iloc[0]  # 2024
    # five days of January 2024: the other months have no data and must not read 0.00
    assert year["JAN"] == year["JAN"]  # not NaN
    assert year[["FEB", "JUN", "DEC"]].isna().all()


def test_rolling_panels_use_fitted_windows(result, written):
    _, _, rolling = written
    assert rolling["period"] == rolling_windows(len(result.returns))[1] == 3
    assert rolling["periods_per_year"] == 365  # annualization untouched


def test_pickled_result_leaves_the_market_behind(result):
    import pickle

    assert result.inputs is not None
    back = pickle.loads(pickle.dumps(result))
    assert back.inputs is None and back.run_id == result.run_id
    pd.testing.assert_series_equal(back.returns, result.returns)
    import dataclasses

    bare = dataclasses.replace(result, inputs=None)
    assert len(pickle.dumps(result)) == len(pickle.dumps(bare))

"""`gammabt compare`: metrics side by side, common window, config diff, refusals, exports."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest

from gammabt import compare
from gammabt.cli import main
from gammabt.pages import fmt_metric, plotlyjs_name
from plumbing.errors import ConfigError
from tests.data.runs import fake_run


@pytest.fixture
def three(tmp_path):
    root = tmp_path / "results"
    for i, mean in enumerate((0.002, -0.001, 0.0005)):
        fake_run(root, f"2024010{i + 1}T000000Z-r{i}-0000000{i}", label=f"r{i}", seed=i,
                 mean=mean, params={"lookback": 8 + 4 * i, "band": 0.01})
    return root


def test_best_per_row_follows_direction(three):
    runs = compare.load_runs(["r*"], three)
    start, end = compare.common_window(runs)
    table = compare.metrics_table(runs, start, end)
    ids = [r.run_id for r in runs]
    sharpe = table.loc["sharpe", ids]
    vol = table.loc["volatility_ann", ids]
    assert table.loc["sharpe", "direction"] == 1 and table.loc["volatility_ann", "direction"] == -1
    assert compare._best(list(sharpe), 1) == {int(sharpe.to_numpy().argmax())}
    assert compare._best(list(vol), -1) == {int(vol.to_numpy().argmin())}
    assert compare._best([1.0, 1.0], 1) == set()  # a tie marks nothing
    for key in ("fees_paid_usd", "funding_received_usd", "max_margin_usage",
                "gross_exposure_mean", "net_exposure_mean", "n_liquidations", "pnl:spot"):
        assert key in table.index
    # same period everywhere: the table is metrics.json itself
    metrics = json.loads((runs[1].folder / "metrics.json").read_text())
    assert table.loc["sharpe", ids[1]] == metrics["sharpe"]


def test_page_marks_best_and_shows_metrics_json(three, tmp_path):
    runs = compare.load_runs(["r*"], three)
    out = compare.write_compare(runs, tmp_path / "page" / "cmp.html")
    html = out.read_text()
    assert (out.parent / plotlyjs_name()).stat().st_size > 1_000_000
    assert "cdn" not in html.lower() and "https://" not in html
    best = re.findall(r'class="metric best" data-metric="sharpe" data-run="([^"]+)"', html)
    sharpes = {r.run_id: r.metrics["sharpe"] for r in runs}
    assert best == [max(sharpes, key=sharpes.get)]
    for r in runs:
        text = re.search(rf'data-metric="total_return" data-run="{r.run_id}" '
                         rf'data-value="[^"]*">([^<]+)<', html).group(1)
        assert text == fmt_metric("total_return", r.metrics["total_return"])
        assert float(text.rstrip("%")) == pytest.approx(r.metrics["total_return"] * 100,
                                                        abs=0.006)
    # config diff: the differing parameter first, shared ones after
    config = html[html.index('id="config"'):]
    assert config.index("params.lookback") < config.index("params.band")
    assert 'class="differs"><td class="key">params.lookback' in config


def test_different_periods_use_common_window(tmp_path):
    a = fake_run(tmp_path, "a", label="a", seed=1, start="2024-01-01", days=120)
    b = fake_run(tmp_path, "b", label="b", seed=2, start="2024-02-01", days=120)
    runs = [compare.load_run_data(a), compare.load_run_data(b)]
    start, end = compare.common_window(runs)
    assert start == pd.Timestamp("2024-02-01", tz="UTC")
    assert end == pd.Timestamp("2024-04-29", tz="UTC")
    table = compare.metrics_table(runs, start, end)
    assert table.loc["n_days", "a"] == table.loc["n_days", "b"] == 89
    clipped = runs[0].returns.loc[start:end]
    assert table.loc["total_return", "a"] == pytest.approx((1 + clipped).prod() - 1)
    html = compare.write_compare(runs, tmp_path / "c.html").read_text()
    assert "common window 2024-02-01 .. 2024-04-29" in html


def test_non_overlapping_runs_are_refused(tmp_path):
    a = fake_run(tmp_path, "a", seed=1, start="2024-01-01", days=30)
    b = fake_run(tmp_path, "b", seed=2, start="2024-06-01", days=30)
    with pytest.raises(ConfigError, match="does not overlap run a"):
        compare.write_compare([compare.load_run_data(a), compare.load_run_data(b)],
                              tmp_path / "c.html")
    assert not (tmp_path / "c.html").exists()


def test_rolling_window_fits_the_period():
    assert compare.rolling_window(10) is None
    assert compare.rolling_window(40) == 10
    assert compare.rolling_window(365) == 90


def test_cli_compare_exports_and_refuses_one_run(three, tmp_path, capsys):
    out = tmp_path / "cmp.html"
    code = main(["compare", "r*", "--results", str(three), "--out", str(out),
                 "--csv", str(tmp_path / "m.csv"), "--parquet", str(tmp_path / "m.parquet")])
    assert code == 0, capsys.readouterr().err
    csv = pd.read_csv(tmp_path / "m.csv")
    par = pd.read_parquet(tmp_path / "m.parquet")
    assert list(csv.columns[:2]) == ["metric", "direction"] and len(csv.columns) == 5
    pd.testing.assert_frame_equal(csv, par, check_dtype=False)
    run0 = json.loads(next(three.glob("*r0*/metrics.json")).read_text())
    assert csv.set_index("metric").loc["sharpe"].iloc[1] == pytest.approx(run0["sharpe"])
    assert main(["compare", "r0", "--results", str(three), "--out", str(out)]) == 2
    assert "1 run(s) selected" in capsys.readouterr().err


def test_links_to_each_runs_pages_are_relative(three, tmp_path):
    runs = compare.load_runs(["r*"], three)
    (runs[0].folder / "tearsheet.html").write_text("<html></html>")
    (runs[0].folder / "report.html").write_text("<html></html>")
    out = compare.write_compare(runs, tmp_path / "deep" / "page.html")
    html = out.read_text()
    hrefs = re.findall(r'<a href="([^"]+)">(tearsheet|report)</a>', html)
    assert sorted(kind for _, kind in hrefs) == ["report", "tearsheet"]
    for href, kind in hrefs:
        assert not href.startswith("/")
        assert (out.parent / href).resolve() == (runs[0].folder / f"{kind}.html").resolve()
    assert html.count("not written") == 4  # the two other runs have neither page

"""The run report page: every panel with data drawn, none empty, missing inputs named,
and the page as a browser shows it."""

from __future__ import annotations

import dataclasses
import html
import json
import re

import pytest

from feeds.synthetic import simulate
from gammabt.config import RunConfig
from gammabt.pages import fmt_metric, plotlyjs_name
from gammabt.results import write_run
from gammabt.run import MarketInputs, run
from tests.data.hand_made import make_bars, make_summary
from tests.integration.browser import (
    XSS,
    chart_has_data,
    chart_sections,
    no_injected_markup,
    render,
    screenshot_dark_share,
)


@pytest.fixture(scope="module")
def market_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    simulate("basis_unwind", days=4, freq="1h", seed=1).write(root / "market")
    result = run(RunConfig(strategy="gamma_flip", market=str(root / "market"), label="rp",
                           instrument="perp"))
    # a label that slipped past validation (hand-edited config): must stay text
    config = dataclasses.replace(result.config)
    object.__setattr__(config, "label", XSS[0])
    result = dataclasses.replace(result, config=config)
    return write_run(result, root / "results", tearsheet=False)


def test_report_page_has_every_market_panel(market_run):
    page = (market_run / "report.html").read_text()
    assert (market_run.parent / plotlyjs_name()).is_file()
    assert f'src="../{plotlyjs_name()}"' in page and "https://" not in page
    assert set(re.findall(r'data-chart="([^"]+)"', page)) == {
        "chart-price", "chart-gex", "chart-liq", "chart-basis"}
    assert "Not drawn" not in page
    price = page[page.index('data-chart="chart-price"'):page.index('data-chart="chart-gex"')]
    for trace in ('"name":"gamma_flip"', '"name":"call_wall"', '"name":"put_wall"',
                  '"fillcolor":"#e74c3c"'):  # levels and short-gamma shading
        assert trace in price, trace
    trades = json.loads((market_run / "metrics.json").read_text())["n_trades"]
    assert ('"name":"entry"' in price) == (trades > 0)
    gex = page[page.index('data-chart="chart-gex"'):page.index('data-chart="chart-liq"')]
    assert "start: snapshot" in gex and '"name":"net"' in gex
    for chart in ("chart-gex", "chart-liq", "chart-basis"):  # titles name run and period
        part = page[page.index(f'data-chart="{chart}"'):].split('class="chart"')[0]
        titles = re.findall(r'"title":\{"text":"([^"]*)"', part)
        assert any("gamma_flip" in t and "2026-02-03" in t for t in titles), titles
    assert html.escape(XSS[0], quote=False) in page and XSS[0] not in page
    assert "gamma_flip" in page and "2026-02-03" in page  # strategy and period in titles


def test_report_page_names_missing_inputs(tmp_path):
    bars = make_bars(n=24 * 5)
    result = run(RunConfig(bars="unused.csv", label="bare"),
                 MarketInputs(bars=bars, summary=make_summary(bars, -1.0, 1.05)))
    page = (write_run(result, tmp_path, tearsheet=False) / "report.html").read_text()
    assert re.findall(r'data-chart="([^"]+)"', page) == ["chart-price"]
    for what in ("GEX by strike", "liquidation map", "basis and funding"):
        assert what in page[page.index("Not drawn"):]


@pytest.mark.slow
def test_report_page_in_browser(chromium, market_run, tmp_path):
    shown = render(chromium, market_run / "report.html", tmp_path)
    assert shown.console == []
    charts = chart_sections(shown.dom)
    assert len(charts) == 4
    assert all(chart_has_data(v) for v in charts.values()), \
        [k for k, v in charts.items() if not chart_has_data(v)]
    metrics = json.loads((market_run / "metrics.json").read_text())
    cells = dict(re.findall(r'<td class="metric" data-metric="([^"]+)">([^<]*)</td>',
                            shown.dom))
    assert {"total_return", "sharpe", "final_value"} <= set(cells)
    for key, text in cells.items():
        assert text == fmt_metric(key, metrics[key])
    assert float(cells["final_value"].replace(",", "")) == pytest.approx(
        metrics["final_value"], abs=0.006)
    assert no_injected_markup(shown.dom)


@pytest.mark.slow
def test_report_screenshot_is_not_blank(chromium, market_run, tmp_path):
    assert screenshot_dark_share(chromium, market_run / "report.html", tmp_path) > 0.01


def test_snapshot_times_pick_start_deep_troughs_and_entries():
    import pandas as pd

    from gammabt.runpage import snapshot_times

    ts = pd.date_range("2024-01-01", periods=200, freq="1h", tz="UTC")
    value = pd.Series(100.0, index=ts)
    value.iloc[50:60] = 90.0  # -10 %
    value.iloc[120:125] = 99.8  # -0.2 %: too shallow for a snapshot
    equity = pd.DataFrame({"ts": ts, "value": value.to_numpy()})
    trades = pd.DataFrame({"entry_ts": ts[[10, 70, 150]]})
    picks = snapshot_times(pd.DataFrame({"ts": ts}), equity, trades)
    assert [name for name, _ in picks] == ["start", "drawdown -10.0%", "trade entry",
                                           "trade entry"]
    assert [t for _, t in picks] == [ts[0], ts[50], ts[10], ts[70]]

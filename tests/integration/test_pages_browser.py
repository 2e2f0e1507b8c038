"""The comparison and run report pages as a browser shows them: offline from file://,
no console message, every chart drawn, metrics equal metrics.json, hostile labels shown
as text."""

from __future__ import annotations

import html
import json
import re

import pytest

from gammabt import compare
from tests.data.runs import fake_run
from tests.integration.browser import (
    XSS,
    chart_has_data,
    chart_sections,
    no_injected_markup,
    render,
    screenshot_dark_share,
)


@pytest.fixture(scope="module")
def compare_page(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    folders = [fake_run(root, f"2024010{i + 1}T000000Z-run{i}-0000000{i}", label=label,
                        strategy=strategy, seed=i, days=200, mean=0.001 * i)
               for i, (label, strategy) in enumerate([(XSS[0], "gamma_flip"),
                                                      ("plain", XSS[1]),
                                                      ("third", "buy_and_hold")])]
    runs = [compare.load_run_data(f) for f in folders]
    return compare.write_compare(runs, root / "compare" / "page.html"), runs


def _cells(dom: str) -> dict[tuple[str, str], str]:
    found = re.findall(r'<td class="metric(?: best)?" data-metric="([^"]+)" '
                       r'data-run="([^"]+)" data-value="[^"]*">([^<]*)</td>', dom)
    return {(metric, run): html.unescape(text) for metric, run, text in found}


def _number(text: str) -> float:
    return float(text.replace(",", "").rstrip("%"))


@pytest.mark.slow
def test_compare_page_in_browser(chromium, compare_page, tmp_path):
    page, runs = compare_page
    shown = render(chromium, page, tmp_path)
    assert shown.console == []  # no error, no failed fetch: nothing logged at all
    charts = chart_sections(shown.dom)
    assert set(charts) == {"chart-equity", "chart-drawdown", "chart-rolling",
                           "chart-monthly", "chart-dist"}
    assert all(chart_has_data(section) for section in charts.values()), \
        [k for k, v in charts.items() if not chart_has_data(v)]
    cells = _cells(shown.dom)
    for run in runs:
        metrics = json.loads((run.folder / "metrics.json").read_text())
        for key in ("total_return", "sharpe", "max_drawdown", "volatility_ann",
                    "fees_paid_usd", "max_margin_usage"):
            scale = 100 if key in ("total_return", "max_drawdown", "volatility_ann",
                                   "max_margin_usage") else 1
            assert _number(cells[(key, run.run_id)]) == pytest.approx(
                metrics[key] * scale, abs=0.006), key
    assert no_injected_markup(shown.dom)
    assert html.escape(XSS[0], quote=False) in shown.dom  # shown, as text
    assert html.escape(XSS[1], quote=False) in shown.dom


@pytest.mark.slow
def test_compare_screenshot_is_not_blank(chromium, compare_page, tmp_path):
    page, _ = compare_page
    assert screenshot_dark_share(chromium, page, tmp_path) > 0.01


@pytest.mark.slow
def test_tearsheet_header_in_browser(chromium, tmp_path):
    import numpy as np
    import pandas as pd

    from gammabt.report import write_tearsheet

    days = pd.date_range("2024-01-01", periods=60, freq="D", tz="UTC")
    rng = np.random.default_rng(3)
    page = write_tearsheet(pd.Series(rng.normal(0, 0.02, 60), index=days),
                           pd.Series(rng.normal(0, 0.03, 60), index=days),
                           tmp_path / "tearsheet.html", title=f"run {XSS[1]}",
                           header={"Strategy": XSS[1], "Label": XSS[0], "Period": "60 days"},
                           notice="This run placed no order")
    shown = render(chromium, page, tmp_path)
    assert shown.console == []
    assert no_injected_markup(shown.dom)
    header = shown.dom[shown.dom.index('class="gammabt-header"'):]
    assert html.escape(XSS[0], quote=False) in header
    assert html.escape(XSS[1], quote=False) in header
    assert "This run placed no order" in header


@pytest.mark.slow
def test_plot_page_in_browser(chromium, tmp_path):
    from feeds.synthetic import simulate
    from gammabt.cli import main

    simulate("basis_unwind", days=3, freq="1h", seed=4).write(tmp_path / "market")
    page = tmp_path / "plots" / "gex.html"
    assert main(["plot", "gex", "--chain", str(tmp_path / "market" / "chain.parquet"),
                 "--out", str(page)]) == 0
    shown = render(chromium, page, tmp_path)
    assert shown.console == []
    charts = chart_sections(shown.dom)
    assert list(charts) == ["chart-plot"] and chart_has_data(charts["chart-plot"])
    assert screenshot_dark_share(chromium, page, tmp_path) > 0.01

"""Study pages as a person sees them: offline, no console errors, every chart drawn."""

from __future__ import annotations

import re

import pandas as pd

from tests.integration.browser import (
    chart_has_data,
    render,
    screenshot_dark_share,
)


def _plotly_sections(dom: str) -> list[str]:
    parts = re.split(r'<div[^>]*class="plotly-graph-div[^"]*"', dom)
    return parts[1:]


def _check_page(chromium: str, page, work, n_charts: int) -> None:
    shown = render(chromium, page, work)
    assert shown.console == []
    sections = _plotly_sections(shown.dom)
    assert len(sections) == n_charts
    assert all(chart_has_data(s) for s in sections)
    assert screenshot_dark_share(chromium, page, work) > 0.01


def test_basis_study_page_in_browser(chromium, tmp_path):
    from gammabt.study_flows import basis_study, write_basis_study
    from tests.unit.test_study_flows import write_basis_market

    futures, spot = write_basis_market(tmp_path)
    res = basis_study([futures], [spot], horizons=(pd.Timedelta("24h"),), window=10, z=8,
                      n_boot=200)
    _check_page(chromium, write_basis_study(res, tmp_path / "page"), tmp_path, 1)


def test_liquidation_study_page_in_browser(chromium, tmp_path):
    from feeds.synthetic import simulate
    from gammabt.study_flows import liquidation_study, write_liquidation_study

    m = simulate("gamma_squeeze_down", days=4, seed=3)
    res = liquidation_study(m.perp.to_pandas(), m.liquidations, oi=m.perp_oi, n_boot=200)
    _check_page(chromium, write_liquidation_study(res, tmp_path / "page"), tmp_path, 2)

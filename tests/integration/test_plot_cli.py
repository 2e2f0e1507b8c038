"""`gammabt plot gex|liq|basis`: one offline chart page each, without a run."""

from __future__ import annotations

import re

import pytest

from feeds.synthetic import simulate
from gammabt.cli import main
from gammabt.pages import plotlyjs_name


@pytest.fixture(scope="module")
def market(tmp_path_factory):
    folder = tmp_path_factory.mktemp("plot") / "market"
    simulate("basis_unwind", days=3, freq="1h", seed=2).write(folder)
    return folder


def _drawn(page) -> dict:
    html = page.read_text()
    assert (page.parent / plotlyjs_name()).is_file() and "https://" not in html
    return re.search(r'Plotly\.newPlot\(\s*"chart-plot",\s*(\[.*?\]),\s*\{', html, re.S)


@pytest.mark.parametrize("kind,args", [
    ("gex", ["--chain", "{m}/chain.parquet", "--at", "2026-02-04T12:00"]),
    ("liq", ["--bars", "{m}/perp.parquet", "--oi", "{m}/perp_oi.parquet"]),
    ("basis", ["--futures", "{m}/futures.parquet", "--spot", "{m}/bars.parquet"]),
])
def test_plot_writes_a_chart_with_data(market, tmp_path, kind, args, capsys):
    out = tmp_path / f"{kind}.html"
    code = main(["plot", kind, *[a.format(m=market) for a in args], "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    data = _drawn(out)
    assert data is not None and len(data.group(1)) > 200  # traces with values


def test_plot_refuses_png_before_reading_inputs(market, tmp_path, capsys):
    code = main(["plot", "gex", "--chain", str(market / "chain.parquet"),
                 "--out", str(tmp_path / "gex.png")])
    err = capsys.readouterr().err
    assert code == 2 and "'.png'" in err and "kaleido" in err and err.count("\n") == 1


def test_plot_gex_at_before_first_snapshot(market, tmp_path, capsys):
    code = main(["plot", "gex", "--chain", str(market / "chain.parquet"), "--at", "2000-01-01",
                 "--out", str(tmp_path / "g.html")])
    assert code == 2 and "before the first snapshot" in capsys.readouterr().err

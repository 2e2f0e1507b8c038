"""`gammabt plot gex|liq|basis`: one offline chart page each, without a run."""

from __future__ import annotations

import re

import numpy as np
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


def test_plot_refuses_other_suffixes_before_reading_inputs(market, tmp_path, capsys):
    code = main(["plot", "gex", "--chain", str(market / "chain.parquet"),
                 "--out", str(tmp_path / "gex.svg")])
    err = capsys.readouterr().err
    assert code == 2 and "'.svg'" in err and ".png" in err and err.count("\n") == 1
    assert not (tmp_path / "gex.svg").exists()


@pytest.mark.parametrize("kind", ["gex", "liq"])
def test_plot_png_is_a_real_image(kind, market, tmp_path):
    from PIL import Image

    from tests.integration.browser import require_chromium

    require_chromium()  # Kaleido draws with the system's Chromium
    out = tmp_path / f"{kind}.png"
    args = {"gex": ["--chain", str(market / "chain.parquet")],
            "liq": ["--bars", str(market / "perp.parquet"), "--oi",
                    str(market / "perp_oi.parquet")]}[kind]
    assert main(["plot", kind, *args, "--out", str(out)]) == 0
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size[0] == 1400
        pixels = np.asarray(image.convert("L"))
    assert (pixels < 200).mean() > 0.01  # something is drawn, not a blank canvas
    assert not list(tmp_path.glob(".*.tmp"))


def test_plot_gex_at_before_first_snapshot(market, tmp_path, capsys):
    code = main(["plot", "gex", "--chain", str(market / "chain.parquet"), "--at", "2000-01-01",
                 "--out", str(tmp_path / "g.html")])
    assert code == 2 and "before the first snapshot" in capsys.readouterr().err

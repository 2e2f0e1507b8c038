"""The tearsheet as a browser renders it: headless Chromium, offline, no console errors.

Skipped with a reason when no Chromium is installed (it is not a Python dependency),
except in CI (``CI=true``), where a missing browser fails the tests.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gammabt.report import write_tearsheet
from tests.integration.browser import flags


def _flags(profile: Path) -> list[str]:
    return flags(profile)


@pytest.fixture(scope="module")
def tearsheet(tmp_path_factory) -> Path:
    rng = np.random.default_rng(11)
    days = pd.date_range("2022-01-01", periods=240, freq="D", tz="UTC")
    returns = pd.Series(rng.normal(0.001, 0.03, len(days)), index=days)
    benchmark = pd.Series(rng.normal(0.0005, 0.035, len(days)), index=days)
    return write_tearsheet(returns, benchmark, tmp_path_factory.mktemp("ts") / "tearsheet.html",
                           title="browser check")


@pytest.mark.slow
def test_rendered_page_has_metrics_and_charts(chromium, tearsheet, tmp_path):
    done = subprocess.run(
        [chromium, *_flags(tmp_path / "profile"), "--dump-dom", tearsheet.as_uri()],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    assert "browser check" in dom and "Key Performance Metrics" in dom
    assert "<table" in dom and ">Sharpe<" in dom and "Buy &amp; hold" in dom
    assert dom.count("<svg") >= 10  # every chart survived parsing as inline SVG


@pytest.mark.slow
def test_screenshot_is_not_blank(chromium, tearsheet, tmp_path):
    shot = tmp_path / "page.png"
    done = subprocess.run(
        [chromium, *_flags(tmp_path / "profile"), f"--screenshot={shot}",
         "--window-size=1280,2400", tearsheet.as_uri()],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    from PIL import Image

    with Image.open(shot) as image:
        pixels = np.asarray(image.convert("L"))
    assert pixels.shape[0] >= 2000
    assert (pixels < 200).mean() > 0.01  # text and chart lines, not a white page

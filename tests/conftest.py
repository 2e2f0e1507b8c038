"""Shared fixtures. Real data is read in place from ../shared/data/real (or $GAMMABT_REAL_DATA)."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib
import pytest

from feeds.realdata import ENV_VAR, real_data_root

matplotlib.use("Agg")
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The real-data folder; the test is skipped with a reason when it is absent."""
    root = real_data_root()
    if not root.is_dir():
        pytest.skip(f"real data not found at {root} (set {ENV_VAR} to its location)")
    return root


@pytest.fixture
def real(real_data: Path):
    """``real('ohlcv/x.csv.gz')`` -> Path, skipping when that file is missing."""

    def get(relative: str) -> Path:
        path = real_data / relative
        if not path.exists():
            pytest.skip(f"real data file missing: {path}")
        return path

    return get

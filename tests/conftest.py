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


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Nothing in gammabt may reach the network at run time (QuantStats downloads
    benchmarks by ticker if asked): any non-loopback connection fails the test."""
    import socket

    real_connect = socket.socket.connect

    def guarded(self, address):
        host = address[0] if isinstance(address, tuple) else address
        if isinstance(host, str) and host not in ("127.0.0.1", "::1", "localhost") \
                and not host.startswith("/"):
            raise AssertionError(f"test tried to reach the network: {address!r}")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)

"""Hand-made bars and gamma summaries for strategy and run tests (seeded, tiny)."""

from __future__ import annotations

import backtrader as bt
import numpy as np
import pandas as pd


def make_bars(n: int = 240, seed: int = 11, drift: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = 40_000 * np.exp(np.cumsum(rng.normal(drift, 0.01, n)))
    open_ = np.r_[40_000, close[:-1]]
    spread = np.abs(rng.normal(0, 0.003, n)) * close
    return pd.DataFrame({
        "ts": pd.date_range("2024-01-01", periods=n, freq="1h", tz="UTC").as_unit("us"),
        "open": open_, "high": np.maximum(open_, close) + spread,
        "low": np.minimum(open_, close) - spread, "close": close, "volume": 1.0})


def make_summary(bars: pd.DataFrame, regime: float, flip_mult: float) -> pd.DataFrame:
    """One snapshot per bar, stamped at the bar's open (known before it closes)."""
    close = bars["close"].to_numpy()
    return pd.DataFrame({"ts": bars["ts"], "spot": close, "gex": regime * 1e8,
                         "gamma_flip": close * flip_mult, "call_wall": close * 1.2,
                         "put_wall": close * 0.8, "regime": regime, "n_contracts": 100})


def flat_bars(prices, start: str = "2024-01-01", freq: str = "1h",
              spread: float = 0.0) -> pd.DataFrame:
    """Bars whose open is the previous close (the first opens at its own close); high
    and low ``spread`` (fraction) around the body, unless overridden later."""
    close = np.asarray(prices, dtype=float)
    open_ = np.r_[close[0], close[:-1]]
    return pd.DataFrame({
        "ts": pd.date_range(start, periods=len(close), freq=freq, tz="UTC").as_unit("us"),
        "open": open_, "high": np.maximum(open_, close) * (1 + spread),
        "low": np.minimum(open_, close) * (1 - spread), "close": close, "volume": 1.0})


class Scripted(bt.Strategy):
    """Test strategy: at the close of bar ``i`` set the position of feed ``name`` to
    ``qty`` BTC (``script`` = ((i, name, qty), ...)), with market orders."""

    params = (("script", ()),)

    def next(self) -> None:
        bar = len(self) - 1
        for i, name, qty in self.p.script:
            if i == bar:
                self.order_target_size(data=self.getdatabyname(name), target=qty)

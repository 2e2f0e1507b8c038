"""Run folders written without a backtest: seeded returns, real metrics, the files
``gammabt ls`` and ``gammabt compare`` read. Fast enough for many runs per test."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gammabt.report import compute_metrics


def fake_run(root: Path, run_id: str, *, label: str | None = None,
             strategy: str = "gamma_flip", params: dict[str, Any] | None = None,
             start: str = "2024-01-01", days: int = 120, seed: int = 0,
             mean: float = 0.001, n_trades: int = 6, cash: float = 100_000.0,
             commission_bps: float = 5.0) -> Path:
    """Write ``root/run_id`` the way ``write_run`` lays a run out (no tearsheet)."""
    rng = np.random.default_rng(seed)
    dates = pd.date_range(start, periods=days, freq="D", tz="UTC").as_unit("us")
    returns = pd.Series(rng.normal(mean, 0.02, days), index=dates, name="strategy")
    bench = pd.Series(rng.normal(0.0005, 0.03, days), index=dates, name="buy_and_hold")
    value = cash * (1 + returns).cumprod()
    equity = pd.DataFrame({"ts": dates, "value": value.to_numpy(), "cash": value.to_numpy(),
                           "position": 0.0, "close": 40_000 * (1 + bench).cumprod().to_numpy()})
    picks = np.sort(rng.choice(np.arange(days - 2), size=min(n_trades, days - 2),
                               replace=False))
    trades = pd.DataFrame({
        "entry_ts": dates[picks], "exit_ts": dates[picks + 1],
        "side": ["long" if i % 2 == 0 else "short" for i in range(len(picks))],
        "size": 1.0, "entry_price": equity["close"].to_numpy()[picks], "bars": 24,
        "pnl": rng.normal(100, 500, len(picks)), "pnl_net": 0.0, "commission": 5.0})
    trades["pnl_net"] = trades["pnl"] - trades["commission"]
    metrics: dict[str, Any] = compute_metrics(returns, bench, periods_per_year=365,
                                              trades=trades)
    metrics.update(final_value=float(value.iloc[-1]), n_bars=days,
                   fees_paid_usd=float(trades["commission"].sum()), funding_paid_usd=0.0,
                   funding_received_usd=12.5 * (seed + 1), borrow_paid_usd=0.0,
                   n_liquidations=0, max_margin_usage=0.1 + 0.01 * seed,
                   gross_exposure_mean=0.5, net_exposure_mean=0.1 * (seed % 3),
                   pnl_by_instrument={"spot": float(value.iloc[-1] - cash)})
    folder = Path(root) / run_id
    folder.mkdir(parents=True)
    config = {"strategy": strategy, "params": params or {"lookback": 8}, "label": label,
              "bars": "bars.csv", "chain": [], "start": None, "end": None, "cash": cash,
              "commission_bps": commission_bps, "slippage_bps": 2.0, "percent": 95.0}
    (folder / "config.json").write_text(json.dumps(
        {"run_id": run_id, "digest": "0" * 64, "config": config,
         "input_hashes": {"bars": f"{seed:064d}"}, "versions": {}, "notes": []}))
    (folder / "metrics.json").write_text(json.dumps(metrics))
    frame = pd.DataFrame({"strategy": returns, "buy_and_hold": bench})
    frame.index.name = "date"
    frame.to_parquet(folder / "returns.parquet")
    equity.to_parquet(folder / "equity.parquet", index=False)
    trades.to_parquet(folder / "trades.parquet", index=False)
    return folder

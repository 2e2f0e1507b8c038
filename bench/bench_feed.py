"""Feed benchmark: GammaFeed (bulk numpy preload) vs bt.feeds.PandasData (row by row).

Same 50,000 hourly bars, same columns (OHLCV + the gamma, liquidation and basis
lines, already joined point-in-time), same strategy, same Cerebro settings
(``stdstats=False``, ``runonce=True``, ``preload=True``, one strategy, no analyzers,
no commission): bars/s of ``cerebro.run()`` (preload included), best of N runs in
one process, and the final portfolio values, which must be equal.

Second table: the cost of the liquidation, basis and funding lines, ``GammaCoreFeed`` (gamma lines only,
strategy reads gamma lines) vs ``GammaFeed`` with liquidation and basis inputs given
(strategy also reads them). Target: at most 25% fewer bars/s.

Run: ``.venv/bin/python -m bench.bench_feed`` (or ``make bench``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import backtrader as bt
import numpy as np
import pandas as pd

from feeds.btfeed import LINES_BASIS, LINES_GAMMA, LINES_LIQ, GammaCoreFeed, GammaFeed

N_BARS = 50_000
REPEATS = 3
CASH = 1_000_000.0
EXTRA_LINES = (*LINES_GAMMA, *LINES_LIQ, *LINES_BASIS)


class FlipStrategy(bt.Strategy):
    """Long ``size`` units while close > gamma flip in long gamma, flat otherwise.

    With ``derivs_lines=True`` it also stays out when the basis is dislocated
    (``basis_z > 2``) or a large long-liquidation cluster sits within 1% below.
    """

    params = (("size", 1.0), ("derivs_lines", False))

    def next(self) -> None:
        d = self.data
        want = d.close[0] > d.gamma_flip[0] and d.regime[0] > 0
        if self.p.derivs_lines and want:
            near = d.liq_below[0] > 0.99 * d.close[0] and d.liq_below_usd[0] > 5e6
            want = not (d.basis_z[0] > 2.0 or near or d.funding_ann[0] > 0.5)
        held = self.position.size
        if want and not held:
            self.buy(size=self.p.size)
        elif held and not want:
            self.close()


class BulkPreloadOnly(GammaFeed):
    """GammaFeed with Backtrader's own per-bar ``advance`` and tick bookkeeping
    (isolates what the bulk preload alone buys)."""

    advance = bt.feed.DataBase.advance
    _tick_nullify = bt.feed.DataBase._tick_nullify
    _tick_fill = bt.feed.DataBase._tick_fill


class PandasGamma(bt.feeds.PandasData):
    """``PandasData`` with the same extra lines, read by column name."""

    lines = EXTRA_LINES
    params = tuple((name, -1) for name in EXTRA_LINES)


def _ar1(rng: np.random.Generator, n: int, phi: float) -> np.ndarray:
    """A stationary AR(1) path with unit variance."""
    shocks = rng.normal(0.0, np.sqrt(1 - phi**2), n)
    out = np.empty(n)
    out[0] = rng.normal()
    for i in range(1, n):
        out[i] = phi * out[i - 1] + shocks[i]
    return out


def make_inputs(n: int = N_BARS, seed: int = 7) -> dict[str, pd.DataFrame]:
    """Seeded synthetic hourly bars, hourly gamma summaries, basis and liquidation lines."""
    rng = np.random.default_rng(seed)
    ts = pd.date_range("2019-01-01", periods=n, freq="1h", tz="UTC", unit="us")
    close = 30_000.0 * np.exp(np.cumsum(rng.normal(0.0, 0.006, n)))
    open_ = np.r_[30_000.0, close[:-1]]
    wick = np.abs(rng.normal(0.0, 0.003, (2, n)))
    bars = pd.DataFrame({"ts": ts, "open": open_, "high": np.maximum(open_, close) * (1 + wick[0]),
                         "low": np.minimum(open_, close) * (1 - wick[1]), "close": close,
                         "volume": rng.gamma(2.0, 50.0, n)})
    # hourly snapshots taken 10 min before each bar closes; the flip drifts slowly
    # (an EMA of past opens) and the regime persists (switches every ~3 days on average)
    flip = pd.Series(open_).ewm(span=200).mean().to_numpy() * (1 + rng.normal(0.0, 0.002, n))
    regime = np.where(np.cumsum(rng.random(n) < 1 / 72) % 2 == 0, 1.0, -1.0)
    summary = pd.DataFrame({"ts": ts + pd.Timedelta("50min"), "gex": regime * 1e8,
                            "gamma_flip": flip, "call_wall": open_ * 1.05,
                            "put_wall": open_ * 0.95, "regime": regime})
    # basis, funding and liquidation clusters move slowly too (AR(1) paths)
    basis_z = _ar1(rng, n, 0.995)
    extra = pd.DataFrame({"ts": ts + pd.Timedelta("30min"),
                          "basis_ann": 0.08 + 0.02 * basis_z, "basis_z": basis_z,
                          "funding_ann": np.where(np.arange(n) % 8 == 0,
                                                  0.1 + 0.1 * _ar1(rng, n, 0.999), np.nan)})
    gap_below = 0.026 + 0.012 * _ar1(rng, n, 0.99)
    gap_above = 0.026 + 0.012 * _ar1(rng, n, 0.99)
    liq = pd.DataFrame({"ts": ts, "liq_below": close * (1 - np.abs(gap_below)),
                        "liq_below_usd": 8e6 * np.exp(0.5 * _ar1(rng, n, 0.99)),
                        "liq_above": close * (1 + np.abs(gap_above)),
                        "liq_above_usd": 8e6 * np.exp(0.5 * _ar1(rng, n, 0.99))})
    return {"bars": bars, "summary": summary, "extra": extra, "liq_lines": liq}


def _run(data: bt.feed.DataBase, derivs_lines: bool) -> tuple[float, float, int]:
    cerebro = bt.Cerebro(stdstats=False, runonce=True, preload=True, maxcpus=1)
    cerebro.broker.setcash(CASH)
    cerebro.adddata(data)
    cerebro.addstrategy(FlipStrategy, derivs_lines=derivs_lines)
    started = time.perf_counter()
    strategy = cerebro.run()[0]
    elapsed = time.perf_counter() - started
    return elapsed, cerebro.broker.getvalue(), len(strategy._orders)


def _preload_seconds(data: bt.feed.DataBase) -> float:
    """Time ``data.preload()`` alone, set up as Cerebro would."""
    bt.Cerebro().adddata(data)
    data.reset()
    data._start()
    started = time.perf_counter()
    data.preload()
    return time.perf_counter() - started


def _measure(make: Callable[[], bt.feed.DataBase], derivs_lines: bool, repeats: int
             ) -> dict[str, float]:
    runs = [_run(make(), derivs_lines) for _ in range(repeats)]
    values = {value for _, value, _ in runs}
    if len(values) != 1:
        raise RuntimeError(f"non-deterministic final values {values}")
    return {"run_s": min(r[0] for r in runs), "final_value": values.pop(),
            "orders": runs[0][2],
            "preload_s": _preload_seconds(make())}


def main(n_bars: int = N_BARS, repeats: int = REPEATS) -> dict[str, Any]:
    """Run the feed benchmark, print a table and return the figures."""
    inputs = make_inputs(n_bars)
    started = time.perf_counter()
    full = GammaFeed.from_frames(inputs["bars"], summary=inputs["summary"],
                                 extra=inputs["extra"], liq_lines=inputs["liq_lines"])
    build_s = time.perf_counter() - started
    arrays = full.arrays
    core = GammaCoreFeed.from_frames(inputs["bars"], summary=inputs["summary"]).arrays
    params = {"timeframe": bt.TimeFrame.Minutes, "compression": 60}

    # PandasData gets exactly the values GammaFeed holds, indexed by bar close time
    frame = arrays.to_frame()
    frame.index = pd.DatetimeIndex(frame.pop("close_ts")).tz_localize(None)
    frame = frame.drop(columns=["ts", "snap_idx", "liqmap_idx"])

    rows = {
        "GammaFeed (all lines)": _measure(
            lambda: GammaFeed(dataname=arrays, **params), True, repeats),
        "PandasData subclass (same lines)": _measure(
            lambda: PandasGamma(dataname=frame, **params), True, repeats),
        "GammaFeed, bulk preload only": _measure(
            lambda: BulkPreloadOnly(dataname=arrays, **params), True, repeats),
        "GammaCoreFeed (gamma lines only)": _measure(
            lambda: GammaCoreFeed(dataname=core, **params), False, repeats),
    }
    gamma, pandas_, bulk_only, core_ = rows.values()
    if gamma["final_value"] != pandas_["final_value"]:
        raise RuntimeError(f"final values differ: GammaFeed {gamma['final_value']!r} vs "
                           f"PandasData {pandas_['final_value']!r}")
    figures: dict[str, Any] = {
        "n_bars": n_bars, "repeats": repeats, "build_s": build_s,
        "gammafeed_bars_per_s": n_bars / gamma["run_s"],
        "pandasdata_bars_per_s": n_bars / pandas_["run_s"],
        "ratio": pandas_["run_s"] / gamma["run_s"],
        "ratio_bulk_preload_only": pandas_["run_s"] / bulk_only["run_s"],
        "final_value": gamma["final_value"], "final_values_equal": True,
        "gammafeed_preload_s": gamma["preload_s"], "pandasdata_preload_s": pandas_["preload_s"],
        "core_bars_per_s": n_bars / core_["run_s"],
        "derivs_lines_cost_pct": 100.0 * (1.0 - core_["run_s"] / gamma["run_s"]),
    }
    print(f"feed benchmark: {n_bars:,} hourly bars, best of {repeats}, "
          "Cerebro(stdstats=False, runonce=True, preload=True)")
    print(f"{'feed':34s} {'run s':>7s} {'bars/s':>8s} {'preload s':>9s} {'orders':>6s} "
          f"{'final value':>13s}")
    for label, row in rows.items():
        print(f"{label:34s} {row['run_s']:7.3f} {n_bars / row['run_s']:8,.0f} "
              f"{row['preload_s']:9.4f} {row['orders']:6d} {row['final_value']:13,.2f}")
    print(f"GammaFeed vs PandasData: {figures['ratio']:.1f}x bars/s (target >= 4x), "
          f"equal final values; bulk preload alone: {figures['ratio_bulk_preload_only']:.1f}x")
    print(f"liquidation, basis and funding lines cost {figures['derivs_lines_cost_pct']:.1f}% of bars/s (target <= 25%); "
          f"from_frames (PIT joins, {n_bars:,} bars) {build_s * 1e3:.0f} ms")
    return figures


if __name__ == "__main__":
    main()

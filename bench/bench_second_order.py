"""Second-order dealer flows benchmark: vanna/charm overhead and barrier books.

Run: ``.venv/bin/python -m bench.bench_second_order`` (or ``make bench``).

1. Overhead of vanna and charm in ``indicators.gamma.summarize`` on a year-long hourly
   chain (8,760 snapshots x 800 options; the simulator's chain via
   ``bench_gamma.scale_chain``, which falls back to its seeded generator and says so):
   best of three ``summarize(chain)`` against best of three
   ``summarize(chain, second_order=False)`` in the same process, interleaved. Target:
   at most +30%.
2. A barrier book of 10,000 positions over a year of hourly bars (8,760): positions
   enter uniformly over the year with tenors of 7 to 90 days (about 1,300 live at any
   time, ~12 M position-bars), down-and-in / down-and-out puts and up-and-out calls with
   barriers 5-25% from spot, on a seeded random-walk path: ``indicators.barrier.
   barrier_book`` (knock tracking plus gamma, vanna and charm of every live position at
   every bar). Target: at most 5 s. Wall and CPU time are both reported: on a shared
   machine the wall time includes waiting for a core.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd

from bench.bench_gamma import scale_chain
from indicators.barrier import barrier_book
from indicators.gamma import summarize


def bench_overhead(n_snap: int = 8760, n_options: int = 800, source: str = "auto",
                   repeats: int = 3) -> dict[str, Any]:
    chain, how = scale_chain(n_snap, n_options, source)
    with_so, without = [], []
    for _ in range(repeats):  # interleaved: both see the same machine load
        t0 = time.perf_counter()
        summarize(chain, second_order=False)
        without.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        summarize(chain)
        with_so.append(time.perf_counter() - t0)
    base, full = min(without), min(with_so)
    return {"source": how, "snapshots": int(chain["ts"].nunique()), "options": len(chain),
            "summarize_gamma_only_s": base, "summarize_with_vanna_charm_s": full,
            "overhead_pct": 100.0 * (full / base - 1.0)}


def barrier_market(n_pos: int = 10_000, n_bars: int = 8760, seed: int = 7,
                   ) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    ts = pd.date_range("2025-01-01", periods=n_bars, freq="1h", tz="UTC").as_unit("us")
    close = 90_000.0 * np.exp(np.cumsum(rng.normal(0.0, 0.55 / np.sqrt(8760), n_bars)))
    open_ = np.r_[90_000.0, close[:-1]]
    wick = np.abs(rng.normal(0.0, 0.002, n_bars))
    bars = pd.DataFrame({"ts": ts, "open": open_,
                         "high": np.maximum(open_, close) * (1 + wick),
                         "low": np.minimum(open_, close) * (1 - wick), "close": close,
                         "volume": 1.0})
    start = rng.integers(0, n_bars, n_pos)
    tenor_h = rng.integers(7 * 24, 90 * 24, n_pos)
    spot = close[start]
    kind = rng.choice(np.array(["down_in_put", "down_out_put", "up_out_call"]), n_pos)
    dist = rng.uniform(0.05, 0.25, n_pos)
    up = kind == "up_out_call"
    barrier = np.where(up, spot * (1 + dist), spot * (1 - dist))
    strike = np.where(up, spot * rng.uniform(0.95, 1.05, n_pos),
                      spot * rng.uniform(0.9, 1.0, n_pos))
    strike = np.where(up, np.minimum(strike, barrier * 0.98),
                      np.where(kind == "down_out_put", np.maximum(strike, barrier * 1.02),
                               strike))
    positions = pd.DataFrame({
        "ts": ts[start], "type": kind, "strike": strike, "barrier": barrier,
        "expiry": ts[start] + pd.to_timedelta(tenor_h, unit="h"),
        "notional": rng.uniform(10.0, 500.0, n_pos),
        "dealer_side": rng.choice([-1.0, 1.0], n_pos)})
    return positions, bars


def bench_barriers(n_pos: int = 10_000, n_bars: int = 8760, repeats: int = 3,
                   ) -> dict[str, Any]:
    positions, bars = barrier_market(n_pos, n_bars)
    iv = np.full(n_bars, 0.55)
    times, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        lines, events = barrier_book(positions, bars, iv=iv)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return {"positions": n_pos, "bars": n_bars,
            "position_bars": int(lines["n_barrier_live"].sum()),
            "mean_live": float(lines["n_barrier_live"].mean()),
            "knocked": int(events["knocked"].sum()), "barrier_book_s": min(times),
            "barrier_book_cpu_s": min(cpu)}


def main(*, scale_snapshots: int = 8760, scale_options: int = 800,
         scale_source: str = "auto") -> dict[str, Any]:
    figures = {"overhead": bench_overhead(scale_snapshots, scale_options, scale_source),
               "barriers": bench_barriers()}
    o, b = figures["overhead"], figures["barriers"]
    rows = [
        ("chain", f"{o['snapshots']} snapshots, {o['options']} options ({o['source']})"),
        ("summarize, gamma only", f"{o['summarize_gamma_only_s']:.2f} s"),
        ("summarize, with vanna + charm", f"{o['summarize_with_vanna_charm_s']:.2f} s"),
        ("vanna + charm overhead", f"{o['overhead_pct']:+.1f}% (target <= +30%)"),
        ("barrier book", f"{b['positions']} positions x {b['bars']} bars, "
                         f"{b['position_bars']:,} live position-bars "
                         f"({b['mean_live']:.0f} live on average), {b['knocked']} knocked"),
        ("barrier_book", f"{b['barrier_book_s']:.2f} s wall, {b['barrier_book_cpu_s']:.2f} s CPU "
                         "(target <= 5 s)"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"  {key:<{width}}  {value}")
    return figures


if __name__ == "__main__":
    main()

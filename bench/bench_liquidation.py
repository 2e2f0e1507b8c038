"""Liquidation map for one year of hourly bars (target: <= 5 s).

Seeded synthetic bars (GBM, 60% annualized vol) and an open-interest random walk;
times :func:`indicators.liquidation.estimate_liq_map` (map + per-bar lines) in OI mode
and in volume mode, the lazy per-bar map access and the memory the result keeps.

Run: ``.venv/bin/python -m bench.bench_liquidation`` (or ``make bench``).
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from indicators.liquidation import estimate_liq_map

N_BARS = 8_760
TARGET_S = 5.0


def make_market(n: int = N_BARS, seed: int = 2024) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Seeded hourly bars and OI measured at each bar close."""
    rng = np.random.default_rng(seed)
    sigma = 0.60 / np.sqrt(365 * 24)
    close = 40_000 * np.exp(np.cumsum(rng.normal(0, sigma, n)))
    open_ = np.concatenate([[40_000.0], close[:-1]])
    wick = np.abs(rng.normal(0, sigma / 2, (2, n)))
    ts = pd.date_range("2025-01-01", periods=n, freq="h", tz="UTC").astype("datetime64[us, UTC]")
    bars = pd.DataFrame({"ts": ts, "open": open_,
                         "high": np.maximum(open_, close) * (1 + wick[0]),
                         "low": np.minimum(open_, close) * (1 - wick[1]), "close": close,
                         "volume": rng.gamma(2.0, 400.0, n)})
    oi = pd.DataFrame({"ts": ts + pd.Timedelta("1h"),
                       "oi_btc": np.maximum(80_000 + np.cumsum(rng.normal(0, 250, n)), 1_000)})
    return bars, oi


def _best(fn, repeat: int = 3) -> tuple[float, object]:
    best, out = np.inf, None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> dict[str, float]:
    bars, oi = make_market()
    t_oi, m = _best(lambda: estimate_liq_map(bars, oi=oi))
    t_vol, _ = _best(lambda: estimate_liq_map(bars))
    rng = np.random.default_rng(0)
    picks = rng.integers(0, N_BARS, 200)
    t0 = time.perf_counter()
    sizes = [len(m.frame(int(i))) for i in picks]
    t_frame = (time.perf_counter() - t0) / len(picks)
    kept = m.nbytes
    t0 = time.perf_counter()
    for i in range(N_BARS):
        m.arrays(i)
    t_walk = (time.perf_counter() - t0) / N_BARS
    figures = {
        "bars": float(N_BARS),
        "map_oi_s": t_oi,
        "map_volume_s": t_vol,
        "target_s": TARGET_S,
        "bars_per_s": N_BARS / t_oi,
        "frame_ms": t_frame * 1e3,
        "walk_us_per_bar": t_walk * 1e6,
        "grid_buckets": float(len(m.grid)),
        "mean_levels_per_bar": float(np.mean(sizes)),
        "state_mb": kept / 1e6,
        "dense_map_mb": N_BARS * len(m.grid) * 2 * 8 / 1e6,
    }
    rows = [
        ("map + lines, OI mode (1y hourly)", f"{t_oi:.3f} s", f"target <= {TARGET_S:.0f} s"),
        ("map + lines, volume mode", f"{t_vol:.3f} s", ""),
        ("throughput (OI mode)", f"{N_BARS / t_oi:,.0f} bars/s", ""),
        ("lazy frame(i), random bar, mean of 200", f"{t_frame * 1e3:.2f} ms", ""),
        ("arrays(i) walking forward (a backtest)", f"{t_walk * 1e6:.0f} us/bar", ""),
        ("price buckets (0.25%)", f"{len(m.grid)}", ""),
        ("non-empty levels per bar", f"{np.mean(sizes):.0f}", ""),
        ("memory kept (checkpoints)", f"{kept / 1e6:.1f} MB",
         f"dense map would be {figures['dense_map_mb']:.0f} MB"),
    ]
    w = max(len(r[0]) for r in rows)
    print(f"{'liquidation map':<{w}}  {'figure':>16}  note")
    for name, val, note in rows:
        print(f"{name:<{w}}  {val:>16}  {note}")
    print("PASS" if t_oi <= TARGET_S else "FAIL", f"(target {TARGET_S} s)")
    return figures


if __name__ == "__main__":
    main()
